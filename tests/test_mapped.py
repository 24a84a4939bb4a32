"""GreenletMappedPool: one client per greenlet, back in the pool when the greenlet ends.

A gevent Greenlet's link runs in the hub after the Greenlet finishes, and
``join()`` may return before it has run: ``_settle()`` lets the hub run what it
has pending (``gevent.idle``), instead of sleeping for some guessed time.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import itertools
import json
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.os
import pytest
from gevent import Timeout
from gevent.event import Event
from pymemcache.client.base import Client as PymemcacheClient

from greenpool import ClientPool, GreenletMappedPool, PoolClosed, PoolError, PoolTimeout
from tests.forking import Child
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.waiting import wait_until

MakeMapped = Callable[..., GreenletMappedPool[Any]]
Key = Callable[[str], str]


def _settle() -> None:
    """Let the hub run the links and callbacks it has pending."""
    gevent.idle()


def _join(*jobs: gevent.Greenlet) -> None:
    gevent.joinall(jobs, timeout=10)
    assert all(job.dead for job in jobs)
    _settle()


def _counts(mapped: GreenletMappedPool[Any]) -> tuple[int, int]:
    stats = mapped.stats()
    return stats["mapped"], stats["in_use"]


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (
            lambda mapped: GreenletMappedPool("pool"),
            TypeError,
            "pool must be a ClientPool, not str",
        ),
        (lambda mapped: mapped.reserve(timeout=-1), ValueError, "timeout must be a non-negative"),
        (lambda mapped: mapped.reserve(timeout="1"), TypeError, "timeout must be a number"),
    ],
    ids=["not-a-pool", "negative-timeout", "timeout-str"],
)
def test_bad_arguments_are_refused_by_name(
    make_mapped: MakeMapped, make: Callable[[Any], Any], error: type[Exception], message: str
) -> None:
    """Wrong types and values fail at once, naming the parameter."""
    with pytest.raises(error, match=message):
        make(make_mapped(1))


def test_later_and_nested_reserves_in_a_greenlet_reuse_its_client_without_the_queue(
    make_mapped: MakeMapped, key: Key
) -> None:
    """One pool reservation per greenlet, however many blocks, nested or not."""
    mapped = make_mapped(2)

    def work() -> list[Any]:
        seen = []
        for n in range(100):
            with mapped.reserve() as mc, mapped.reserve() as inner:
                assert inner is mc
                mc.set(key("k"), str(n))
                seen.append(mc)
        return seen

    job = gevent.spawn(work)
    _join(job)
    assert len(set(map(id, job.value))) == 1
    stats = mapped.stats()
    assert (stats["reserves"], stats["created"], stats["mapped"], stats["in_use"]) == (1, 1, 0, 0)


def test_a_first_reserve_waits_cooperatively_and_times_out_with_pool_timeout(
    make_mapped: MakeMapped,
) -> None:
    """With every client held by other greenlets, reserve(timeout) waits that long, then
    raises PoolTimeout; once a holder ends, its client serves the next greenlet."""
    mapped = make_mapped(1)
    release = Event()

    def hold() -> None:
        with mapped.reserve() as mc:
            mc.version()
        release.wait(10)

    holder = gevent.spawn(hold)
    gevent.idle()
    started = time.monotonic()
    with pytest.raises(PoolTimeout, match=r"within timeout=0\.1s"), mapped.reserve(timeout=0.1):
        pass
    assert 0.09 <= time.monotonic() - started < 2
    assert _counts(mapped) == (1, 1)
    release.set()
    _join(holder)
    waiter = gevent.spawn(lambda: _version(mapped))
    _join(waiter)
    assert waiter.value and mapped.stats()["created"] == 1


def _version(mapped: GreenletMappedPool[Any]) -> Any:
    with mapped.reserve() as mc:
        return mc.version()


def _returns(mapped: GreenletMappedPool[Any], ready: Event) -> None:
    _version(mapped)


def _raises(mapped: GreenletMappedPool[Any], ready: Event) -> None:
    with mapped.reserve() as mc:
        mc.version()
        raise ValueError("the application's own error, between commands")


def _waits_to_be_killed(mapped: GreenletMappedPool[Any], ready: Event) -> None:
    _version(mapped)
    ready.set()
    gevent.sleep(10)


def _times_out(mapped: GreenletMappedPool[Any], ready: Event) -> None:
    _version(mapped)
    with Timeout(0.01):
        gevent.sleep(10)


@pytest.mark.parametrize("end", [_returns, _raises, _waits_to_be_killed, _times_out])
def test_a_finished_greenlet_hands_its_client_back(
    make_mapped: MakeMapped, end: Callable[[GreenletMappedPool[Any], Event], None]
) -> None:
    """Returning, raising, being killed or timing out, outside any command: the link
    puts the client back unharmed, and the next greenlet reuses it."""
    mapped = make_mapped(1)
    ready = Event()
    job = gevent.spawn(end, mapped, ready)
    if end is _waits_to_be_killed:
        assert ready.wait(10)
        assert _counts(mapped) == (1, 1)
        job.kill(block=True, timeout=10)
    _join(job)
    assert _counts(mapped) == (0, 0)
    reuse = gevent.spawn(_version, mapped)
    _join(reuse)
    stats = mapped.stats()
    assert reuse.value and (stats["created"], stats["discarded"], stats["idle"]) == (1, 0, 1)


def _interrupt_with_a_timeout(
    mapped: GreenletMappedPool[Any], incr: Callable[[], Any], proxy: FaultProxy
) -> Any:
    """The greenlet catches the Timeout outside its block and carries on."""

    def work() -> Any:
        with pytest.raises(Timeout), Timeout(0.01), mapped.reserve():
            incr()
        return None

    job = gevent.spawn(work)
    _join(job)
    return job.value


def _interrupt_with_a_kill(
    mapped: GreenletMappedPool[Any], incr: Callable[[], Any], proxy: FaultProxy
) -> Any:
    def work() -> None:
        with mapped.reserve():
            incr()

    sent = proxy.sent
    job = gevent.spawn(work)
    wait_until(lambda: proxy.sent > sent, "the incr reached the proxy, which holds its reply")
    job.kill(block=True, timeout=10)
    _join(job)


@pytest.mark.parametrize("interrupt", [_interrupt_with_a_timeout, _interrupt_with_a_kill])
def test_a_greenlet_interrupted_mid_command_has_its_client_discarded(
    proxy: FaultProxy, make_mapped: MakeMapped, key: Key, interrupt: Callable[..., Any]
) -> None:
    """The interrupted client, which still has x's reply coming, never serves again:
    the next user's incr of y reads y's own counter."""
    mapped = make_mapped(1, address=proxy.address)
    with mapped.reserve() as mc:
        mc.set(key("x"), "1000", noreply=False)  # stored before anything else is sent
        mc.set(key("y"), "5", noreply=False)
    mapped.relinquish()
    proxy.reply_delay = 0.05

    def incr_x() -> Any:
        with mapped.reserve() as mc:
            return mc.incr(key("x"), 1)

    interrupt(mapped, incr_x, proxy)
    assert _counts(mapped) == (0, 0)
    proxy.reply_delay = 0
    with mapped.reserve() as mc:
        assert mc.incr(key("y"), 1) == 6
    mapped.relinquish()
    stats = mapped.stats()
    assert (stats["discarded"], stats["created"], stats["in_use"]) == (1, 2, 0)


def test_an_interrupted_inner_block_never_lets_the_outer_block_read_the_stale_reply(
    proxy: FaultProxy, make_mapped: MakeMapped, key: Key
) -> None:
    """A Timeout caught between nested blocks: the outer block's next command gets its
    own reply, even on a plain gevent socket, and the client is discarded when the
    outer block ends."""
    mapped = make_mapped(1, address=proxy.address, client_options={"socket_module": gevent.socket})
    with mapped.reserve() as mc:
        mc.set(key("x"), "1000", noreply=False)  # stored before anything else is sent
        mc.set(key("y"), "5", noreply=False)
        proxy.reply_delay = 0.05
        with pytest.raises(Timeout), Timeout(0.01), mapped.reserve() as inner:
            inner.incr(key("x"), 1)
        proxy.reply_delay = 0
        assert mc.incr(key("y"), 1) == 6
        assert _counts(mapped) == (1, 1)
    stats = mapped.stats()
    assert (stats["mapped"], stats["in_use"], stats["discarded"], stats["size"]) == (0, 0, 1, 0)


def test_an_application_error_in_a_block_keeps_the_client_mapped(
    make_mapped: MakeMapped, key: Key
) -> None:
    """Exceptions of the caller's own code, between commands, cost no reconnect."""
    mapped = make_mapped(1)
    with pytest.raises(KeyError), mapped.reserve() as mc:
        mc.set(key("a"), "1")
        first = mc
        raise KeyError("the application's own error")
    with mapped.reserve() as mc:
        assert mc is first and mc.get(key("a")) == b"1"
    assert _counts(mapped) == (1, 1)
    mapped.relinquish()
    assert mapped.stats()["discarded"] == 0


