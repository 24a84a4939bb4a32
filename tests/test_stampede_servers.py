"""get_or_compute where it runs: behind twemproxy (no meta protocol), across a
HashClient's servers, and under the Django and Flask-Caching backends."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
from django.core.cache import CacheHandler

from greenpool import HashClient, PooledClient
from greenpool._classic import lock_key
from tests.forking import Child
from tests.memcached import MemcachedServer
from tests.nutcracker import Nutcracker
from tests.proxy import FaultProxy
from tests.test_flask_caching import flask_cache
from tests.test_stampede import Compute, herd

Key = Callable[[str], str]
StartNutcracker = Callable[..., Nutcracker]


def test_behind_nutcracker_the_probe_costs_one_connection_and_an_add_lock_takes_over(
    memcached: MemcachedServer,
    start_nutcracker: StartNutcracker,
    proxy_to: Callable[..., FaultProxy],
    key: Key,
) -> None:
    """nutcracker closes the connection on mn: the probe, once per pool, costs that
    one connection. Then 30 greenlets on each of two keys compute each once, with an
    add lock that is gone afterwards, and invalidate deletes."""
    nutcracker = start_nutcracker([memcached.address])
    relay = proxy_to(nutcracker.address)  # counts the pool's connections
    mc = PooledClient(relay.address)
    for name in ("a", "b"):
        compute = Compute(f"value of {name}", seconds=0.1)
        jobs = herd(30, lambda: mc.get_or_compute(key(name), compute, 60))  # noqa: B023
        assert {job.value for job in jobs} == {f"value of {name}".encode()}
        assert compute.calls == 1
    assert mc.stampede.meta is False
    assert mc.pool.stats()["discarded_error"] == 1  # the probe's connection, and no other
    assert mc.get(lock_key(key("a").encode())) is None  # the lock was deleted
    assert mc.invalidate(key("a")) is True and mc.get(key("a")) is None
    assert mc.invalidate(key("a")) is False
    assert mc.pool.stats()["discarded_error"] == 1


def test_behind_nutcracker_processes_still_compute_once(
    memcached: MemcachedServer, start_nutcracker: StartNutcracker, key: Key
) -> None:
    """Across processes the add lock holds: two children and the parent, 10
    greenlets each, one computation."""
    mc = PooledClient(start_nutcracker([memcached.address]).address)
    mc.get_or_compute(key("warm"), Compute(), 60)  # probed before the fork
    start = time.time() + 0.5
    compute = Compute("once", seconds=0.3)

    def burst() -> list[Any]:
        gevent.sleep(max(0.0, start - time.time()))
        jobs = herd(10, lambda: mc.get_or_compute(key("shared"), compute, 60, wait=5))
        return [compute.calls, sorted({job.value.decode() for job in jobs})]

    children = [Child(burst) for _ in range(2)]
    reports = [burst()] + [child.result() for child in children]
    assert sum(calls for calls, _ in reports) == 1
    assert {value for _, values in reports for value in values} == {"once"}


def test_a_compute_that_raises_behind_nutcracker_releases_the_lock(
    memcached: MemcachedServer, start_nutcracker: StartNutcracker, key: Key
) -> None:
    mc = PooledClient(start_nutcracker([memcached.address]).address)
    jobs = herd(5, lambda: mc.get_or_compute(key("k"), Compute(fails=KeyError("row")), 60))
    assert all(isinstance(job.exception, KeyError) for job in jobs)
    gevent.sleep(0.05)  # the lock is deleted in the background
    started = time.monotonic()
    assert mc.get_or_compute(key("k"), Compute("ok"), 60, wait=5) == b"ok"
    assert time.monotonic() - started < 0.5


def test_hash_client_computes_each_key_on_its_server_and_sums_the_stats(
    three_memcacheds: list[MemcachedServer], key: Key
) -> None:
    cluster = HashClient([s.address for s in three_memcacheds])
    names = [key(f"k{i}") for i in range(12)]
    computes = {name: Compute(name) for name in names}
    jobs = [
        gevent.spawn(cluster.get_or_compute, name, computes[name], 60)
        for name in names
        for _ in range(5)
    ]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert all(compute.calls == 1 for compute in computes.values())
    for name in names:
        assert cluster.get(name) == name.encode()
        assert cluster.meta_get(name, "v").value == name.encode()
    stats = cluster.stampede_stats()
    assert stats["lease_wins"] == 12 and stats["waits"] == 48
    assert cluster.invalidate(names[0]) is True


def test_hash_client_with_ignore_exc_computes_a_dead_servers_keys_without_it(
    three_memcacheds: list[MemcachedServer], key: Key
) -> None:
    """A stopped server's key is computed, once per process at a time, and not
    stored: the first call fails over to computing, the next, while the server
    waits out retry_timeout, does not try it. Other servers' keys are cached."""
    cluster = HashClient([s.address for s in three_memcacheds], ignore_exc=True)
    servers = {name: cluster._get_client(name).server for name in map(key, "abcdefghijkl")}
    dead = next(name for name, server in servers.items() if server == three_memcacheds[0].address)
    alive = next(name for name, server in servers.items() if server != three_memcacheds[0].address)
    three_memcacheds[0].stop()
    pool = cluster._get_client(dead).pool
    reserves = []
    for _ in range(2):
        compute = Compute("computed", seconds=0.05)
        jobs = herd(5, lambda: cluster.get_or_compute(dead, compute, 60))  # noqa: B023
        assert [job.value for job in jobs] == [b"computed"] * 5 and compute.calls == 1
        reserves.append(pool.stats()["reserves"])
    assert three_memcacheds[0].address in cluster._failed_clients
    assert reserves[1] == reserves[0]  # the second time, the server was not tried
    assert cluster.get_or_compute(alive, Compute("cached"), 60) == b"cached"
    assert cluster.get(alive) == b"cached"


def test_django_get_or_set_computes_once_for_concurrent_requests(
    memcached: MemcachedServer, key: Key
) -> None:
    """50 request greenlets miss one key: greenpool's backend calls default() once,
    where Django's own get_or_set calls it in every one of them."""
    location = f"{memcached.host}:{memcached.port}"
    handler = CacheHandler(
        {"default": {"BACKEND": "greenpool.django.MemcachedCache", "LOCATION": location}}
    )
    compute = Compute({"rendered": True}, seconds=0.1)

    def request() -> Any:
        return handler["default"].get_or_set(key("page"), compute, 60)

    jobs = herd(50, request)
    assert compute.calls == 1
    assert all(job.value == {"rendered": True} for job in jobs)
    assert handler["default"].get(key("page")) == {"rendered": True}
    handler["default"].invalidate(key("page"))
    assert handler["default"].get_or_set(key("page"), lambda: "new", 60) == {"rendered": True}


def test_flask_backend_get_or_compute_uses_its_prefix_and_timeouts(
    memcached: MemcachedServer, key: Key
) -> None:
    cache = flask_cache([memcached], CACHE_KEY_PREFIX="app-")
    compute = Compute(["a", "list"], seconds=0.05)
    jobs = herd(10, lambda: cache.get_or_compute(key("k"), compute, timeout=60))
    assert compute.calls == 1 and all(job.value == ["a", "list"] for job in jobs)
    assert cache.get(key("k")) == ["a", "list"]
    assert cache.client.get("app-" + key("k")) == ["a", "list"]
