"""Auto-pipelining: the writes of one loop iteration go out together, each caller
gets exactly its own command's outcome, and a pipeline that is cut short fails
only the callers whose replies it had not read.

Pipelines are made as a program makes them: many greenlets calling one
PooledClient (its defaults) while a lone get is in flight, behind a proxy that
delays replies. The references are the same calls made one at a time.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from typing import Any

import gevent
from gevent import Timeout
from pymemcache.client.base import Client
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheError,
    MemcacheServerError,
)

from greenpool import CLIENT_DEFAULTS, PooledClient
from tests.memcached import MemcachedServer
from tests.nutcracker import Nutcracker
from tests.proxy import FaultProxy
from tests.test_batching import busy
from tests.test_proxy_outage import _stop_the_backend_of_about_a_third
from tests.waiting import wait_until

Key = Callable[[str], str]


def _together(
    mc: PooledClient, proxy: FaultProxy, key: Key, calls: list[Callable[[], Any]]
) -> list[Any]:
    """Run *calls* in greenlets of one loop iteration while a get is in flight, so
    that they join one flush; return each one's value or exception."""
    lone = busy(mc.get, proxy, key("busy"))
    jobs = [gevent.spawn(call) for call in calls]
    gevent.joinall([lone, *jobs], timeout=10)
    assert all(job.dead for job in jobs)
    return [job.value if job.successful() else job.exception for job in jobs]


def test_the_writes_of_one_loop_iteration_go_out_in_one_pipeline(
    memcached: MemcachedServer, proxy: FaultProxy, key: Key
) -> None:
    """50 acknowledged sets from 50 greenlets: one pipeline, one reservation, and
    every value stored."""
    mc = PooledClient(proxy.address, default_noreply=False)
    proxy.reply_delay = 0.05
    before = mc.pool_stats()
    names = [key(f"w{i}") for i in range(50)]
    results = _together(mc, proxy, key, [lambda n=n: mc.set(n, n) for n in names])
    assert results == [True] * 50
    stats = mc.pool_stats()
    assert stats["pipelines"] - before["pipelines"] == 1
    assert stats["commands_pipelined"] - before["commands_pipelined"] == 50
    assert stats["reserves"] - before["reserves"] == 2  # the lone get, the pipeline
    assert Client(memcached.address).get_many(names) == {n: n.encode() for n in names}


def _mixed(mc: Any, key: Key) -> list[Callable[[], Any]]:
    """Calls whose replies differ: stored or not, found or not, numbers, errors."""
    return [
        lambda: mc.set(key("s"), "v"),
        lambda: mc.add(key("exists"), "x"),
        lambda: mc.add(key("new"), "x"),
        lambda: mc.replace(key("missing"), "x"),
        lambda: mc.append(key("exists"), "+"),
        lambda: mc.prepend(key("missing2"), "+"),
        lambda: mc.cas(key("exists"), "x", b"1"),
        lambda: mc.cas(key("missing3"), "x", b"1"),
        lambda: mc.delete(key("missing4")),
        lambda: mc.delete(key("gone")),
        lambda: mc.incr(key("n"), 5),
        lambda: mc.decr(key("n2"), 100),
        lambda: mc.incr(key("missing5"), 1),
        lambda: mc.incr(key("exists"), 1),  # not a number: CLIENT_ERROR
        lambda: mc.touch(key("exists"), 100),
        lambda: mc.touch(key("missing6"), 100),
        lambda: mc.set_many({key("m1"): "1", key("m2"): "2"}),
        lambda: mc.delete_many([key("m3"), key("missing7")]),
        lambda: mc.set(key("big"), b"x" * (2 << 20)),  # SERVER_ERROR too large
        lambda: mc.set_many({key("big2"): b"x" * (2 << 20), key("m5"): "5"}),  # the same, first
        lambda: mc.get(key("exists")),
    ]


def _prepare(mc: Any, key: Key) -> None:
    mc.set_many({key("exists"): "e", key("gone"): "g", key("n"): "10", key("n2"): "3",
                 key("m3"): "3"}, noreply=False)  # fmt: skip


