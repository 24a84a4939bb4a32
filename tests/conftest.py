"""Fixtures: a real memcached per session, restartable ones per test, a fault proxy."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from greenpool import ClientPool, client_factory
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy

_keys = itertools.count()


@pytest.fixture(scope="session")
def memcached() -> Iterator[MemcachedServer]:
    """One memcached for the whole session; tests use their own keys."""
    server = MemcachedServer().start()
    yield server
    server.stop()


@pytest.fixture
def own_memcached() -> Iterator[MemcachedServer]:
    """A memcached this test alone uses, free to stop and restart."""
    server = MemcachedServer().start()
    yield server
    server.stop()


@pytest.fixture
def proxy(memcached: MemcachedServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session memcached."""
    fault_proxy = FaultProxy(memcached.address).start()
    yield fault_proxy
    fault_proxy.stop()


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
        pool.close()


@pytest.fixture(scope="session")
def memcached_address(memcached: MemcachedServer) -> tuple[str, int]:
    return memcached.address


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give doctests a live memcached (also as $MEMCACHED, as README.rst reads it)."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    import greenpool

    address = request.getfixturevalue("memcached_address")
    monkeypatch.setenv("MEMCACHED", f"{address[0]}:{address[1]}")
    request.getfixturevalue("doctest_namespace").update(
        memcached_address=address,
        client_factory=client_factory,
        ClientPool=ClientPool,
        greenpool=greenpool,
    )
