"""PooledClient: one reservation per command, so it waits, stays bounded and never
serves a stale reply; where pymemcache's PooledClient fails, leaks or mixes them up."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.socket
import port_for
import pytest
from gevent import Timeout
from pymemcache.client.base import PooledClient as PymemcachePooledClient

import greenpool
from greenpool import PooledClient, PoolOverloaded, PoolTimeout
from tests.memcached import HOST, MemcachedServer
from tests.proxy import FaultProxy
from tests.waiting import wait_until

Key = Callable[[str], str]


@pytest.fixture
def make_client(memcached: MemcachedServer) -> Iterator[Callable[..., PooledClient]]:
    """Build PooledClients (against the session memcached unless *server* is given).

    They wait for store replies (default_noreply=False): with noreply, a set may
    still be in flight on one connection while the next get overtakes it on another.
    """
    clients: list[PooledClient] = []

    def make(server: Any = None, **options: Any) -> PooledClient:
        options.setdefault("default_noreply", False)
        client = PooledClient(server or memcached.address, **options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.pool.close()


def _interrupt_with_timeout(call: Callable[[], Any], proxy: FaultProxy) -> None:
    with pytest.raises(Timeout), Timeout(0.01):
        call()


def _interrupt_with_kill(call: Callable[[], Any], proxy: FaultProxy) -> None:
    sent = proxy.sent
    job = gevent.spawn(call)
    wait_until(lambda: proxy.sent > sent, "the command reached the proxy, which holds its reply")
    job.kill(block=True, timeout=5)


@pytest.mark.parametrize("interrupt", [_interrupt_with_timeout, _interrupt_with_kill])
def test_an_interrupted_command_never_hands_its_reply_to_the_next_call(
    make_client: Callable[..., PooledClient], proxy: FaultProxy, key: Key,
    interrupt: Callable[[Callable[[], Any], FaultProxy], None],
) -> None:  # fmt: skip
    """x's incr is cut off while its reply is in flight; y's incr, on the only
    connection slot, reads y's own counter."""
    mc = make_client(proxy.address, max_pool_size=1)
    mc.set(key("x"), "1000")
    mc.set(key("y"), "5")
    proxy.reply_delay = 0.05
    interrupt(lambda: mc.incr(key("x"), 1), proxy)
    assert mc.incr(key("y"), 1) == 6
    stats = mc.pool_stats()
    assert (stats["discarded"], stats["in_use"], stats["size"]) == (1, 0, 1)


def _time_out_many(mc: Any, key: Key, times: int) -> None:
    for _ in range(times):
        with pytest.raises(Timeout), Timeout(0.01):
            mc.get(key("a"))


def test_pymemcaches_pooled_client_leaks_a_connection_per_timeout(
    proxy: FaultProxy, key: Key
) -> None:
    """Control: its pool only takes clients back on Exception, so every
    gevent.Timeout strands a client and its open connection for good."""
    mc = PymemcachePooledClient(proxy.address, socket_module=gevent.socket)
    proxy.reply_delay = 0.05
    _time_out_many(mc, key, 10)
    assert len(mc.client_pool.used) == 10
    gevent.sleep(0.1)
    assert proxy.open_connections == 10
    bounded = PymemcachePooledClient(proxy.address, socket_module=gevent.socket, max_pool_size=2)
    _time_out_many(bounded, key, 2)
    with pytest.raises(RuntimeError, match="Too many objects"):
        bounded.get(key("a"))


def test_nothing_leaks_after_many_timeouts(
    make_client: Callable[..., PooledClient], proxy: FaultProxy, key: Key
) -> None:
    """30 timeouts on a pool of 2: every interrupted client is closed, its slot
    refilled, and the connections to the server never exceed 2."""
    mc = make_client(proxy.address, max_pool_size=2)
    mc.set(key("a"), "1")
    proxy.reply_delay = 0.05
    _time_out_many(mc, key, 30)
    gevent.sleep(0.1)  # let the proxy see the closed connections
    assert proxy.open_connections == 0
    stats = mc.pool_stats()
    assert (stats["in_use"], stats["size"], stats["discarded"]) == (0, 0, 30)
    proxy.reply_delay = 0
    assert mc.get(key("a")) == b"1"
    assert proxy.open_connections == 1


