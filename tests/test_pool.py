"""ClientPool's everyday contract, against a real memcached."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import gevent.queue
import pytest
from gevent.event import Event
from pymemcache.client.base import Client

import greenpool
from greenpool import ClientPool, PoolClosed, PoolTimeout, client_factory
from tests.memcached import MemcachedServer
from tests.waiting import wait_until

MakePool = Callable[..., ClientPool[Any]]


def test_reserve_lends_a_working_client(make_pool: MakePool, key: Callable[[str], str]) -> None:
    """A reserved client talks to memcached, and goes back when the block ends."""
    pool = make_pool()
    with pool.reserve() as mc:
        assert mc.set(key("a"), "1")
        assert mc.get(key("a")) == b"1"
        assert pool.stats()["in_use"] == 1
    assert pool.stats()["in_use"] == 0


def test_clients_are_created_only_when_none_is_idle(make_pool: MakePool) -> None:
    """Sequential reservations reuse one client; only overlapping ones create more."""
    pool = make_pool(4)
    for _ in range(5):
        with pool.reserve() as mc:
            mc.version()
    assert pool.stats()["created"] == 1
    with pool.reserve(), pool.reserve():
        pass
    assert pool.stats()["created"] == 2
    assert pool.stats()["size"] == 2


def test_the_most_recently_returned_client_is_reused_first(make_pool: MakePool) -> None:
    """LIFO: the warmest client comes out first, cold ones stay at the bottom."""
    pool = make_pool(3)
    with pool.reserve() as first, pool.reserve() as second:
        pass  # second is returned first, then first
    with pool.reserve() as again:
        assert again is first
    with pool.reserve() as a, pool.reserve() as b:
        assert (a, b) == (first, second)


def test_idle_clients_live_in_a_gevent_lifo_queue_the_warmest_on_top(make_pool: MakePool) -> None:
    """The design's storage: a gevent.queue.LifoQueue holds exactly the idle
    clients, the one returned last on top, and its top is what is lent next."""
    pool = make_pool(3)
    with pool.reserve() as first, pool.reserve() as second:
        pass  # second goes back first, then first: first is on top
    queue = pool._slots.queue
    assert isinstance(queue, gevent.queue.LifoQueue)
    assert queue.qsize() == pool.stats()["idle"] == 2
    assert queue.peek_nowait().client is first
    with pool.reserve() as mc:
        assert mc is first
        assert queue.qsize() == 1 and queue.peek_nowait().client is second


def test_the_queue_counts_no_unfinished_tasks_after_100_000_reservations(
    make_pool: MakePool,
) -> None:
    """Since gevent 24.10 a LifoQueue counts an unfinished task per put; the
    pool's puts and takes must not pile those up (nor its join() block)."""
    pool = make_pool(2)
    for _ in range(50_000):
        with pool.reserve(), pool.reserve():
            pass
    queue = pool._slots.queue
    assert pool.stats()["reserves"] == 100_000 and queue.qsize() == 2
    assert queue.unfinished_tasks == 0
    assert queue.join(timeout=0)