def _outcome(result: Any) -> Any:
    """A result, or an exception's class and message without the server it names."""
    if isinstance(result, BaseException):
        return (type(result).__name__, re.sub(r" \(memcached at [^)]*\)", "", str(result)))
    return result


def test_each_caller_gets_exactly_its_own_commands_outcome(
    memcached: MemcachedServer, proxy: FaultProxy, key: Key
) -> None:
    """Twenty-one different commands in one pipeline, SERVER_ERRORs (one before
    another reply of its own command) and a CLIENT_ERROR among them: each caller
    gets what its command gets alone from pymemcache's own Client, and no
    connection is lost (the errors are complete replies)."""
    reference = Client(memcached.address, default_noreply=False)
    _prepare(reference, lambda name: key("ref-" + name))
    expected = [
        _outcome(_call_or_error(call)) for call in _mixed(reference, lambda n: key("ref-" + n))
    ]
    mc = PooledClient(proxy.address, default_noreply=False)
    _prepare(mc, key)
    proxy.reply_delay = 0.02
    got = _together(mc, proxy, key, _mixed(mc, key))
    assert [_outcome(g) for g in got] == [_normal(e, key) for e in expected]
    assert mc.pool_stats()["discarded"] == 0
    assert mc.get(key("exists")) == b"e+"


