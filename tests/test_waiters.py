"""How waiting works under load: one shared deadline timer, batched wake-ups.

The everyday contract (arrival order, timeouts, close, kills) is in
test_pool.py; these tests pin down what the cheaper mechanism must not change.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent.event import Event

from greenpool import ClientPool, PoolTimeout
from tests.waiting import wait_until

MakePool = Callable[..., ClientPool[Any]]


def _wait_for_timeout(pool: ClientPool[Any], timeout: float | None = None) -> float:
    """Reserve from *pool*, expecting PoolTimeout; return how long it took."""
    started = time.monotonic()
    with pytest.raises(PoolTimeout), pool.reserve(timeout=timeout):
        pass
    return time.monotonic() - started


def test_waiters_sharing_the_deadline_timer_each_time_out_on_their_own_time(
    make_pool: MakePool,
) -> None:
    """Five waiters queued 0.1 s apart, all with the pool's timeout of 0.3 s,
    share one timer: each still gives up 0.3 s after it began, no sooner, and
    not at its elders' time."""
    pool = make_pool(1, timeout=0.3)
    with pool.reserve():
        jobs = []
        for _ in range(5):
            jobs.append(gevent.spawn(_wait_for_timeout, pool))
            gevent.sleep(0.1)
        gevent.joinall(jobs, timeout=10, raise_error=True)
    waited = [job.value for job in jobs]
    assert all(0.3 <= w < 1.0 for w in waited), waited
    stats = pool.stats()
    assert (stats["timeouts"], stats["waiting"], stats["in_use"]) == (5, 0, 0)
    assert pool._slots.waiters._timer is None  # nothing left to keep the hub's loop alive


def test_a_shorter_timeout_behind_a_longer_one_times_out_on_its_own_time(
    make_pool: MakePool,
) -> None:
    """A wait whose deadline is earlier than one queued before it (out of the
    shared timer's order) still gives up on time, and the elder keeps waiting."""
    pool = make_pool(1, timeout=30)
    holder = pool.reserve()
    holder.__enter__()
    elder = gevent.spawn(lambda: pool.reserve().__enter__())
    wait_until(lambda: pool.stats()["waiting"] == 1, "the elder has queued")
    assert 0.15 <= _wait_for_timeout(pool, timeout=0.2) < 2.0
    assert pool.stats()["waiting"] == 1 and not elder.dead
    holder.__exit__(None, None, None)
    elder.join(5)
    assert elder.successful()


def test_a_waiter_served_early_leaves_no_expiry_for_the_next(make_pool: MakePool) -> None:
    """The shared timer, set for a waiter that was served long before its
    deadline, still fires then: it must expire no one whose own time is not up."""
    pool = make_pool(1, timeout=0.3)
    holder = pool.reserve()
    holder.__enter__()
    release = Event()

    def hold_until_released() -> None:
        with pool.reserve():
            release.wait(5)

    def reserve_once() -> None:
        with pool.reserve(timeout=2):
            pass

    started = time.monotonic()
    first = gevent.spawn(hold_until_released)  # the timer is set for its deadline
    wait_until(lambda: pool.stats()["waiting"] == 1, "the first has queued")
    second = gevent.spawn(reserve_once)  # a later deadline: the same timer's
    wait_until(lambda: pool.stats()["waiting"] == 2, "the second has queued")
    holder.__exit__(None, None, None)  # the first is served at once
    while time.monotonic() < started + 0.6:  # the timer fired at the first's deadline
        gevent.sleep(0.05)
    assert pool.stats()["waiting"] == 1 and not second.dead
    release.set()
    gevent.joinall([first, second], timeout=5, raise_error=True)
    assert pool.stats()["timeouts"] == 0


class _Interrupt(Exception):
    pass


def test_a_waiter_interrupted_after_its_hand_off_gets_no_late_wake_up(
    make_pool: MakePool,
) -> None:
    """Three waiters are handed slots at once and woken by one hub callback. The
    middle one, interrupted after its hand-off, passes its slot on and goes on
    to wait for something else: the shared wake-up must not switch into that
    other wait (gevent would raise InvalidSwitchError there)."""
    pool = make_pool(1)
    holder = pool.reserve()
    holder.__enter__()
    served: list[int] = []
    after: list[object] = []
    never = Event()

    def wait_turn(i: int) -> None:
        try:
            with pool.reserve(timeout=5):
                served.append(i)
                gevent.sleep(0.05)
        except _Interrupt:
            after.append(never.wait(0.2))  # False: its timeout, nothing else

    waiters = [gevent.spawn(wait_turn, i) for i in range(3)]
    wait_until(lambda: pool.stats()["waiting"] == 3, "the three have queued")
    waiters[1].kill(_Interrupt, block=False)  # the throw is scheduled first...
    pool.resize(4)  # ...then three empty slots are handed over at once
    gevent.joinall(waiters, timeout=5, raise_error=True)
    assert served == [0, 2] and after == [False]
    holder.__exit__(None, None, None)
    stats = pool.stats()
    assert (stats["in_use"], stats["waiting"]) == (0, 0)
    held = [pool.reserve(block=False) for _ in range(4)]  # no slot was lost
    for reservation in held:
        reservation.__enter__()
    for reservation in held:
        reservation.__exit__(None, None, None)


def test_a_raw_greenlet_dying_of_an_error_on_its_wake_up_strands_no_other_waiter(
    make_pool: MakePool,
) -> None:
    """A raw greenlet's error reaches its parent, the hub, inside the callback
    that woke it: the waiters woken after it in that callback still run."""
    pool = make_pool(1)
    holder = pool.reserve()
    holder.__enter__()
    served = Event()

    def fail_inside() -> None:
        with pool.reserve(timeout=5):
            raise ValueError("the raw greenlet's own error")

    def reserve_once() -> None:
        with pool.reserve(timeout=5):
            served.set()

    gevent.spawn_raw(fail_inside)
    later = gevent.spawn(reserve_once)
    wait_until(lambda: pool.stats()["waiting"] == 2, "both have queued")
    pool.resize(3)  # both are handed a slot, and woken by one callback
    assert served.wait(5)
    later.join(5)
    holder.__exit__(None, None, None)
    assert pool.stats()["in_use"] == 0


def test_a_long_chain_of_hand_offs_lets_the_hub_run_its_other_work(make_pool: MakePool) -> None:
    """200 greenlets pass one slot around with no I/O in their blocks: each
    wake-up callback wakes only those handed a slot before it ran, so a timer
    due meanwhile still fires while the chain goes on."""
    pool = make_pool(1, timeout=30)
    ticked = Event()
    finished = 0

    def pass_around() -> None:
        nonlocal finished
        for _ in range(50):
            with pool.reserve():
                pass
        finished += 1

    holder = pool.reserve()
    holder.__enter__()
    jobs = [gevent.spawn(pass_around) for _ in range(200)]
    wait_until(lambda: pool.stats()["waiting"] == 200, "all have queued")
    gevent.spawn_later(0.01, ticked.set)
    holder.__exit__(None, None, None)
    assert ticked.wait(5)
    assert finished < 200  # the timer fired while the chain still ran
    gevent.joinall(jobs, timeout=30, raise_error=True)
    assert finished == 200 and pool.stats()["reserves"] == 1 + 200 * 50