def test_calls_wait_cooperatively_for_a_free_client_then_raise_pool_timeout(
    make_client: Callable[..., PooledClient], proxy: FaultProxy, key: Key
) -> None:
    """At the bound a call waits (pymemcache's raises at once); after pool_timeout
    it raises PoolTimeout naming the pool."""
    mc = make_client(
        proxy.address, max_pool_size=1, pool_timeout=0.1, pool_options={"name": "small"}
    )
    mc.set(key("a"), "1")
    proxy.reply_delay = 0.3
    slow = gevent.spawn(mc.get, key("a"))
    wait_until(lambda: mc.pool_stats()["in_use"] == 1, "the slow get holds the client")
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match=r"'small'.*timeout=0\.1"):
        mc.get(key("a"))
    assert 0.08 <= time.monotonic() - started < 0.25
    # Three gets of one key would go out as one batched get: unbatched, each waits.
    patient = make_client(proxy.address, max_pool_size=1, pool_timeout=5, autobatch=False)
    gevent.joinall([gevent.spawn(patient.get, key("a")) for _ in range(3)], timeout=5)
    assert patient.pool_stats()["waits"] == 2  # two waited in turn, none failed
    assert patient.pool_stats()["timeouts"] == 0
    assert slow.get(timeout=5) == b"1"