def _call_or_error(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except MemcacheError as exc:
        return exc


def _normal(outcome: Any, key: Key) -> Any:
    """The reference's outcome with its keys spelt as ours."""
    if isinstance(outcome, tuple):
        return (outcome[0], outcome[1].replace(key("ref-"), key("")))
    return outcome


def test_a_caller_interrupted_while_its_write_is_in_flight_withdraws_only_itself(
    proxy: FaultProxy, key: Key
) -> None:
    """A Timeout or a kill of one caller: the others get their replies, the
    pipeline's client goes back, the interrupted command still runs."""
    mc = PooledClient(proxy.address, default_noreply=False)
    proxy.reply_delay = 0.1
    lone = busy(mc.get, proxy, key("busy"))

    def impatient() -> Any:
        with Timeout(0.02):
            return mc.set(key("impatient"), "sent")

    jobs = [gevent.spawn(mc.set, key(f"s{i}"), "v") for i in range(5)]
    leaving = [gevent.spawn(impatient), gevent.spawn(mc.set, key("killed"), "sent")]
    gevent.sleep(0)  # every caller has joined the pipeline
    leaving[1].kill(block=False)
    gevent.joinall([lone, *jobs, *leaving], timeout=5)
    assert [job.value for job in jobs] == [True] * 5
    assert isinstance(leaving[0].exception, Timeout)
    assert isinstance(leaving[1].value, gevent.GreenletExit)
    wait_until(lambda: mc.pool_stats()["in_use"] == 0, "the pipeline ended")
    assert mc.pool_stats()["discarded"] == 0
    assert mc.get(key("impatient")) == b"sent"


def test_a_connection_cut_mid_pipeline_fails_exactly_the_callers_it_had_not_answered(
    proxy: FaultProxy, key: Key
) -> None:
    """The server's replies stop after four of ten: the first four callers get
    True, the other six an error (never another's reply), the client is
    discarded, and the next command reconnects. One connection: the first set
    goes alone, the nine others in one pipeline after it."""
    mc = PooledClient(proxy.address, max_pool_size=1, default_noreply=False)
    jobs = [gevent.spawn(mc.set, key(f"c{i}"), "v") for i in range(10)]
    proxy.cut_after(len(b"STORED\r\n") * 4 + 3)
    gevent.joinall(jobs, timeout=5)
    outcomes = [job.value if job.successful() else job.exception for job in jobs]
    assert outcomes[:4] == [True] * 4, outcomes
    assert all(isinstance(o, (OSError, MemcacheError)) for o in outcomes[4:]), outcomes
    assert mc.pool_stats()["pipelines"] == 1
    assert mc.pool_stats()["discarded_error"] >= 1
    assert mc.set(key("after"), "ok") and mc.get(key("after")) == b"ok"


def test_noreply_writes_join_pipelines_and_return_once_sent(proxy: FaultProxy, key: Key) -> None:
    """A noreply set's caller returns before the replies of the pipeline it went in
    are read; the acknowledged ones after; every value is stored."""
    mc = PooledClient(proxy.address)  # default_noreply=True, as pymemcache's
    proxy.reply_delay = 0.2
    lone = busy(mc.get, proxy, key("busy"))
    quiet = [gevent.spawn(mc.set, key(f"q{i}"), "q") for i in range(5)]
    loud = [gevent.spawn(mc.set, key(f"l{i}"), "l", noreply=False) for i in range(5)]
    gevent.joinall(quiet, timeout=5)
    assert [job.value for job in quiet] == [True] * 5
    assert not any(job.dead for job in loud)  # their replies are still on their way
    gevent.joinall([lone, *loud], timeout=5)
    assert [job.value for job in loud] == [True] * 5
    assert mc.get_many([key(f"q{i}") for i in range(5)]) == {key(f"q{i}"): b"q" for i in range(5)}


def test_behind_nutcracker_a_dead_backend_fails_only_its_own_pipelined_commands(
    three_memcacheds: list[MemcachedServer],
    start_nutcracker: Callable[..., Nutcracker],
    key: Key,
) -> None:
    """nutcracker answers in order and keeps the connection after a SERVER_ERROR:
    sets of the dead backend's keys fail with it, the others are stored, and no
    client is discarded."""
    import hashlib

    proxy = start_nutcracker([server.address for server in three_memcacheds])
    names = [key(hashlib.md5(b"%d" % n).hexdigest()[:12]) for n in range(60)]
    Client(proxy.address, **CLIENT_DEFAULTS).set_many({n: "x" for n in names}, noreply=False)
    dead = _stop_the_backend_of_about_a_third(three_memcacheds, names)
    mc = PooledClient(proxy.address, default_noreply=False)
    results = [gevent.spawn(mc.set, name, "y") for name in names]
    gevent.joinall(results, timeout=10)
    for name, job in zip(names, results, strict=True):
        if name in dead:
            assert isinstance(job.exception, MemcacheServerError), name
        else:
            assert job.value is True, (name, job.exception)
    assert mc.pool_stats()["commands_pipelined"] > 0
    assert mc.pool_stats()["discarded"] == 0


def test_interruptions_and_a_restart_under_pipelined_writes_never_mix_replies(
    own_memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """200 greenlets setting, incrementing and reading their own keys through
    delayed replies, with Timeouts cutting calls short and the server restarted
    once: 0 values or counts of another greenlet's key, and only connection
    errors (or misses after the restart)."""
    proxy = proxy_to(own_memcached.address)
    rng = random.Random(21)
    mc = PooledClient(proxy.address, max_pool_size=8, default_noreply=False, pool_timeout=30)
    for i in range(200):
        mc.set(key(f"c{i}"), str(i * 1_000_000))
    proxy.reply_delay = lambda: rng.choice((0, 0, 0.001, 0.005))
    wrong: list[str] = []
    unexpected: list[BaseException] = []

    def work(i: int) -> None:
        for n in range(30):
            try:
                with Timeout(rng.choice((0.001, 0.005, 5.0))):
                    if rng.random() < 0.4:
                        mc.set(key(f"v{i}"), f"{i}:{n}")
                    elif rng.random() < 0.5:
                        got = mc.get(key(f"v{i}"))
                        if got is not None and not got.startswith(b"%d:" % i):
                            wrong.append(f"{i} read {got!r}")
                    else:
                        count = mc.incr(key(f"c{i}"), 1)
                        if count is not None and not i * 1_000_000 <= count < (i + 1) * 1_000_000:
                            wrong.append(f"{i} counted {count}")
            except Timeout:
                pass
            except (OSError, MemcacheError) as exc:  # the restart
                if isinstance(exc, MemcacheClientError):
                    unexpected.append(exc)

    jobs = [gevent.spawn(work, i) for i in range(200)]
    wait_until(lambda: mc.pool_stats()["commands_pipelined"] > 300, "the load is running")
    own_memcached.stop()
    own_memcached.start()
    gevent.joinall(jobs, timeout=60)
    assert all(job.dead for job in jobs)
    assert wrong == [] and unexpected == []
    assert mc.pool_stats()["commands_pipelined"] > 1000
