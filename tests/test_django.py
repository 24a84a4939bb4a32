"""greenpool.django.MemcachedCache: one client per process and thread, whatever Django does.

Backends are made the way Django makes them: a ``CacheHandler`` (what
``django.core.cache.caches`` is) keeps them in an asgiref ``Local``, and every
greenlet, having a context of its own, gets its own backend object. The
handler takes its CACHES directly, so no global Django settings are needed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket
import pytest
from django.core.cache import CacheHandler
from pymemcache.exceptions import MemcacheUnexpectedCloseError

from greenpool import HashClient
from greenpool._shared import OneServerClient
from tests.forking import Child
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy

GREENPOOL = "greenpool.django.MemcachedCache"
STOCK = "django.core.cache.backends.memcached.PyMemcacheCache"
Key = Callable[[str], str]


def caches(*servers: tuple[str, int], backend: str = GREENPOOL, **options: Any) -> CacheHandler:
    """Django's cache handler with one cache, "default", on *servers*."""
    location = ",".join(f"{host}:{port}" for host, port in servers)
    return CacheHandler({"default": {"BACKEND": backend, "LOCATION": location, "OPTIONS": options}})


def serve_requests(handler: CacheHandler, key: Key, count: int) -> list[tuple[Any, Any]]:
    """*count* concurrent "requests", each a greenlet that uses the cache as a view
    would and ends as Django ends a request (``request_finished`` closes every
    cache of its context); returns each one's backend and client."""
    seen: list[tuple[Any, Any]] = []

    def request(number: int) -> None:
        cache = handler["default"]
        cache.set(key(f"request-{number}"), {"number": number})
        assert cache.get(key(f"request-{number}")) == {"number": number}
        seen.append((cache, cache._cache))
        handler.close_all()

    greenlets = [gevent.spawn(request, number) for number in range(count)]
    gevent.joinall(greenlets, timeout=30, raise_error=True)
    assert len(seen) == count
    return seen