def test_hundreds_of_greenlets_share_at_most_max_pool_size_connections(
    make_client: Callable[..., PooledClient], memcached: MemcachedServer, key: Key
) -> None:
    before = memcached.stats()["total_connections"]
    mc = make_client(max_pool_size=4, pool_timeout=30)

    def work(i: int) -> bool:
        ok = True
        for n in range(3):
            mc.set(key(str(i)), f"{i}:{n}")
            ok = ok and mc.get(key(str(i))) == f"{i}:{n}".encode()
        return ok

    jobs = [gevent.spawn(work, i) for i in range(300)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert all(job.value for job in jobs)
    assert mc.pool_stats()["created"] <= 4
    assert memcached.stats()["total_connections"] - before <= 4 + 1  # +1: stats() itself


def test_close_disconnects_idle_clients_and_later_calls_reconnect(
    make_client: Callable[..., PooledClient], proxy: FaultProxy, key: Key
) -> None:
    """As with pymemcache, close() (Django calls it after each request) leaves the
    client usable. A command in flight elsewhere finishes on its connection."""
    mc = make_client(proxy.address, max_pool_size=3, autobatch=False)  # 3 gets, 3 clients
    mc.set(key("a"), "1")
    proxy.reply_delay = 0.05
    gevent.joinall([gevent.spawn(mc.get, key("a")) for _ in range(3)], timeout=5)
    assert proxy.open_connections == 3
    in_flight = gevent.spawn(mc.get, key("a"))
    wait_until(lambda: mc.pool_stats()["in_use"] == 1, "the get holds a client")
    mc.close()
    wait_until(lambda: proxy.open_connections == 1, "only the one in use is open")
    assert in_flight.get(timeout=5) == b"1"
    mc.disconnect_all()
    wait_until(lambda: proxy.open_connections == 0, "every connection is closed")
    proxy.reply_delay = 0
    assert mc.get(key("a")) == b"1"
    stats = mc.pool_stats()
    assert (stats["size"], stats["in_use"], stats["discarded"]) == (3, 0, 0)


def test_quit_closes_a_connection_and_the_next_call_reconnects(
    make_client: Callable[..., PooledClient], key: Key
) -> None:
    mc = make_client()
    mc.set(key("a"), "1")
    assert mc.quit() is None
    assert mc.get(key("a")) == b"1"


def _dead_address() -> tuple[str, int]:
    return (HOST, port_for.select_random())  # nothing listens: connections are refused


def _misses(mc: Any, key: Key) -> list[Any]:
    calls: list[Callable[[], Any]] = [
        lambda: mc.get(key("a")),
        lambda: mc.get(key("a"), "fallback"),
        lambda: mc.gets(key("a")),
        lambda: mc.get_many([key("a"), key("b")]),
        lambda: mc.gets_many([key("a")]),
        lambda: mc.stats(),
        lambda: mc.get("bad key"),
        lambda: mc.set(key("a"), "1"),
        lambda: mc.incr(key("a"), 1),
    ]
    results = []
    for call in calls:
        try:
            results.append(call())
        except Exception as exc:
            results.append(type(exc))
    return results


def test_ignore_exc_turns_read_errors_into_misses_as_pymemcache_does(
    make_client: Callable[..., PooledClient], key: Key
) -> None:
    """get, gets, get_many, gets_many and stats miss on any error; writes still raise."""
    server = _dead_address()
    theirs = _misses(PymemcachePooledClient(server, ignore_exc=True), key)
    ours = _misses(make_client(server, ignore_exc=True), key)
    assert ours == theirs
    assert ours[:7] == [None, "fallback", (None, None), {}, {}, {}, None]
    assert ours[7:] == [ConnectionRefusedError, ConnectionRefusedError]
    strict = make_client(server)
    with pytest.raises(ConnectionRefusedError):
        strict.get(key("a"))


def test_ignore_exc_treats_a_full_pool_as_a_miss(
    make_client: Callable[..., PooledClient], proxy: FaultProxy, key: Key
) -> None:
    mc = make_client(proxy.address, max_pool_size=1, pool_timeout=0.05, ignore_exc=True)
    mc.set(key("a"), "1")
    proxy.reply_delay = 0.3
    slow = gevent.spawn(mc.get, key("a"))
    wait_until(lambda: mc.pool_stats()["in_use"] == 1, "the slow get holds the client")
    assert mc.get(key("a"), "busy") == "busy"
    with pytest.raises(PoolTimeout):
        mc.set(key("a"), "2")
    assert slow.get(timeout=5) == b"1"


def test_settings_read_like_pymemcaches(make_client: Callable[..., PooledClient]) -> None:
    """Attributes HashClient and user code read; greenpool's defaults where unset."""
    mc = make_client(("localhost", 11299), key_prefix="p:", max_pool_size=None)
    assert mc.server == ("localhost", 11299) and mc.key_prefix == b"p:"
    assert mc.max_pool_size == greenpool.DEFAULT_MAXSIZE
    assert mc.socket_module is greenpool._socket and mc.timeout == 2.0
    assert mc.pool.name == "PooledClient(('localhost', 11299))"
    assert mc.check_key("k") == b"p:k"
    unix = make_client("/tmp/memcached.sock", socket_module=gevent.socket, pool_idle_timeout=30)
    assert unix.server == "/tmp/memcached.sock" and unix.socket_module is gevent.socket
    assert unix.pool_idle_timeout == 30.0


def test_pool_idle_timeout_closes_idle_clients_as_pymemcaches_does(
    make_client: Callable[..., PooledClient], key: Key
) -> None:
    """pool_idle_timeout is the pool's max_idle: an idle client past it is replaced."""
    mc = make_client(pool_idle_timeout=0.1)
    mc.version()
    gevent.sleep(0.2)  # time passing is the behaviour under test
    mc.version()
    stats = mc.pool_stats()
    assert (stats["discarded_idle"], stats["created"], stats["size"]) == (1, 2, 1)


def test_operating_options_pass_through_pool_options(
    make_client: Callable[..., PooledClient],
) -> None:
    mc = make_client(max_pool_size=1, pool_options={"max_waiting": 0, "name": "shop"})
    with (
        mc.pool.reserve(),
        pytest.raises(PoolOverloaded, match="'shop' already has max_waiting=0"),
    ):
        mc.get("k")
    assert mc.pool_stats()["overloaded"] == 1
