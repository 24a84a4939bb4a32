"""Misuse and odd timing never cost a slot nor lend one client twice: a client
goes back at most once, a reservation is entered once at a time, other threads
are refused, and nothing between taking a slot and lending it can lose it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from gevent import Timeout

from greenpool import ClientPool, GreenletMappedPool, PoolError, PoolTimeout
from tests.threads import in_another_thread
from tests.waiting import wait_until

MakePool = Callable[..., ClientPool[Any]]
Key = Callable[[str], str]


def _at_most_maxsize_at_once(pool: ClientPool[Any]) -> None:
    """Reserve every client at once: the next reservation must find none free."""
    reservations = [pool.reserve(block=False) for _ in range(pool.maxsize)]
    for reservation in reservations:
        reservation.__enter__()
    with pytest.raises(PoolTimeout), pool.reserve(block=False):
        pass
    for reservation in reversed(reservations):
        reservation.__exit__(None, None, None)


def test_a_mapped_client_goes_back_once_when_a_generator_outlives_its_greenlet(
    make_pool: MakePool, key: Key
) -> None:
    """A handler advances a generator that yields inside a mapped block, then
    raises, and something keeps the generator alive. The greenlet's death hands
    the client back; closing the generator later must not hand it back again."""
    pool = make_pool(4)
    mapped = GreenletMappedPool(pool)
    kept: list[Iterator[Any]] = []

    def stream() -> Iterator[Any]:
        with mapped.reserve() as mc:
            yield mc.get(key("a"))
            yield mc.get(key("b"))

    def handler() -> None:
        generator = stream()
        next(generator)
        kept.append(generator)
        raise RuntimeError("the handler failed after starting the stream")

    for _ in range(5):
        job = gevent.spawn(handler)
        job.join(10)
        assert isinstance(job.exception, RuntimeError)
        gevent.idle()  # the death link runs
        kept.pop().close()  # GeneratorExit leaves the block, after the greenlet's end
        stats = pool.stats()
        assert (stats["in_use"], stats["size"]) == (0, stats["created"] - stats["discarded"])
        assert stats["size"] >= 0
    _at_most_maxsize_at_once(pool)


def test_a_reservation_entered_while_entered_raises(make_pool: MakePool) -> None:
    """``with r: with r:`` would lend one client to two blocks."""
    pool = make_pool(2)
    reservation = pool.reserve()
    with reservation, pytest.raises(PoolError, match="already entered"), reservation:
        pass
    with reservation as mc:  # entered again after it ended: fine
        assert mc.version()
    assert pool.stats()["in_use"] == 0
    _at_most_maxsize_at_once(pool)


def test_two_greenlets_entering_one_reservation_get_an_error_not_one_client(
    make_pool: MakePool,
) -> None:
    pool = make_pool(2)
    reservation = pool.reserve()
    inside = gevent.event.Event()
    release = gevent.event.Event()

    def first() -> None:
        with reservation:
            inside.set()
            release.wait(5)

    def second() -> None:
        inside.wait(5)
        with reservation:
            pass

    jobs = [gevent.spawn(first), gevent.spawn(second)]
    jobs[1].join(5)
    assert isinstance(jobs[1].exception, PoolError)
    release.set()
    gevent.joinall(jobs, timeout=5)
    assert pool.stats()["in_use"] == 0
    _at_most_maxsize_at_once(pool)


@pytest.mark.parametrize(
    "method",
    [
        lambda pool: pool.close(),
        lambda pool: pool.resize(3),
        lambda pool: pool.fill(None, 1),
        lambda pool: pool.disconnect_idle(),
        lambda pool: pool.reserve().__enter__(),
    ],
    ids=["close", "resize", "fill", "disconnect_idle", "reserve"],
)
def test_every_method_from_another_thread_is_refused_and_strands_no_waiter(
    make_pool: MakePool, method: Callable[[ClientPool[Any]], Any]
) -> None:
    """close() from another thread used to return normally and strand a waiter
    forever, past its own timeout."""
    pool = make_pool(2, name="owned")
    holders = [pool.reserve(), pool.reserve()]
    for holder in holders:
        holder.__enter__()
    waiter = gevent.spawn(lambda: pool.reserve(timeout=0.3).__enter__())
    wait_until(lambda: pool.stats()["waiting"] == 1, "the waiter has queued")
    error = in_another_thread(lambda: method(pool))
    assert isinstance(error, PoolError) and "'owned' belongs to thread" in str(error)
    waiter.join(5)
    assert waiter.dead and isinstance(waiter.exception, PoolTimeout)
    for holder in reversed(holders):
        holder.__exit__(None, None, None)
    assert pool.stats()["in_use"] == 0 and not pool.closed


def test_stats_may_be_readin_another_thread(make_pool: MakePool) -> None:
    """A metrics thread (prometheus_client's HTTP server) reads stats; it changes nothing."""
    pool = make_pool(2)
    with pool.reserve() as mc:
        mc.version()
        assert in_another_thread(pool.stats) is None


class _YieldingHandler(logging.Handler):
    """A logging handler that talks to the network: it yields to the hub."""

    def emit(self, record: logging.LogRecord) -> None:
        gevent.sleep(0.2)


@pytest.fixture
def yielding_logs() -> Iterator[None]:
    logger = logging.getLogger("greenpool")
    handler, level = _YieldingHandler(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield
    logger.removeHandler(handler)
    logger.setLevel(level)


def _failing_check(client: Any) -> None:
    raise ConnectionError("the check failed")


def test_a_timeout_inside_greenpools_own_logging_loses_no_slot(
    make_pool: MakePool, yielding_logs: None
) -> None:
    """The failed check is logged; the caller's Timeout fires in the handler."""
    pool = make_pool(1, check=_failing_check)
    with pool.reserve() as mc:
        mc.version()
    with pytest.raises(Timeout), Timeout(0.05), pool.reserve():
        pass
    assert pool.stats()["in_use"] == 0
    with pool.reserve(timeout=1) as mc:
        assert mc.version()


def _check_bounded_by_its_own_timeout(client: Any) -> None:
    with Timeout(0.01):
        gevent.sleep(1)  # a check that hangs, bounded by the check itself


def test_a_check_that_times_itself_out_is_a_failed_check(make_pool: MakePool) -> None:
    """The docs promise no error to the caller when a fresh connection works."""
    pool = make_pool(1, check=_check_bounded_by_its_own_timeout)
    with pool.reserve() as mc:
        mc.version()
    with pool.reserve() as mc:
        assert mc.version()
    assert pool.stats()["discarded_check_failed"] == 1


def test_a_timeout_aimed_at_the_caller_during_the_check_propagates_and_loses_no_slot(
    make_pool: MakePool,
) -> None:
    pool = make_pool(1, check=lambda client: gevent.sleep(1))
    with pool.reserve() as mc:
        mc.version()
    timeout = Timeout(0.05)
    with pytest.raises(Timeout) as raised, timeout, pool.reserve():
        pass
    assert raised.value is timeout
    stats = pool.stats()
    assert (stats["in_use"], stats["discarded_interrupted"]) == (0, 1)
    with pool.reserve(block=False) as mc:
        assert mc is not None
