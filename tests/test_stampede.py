"""get_or_compute against a real memcached: one computation per key at a time,
across greenlets and processes, whatever interrupts whom.

"Another process" is either a forked child (tests/forking.py) or a plain
pymemcache-style client winning memcached's lease itself with ``mg ... N``: the
server cannot tell them apart.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from gevent import Timeout
from pymemcache import serde
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheIllegalInputError

from greenpool import CLIENT_DEFAULTS, MetaReply, PooledClient
from tests.forking import Child
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy

Key = Callable[[str], str]


@pytest.fixture
def mc(memcached: MemcachedServer) -> Iterator[PooledClient]:
    client = PooledClient(memcached.address, max_pool_size=8)
    yield client
    client.close()
    client.pool.close()


class Compute:
    """compute() for tests: counts its calls, sleeps *seconds* (yielding), returns
    *value* (or the call's number in it), or raises what *fails* gives."""

    def __init__(self, value: Any = "v{n}", seconds: float = 0.0, fails: Any = None) -> None:
        self.value = value
        self.seconds = seconds
        self.fails = fails
        self.calls = 0

    def __call__(self) -> Any:
        self.calls += 1
        if self.seconds:
            gevent.sleep(self.seconds)
        if self.fails is not None:
            raise self.fails
        return self.value.format(n=self.calls) if isinstance(self.value, str) else self.value


def herd(n: int, call: Callable[[], Any], timeout: float = 10) -> list[gevent.Greenlet]:
    jobs = [gevent.spawn(call) for _ in range(n)]
    gevent.joinall(jobs, timeout=timeout)
    assert all(job.dead for job in jobs), "a caller was left hanging"
    return jobs


def lease_elsewhere(mc: PooledClient, key: str, lease_ttl: int = 30) -> MetaReply:
    """Win key's lease as another process would: the 0-byte stub, W."""
    reply = mc.meta_get(key, "v", "c", "k", f"N{lease_ttl}")
    assert reply.win
    return reply


def test_concurrent_callers_compute_once_and_a_plain_get_reads_the_value(
    mc: PooledClient, memcached: MemcachedServer, key: Key
) -> None:
    """50 greenlets missing one key: compute runs once, all get its value, and
    pymemcache's own client reads it as stored through the serde."""
    compute = Compute("hot value", seconds=0.1)
    jobs = herd(50, lambda: mc.get_or_compute(key("hot"), compute, 60))
    assert compute.calls == 1
    assert {job.value for job in jobs} == {b"hot value"}
    assert Client(memcached.address, **CLIENT_DEFAULTS).get(key("hot")) == b"hot value"
    stats = mc.stampede_stats()
    assert (stats["lease_wins"], stats["recomputes"], stats["waits"]) == (1, 1, 49)
    assert mc.get_or_compute(key("hot"), compute, 60) == b"hot value" and compute.calls == 1


def test_callers_in_several_processes_compute_once(mc: PooledClient, key: Key) -> None:
    """Three forked children and the parent, 20 greenlets each, start together on one
    missing key whose compute takes 0.3 s: one computation in all, one value."""
    mc.get_or_compute(key("warm"), Compute(), 60)  # the parent has probed and connected
    start = time.time() + 0.5
    compute = Compute(value="made by {n}", seconds=0.3)

    def burst() -> list[Any]:
        gevent.sleep(max(0.0, start - time.time()))
        jobs = herd(20, lambda: mc.get_or_compute(key("shared"), compute, 60, wait=5))
        return [compute.calls, sorted({job.value.decode() for job in jobs})]

    children = [Child(burst) for _ in range(3)]
    mine = burst()
    reports = [child.result() for child in children] + [mine]
    assert sum(calls for calls, _ in reports) == 1
    assert {value for _, values in reports for value in values} == {"made by 1"}


def test_each_caller_decodes_its_own_copy(memcached: MemcachedServer, key: Key) -> None:
    """With a pickling serde, waiters never share one mutable object, nor with compute."""
    mc = PooledClient(memcached.address, serde=serde.pickle_serde)
    made = {"items": [1, 2, 3]}
    jobs = herd(5, lambda: mc.get_or_compute(key("dict"), lambda: made, 60))
    values = [job.value for job in jobs]
    assert all(value == made for value in values)
    assert len({id(value) for value in values} | {id(made)}) == 6


def test_a_compute_that_raises_reaches_every_waiter_and_gives_the_lease_back(
    mc: PooledClient, key: Key
) -> None:
    """Ten callers, compute raises: all ten get its exception, and the lease is
    released at once (the next caller computes without waiting out lease_ttl)."""
    failing = Compute(seconds=0.05, fails=LookupError("no such row"))
    jobs = herd(10, lambda: mc.get_or_compute(key("k"), failing, 60, lease_ttl=30))
    assert failing.calls == 1
    assert all(isinstance(job.exception, LookupError) for job in jobs)
    started = time.monotonic()
    assert mc.get_or_compute(key("k"), Compute("ok"), 60, wait=5) == b"ok"
    assert time.monotonic() - started < 1.0
    assert mc.stampede_stats()["compute_errors"] == 1


def test_an_empty_value_is_returned_but_not_stored_and_the_lease_given_back(
    mc: PooledClient, key: Key
) -> None:
    """A value the serde stores as no bytes would look like the lease's stub: it
    reaches its callers, and the next call computes again, at once."""
    empty = Compute(b"", seconds=0.05)
    jobs = herd(5, lambda: mc.get_or_compute(key("empty"), empty, 60))
    assert [job.value for job in jobs] == [b""] * 5 and empty.calls == 1
    gevent.sleep(0.01)  # the release goes out with the next loop iteration
    assert mc.meta_get(key("empty"), "v").status == "EN"
    assert mc.get_or_compute(key("empty"), lambda: b"full", 60, wait=1) == b"full"


@pytest.mark.parametrize("interrupt", ["kill", "timeout"])
def test_an_interrupted_computer_leaves_no_one_hanging(
    mc: PooledClient, key: Key, interrupt: str
) -> None:
    """The computing caller killed, or timed out, mid-compute: its lease is given
    back and one of its waiters computes, so all get a value within a second
    (the lease's 30 s never matter)."""
    slow = Compute("slow", seconds=30)

    def leader() -> Any:
        if interrupt == "timeout":
            with Timeout(0.1):
                return mc.get_or_compute(key("k"), slow, 60)
        return mc.get_or_compute(key("k"), slow, 60)

    first = gevent.spawn(leader)
    gevent.sleep(0.05)
    fast = Compute("fast")
    started = time.monotonic()
    waiters = [gevent.spawn(mc.get_or_compute, key("k"), fast, 60, wait=5) for _ in range(5)]
    gevent.sleep(0.05)
    if interrupt == "kill":
        first.kill(block=True, timeout=5)
    gevent.joinall(waiters, timeout=5, raise_error=True)
    assert [job.value for job in waiters] == [b"fast"] * 5
    assert time.monotonic() - started < 1.0
    assert (slow.calls, fast.calls) == (1, 1)
    first.join(5)
    assert first.dead and not isinstance(first.value, bytes)  # a GreenletExit, or no value


def test_a_leader_killed_while_its_lease_request_is_in_flight_gives_the_lease_back(
    mc: PooledClient, proxy: FaultProxy, key: Key
) -> None:
    """The lease reply arrives for a caller already gone: the lease it won is
    released, not held for lease_ttl, so the next caller computes at once."""
    slow = PooledClient(proxy.address)
    slow.get_or_compute(key("warm"), Compute(), 60)  # probed
    proxy.reply_delay = 0.1
    job = gevent.spawn(slow.get_or_compute, key("k"), Compute(), 60, lease_ttl=30)
    gevent.sleep(0.03)
    job.kill(block=True, timeout=5)
    gevent.sleep(0.3)  # the reply (W), then the release
    assert mc.meta_get(key("k"), "v").status == "EN"
    assert slow.pool.stats()["discarded"] == 0  # the caller never held the connection


def test_a_waiters_timeout_or_kill_withdraws_only_itself(mc: PooledClient, key: Key) -> None:
    compute = Compute("value", seconds=0.2)
    leader = gevent.spawn(mc.get_or_compute, key("k"), compute, 60)
    gevent.sleep(0.01)

    def timing_out() -> Any:
        with Timeout(0.05):
            return mc.get_or_compute(key("k"), compute, 60)

    impatient = gevent.spawn(timing_out)
    killed = gevent.spawn(mc.get_or_compute, key("k"), compute, 60)
    patient = gevent.spawn(mc.get_or_compute, key("k"), compute, 60)
    gevent.sleep(0.02)
    killed.kill(block=True, timeout=5)
    gevent.joinall([leader, impatient, patient], timeout=5)
    assert isinstance(impatient.exception, Timeout)
    assert leader.value == patient.value == b"value" and compute.calls == 1


def test_wait_bounds_waiters_who_then_get_the_default_without_computing(
    mc: PooledClient, key: Key
) -> None:
    """Another process holds the lease and never stores: ten callers here get
    *default* after *wait*, compute never runs, and only one of them polls."""
    lease_elsewhere(mc, key("k"))
    compute = Compute()
    started = time.monotonic()
    jobs = herd(10, lambda: mc.get_or_compute(key("k"), compute, 60, wait=0.3, default="dflt"))
    elapsed = time.monotonic() - started
    assert [job.value for job in jobs] == ["dflt"] * 10 and compute.calls == 0
    assert 0.3 <= elapsed < 1.0
    stats = mc.stampede_stats()
    assert stats["wait_timeouts"] == 10 and 1 <= stats["lease_polls"] <= 6


def test_a_waiter_with_a_longer_wait_takes_over_from_a_leader_whose_wait_ran_out(
    mc: PooledClient, key: Key
) -> None:
    """Each caller's own *wait* bounds it: the leader polling for another process's
    value gives up after its 0.2 s, a waiter with 3 s goes on polling and gets it."""
    won = lease_elsewhere(mc, key("k"))
    brief = gevent.spawn(mc.get_or_compute, key("k"), Compute(), 60, wait=0.2, default="gone")
    gevent.sleep(0.01)
    patient = gevent.spawn(mc.get_or_compute, key("k"), Compute(), 60, wait=3)
    assert brief.get(timeout=5) == "gone"
    assert mc.meta_set(key("k"), b"stored", "T60", f"C{won.cas}").status == "HD"
    assert patient.get(timeout=5) == b"stored"


def test_a_value_stored_by_the_lease_holder_reaches_the_waiting_callers(
    mc: PooledClient, key: Key
) -> None:
    won = lease_elsewhere(mc, key("k"))
    compute = Compute()
    jobs = [gevent.spawn(mc.get_or_compute, key("k"), compute, 60, wait=3) for _ in range(5)]
    gevent.sleep(0.2)
    assert mc.meta_set(key("k"), b"from elsewhere", "T60", f"C{won.cas}").status == "HD"
    gevent.joinall(jobs, timeout=5, raise_error=True)
    assert [job.value for job in jobs] == [b"from elsewhere"] * 5 and compute.calls == 0


def test_a_lapsed_lease_lets_a_waiting_caller_win(mc: PooledClient, key: Key) -> None:
    """The lease holder dies (its 1 s lease lapses): a waiter here wins and computes."""
    lease_elsewhere(mc, key("k"), lease_ttl=1)
    compute = Compute("mine")
    assert mc.get_or_compute(key("k"), compute, 60, wait=4) == b"mine"
    assert compute.calls == 1


def test_a_stub_is_never_returned_as_a_value(mc: PooledClient, key: Key) -> None:
    """During another's lease a classic get reads b"" (the stub trap);
    get_or_compute never does."""
    lease_elsewhere(mc, key("k"))
    assert mc.get(key("k")) == b""
    missing = object()
    assert mc.get_or_compute(key("k"), Compute(), 60, wait=0.1, default=missing) is missing


def test_a_compute_that_yields_and_uses_the_client_works(mc: PooledClient, key: Key) -> None:
    """compute runs in its caller's greenlet, holding no connection: it may sleep,
    use the same client, and get_or_compute other keys, while others run."""
    ticks = 0

    def ticker() -> None:
        nonlocal ticks
        while True:
            gevent.sleep(0.01)
            ticks += 1

    def compute() -> str:
        mc.set(key("side"), "effect", noreply=False)
        part = mc.get_or_compute(key("part"), lambda: (gevent.sleep(0.05), "part")[1], 60)
        gevent.sleep(0.05)
        return f"whole with {part.decode()} and {mc.get(key('side')).decode()}"

    background = gevent.spawn(ticker)
    jobs = herd(10, lambda: mc.get_or_compute(key("whole"), compute, 60))
    background.kill()
    assert {job.value for job in jobs} == {b"whole with part and effect"}
    assert ticks >= 5


def test_the_lease_requests_of_one_loop_iteration_go_out_together(
    mc: PooledClient, key: Key
) -> None:
    """Twenty callers for twenty keys in one loop iteration: one pipeline of twenty
    lease requests."""
    names = [key(f"k{i}") for i in range(20)]
    for name in names:
        mc.get_or_compute(name, lambda: "stored", 60)
    before = mc.stampede.leases.batcher.stats()
    jobs = [gevent.spawn(mc.get_or_compute, name, Compute(), 60) for name in names]
    gevent.joinall(jobs, timeout=5, raise_error=True)
    assert {job.value for job in jobs} == {b"stored"}
    after = mc.stampede.leases.batcher.stats()
    assert after["pipelines"] - before["pipelines"] == 1
    assert after["commands_pipelined"] - before["commands_pipelined"] == 20


def test_recache_before_refreshes_once_in_the_background_and_nobody_waits(
    mc: PooledClient, key: Key
) -> None:
    """ttl 3, recache_before 2: in the item's last second one caller wins the
    recache and recomputes in the background; every caller, that one too, gets
    the current value at once, and no other caller recomputes."""
    compute = Compute("generation {n}", seconds=0.1)
    options = {"ttl": 3, "recache_before": 2, "wait": 5}
    assert mc.get_or_compute(key("k"), compute, **options) == b"generation 1"
    slowest = 0.0
    deadline = time.monotonic() + 3.5
    while mc.stampede_stats()["background_recomputes"] == 0 and time.monotonic() < deadline:
        started = time.monotonic()
        jobs = herd(10, lambda: mc.get_or_compute(key("k"), compute, **options))
        slowest = max(slowest, time.monotonic() - started)
        assert {job.value for job in jobs} <= {b"generation 1", b"generation 2"}
        gevent.sleep(0.02)
    mc.stampede.join()
    assert compute.calls == 2 and mc.stampede_stats()["background_recomputes"] == 1
    assert slowest < 0.09  # nobody waited for the 0.1 s recompute
    assert mc.get(key("k")) == b"generation 2"
    for _ in range(5):  # the fresh value has a whole window before the next recache
        herd(10, lambda: mc.get_or_compute(key("k"), compute, **options))
        gevent.sleep(0.05)
    assert compute.calls == 2


def test_close_waits_for_background_recomputes(mc: PooledClient, key: Key) -> None:
    mc.get_or_compute(key("k"), Compute("old"), 60)
    mc.invalidate(key("k"))
    assert mc.get_or_compute(key("k"), Compute("new", seconds=0.2), 60) == b"old"
    mc.close()
    assert mc.get(key("k")) == b"new"


def test_after_invalidate_callers_get_the_stale_value_while_one_recomputes(
    mc: PooledClient, key: Key
) -> None:
    mc.get_or_compute(key("k"), Compute("old"), 60)
    assert mc.invalidate(key("k"), stale_ttl=30) is True
    compute = Compute("new", seconds=0.2)
    started = time.monotonic()
    jobs = herd(30, lambda: mc.get_or_compute(key("k"), compute, 60))
    assert time.monotonic() - started < 0.15
    assert {job.value for job in jobs} == {b"old"}
    mc.stampede.join()
    assert compute.calls == 1 and mc.get(key("k")) == b"new"
    assert mc.stampede_stats()["stale_served"] == 30
    assert mc.get_or_compute(key("k"), compute, 60) == b"new" and compute.calls == 1


def test_without_serve_stale_callers_wait_for_the_recomputed_value(
    mc: PooledClient, key: Key
) -> None:
    mc.get_or_compute(key("k"), Compute("old"), 60)
    mc.invalidate(key("k"))
    compute = Compute("new", seconds=0.1)
    jobs = herd(10, lambda: mc.get_or_compute(key("k"), compute, 60, serve_stale=False))
    assert {job.value for job in jobs} == {b"new"} and compute.calls == 1


def test_invalidate_answers_whether_the_key_was_there_and_none_deletes(
    mc: PooledClient, key: Key
) -> None:
    assert mc.invalidate(key("never")) is False
    mc.set(key("k"), "v", noreply=False)
    assert mc.invalidate(key("k"), stale_ttl=None) is True
    assert mc.get(key("k")) is None


def test_a_fork_starts_the_child_with_its_own_flights_and_recomputes(
    mc: PooledClient, key: Key
) -> None:
    """A parent's caller computing (its flight, its lease) and a parent's background
    recompute running at the fork: the child neither joins the one nor waits for
    the other, and gets its values on its own connections."""
    mc.get_or_compute(key("stale"), Compute("old"), 60)
    mc.invalidate(key("stale"))
    mc.get_or_compute(key("stale"), Compute("refreshed", seconds=1.0), 60)  # background
    parent = gevent.spawn(mc.get_or_compute, key("k"), Compute("parent's", seconds=0.5), 60)
    gevent.sleep(0.05)

    def in_the_child() -> list[Any]:
        started = time.monotonic()
        mc.close()  # does not wait for the parent's recompute
        closed = time.monotonic() - started
        own = mc.get_or_compute(key("child-own"), Compute("child"), 60)
        shared = mc.get_or_compute(key("k"), Compute("child's"), 60, wait=3)
        return [closed < 0.5, own.decode(), shared.decode()]

    child = Child(in_the_child)
    assert parent.get(timeout=5) == b"parent's"
    assert child.result() == [True, "child", "parent's"]
    mc.close()
    assert mc.get(key("stale")) == b"refreshed"


def test_a_server_down_raises_in_every_caller_unless_ignore_exc_computes_without_it(
    own_memcached: MemcachedServer, key: Key
) -> None:
    own_memcached.stop()
    strict = PooledClient(own_memcached.address)
    jobs = herd(5, lambda: strict.get_or_compute(key("k"), Compute(), 60))
    assert all(isinstance(job.exception, ConnectionRefusedError) for job in jobs)
    lenient = PooledClient(own_memcached.address, ignore_exc=True)
    compute = Compute("computed", seconds=0.05)
    jobs = herd(5, lambda: lenient.get_or_compute(key("k"), compute, 60))
    assert [job.value for job in jobs] == [b"computed"] * 5 and compute.calls == 1


@pytest.mark.parametrize(
    ("arguments", "error", "named"),
    [
        ({"compute": "not callable"}, TypeError, "compute"),
        ({"ttl": -1}, ValueError, "ttl"),
        ({"ttl": "60"}, TypeError, "ttl"),
        ({"ttl": 2**31}, ValueError, "ttl"),
        ({"lease_ttl": 0}, ValueError, "lease_ttl"),
        ({"lease_ttl": True}, TypeError, "lease_ttl"),
        ({"recache_before": 1}, ValueError, "recache_before"),
        ({"recache_before": 60}, ValueError, "recache_before"),
        ({"recache_before": 2, "ttl": 0}, ValueError, "recache_before"),
        ({"serve_stale": "yes"}, TypeError, "serve_stale"),
        ({"wait": -1}, ValueError, "wait"),
        ({"wait": None}, TypeError, "wait"),
        ({"key": "a b"}, MemcacheIllegalInputError, "(?i)key"),
        ({"key": ""}, MemcacheIllegalInputError, "(?i)key"),
        ({"key": "ctrl\x01"}, MemcacheIllegalInputError, "(?i)key"),
        ({"lease": 30}, TypeError, "lease"),
    ],
    ids=repr,
)
def test_bad_arguments_are_refused_by_name_before_anything_is_sent(
    proxy: FaultProxy, arguments: dict[str, Any], error: type[Exception], named: str
) -> None:
    mc = PooledClient(proxy.address)
    call = {"key": "k", "compute": Compute(), "ttl": 60, **arguments}
    with pytest.raises(error, match=named):
        mc.get_or_compute(call.pop("key"), call.pop("compute"), call.pop("ttl"), **call)
    with pytest.raises((TypeError, ValueError), match="stale_ttl"):
        mc.invalidate("k", stale_ttl=0)
    assert proxy.sent == 0