def test_request_greenlets_get_their_own_backends_but_share_one_pooled_client(
    memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """50 concurrent request greenlets get 50 backend objects from Django, all on
    one client, which opens at most max_pool_size connections; close() at the end
    of each request keeps them, so a second round opens none."""
    proxy = proxy_to(memcached.address)
    proxy.reply_delay = 0.005  # replies overlap, so the pool grows to its bound
    handler = caches(proxy.address, max_pool_size=4)
    seen = serve_requests(handler, key, 50)
    assert len({id(cache) for cache, _ in seen}) == 50
    assert len({id(client) for _, client in seen}) == 1
    opened = proxy.connections
    assert 1 <= opened <= 4
    serve_requests(handler, key, 50)
    assert proxy.connections == opened


def test_the_stock_backend_opens_a_connection_per_request_greenlet(
    memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """The control: Django's PyMemcacheCache (with gevent's sockets, as under
    patch_all) builds a client per greenlet and disconnects it at the request's end,
    so every request opens a connection of its own."""
    proxy = proxy_to(memcached.address)
    handler = caches(proxy.address, backend=STOCK, socket_module=gevent.socket)
    seen = serve_requests(handler, key, 50)
    assert len({id(client) for _, client in seen}) == 50
    assert proxy.connections == 50


def _incr_after_a_caught_timeout(handler: CacheHandler, proxy: FaultProxy, key: Key) -> Any:
    """What a view gets from ``incr(bob)`` after catching a gevent.Timeout around
    ``incr(alice)`` whose reply was late."""
    cache = handler["default"]
    cache.set(key("alice"), 100)
    cache.set(key("bob"), 5)
    proxy.reply_delay = 0.05
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.01):
        cache.incr(key("alice"))
    proxy.reply_delay = 0
    return cache.incr(key("bob"))


def test_the_stock_backend_serves_another_keys_value_after_a_caught_timeout(
    proxy: FaultProxy, key: Key
) -> None:
    """The bug, reproduced with Django's PyMemcacheCache: bob's incr returns
    alice's counter (101), read from the interrupted command's connection."""
    handler = caches(proxy.address, backend=STOCK, socket_module=gevent.socket)
    assert _incr_after_a_caught_timeout(handler, proxy, key) == 101


def test_after_a_caught_timeout_the_next_command_gets_its_own_reply(
    proxy: FaultProxy, key: Key
) -> None:
    """With greenpool's backend, the interrupted client is never used again: bob's
    incr returns bob's counter, and alice's incr did happen on the server."""
    handler = caches(proxy.address)
    assert _incr_after_a_caught_timeout(handler, proxy, key) == 6
    cache = handler["default"]
    assert cache.get(key("alice")) == 101
    (pooled,) = cache._cache.clients.values()
    assert pooled.pool_stats()["discarded_interrupted"] == 1


def test_each_os_thread_has_its_own_client(memcached: MemcachedServer, key: Key) -> None:
    """A pool belongs to one thread's hub, so another OS thread gets a client of
    its own (from any backend object there); both work."""
    handler = caches(memcached.address)
    handler["default"].set(key("threads"), "main")
    main_client = handler["default"]._cache
    results: list[Any] = []

    def other_thread() -> None:
        first, second = handler["default"], caches(memcached.address)["default"]
        results.extend([first._cache, second._cache, first.get(key("threads"))])

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join(10)
    client, same, value = results
    assert client is not main_client and same is client and value == "main"
    assert handler["default"]._cache is main_client


def test_a_forked_child_never_uses_its_parents_client(memcached: MemcachedServer, key: Key) -> None:
    """After a fork the child's backend builds a client of its own, even from a
    backend object made in the parent; both processes keep working."""
    cache = caches(memcached.address)["default"]
    cache.set(key("fork"), "parent")
    parent_client = cache._cache

    def in_child() -> list[Any]:
        child_client = cache._cache
        cache.set(key("from-child"), "child")
        return [child_client is parent_client, cache.get(key("fork"))]

    child = Child(in_child)
    assert cache.get(key("fork")) == "parent"
    assert child.result() == [False, "parent"]
    assert cache._cache is parent_client
    assert cache.get(key("from-child")) == "child"


def test_one_server_is_served_again_at_once_after_a_restart(
    own_memcached: MemcachedServer, key: Key
) -> None:
    """With one server there is no failover: each command while it is down raises
    its own connection error (never "All servers seem to be down"), and the first
    command after the restart is served."""
    cache = caches(own_memcached.address)["default"]
    assert isinstance(cache._cache, OneServerClient)
    cache.set(key("restart"), "before")
    own_memcached.stop()
    # The first command finds its connection closed by the server, the next ones
    # find nobody listening.
    for _ in range(4):
        with pytest.raises((MemcacheUnexpectedCloseError, ConnectionRefusedError)):
            cache.get(key("restart"))
    own_memcached.start()
    assert cache.get(key("restart")) is None  # a new, empty memcached
    cache.set(key("restart"), "after")
    assert cache.get(key("restart")) == "after"


def test_ignore_exc_turns_every_commands_errors_into_misses_as_djangos_does(
    own_memcached: MemcachedServer, key: Key
) -> None:
    """ignore_exc keeps the meaning it has for Django's PyMemcacheCache: while the
    server is down, reads miss and writes fail quietly, whatever the command."""
    cache = caches(own_memcached.address, ignore_exc=True)["default"]
    own_memcached.stop()
    cache.set(key("quiet"), "value")
    assert cache.get(key("quiet"), "default") == "default"
    assert cache.add(key("quiet"), "value") is False
    assert cache.get_many([key("quiet")]) == {}
    assert cache.delete(key("quiet")) is False
    own_memcached.start()
    cache.set(key("quiet"), "value")
    assert cache.get(key("quiet")) == "value"


def test_several_servers_share_the_keys(
    memcached: MemcachedServer, own_memcached: MemcachedServer, key: Key
) -> None:
    """A LOCATION naming two servers gets greenpool's HashClient, a pool per
    server, and keys on both."""
    cache = caches(memcached.address, own_memcached.address)["default"]
    assert type(cache._cache) is HashClient
    cache.set_many({key(f"spread-{n}"): n for n in range(40)})
    assert cache.get_many([key(f"spread-{n}") for n in range(40)]) == {
        key(f"spread-{n}"): n for n in range(40)
    }
    assert int(own_memcached.stats()["curr_items"]) > 0
    assert all(pooled.pool_stats()["created"] >= 1 for pooled in cache._cache.clients.values())


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"max_pool_size": 0}, ValueError, "max_pool_size"),
        ({"pool_timeout": "5"}, TypeError, "pool_timeout"),
        ({"pool_options": {"maxsize": 3}}, TypeError, "max_pool_size"),
        ({"no_such_option": 1}, TypeError, "no_such_option"),
    ],
)
def test_bad_options_fail_when_the_backend_is_made(
    memcached: MemcachedServer, options: dict[str, Any], error: type[Exception], named: str
) -> None:
    """A bad OPTION is a TypeError or ValueError naming it, when Django makes the
    backend, before anything is sent."""
    with pytest.raises(error, match=named):
        caches(memcached.address, **options)["default"]


