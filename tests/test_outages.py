"""What an operator sees when memcached misbehaves: the pool's counters, and errors
that name the server.

The faults are real: a port nothing listens on (refused), a name that does not
resolve, a listening socket whose accept queue is full (its connects time out),
a FaultProxy that holds replies (a command times out) and a value memcached
refuses (``SERVER_ERROR``). Every error is compared with what pymemcache's own
``Client`` raises in the same fault: the same class and errno, so existing
``except`` clauses keep working, and only ours names the server.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import gevent.socket
import port_for
import pytest
from pymemcache.client.base import Client as PymemcacheClient

from greenpool import ClientPool, GreenletMappedPool, HashClient, PooledClient, client_factory
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy

Key = Callable[[str], str]
TIMEOUTS = {"connect_timeout": 0.2, "timeout": 0.2}
UNRESOLVABLE = ("no-such-host.invalid", 11211)


@pytest.fixture
def refusing() -> tuple[str, int]:
    """A loopback port nothing listens on: every connect is refused."""
    return ("127.0.0.1", port_for.select_random())


@pytest.fixture
def full_backlog() -> Iterator[tuple[str, int]]:
    """A loopback port that listens but never accepts, its one-connection queue
    taken: every further connect times out (the kernel drops its SYN)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    queued = socket.create_connection(address, timeout=2)
    yield address
    queued.close()
    listener.close()


def _where(address: tuple[str, int]) -> str:
    return f"{address[0]}:{address[1]}"


@pytest.fixture(params=["refused", "unresolvable", "connect timeout"])
def unreachable(request: pytest.FixtureRequest) -> tuple[str, int]:
    """An address whose connects fail in one of the three ways."""
    if request.param == "refused":
        address: tuple[str, int] = request.getfixturevalue("refusing")
        return address
    if request.param == "unresolvable":
        return UNRESOLVABLE
    address = request.getfixturevalue("full_backlog")
    return address


# -- counters --------------------------------------------------------------------------


def _greenpool_clients(address: tuple[str, int]) -> tuple[Callable[[str], Any], Any]:
    mc = PooledClient(address, autobatch=False, **TIMEOUTS)
    return mc.get, mc.pool_stats


def _batched_greenpool_clients(address: tuple[str, int]) -> tuple[Callable[[str], Any], Any]:
    mc = PooledClient(address, autobatch=True, **TIMEOUTS)
    return mc.get, mc.pool_stats


def _mapped_greenpool_clients(address: tuple[str, int]) -> tuple[Callable[[str], Any], Any]:
    mapped = GreenletMappedPool(ClientPool(client_factory(address, **TIMEOUTS)))

    def get(key: str) -> Any:
        with mapped.reserve() as mc:
            return mc.get(key)

    return get, mapped.stats


def _pymemcache_clients(address: tuple[str, int]) -> tuple[Callable[[str], Any], Any]:
    pool: ClientPool[Any] = ClientPool(
        lambda: PymemcacheClient(address, socket_module=gevent.socket, **TIMEOUTS)
    )

    def get(key: str) -> Any:
        with pool.reserve() as mc:
            return mc.get(key)

    return get, pool.stats


def _connecting_factory(address: tuple[str, int]) -> tuple[Callable[[str], Any], Any]:
    """A factory that connects its client before handing it to the pool."""
    make = client_factory(address, **TIMEOUTS)

    def connected() -> Any:
        client = make()
        client.version()
        return client

    pool: ClientPool[Any] = ClientPool(connected)

    def get(key: str) -> Any:
        with pool.reserve() as mc:
            return mc.get(key)

    return get, pool.stats


