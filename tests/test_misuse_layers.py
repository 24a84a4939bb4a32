"""Misuse of the layers over a pool changes nothing: an entry handed back twice or
to another pool, an empty iterable of keys, a call from another OS thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import gevent.socket
import pytest

import greenpool
from greenpool import AutoBatcher, ClientPool, PooledClient, PoolError
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.test_batching import busy
from tests.threads import in_another_thread

MakePool = Callable[..., ClientPool[Any]]
Key = Callable[[str], str]


def test_an_entry_taken_back_twice_is_refused_and_changes_nothing(make_pool: MakePool) -> None:
    """The second take_back raises; the pool never counts -1 in use, never lends
    one client to two callers, never makes more than maxsize."""
    pool = make_pool(2)
    entry = pool.lend()
    pool.take_back(entry)
    before = pool.stats()
    with pytest.raises(PoolError, match="not lent"):
        pool.take_back(entry)
    assert pool.stats() == before
    first, second, third = pool.lend(), pool.lend(), None
    with pytest.raises(PoolError):
        third = pool.lend(block=False)
    assert first.client is not second.client and third is None
    assert pool.stats()["size"] == 2
    pool.take_back(first)
    pool.take_back(second)


def test_an_entry_of_another_pool_is_refused(make_pool: MakePool) -> None:
    mine, theirs = make_pool(1), make_pool(1)
    entry = theirs.lend()
    with pytest.raises(PoolError, match="not lent"):
        mine.take_back(entry)
    assert (mine.stats()["idle"], mine.stats()["in_use"]) == (0, 0)
    theirs.take_back(entry)
    assert theirs.stats()["idle"] == 1


EMPTIES: dict[str, Callable[[], Any]] = {
    "iterator": lambda: iter([]),
    "generator": lambda: (k for k in ()),
    "map": lambda: map(str, []),
    "list": list,
}


@pytest.mark.parametrize("empty", list(EMPTIES))
@pytest.mark.parametrize("method", ["get_many", "gets_many"])
def test_an_empty_iterable_of_keys_returns_nothing_at_once_while_a_batch_is_in_flight(
    proxy: FaultProxy, key: Key, empty: str, method: str
) -> None:
    """It used to wait forever for keys that never joined."""
    mc = PooledClient(proxy.address)
    proxy.reply_delay = 0.3
    lone = busy(mc.get, proxy, key("a"))
    with gevent.Timeout(2):
        assert getattr(mc, method)(EMPTIES[empty]()) == {}
    lone.join(5)
    assert lone.dead


def test_a_stray_call_from_another_thread_is_refused_and_binds_nothing(
    memcached: MemcachedServer, key: Key
) -> None:
    """The pool belongs to the thread that used it first: a get from another thread
    raises PoolError, and the owner's gets keep working (the batcher used to bind
    to the stray thread and refuse its owner from then on)."""
    mc = PooledClient(memcached.address)
    assert mc.set(key("a"), b"1", noreply=False)
    error = in_another_thread(lambda: mc.get(key("a")))
    assert isinstance(error, PoolError)
    assert mc.get(key("a")) == b"1"
    assert mc.get_many([key("a")]) == {key("a"): b"1"}


def test_a_batcher_refuses_a_thread_its_pool_does_not_belong_to(
    make_pool: MakePool, key: Key
) -> None:
    pool = make_pool(2, name="owned")
    with pool.reserve() as mc:
        mc.set(key("a"), b"1", noreply=False)
    batcher = AutoBatcher(pool)
    error = in_another_thread(lambda: batcher.get(key("a")))
    assert isinstance(error, PoolError) and "'owned' belongs to thread" in str(error)
    assert batcher.get(key("a")) == b"1"


def test_a_batcher_over_clients_of_another_kind_refuses_pipelined_commands(
    memcached: MemcachedServer, key: Key
) -> None:
    """AutoBatcher.run needs greenpool Clients (their commands' readers); over a
    pool of plain pymemcache clients its gets still batch, and a pipelined
    command raises TypeError instead of leaving its caller without a result."""
    from pymemcache.client.base import Client as PlainClient

    pool: ClientPool[Any] = ClientPool(
        lambda: PlainClient(memcached.address, socket_module=gevent.socket), 2
    )
    batcher = AutoBatcher(pool)
    with pool.reserve() as mc:
        mc.set(key("a"), b"1", noreply=False)
    cmd, read = greenpool.Client(memcached.address).fetch_raw_op([key("a").encode()])
    lone = gevent.spawn(batcher.get, key("a"))  # in flight: the next two batch
    piped = gevent.spawn(batcher.run, cmd, read)
    batched = gevent.spawn(batcher.get, key("a"))
    gevent.joinall([lone, piped, batched], timeout=5)
    assert isinstance(piped.exception, TypeError)
    assert lone.value == b"1" and batched.value == b"1"
    with pytest.raises(TypeError, match="greenpool Clients"):
        batcher.run(cmd, read)  # alone, on a reserved client