def test_the_main_greenlet_relinquishes_explicitly_and_twice_is_harmless(
    make_mapped: MakeMapped,
) -> None:
    """The main greenlet never ends, so only relinquish() gives its client back."""
    mapped = make_mapped(1)
    assert _version(mapped)
    assert _counts(mapped) == (1, 1)
    mapped.relinquish()
    mapped.relinquish()
    assert _counts(mapped) == (0, 0)
    assert mapped.stats()["idle"] == 1


def test_relinquish_inside_an_open_block_raises_and_keeps_the_client(
    make_mapped: MakeMapped,
) -> None:
    """A client a block is still using is never handed to anyone else."""
    mapped = make_mapped(1, name="busy")
    with mapped.reserve() as mc, mapped.reserve():
        with pytest.raises(PoolError, match=r"inside 2 open reserve\(\) block\(s\) of pool 'busy'"):
            mapped.relinquish()
        assert mc.version()
        assert _counts(mapped) == (1, 1)
    mapped.relinquish()
    assert _counts(mapped) == (0, 0)


def test_a_raw_greenlet_hands_its_client_back_once_it_is_freed(make_mapped: MakeMapped) -> None:
    """A raw greenlet has no link: its client comes back when the finished greenlet
    object is freed, and not while something still refers to it."""
    mapped = make_mapped(1)
    done = Event()

    def work() -> None:
        _version(mapped)
        done.set()

    raw = gevent.spawn_raw(work)
    assert done.wait(10)
    _settle()
    assert raw.dead
    assert _counts(mapped) == (1, 1)  # finished, but still referenced here
    del raw
    gc.collect()
    assert mapped.stats()["mapped"] == 0  # unmapped as it was freed ...
    _settle()
    assert _counts(mapped) == (0, 0)  # ... and handed back from the hub
    assert mapped.stats()["discarded"] == 0