@pytest.mark.parametrize(
    "clients",
    [
        _greenpool_clients,
        _batched_greenpool_clients,
        _mapped_greenpool_clients,
        _pymemcache_clients,
        _connecting_factory,
    ],
    ids=["PooledClient", "autobatching", "mapped", "pymemcache Client", "connecting factory"],
)
def test_every_failed_connect_counts_as_a_connection_error(
    unreachable: tuple[str, int], clients: Callable[..., Any], key: Key
) -> None:
    """Five gets that cannot connect (refused, unresolvable, timed out) are five
    connection_errors, whatever client the pool holds; for greenpool's clients
    and factories that connect, five connect_errors too."""
    get, stats = clients(unreachable)
    for _ in range(5):
        with pytest.raises(OSError):
            get(key("k"))
    counted = stats()
    assert counted["connection_errors"] == 5
    if clients is not _pymemcache_clients:
        assert counted["connect_errors"] == 5
    assert counted["in_use"] == 0


# -- errors that name the server -----------------------------------------------------------


def _raised(call: Callable[[], Any]) -> BaseException:
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("nothing was raised")


def _same_kind(ours: BaseException, theirs: BaseException) -> None:
    assert type(ours) is type(theirs), (ours, theirs)
    assert getattr(ours, "errno", None) == getattr(theirs, "errno", None)


def test_a_failed_connect_names_the_server_and_keeps_its_type(
    unreachable: tuple[str, int], key: Key
) -> None:
    """Refused, unresolvable, timed out: the OSError that reaches the application is
    pymemcache's own class with its own errno, and says which server it was."""
    mc = PooledClient(unreachable, autobatch=False, **TIMEOUTS)
    ours = _raised(lambda: mc.get(key("k")))
    theirs = _raised(
        lambda: PymemcacheClient(unreachable, socket_module=gevent.socket, **TIMEOUTS).get("k")
    )
    _same_kind(ours, theirs)
    assert _where(unreachable) in str(ours)
    assert _where(unreachable) not in str(theirs)
    if ours.__cause__ is not None:  # else greenpool's own: its connect_timeout, resolution included
        assert type(ours.__cause__) is type(ours) and str(ours.__cause__) == str(theirs)


def test_a_command_timeout_names_the_server_and_keeps_its_type(proxy: FaultProxy, key: Key) -> None:
    """A reply slower than *timeout*: pymemcache's TimeoutError, naming the server."""
    proxy.reply_delay = 0.5
    mc = PooledClient(proxy.address, autobatch=False, **TIMEOUTS)
    ours = _raised(lambda: mc.get(key("k")))
    theirs = _raised(
        lambda: PymemcacheClient(proxy.address, socket_module=gevent.socket, **TIMEOUTS).get("k")
    )
    _same_kind(ours, theirs)
    assert _where(proxy.address) in str(ours) and _where(proxy.address) not in str(theirs)
    assert mc.pool_stats()["connection_errors"] == 1


def test_a_server_error_names_the_server_and_keeps_its_type(
    memcached: MemcachedServer, key: Key
) -> None:
    """A value over memcached's item size: pymemcache's MemcacheServerError, its
    message kept, the server named."""
    too_large = b"x" * (2 << 20)
    mc = PooledClient(memcached.address, **TIMEOUTS)
    ours = _raised(lambda: mc.set(key("big"), too_large, noreply=False))
    theirs = _raised(
        lambda: PymemcacheClient(memcached.address, socket_module=gevent.socket).set(
            key("big"), too_large, noreply=False
        )
    )
    _same_kind(ours, theirs)
    assert str(theirs).strip("b'") in str(ours)
    assert _where(memcached.address) in str(ours)


def test_a_clusters_error_names_the_server_that_failed(
    three_memcacheds: list[MemcachedServer], key: Key
) -> None:
    """HashClient over three servers, one stopped: the error of a key on it names
    that server, and no other."""
    servers = three_memcacheds
    cluster = HashClient([s.address for s in servers], **TIMEOUTS)
    stopped = _where(servers[1].address)
    mine = next(k for k in map(key, map(str, range(100))) if cluster.hasher.get_node(k) == stopped)
    servers[1].stop()
    error = _raised(lambda: cluster.get(mine))
    assert isinstance(error, ConnectionRefusedError)
    assert stopped in str(error)
    assert all(_where(s.address) not in str(error) for s in (servers[0], servers[2]))