def test_pool_stats_is_public_per_server_and_the_same_from_any_thread(
    memcached: MemcachedServer, own_memcached: MemcachedServer, key: Key
) -> None:
    """backend.pool_stats() is {"host:port": that server's pool stats}, for one
    server or several; a metrics thread that never used the cache reads the same
    numbers, and builds no client of its own."""
    for servers in ([memcached.address], [memcached.address, own_memcached.address]):
        cache = caches(*servers)["default"]  # shared with other tests' alike: count from here
        asked = sum(pooled["keys_asked"] for pooled in cache.pool_stats().values())
        names = [key(f"{len(servers)}-{n}") for n in range(20)]
        cache.set_many(dict.fromkeys(names, 1))
        assert cache.get_many(names) == dict.fromkeys(names, 1)
        stats = cache.pool_stats()
        assert set(stats) == {f"{host}:{port}" for host, port in servers}
        assert sum(pooled["keys_asked"] for pooled in stats.values()) - asked == len(names)
        seen: list[Any] = []
        thread = threading.Thread(target=lambda: seen.append(cache.pool_stats()))  # noqa: B023
        thread.start()
        thread.join(10)
        assert seen == [stats]


def test_an_unresolvable_location_with_ignore_exc_shows_in_the_stats(key: Key) -> None:
    """LOCATION that does not resolve, ignore_exc: every get misses quietly, as
    Django's does, and the stats count each failed connect."""
    cache = caches(("no-such-host.invalid", 11211), ignore_exc=True, connect_timeout=0.5)["default"]
    assert [cache.get(key("k")) for _ in range(3)] == [None, None, None]
    stats = cache.pool_stats()["no-such-host.invalid:11211"]
    assert stats["connection_errors"] == stats["connect_errors"] == 3


def test_pool_stats_adds_up_the_pools_of_every_thread(memcached: MemcachedServer, key: Key) -> None:
    """Each OS thread has its own client: pool_stats() adds up the pools of every
    thread alive, per server (maxsize included: the most clients they may hold
    together)."""
    cache = caches(memcached.address, max_pool_size=3)["default"]
    cache.set(key("a"), 1)
    server = f"{memcached.host}:{memcached.port}"
    main = cache.pool_stats()[server]
    used, done = threading.Event(), threading.Event()

    def other_thread() -> None:
        for _ in range(4):
            cache.get(key("a"))
        used.set()
        done.wait(10)

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert used.wait(10)
        total = cache.pool_stats()[server]
    finally:
        done.set()
        thread.join(10)
    assert total["maxsize"] == 6 and total["reserves"] == main["reserves"] + 4
    assert total["keys_asked"] == main["keys_asked"] + 4