def test_a_closed_pool_closes_the_clients_greenlets_hand_back(make_mapped: MakeMapped) -> None:
    """After close(), a link or a new reserve hands the client back to be closed, and
    the reserve raises PoolClosed."""
    mapped = make_mapped(2)
    ready = Event()
    job = gevent.spawn(_waits_to_be_killed, mapped, ready)
    assert ready.wait(10)
    assert _version(mapped)
    mapped.pool.close()
    job.kill(block=True, timeout=10)
    _join(job)
    with pytest.raises(PoolClosed), mapped.reserve():
        pass
    stats = mapped.stats()
    assert (stats["mapped"], stats["in_use"], stats["size"], stats["discarded"]) == (0, 0, 0, 2)


def test_a_forked_child_never_reuses_the_parents_mapping(
    memcached: MemcachedServer, key: Key
) -> None:
    """The greenlet that forks holds a client in the parent; in the child its first
    reserve gets a new connection, and both processes keep their own counts."""
    mapped = GreenletMappedPool(ClientPool(_factory(memcached), 2))
    with mapped.reserve() as mc:
        mc.set(key("n"), "0", noreply=False)  # the child reads it on another connection
        parent_port = mc.sock.getsockname()[1]

    def in_the_child() -> dict[str, Any]:
        before = mapped.stats()
        with mapped.reserve() as mc:
            mc.incr(key("n"), 1)
            return {
                "mapped_before": before["mapped"],
                "new_port": mc.sock.getsockname()[1] != parent_port,
                "size": mapped.stats()["size"],
            }

    report = Child(in_the_child).result()
    assert report == {"mapped_before": 0, "new_port": True, "size": 1}
    with mapped.reserve() as mc:
        assert mc.sock.getsockname()[1] == parent_port
        assert mc.incr(key("n"), 1) == 2
    mapped.relinquish()
    mapped.pool.close()


def _factory(server: MemcachedServer) -> Callable[[], Any]:
    from greenpool import client_factory

    return client_factory(server.address)


_THREADS_SCRIPT = """
from gevent import monkey; monkey.patch_all()
import json, sys, threading
import gevent
from greenpool import ClientPool, GreenletMappedPool, client_factory

mapped = GreenletMappedPool(ClientPool(client_factory(sys.argv[1]), 8))
barrier = threading.Barrier(8, timeout=10)
clients = {}

def work(n):
    with mapped.reserve() as mc:
        mc.set(f"threads-{n}", str(n), noreply=False)
        clients[n] = id(mc)
    barrier.wait()  # all eight hold their clients at once
    with mapped.reserve() as mc:
        assert id(mc) == clients[n] and mc.get(f"threads-{n}") == str(n).encode()

threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join(10)
gevent.idle()
alive = sum(thread.is_alive() for thread in threads)
print(json.dumps({"distinct": len(set(clients.values())), "alive": alive, "stats": mapped.stats()}))
"""