def test_never_more_than_maxsize_clients_or_connections(
    make_pool: MakePool, memcached: MemcachedServer, key: Callable[[str], str]
) -> None:
    """200 greenlets on a pool of 4 create at most 4 clients and 4 connections."""
    before = memcached.stats()["total_connections"]
    pool = make_pool(4, timeout=30)
    peak = 0

    def work(i: int) -> None:
        nonlocal peak
        for _ in range(5):
            with pool.reserve() as mc:
                peak = max(peak, pool.stats()["size"])
                mc.set(key(str(i)), str(i))
                assert mc.get(key(str(i))) == str(i).encode()

    jobs = [gevent.spawn(work, i) for i in range(200)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert all(job.successful() for job in jobs)
    stats = pool.stats()
    assert peak <= 4 and stats["created"] == 4 and stats["in_use"] == 0
    # +1 for the stats() connection itself
    assert memcached.stats()["total_connections"] - before <= 4 + 1


def test_waiters_are_served_in_arrival_order(make_pool: MakePool) -> None:
    """When the one client comes back, the greenlet that waited longest gets it."""
    pool = make_pool(1)
    served: list[int] = []

    def wait_turn(i: int) -> None:
        with pool.reserve():
            served.append(i)

    with pool.reserve():
        waiters = [gevent.spawn(wait_turn, i) for i in range(5)]
        wait_until(lambda: pool.stats()["waiting"] == 5, "the five have queued")
    gevent.joinall(waiters, timeout=5, raise_error=True)
    assert served == [0, 1, 2, 3, 4]


def test_a_looping_holder_cannot_starve_a_waiter(make_pool: MakePool) -> None:
    """Release-then-reserve in a loop does not barge past a queued waiter.

    gevent's LifoQueue fails this: put() only schedules the waiter's wake-up and
    the looping greenlet's next get() takes the client back first.
    """
    pool = make_pool(1)
    served_at: list[int] = []  # the hog's iteration when the waiter got the client
    iterations = 0
    queued = Event()

    def hog() -> None:
        nonlocal iterations
        for _ in range(300):
            with pool.reserve() as mc:
                queued.set()
                mc.version()
            iterations += 1

    def waiter() -> None:
        queued.wait(5)
        with pool.reserve(timeout=2):
            served_at.append(iterations)

    hog_job = gevent.spawn(hog)
    waiter_job = gevent.spawn(waiter)
    gevent.joinall([hog_job, waiter_job], timeout=30, raise_error=True)
    assert waiter_job.successful() and hog_job.successful()
    assert served_at and served_at[0] < 5  # served at once, not after the hog's 300


def test_block_false_raises_pool_timeout_at_once(make_pool: MakePool) -> None:
    """With block=False and no free client, PoolTimeout comes without waiting."""
    pool = make_pool(1)
    with pool.reserve():
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match="block=False"), pool.reserve(block=False):
            pass
        assert time.monotonic() - started < 0.1
    assert pool.stats()["timeouts"] == 1
    with pool.reserve(block=False) as mc:
        assert mc.version()


def test_a_positive_timeout_waits_that_long_then_raises(make_pool: MakePool) -> None:
    """reserve(timeout=t) gives up after about t seconds with PoolTimeout."""
    pool = make_pool(1, name="small")
    with pool.reserve():
        started = time.monotonic()
        with pytest.raises(PoolTimeout, match=r"'small'.*timeout=0.2"), pool.reserve(timeout=0.2):
            pass
        elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 2.0
    stats = pool.stats()
    assert (stats["timeouts"], stats["waits"], stats["waiting"], stats["in_use"]) == (1, 1, 0, 0)
    assert stats["wait_ms"] >= 150


def test_the_default_timeout_is_the_pools_and_finite(make_pool: MakePool) -> None:
    """timeout=None means the pool's timeout, which defaults to a finite 5 s."""
    assert greenpool.DEFAULT_TIMEOUT == 5.0
    assert math.isfinite(ClientPool(lambda: None).timeout)
    pool = make_pool(1, timeout=0.1)
    with pool.reserve(), pytest.raises(PoolTimeout, match=r"timeout=0\.1"), pool.reserve():
        pass


def test_waiting_is_cooperative(make_pool: MakePool) -> None:
    """Other greenlets keep running while one waits for a client."""
    pool = make_pool(1)
    ticks = 0

    def ticker() -> None:
        nonlocal ticks
        for _ in range(20):
            ticks += 1
            gevent.sleep(0.005)

    with pool.reserve():
        job = gevent.spawn(ticker)
        with pytest.raises(PoolTimeout), pool.reserve(timeout=0.3):
            pass
    job.join(5)
    assert ticks == 20


def test_close_closes_idle_now_and_reserved_on_return(make_pool: MakePool) -> None:
    """After close(): idle clients are closed, lent ones when they return, reserve fails."""
    pool = make_pool(2, name="closing")
    with pool.reserve() as idle_one:
        idle_one.version()
    with pool.reserve() as lent:
        assert lent is idle_one
        with pool.reserve() as other:
            other.version()
        lent.version()
        pool.close()
        assert other.sock is None  # it was idle
        assert lent.sock is not None  # still usable inside its block
        assert lent.version()
    assert lent.sock is None
    assert pool.stats()["size"] == 0 and pool.stats()["in_use"] == 0
    assert pool.stats()["discarded"] == 2
    with pytest.raises(PoolClosed, match="'closing' is closed"), pool.reserve():
        pass
    pool.close()  # twice is harmless


def test_close_wakes_waiters_with_pool_closed(make_pool: MakePool) -> None:
    pool = make_pool(1)
    with pool.reserve():
        waiter = gevent.spawn(lambda: pool.reserve(timeout=5).__enter__())
        wait_until(lambda: pool.stats()["waiting"] == 1, "the waiter has queued")
        pool.close()
        waiter.join(5)
        assert isinstance(waiter.exception, PoolClosed)
    assert pool.stats()["in_use"] == 0


