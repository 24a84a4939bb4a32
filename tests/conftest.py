"""Fixtures: restartable memcached servers, a fault proxy, keys and pools.

The session-wide memcached lives in the root conftest.py, for doctests too.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from greenpool import ClientPool, GreenletMappedPool, PoolError, client_factory
from tests.memcached import MemcachedServer
from tests.nutcracker import Nutcracker
from tests.proxy import FaultProxy

_keys = itertools.count()


@pytest.fixture
def own_memcached() -> Iterator[MemcachedServer]:
    """A memcached this test alone uses, free to stop and restart."""
    server = MemcachedServer().start()
    yield server
    server.stop()


@pytest.fixture
def proxy_to() -> Iterator[Callable[[tuple[str, int]], FaultProxy]]:
    """Start fault proxies in front of any address; all stopped at teardown."""
    proxies: list[FaultProxy] = []

    def start(upstream: tuple[str, int]) -> FaultProxy:
        proxies.append(FaultProxy(upstream).start())
        return proxies[-1]

    yield start
    for fault_proxy in proxies:
        fault_proxy.stop()


@pytest.fixture
def proxy(memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy]) -> FaultProxy:
    """A fault proxy in front of the session memcached."""
    return proxy_to(memcached.address)


@pytest.fixture
def key() -> Callable[[str], str]:
    """Make keys no other test uses: key("x") -> "t17-x"."""
    prefix = f"t{next(_keys)}"
    return lambda name: f"{prefix}-{name}"


@pytest.fixture
def make_pool(memcached: MemcachedServer) -> Iterator[Callable[..., ClientPool[Any]]]:
    """Build pools against the session memcached (or *address*); all closed at teardown."""
    pools: list[ClientPool[Any]] = []

    def make(
        maxsize: int = 4, *, address: tuple[str, int] | None = None, **options: Any
    ) -> ClientPool[Any]:
        client_options = options.pop("client_options", {})
        factory = client_factory(address or memcached.address, **client_options)
        pool: ClientPool[Any] = ClientPool(factory, maxsize, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        with contextlib.suppress(PoolError):  # a pool another thread owns
            pool.close()


@pytest.fixture
def make_mapped(
    make_pool: Callable[..., ClientPool[Any]],
) -> Callable[..., GreenletMappedPool[Any]]:
    """Build GreenletMappedPools over pools from make_pool (same arguments)."""
    return lambda *args, **options: GreenletMappedPool(make_pool(*args, **options))


@pytest.fixture
def three_memcacheds() -> Iterator[list[MemcachedServer]]:
    """Three memcached processes this test alone uses (any may be stopped)."""
    started = [MemcachedServer().start() for _ in range(3)]
    yield started
    for server in started:
        if server.running():
            server.stop()


@pytest.fixture
def start_nutcracker(tmp_path: Path) -> Iterator[Callable[..., Nutcracker]]:
    """Start nutcracker processes in front of memcached addresses (keyword
    arguments are pool settings of its YAML); all stopped at teardown."""
    proxies: list[Nutcracker] = []

    def start(backends: list[tuple[str, int]], **settings: Any) -> Nutcracker:
        directory = tmp_path / f"nutcracker-{len(proxies)}"
        proxies.append(Nutcracker(backends, directory, **settings).start())
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.stop()