def test_monkey_patched_threads_each_get_a_client_back_at_thread_end(
    memcached: MemcachedServer,
) -> None:
    """Under monkey.patch_all(), in a subprocess: eight threading.Threads hold eight
    distinct clients at once, and all eight are back in the pool when they end."""
    address = f"{memcached.address[0]}:{memcached.address[1]}"
    result = subprocess.run(
        [sys.executable, "-c", _THREADS_SCRIPT, address],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["distinct"] == 8 and report["alive"] == 0
    stats = report["stats"]
    assert (stats["mapped"], stats["in_use"], stats["idle"], stats["discarded"]) == (0, 0, 8, 0)


def _set_after(count: int, jobs: list[gevent.Greenlet]) -> Event:
    """An Event set once *count* of *jobs* have ended."""
    event = Event()
    ended = itertools.count(1)

    def link(_job: gevent.Greenlet) -> None:
        if next(ended) == count:
            event.set()

    for job in jobs:
        job.rawlink(link)
    return event


def _maybe_timeout(applies: bool, seconds: float) -> contextlib.AbstractContextManager[Any]:
    return Timeout(seconds) if applies else contextlib.nullcontext()


def test_twenty_thousand_short_lived_greenlets_leave_nothing_mapped(
    proxy: FaultProxy, make_mapped: MakeMapped, key: Key, monkeypatch: pytest.MonkeyPatch
) -> None:
    """20,000 greenlets through a pool of 16, in batches of 1,000, with some replies
    delayed: they return, raise, time out, and are killed while waiting, holding or
    mid-command. With pymemcache's own Client, no one reads a wrong value; after each batch
    nothing is mapped or in use, and the mapping (its len is ``mapped``) never holds
    more entries than the pool has clients, so memory does not grow with the number
    of greenlets that came and went."""
    rng = random.Random(20261122)
    # pymemcache's own client: the pool's judgement of how a block ended must do it
    plain = functools.partial(PymemcacheClient, proxy.address, socket_module=gevent.socket)
    mapped = GreenletMappedPool(ClientPool(plain, 16, timeout=30))
    values = {key(f"k{j}"): f"value-{j}".encode() for j in range(100)}
    names = list(values)
    with mapped.pool.reserve() as mc:
        mc.set_many(values, noreply=False)
    proxy.reply_delay = lambda: rng.choice((0,) * 19 + (0.02,))
    # 5,000 greenlets die by an exception; the hub would print every traceback.
    monkeypatch.setattr(gevent.get_hub(), "print_exception", lambda *args: None)
    phase: dict[int, str] = {}
    killed: collections.Counter[str] = collections.Counter()
    ended: collections.Counter[str] = collections.Counter()
    wrong: list[str] = []
    peak = 0

    def work(i: int) -> None:
        nonlocal peak
        name = names[i % 100]
        phase[i] = "waiting"
        # The first timeout expires while waiting for a client, the second on a delayed reply.
        with _maybe_timeout(i % 8 == 2, 0.002), mapped.reserve() as mc:
            peak = max(peak, len(mapped._mappings))
            phase[i] = "mid-command"
            with _maybe_timeout(i % 8 == 4, 0.01):
                got = mc.get(name)
            if got != values[name]:
                wrong.append(f"greenlet {i} read {got!r} for {name}")
            phase[i] = "holding"
            if i % 8 == 3:
                raise ValueError("the application's own error")
        if i % 8 == 5:
            gevent.sleep(0.005)  # holding, outside any block, to be killed meanwhile

    started = time.monotonic()
    for batch in range(20):
        jobs = [gevent.spawn(work, batch * 1000 + n) for n in range(1000)]
        assert _set_after(300, jobs).wait(30)
        victims = [(n, job) for n, job in enumerate(jobs) if n % 8 in (5, 6, 7) and not job.dead]
        killed.update(phase.get(batch * 1000 + n, "not started") for n, _ in victims)
        gevent.killall([job for _, job in victims], timeout=30)
        gevent.joinall(jobs, timeout=30)
        assert all(job.dead for job in jobs)
        ended.update(
            f"{type(job.exception).__name__} {phase[batch * 1000 + n]}"
            for n, job in enumerate(jobs)
            if job.exception
        )
        _settle()
        assert _counts(mapped) == (0, 0), f"after batch {batch}"
    elapsed = time.monotonic() - started
    print(f"20,000 greenlets in {elapsed:.1f}s; killed {dict(killed)}; ended {dict(ended)}")
    assert wrong == []
    assert peak <= 16
    assert killed["waiting"] and killed["holding"] and killed["mid-command"]
    # No protocol or connection error; timeouts both while waiting and mid-command.
    assert set(ended) == {"ValueError holding", "Timeout waiting", "Timeout mid-command"}
    assert ended["ValueError holding"] == 2500
    stats = mapped.stats()
    assert stats["discarded"] > 0 and stats["size"] <= 16
    assert stats["created"] - stats["discarded"] == stats["size"]
