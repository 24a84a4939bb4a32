"""The pool belongs to one OS thread's hub; other threads get a clear error."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import gevent
import pytest

from greenpool import ClientPool, PoolError
from tests.threads import in_another_thread

MakePool = Callable[..., ClientPool[Any]]


def test_another_thread_gets_a_clear_pool_error_and_nothing_hangs(make_pool: MakePool) -> None:
    pool = make_pool(2, name="threaded")
    with pool.reserve() as mc:
        mc.version()
    error = in_another_thread(lambda: pool.reserve(timeout=1).__enter__())
    assert isinstance(error, PoolError) and "'threaded' belongs to thread" in str(error)
    with pool.reserve() as mc:  # unharmed in its own thread
        assert mc.version()
    assert pool.stats()["in_use"] == 0


def test_a_pool_binds_to_the_first_thread_that_uses_it(make_pool: MakePool) -> None:
    """A pool built in one thread and used only in another works there."""
    pool = make_pool(1)
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(_version(pool)))
    thread.start()
    thread.join(10)
    assert results and results[0]
    with pytest.raises(PoolError, match="create one pool per thread"), pool.reserve():
        pass


def _version(pool: ClientPool[Any]) -> Any:
    with pool.reserve() as mc:
        return mc.version()


def test_the_idle_queue_is_built_by_the_thread_that_uses_the_pool(make_pool: MakePool) -> None:
    """The LifoQueue binds the hub of the thread that builds it: the pool builds
    it on first use, so a pool made in one thread and used in another binds the
    user's hub, not its maker's."""
    pool = make_pool(1)
    hubs: list[Any] = []

    def use() -> None:
        _version(pool)
        hubs.append(gevent.get_hub())

    assert pool._slots.queue is None  # not built by the maker
    thread = threading.Thread(target=use)
    thread.start()
    thread.join(10)
    assert hubs and pool._slots.queue is not None
    assert pool._slots.queue.hub is hubs[0] is not gevent.get_hub()
