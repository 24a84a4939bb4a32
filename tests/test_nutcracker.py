"""greenpool behind twemproxy: Debian's nutcracker in front of real memcacheds.

What nutcracker does with each command is checked with a plain pymemcache
``Client`` (docs/clusters.rst's table says the same); what a
pool makes of it with ``PooledClient``. The pool's connections are counted by
a relay in front of nutcracker (tests/proxy.py): nutcracker's own
``total_connections`` also counts its attempts to reach a backend.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheServerError, MemcacheUnexpectedCloseError

from greenpool import CLIENT_DEFAULTS, PooledClient
from tests.memcached import MemcachedServer
from tests.nutcracker import Nutcracker
from tests.proxy import FaultProxy
from tests.waiting import wait_until

Key = Callable[[str], str]
StartNutcracker = Callable[..., Nutcracker]


def _client(address: tuple[str, int]) -> Client:
    return Client(address, **CLIENT_DEFAULTS)


def _warm(mc: PooledClient, clients: int, key: Key) -> None:
    """Have *clients* clients connected and idle in *mc*'s pool."""
    with ExitStack() as stack:
        for _ in range(clients):
            stack.enter_context(mc.pool.reserve()).get(key("warm"))


def test_nutcracker_closes_the_connection_on_commands_it_does_not_support(
    three_memcacheds: list[MemcachedServer], start_nutcracker: StartNutcracker
) -> None:
    """stats, flush_all (acknowledged), cache_memlimit and meta commands: nutcracker
    answers nothing and closes the connection, which pymemcache reports as
    MemcacheUnexpectedCloseError."""
    proxy = start_nutcracker([server.address for server in three_memcacheds])
    rejected: dict[str, Callable[[Client], Any]] = {
        "stats": lambda c: c.stats(),
        "flush_all": lambda c: c.flush_all(noreply=False),
        "cache_memlimit": lambda c: c.cache_memlimit(64),
        "meta get": lambda c: c.raw_command("mg some-key v"),
    }
    for name, command in rejected.items():
        client = _client(proxy.address)
        with pytest.raises(MemcacheUnexpectedCloseError):
            command(client)
        client.close()
        assert proxy.running(), name


def test_nutcracker_answers_version_and_ignores_flush_all_noreply_and_shutdown(
    three_memcacheds: list[MemcachedServer], start_nutcracker: StartNutcracker, key: Key
) -> None:
    """version comes from a backend; flush_all with noreply and shutdown return as
    if done, and nothing is flushed nor shut down."""
    proxy = start_nutcracker([server.address for server in three_memcacheds])
    client = _client(proxy.address)
    assert client.version() == _client(three_memcacheds[0].address).version()
    assert client.set(key("kept"), "yes", noreply=False)
    assert client.flush_all() is True  # noreply: nothing to read
    client.close()
    client = _client(proxy.address)
    assert client.get(key("kept")) == b"yes"
    client.shutdown()
    assert all(server.running() for server in three_memcacheds) and proxy.running()
    assert client.get(key("kept")) == b"yes"
    client.close()


def test_through_nutcracker_get_many_fails_whole_when_one_backend_is_down(
    three_memcacheds: list[MemcachedServer], start_nutcracker: StartNutcracker, key: Key
) -> None:
    """One backend down: single gets of the other backends' keys still answer, and
    a get_many spanning all backends raises SERVER_ERROR for every key."""
    proxy = start_nutcracker([server.address for server in three_memcacheds])
    client = _client(proxy.address)
    names = [key(f"{n}-{n * 7919}") for n in range(100)]
    assert client.set_many(dict.fromkeys(names, "v"), noreply=False) == []
    held = [set(_client(s.address).get_many(names)) for s in three_memcacheds]
    down = max(range(3), key=lambda n: len(held[n]))
    assert 0 < len(held[down]) < len(names)
    three_memcacheds[down].stop()
    for name in names:
        if name in held[down]:
            with pytest.raises(MemcacheServerError, match="refused"):
                client.get(name)
        else:
            assert client.get(name) == b"v"
    with pytest.raises(MemcacheServerError):
        client.get_many(names)
    client.close()


def test_a_server_error_from_nutcracker_keeps_the_pooled_connection(
    start_nutcracker: StartNutcracker, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """With its backend down nutcracker answers ``SERVER_ERROR Connection refused``
    in full and keeps the connection: twenty such errors cost no new connection."""
    backend = MemcachedServer().start()
    proxy = start_nutcracker([backend.address])
    backend.stop()
    relay = proxy_to(proxy.address)
    mc = PooledClient(relay.address, max_pool_size=2)
    with pytest.raises(MemcacheServerError):
        mc.get(key("x"))  # the pool's first connection
    for _ in range(20):
        with pytest.raises(MemcacheServerError):
            mc.get(key("x"))
    assert relay.connections == 1
    assert mc.pool_stats()["discarded"] == 0


def test_memcacheds_own_server_error_keeps_the_pooled_connection(
    own_memcached: MemcachedServer, key: Key
) -> None:
    """memcached answers a value over its item size with ``SERVER_ERROR object too
    large for cache`` and swallows the value: the connection is in step, kept,
    and serves the next command."""
    mc = PooledClient(own_memcached.address, max_pool_size=1)
    assert mc.set(key("small"), "fits", noreply=False)
    before = own_memcached.stats()["total_connections"]
    with pytest.raises(MemcacheServerError, match="too large"):
        mc.set(key("big"), b"x" * (2 << 20), noreply=False)
    assert mc.get(key("small")) == b"fits"
    assert own_memcached.stats()["total_connections"] - before == 1  # stats()' own
    assert mc.pool_stats()["discarded"] == 0


def test_a_command_nutcracker_rejects_costs_only_its_own_connection(
    three_memcacheds: list[MemcachedServer],
    start_nutcracker: StartNutcracker,
    proxy_to: Callable[..., FaultProxy],
    key: Key,
) -> None:
    """nutcracker closes the connection a ``stats`` came on. That costs that one
    connection: the other idle clients are not reconnected."""
    proxy = start_nutcracker([server.address for server in three_memcacheds])
    relay = proxy_to(proxy.address)
    mc = PooledClient(relay.address, max_pool_size=4)
    _warm(mc, 4, key)
    assert relay.connections == 4
    with pytest.raises(MemcacheUnexpectedCloseError):
        mc.stats()
    _warm(mc, 4, key)
    assert relay.connections == 5
    assert mc.pool_stats()["reconnects"] == 0


def _closed_by_peer(client: Client) -> bool:
    """Whether *client*'s connection has been closed by the other end (or is gone)."""
    if client.sock is None:
        return True
    readable, _, _ = select.select([client.sock], [], [], 0)
    return bool(readable)  # nothing was sent that would be answered: EOF


def test_a_noreply_write_after_flush_all_through_nutcracker_is_not_lost(
    three_memcacheds: list[MemcachedServer], start_nutcracker: StartNutcracker, key: Key
) -> None:
    """``flush_all`` with noreply makes nutcracker close the connection; the next
    noreply ``set`` must go out on a live connection and be stored."""
    proxy = start_nutcracker([server.address for server in three_memcacheds])
    mc = PooledClient(proxy.address, max_pool_size=1)  # default_noreply, as pymemcache's
    assert mc.set(key("before"), "1", noreply=False)
    assert mc.flush_all() is True
    with mc.pool.reserve() as client:
        lent = client
    wait_until(lambda: _closed_by_peer(lent), "nutcracker closed the connection")
    assert mc.set(key("after"), "stored") is True
    assert mc.get(key("after")) == b"stored"
