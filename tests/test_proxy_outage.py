"""Behind a proxy, one backend down fails only the keys that live on it.

nutcracker answers a multi-key get with one ``SERVER_ERROR`` if any of its
fragments' backends is down, and then closes the connection. With autobatching
(the default) every batch spans all backends, so a partial outage used to fail
every batched caller and cost a new connection per batch. A batch that fails
so is retried with each key on its own, and the batcher sends its keys so
until a multi-key get succeeds again: each caller ends with what its unbatched
get would give.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError

from greenpool import CLIENT_DEFAULTS, PooledClient
from tests.memcached import MemcachedServer
from tests.nutcracker import Nutcracker

Key = Callable[[str], str]


def _client_connections(proxy: Nutcracker) -> int:
    """Every client connection nutcracker has accepted: open now, or closed (its
    ``total_connections`` also counts its own connects to the backends)."""
    pool = proxy.stats()["cluster"]
    return int(pool["client_connections"] + pool["client_eof"] + pool["client_err"])


def _stop_the_backend_of_about_a_third(
    backends: list[MemcachedServer], names: list[str]
) -> set[str]:
    """Stop the backend holding the share of *names* nearest a third; return its keys."""
    held = [set(Client(server.address).get_many(names)) for server in backends]
    down = min(range(len(backends)), key=lambda n: abs(len(held[n]) - len(names) / 3))
    backends[down].stop()
    return held[down]


def test_one_dead_backend_behind_nutcracker_fails_only_its_own_keys(
    three_memcacheds: list[MemcachedServer],
    start_nutcracker: Callable[..., Nutcracker],
    key: Key,
) -> None:
    """100 greenlets for 2 s with PooledClient's defaults, one backend of three
    killed: at most 45% of gets fail (about a third of the keys live on the dead
    one), none of a live backend's keys, none returns another key's value, and
    at most 2 x max_pool_size new client connections reach the proxy."""
    proxy = start_nutcracker([server.address for server in three_memcacheds])
    names = [key(hashlib.md5(b"%d" % n).hexdigest()[:12]) for n in range(300)]
    seeder = Client(proxy.address, **CLIENT_DEFAULTS)
    assert seeder.set_many({name: name for name in names}, noreply=False) == []
    seeder.close()
    dead = _stop_the_backend_of_about_a_third(three_memcacheds, names)
    assert 0.15 < len(dead) / len(names) < 0.4, len(dead)
    mc = PooledClient(proxy.address)
    assert mc.batcher is not None  # the defaults batch
    outcomes: dict[str, int] = {"right": 0, "failed": 0, "wrong": 0}
    errors: dict[str, int] = {}
    connections = _client_connections(proxy)
    deadline = time.monotonic() + 2.0
    rng = random.Random(18)

    def reader() -> None:
        while time.monotonic() < deadline:
            name = rng.choice(names)
            try:
                got = mc.get(name)
            except MemcacheServerError as exc:
                outcomes["failed"] += 1
                if name not in dead:
                    errors[str(exc)[:40]] = errors.get(str(exc)[:40], 0) + 1
                continue
            outcomes["right" if got == name.encode() else "wrong"] += 1

    readers = [gevent.spawn(reader) for _ in range(100)]
    gevent.joinall(readers, timeout=30, raise_error=True)
    new_connections = _client_connections(proxy) - connections
    total = sum(outcomes.values())
    assert total > 1000, outcomes
    assert outcomes["wrong"] == 0
    assert outcomes["failed"] <= 0.45 * total, outcomes
    assert errors == {}  # no key of a live backend failed
    assert new_connections <= 2 * mc.max_pool_size, (new_connections, mc.pool_stats())


def test_a_batch_that_a_proxy_failed_whole_is_retried_key_by_key_once(
    three_memcacheds: list[MemcachedServer],
    start_nutcracker: Callable[..., Nutcracker],
    key: Key,
) -> None:
    """The batch's multi-key get fails with SERVER_ERROR; each of its keys is asked
    for once more, alone, in one round trip: the live keys' callers get their
    values, the dead backend's callers its SERVER_ERROR."""
    proxy = start_nutcracker([server.address for server in three_memcacheds])
    names = [key(hashlib.md5(b"%d" % n).hexdigest()[:12]) for n in range(30)]
    seeder = Client(proxy.address, **CLIENT_DEFAULTS)
    seeder.set_many({name: name for name in names}, noreply=False)
    seeder.close()
    held = _stop_the_backend_of_about_a_third(three_memcacheds, names)
    assert 0 < len(held) < len(names)
    mc = PooledClient(proxy.address)
    lone = gevent.spawn(mc.get, names[0])  # makes the others batch
    jobs = {name: gevent.spawn(mc.get, name) for name in names[1:]}
    gevent.joinall([lone, *jobs.values()], timeout=10)
    for name, job in [(names[0], lone), *jobs.items()]:
        if name in held:
            assert isinstance(job.exception, MemcacheServerError), name
        else:
            assert job.value == name.encode(), (name, job.exception)
    stats: Any = mc.pool_stats()
    assert stats["keys_retried"] == len(names) - 1  # the batch, each key once more
