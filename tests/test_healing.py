"""Bounded and self-healing: failures never lose a slot, and the pool recovers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent.event import Event

from greenpool import ClientPool, client_factory
from tests.memcached import MemcachedServer

Key = Callable[[str], str]


def test_a_failing_factory_does_not_lose_the_slot(memcached: MemcachedServer) -> None:
    """Factory errors (more of them than slots) leave every slot usable afterwards."""
    good = client_factory(memcached.address)
    failing = True

    def factory() -> Any:
        if failing:
            raise ConnectionRefusedError("memcached is down")
        return good()

    pool = ClientPool(factory, 2)
    for _ in range(5):
        with pytest.raises(ConnectionRefusedError), pool.reserve():
            pass
    assert pool.stats() | {"wait_ms": 0} == pool.stats() | {
        "size": 0, "in_use": 0, "idle": 0, "created": 0, "wait_ms": 0,
    }  # fmt: skip
    failing = False
    with pool.reserve() as a, pool.reserve() as b:
        assert a.version() and b.version()
    assert pool.stats()["size"] == 2


def test_a_factory_interrupted_while_creating_gives_its_slot_back(
    memcached: MemcachedServer,
) -> None:
    """A greenlet killed inside a slow factory returns the placeholder slot."""
    started = Event()
    good = client_factory(memcached.address)

    def slow_factory() -> Any:
        started.set()
        gevent.sleep(10)
        return good()

    pool = ClientPool(slow_factory, 1)
    job = gevent.spawn(lambda: pool.reserve().__enter__())
    started.wait(5)
    job.kill(timeout=5)
    assert pool.stats()["in_use"] == 0
    pool._factory = good  # the slot is free again: a fixed factory fills it
    with pool.reserve(block=False) as mc:
        assert mc.version()


def test_the_pool_recovers_after_memcached_restarts(
    own_memcached: MemcachedServer, key: Key
) -> None:
    """With the server down every operation fails fast and returns its client;
    once it is back, operations succeed with no slot lost."""
    pool = ClientPool(client_factory(own_memcached.address), 3, timeout=5)
    with pool.reserve() as mc:
        mc.set(key("a"), "1")
    own_memcached.stop()
    failures = 0
    started = time.monotonic()

    def attempt() -> None:
        nonlocal failures
        try:
            with pool.reserve() as mc:
                mc.get(key("a"))
        except (OSError, Exception):
            failures += 1

    gevent.joinall([gevent.spawn(attempt) for _ in range(20)], timeout=30)
    assert failures == 20 and time.monotonic() - started < 10
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["size"] <= 3
    assert stats["created"] - stats["discarded"] == stats["size"]
    own_memcached.start()
    with pool.reserve() as a, pool.reserve() as b, pool.reserve() as c:
        assert a.set(key("b"), "2", noreply=False) and b.get(key("b")) == b"2" and c.version()
    assert pool.stats()["in_use"] == 0
