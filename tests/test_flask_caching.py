"""greenpool.flask_caching.MemcachedCache, under Flask-Caching's own tests and ours.

Flask-Caching's ``tests/test_backend_cache.py`` (from the sdist of the version
installed, see tests/sdist.py) holds ``GenericCacheTests``, which every
backend passes, and ``TestMemcachedCache``, its memcached backend's own tests
on top of them. :class:`TestFlaskCachingsOwnTests` runs all of those with the
backend made by Flask-Caching from CACHE_TYPE, on one server and on two. Only
the fixtures that start pylibmc's memcached on a fixed port are replaced.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from flask import Flask
from flask_caching import Cache

from greenpool.flask_caching import MemcachedCache
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.sdist import sdist_files

BACKEND = "greenpool.flask_caching.MemcachedCache"
Key = Callable[[str], str]


def _flask_cachings_tests() -> Any:
    path = sdist_files("Flask-Caching", ["tests/test_backend_cache.py"]) / "tests"
    spec = importlib.util.spec_from_file_location(
        "flask_caching_test_backend_cache", path / "test_backend_cache.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


theirs = _flask_cachings_tests()


def flask_cache(servers: list[MemcachedServer] | list[str], **config: Any) -> MemcachedCache:
    """The backend Flask-Caching builds for an app configured with *servers* and *config*."""
    app = Flask(__name__)
    app.config.update(
        CACHE_TYPE=BACKEND,
        CACHE_MEMCACHED_SERVERS=[
            s if isinstance(s, str) else f"{s.host}:{s.port}" for s in servers
        ],
        **config,
    )
    cache = Cache(app)
    backend: MemcachedCache = app.extensions["cache"][cache]
    return backend


@pytest.fixture(scope="module")
def two_memcached() -> Iterator[list[MemcachedServer]]:
    """Two memcached servers of this module's own: Flask-Caching's tests flush them."""
    servers = [MemcachedServer().start() for _ in range(2)]
    yield servers
    for server in servers:
        server.stop()


class TestFlaskCachingsOwnTests(theirs.TestMemcachedCache):  # type: ignore[misc]
    """Flask-Caching's GenericCacheTests and memcached tests, on greenpool's backend."""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def requirements(cls) -> None:
        """Theirs starts a memcached for pylibmc on port 11212; ours are above."""

    @pytest.fixture
    def clock(self) -> None:
        """Theirs fakes cachelib's clock, which memcached does not read: the
        memcached tests sleep for real (``_can_use_fast_sleep = False``)."""

    @pytest.fixture(params=[1, 2], ids=["one server", "two servers"])
    def make_cache(
        self, request: pytest.FixtureRequest, two_memcached: list[MemcachedServer]
    ) -> Iterator[Callable[[], MemcachedCache]]:
        backend = flask_cache(
            two_memcached[: request.param], CACHE_KEY_PREFIX="werkzeug-test-case:"
        )
        yield lambda: backend
        backend.clear()


def test_inc_and_dec_are_atomic_under_concurrent_greenlets(
    memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """cachelib's inc and dec are a get then a set, so concurrent changes get lost.
    Ours are not: 40 greenlets adding 1 five times each (memcached's incr) end at
    200, every new value returned once; 10 subtracting 1 five times each (gets and
    cas, since cachelib's dec goes below zero) end at -50."""
    proxy = proxy_to(memcached.address)
    proxy.reply_delay = 0.002  # so the greenlets' commands interleave
    cache = flask_cache([f"{proxy.address[0]}:{proxy.address[1]}"], CACHE_KEY_PREFIX=key(""))
    returned: list[int | None] = []

    def add_five() -> None:
        returned.extend(cache.inc("counter") for _ in range(5))

    gevent.joinall([gevent.spawn(add_five) for _ in range(40)], timeout=60, raise_error=True)
    assert cache.get("counter") == 200
    assert sorted(returned) == list(range(1, 201))  # type: ignore[type-var]
    returned.clear()

    def subtract_five() -> None:
        returned.extend(cache.dec("below") for _ in range(5))

    gevent.joinall([gevent.spawn(subtract_five) for _ in range(10)], timeout=60, raise_error=True)
    assert cache.get("below") == -50
    assert sorted(returned) == list(range(-50, 0))  # type: ignore[type-var]


def test_after_a_caught_timeout_the_next_read_gets_its_own_value(
    proxy: FaultProxy, key: Key
) -> None:
    """A get cut off by gevent.Timeout never leaves its reply for the next caller."""
    cache = flask_cache([f"{proxy.address[0]}:{proxy.address[1]}"], CACHE_KEY_PREFIX=key(""))
    cache.set("alice", {"owner": "alice"})
    cache.set("bob", {"owner": "bob"})
    proxy.reply_delay = 0.05
    with pytest.raises(gevent.Timeout), gevent.Timeout(0.01):
        cache.get("alice")
    proxy.reply_delay = 0
    assert cache.get("bob") == {"owner": "bob"}


def test_apps_with_the_same_settings_share_one_client_per_thread(
    memcached: MemcachedServer, key: Key
) -> None:
    """Two apps configured alike share one client; another OS thread (a threaded
    WSGI server's) gets its own, since a pool belongs to one thread's hub."""
    first = flask_cache([memcached], CACHE_KEY_PREFIX=key(""))
    second = flask_cache([memcached], CACHE_KEY_PREFIX=key(""))
    assert first.client is second.client
    first.set("shared", "value")
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.extend([first.client, first.get("shared")]))
    thread.start()
    thread.join(10)
    assert results[0] is not first.client and results[1] == "value"


@pytest.mark.parametrize(
    ("config", "error", "named"),
    [
        ({"CACHE_MEMCACHED_SERVERS": 11211}, TypeError, "CACHE_MEMCACHED_SERVERS"),
        ({"CACHE_OPTIONS": {"max_pool_size": 0}}, ValueError, "max_pool_size"),
        ({"CACHE_OPTIONS": {"pool_size": 2, "max_pool_size": 2}}, TypeError, "pool_size"),
        ({"CACHE_OPTIONS": {"memcache_client_lib": "pylibmc"}}, ValueError, "memcache_client_lib"),
        ({"CACHE_OPTIONS": {"no_such_option": 1}}, TypeError, "no_such_option"),
    ],
)
def test_bad_settings_fail_when_the_app_is_set_up(
    memcached: MemcachedServer, config: dict[str, Any], error: type[Exception], named: str
) -> None:
    """A bad setting is a TypeError or ValueError naming it, raised by Cache(app)."""
    app = Flask(__name__)
    app.config.update(
        CACHE_TYPE=BACKEND, CACHE_MEMCACHED_SERVERS=[f"{memcached.host}:{memcached.port}"]
    )
    app.config.update(config)
    with pytest.raises(error, match=named):
        Cache(app)


def test_pool_settings_of_cachelib_map_to_greenpools(memcached: MemcachedServer) -> None:
    """cachelib's pool_size is max_pool_size; pool_blocking=False fails at once
    when the pool is busy (pool_timeout=0)."""
    cache = flask_cache([memcached], CACHE_OPTIONS={"pool_size": 3, "pool_blocking": False})
    (pooled,) = cache.client.clients.values()
    assert (pooled.max_pool_size, pooled.pool_timeout) == (3, 0)


def test_inc_and_dec_at_the_64_bit_edge_give_what_cachelibs_backend_gives(
    memcached: MemcachedServer, key: Key
) -> None:
    """cachelib adds in Python, so inc past 2**64 - 1 goes on to 2**64 where memcached's
    incr would wrap to 0; greenpool's inc gives cachelib's numbers (its own stock
    backend on python-memcached, run beside it) and stores them."""
    import cachelib

    ours = flask_cache([memcached], CACHE_KEY_PREFIX=key("ours-"))
    stock = cachelib.MemcachedCache(
        [f"{memcached.host}:{memcached.port}"], key_prefix=key("stock-")
    )
    steps: list[tuple[str, int]] = [
        ("inc", 1), ("inc", 1), ("dec", 2), ("dec", 2**64), ("inc", 2**65), ("inc", -3),
    ]  # fmt: skip
    for backend in (ours, stock):
        backend.set("n", 2**64 - 1)
    for method, delta in steps:
        assert getattr(ours, method)("n", delta) == getattr(stock, method)("n", delta), method
        assert ours.get("n") == stock.get("n")


def test_pool_stats_is_public_per_server_and_the_same_from_any_thread(
    memcached: MemcachedServer, key: Key
) -> None:
    """backend.pool_stats() is {"host:port": that server's pool stats}; a metrics
    thread that never used the cache reads the same numbers."""
    cache = flask_cache([memcached], CACHE_KEY_PREFIX=key(""))
    assert cache.set("a", 1) and cache.get("a") == 1
    stats = cache.pool_stats()
    assert list(stats) == [f"{memcached.host}:{memcached.port}"]
    (pooled,) = stats.values()
    assert pooled["reserves"] >= 2 and pooled["in_use"] == 0
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(cache.pool_stats()))
    thread.start()
    thread.join(10)
    assert seen == [stats]