def test_the_pool_is_a_context_manager_that_closes(memcached: MemcachedServer) -> None:
    with ClientPool(client_factory(memcached.address), 2) as pool, pool.reserve() as mc:
        mc.version()
    assert pool.closed


def test_fill_precreates_clients_configured_like_the_given_one(
    make_pool: MakePool, memcached: MemcachedServer, key: Callable[[str], str]
) -> None:
    """fill() builds equivalent clients (same server and settings) as idle slots."""
    pool = make_pool(4)
    template = Client(memcached.address, key_prefix=key("p:"), socket_module=greenpool._socket)
    pool.fill(template, 3)
    assert pool.stats()["idle"] == 3 and pool.stats()["size"] == 3
    with pool.reserve() as mc:
        assert mc is not template
        assert mc.key_prefix == template.key_prefix
        mc.set("k", "v", noreply=False)  # else the read below may overtake it
    assert Client(memcached.address).get(key("p:") + "k") == b"v"
    with pytest.raises(ValueError, match="n_slots=2 exceeds the 1 clients"):
        pool.fill(None, 2)
    pool.fill(None, 1)
    assert pool.stats()["created"] == 4


def test_fill_rejects_what_it_cannot_clone(make_pool: MakePool) -> None:
    pool = make_pool(2)
    with pytest.raises(TypeError, match="client must be a pymemcache Client"):
        pool.fill(object(), 1)
    with pytest.raises(TypeError, match="n_slots must be an int"):
        pool.fill(None, "2")  # type: ignore[arg-type]
    assert pool.stats()["size"] == 0


def test_stats_has_every_documented_key(make_pool: MakePool) -> None:
    """stats() has exactly the PoolStats keys, all documented in docs/operations.rst."""
    pool = make_pool(3)
    with pool.reserve():
        stats = pool.stats()
    assert set(stats) == set(greenpool.PoolStats.__annotations__)
    readme = (Path(__file__).parent.parent / "docs" / "operations.rst").read_text()
    assert [k for k in stats if f"``{k}``" not in readme] == []
    gauges = {k: stats[k] for k in ("maxsize", "size", "idle", "in_use", "waiting")}  # type: ignore[literal-required]
    assert gauges == {"maxsize": 3, "size": 1, "idle": 0, "in_use": 1, "waiting": 0}
    assert (stats["created"], stats["discarded"], stats["reserves"]) == (1, 0, 1)
    discards = sum(v for k, v in stats.items() if k.startswith("discarded_"))
    assert discards == stats["discarded"] == 0


def test_disconnect_idle_drops_idle_connections_only(
    make_pool: MakePool, key: Callable[[str], str]
) -> None:
    """Idle clients lose their connection and reconnect on use; lent ones keep theirs."""
    pool = make_pool(2, check_after_idle=0)  # a check would reconnect: it must not run
    first, second = pool.reserve(), pool.reserve()
    idle_one, lent = first.__enter__(), second.__enter__()
    assert idle_one.version() and lent.version()
    first.__exit__(None, None, None)
    pool.disconnect_idle()
    assert lent.sock is not None
    second.__exit__(None, None, None)
    assert idle_one.sock is None
    stats = pool.stats()
    assert (stats["size"], stats["discarded"], stats["reserves"]) == (2, 0, 2)
    with pool.reserve() as mc:
        assert mc.set(key("after"), "1", noreply=False)


def test_a_waiter_killed_after_being_handed_a_client_passes_it_on(make_pool: MakePool) -> None:
    """The hand-off race: the waiter's kill is already scheduled when the client
    is handed to it, so it wakes into GreenletExit holding a slot it must pass on."""
    pool = make_pool(1)
    served: list[bool] = []

    def wait_for_a_client() -> None:
        with pool.reserve(timeout=5):
            served.append(True)

    holder = pool.reserve()
    holder.__enter__()
    waiter = gevent.spawn(wait_for_a_client)
    wait_until(lambda: pool.stats()["waiting"] == 1, "the waiter has queued")
    waiter.kill(block=False)  # the throw is scheduled first...
    holder.__exit__(None, None, None)  # ...then the client is handed over
    waiter.join(5)
    assert waiter.dead and served == []
    assert pool.stats()["in_use"] == 0
    with pool.reserve(block=False) as mc:
        assert mc.version()
