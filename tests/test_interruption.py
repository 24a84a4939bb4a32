"""An interrupted client never serves again in an unknown state.

Every test here goes through FaultProxy, which delays or cuts memcached's
replies, so that the interruption lands inside the client's recv exactly as a
slow server would make it (redis-py's regression test for CVE-2023-28858 is
built the same way).
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent import Timeout
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheIllegalInputError, MemcacheUnexpectedCloseError

import greenpool
from greenpool import ClientPool
from tests.proxy import FaultProxy
from tests.waiting import wait_until

MakePool = Callable[..., ClientPool[Any]]
Key = Callable[[str], str]


def _nothing() -> contextlib.nullcontext[None]:
    return contextlib.nullcontext()


def _counters(mc: Any, key: Key) -> None:
    mc.set(key("x"), "1000", noreply=False)
    mc.set(key("y"), "5", noreply=False)


def _one_client_behind_a_slow_proxy(make_pool: MakePool, proxy: FaultProxy, key: Key) -> Any:
    """A pool of one client whose counters x=1000 and y=5 are set, after which
    the proxy holds every reply for 50 ms: long enough to interrupt a command."""
    pool = make_pool(1, address=proxy.address)
    with pool.reserve() as mc:
        _counters(mc, key)
    proxy.reply_delay = 0.05
    return pool


def test_a_raw_pymemcache_client_reads_the_stale_reply(proxy: FaultProxy, key: Key) -> None:
    """The bug we exist for, reproduced: this control test proves the harness catches it."""
    mc = Client(proxy.address, socket_module=gevent.socket)
    _counters(mc, key)
    proxy.reply_delay = 0.05
    with pytest.raises(Timeout), Timeout(0.01):
        mc.incr(key("x"), 1)
    assert mc.incr(key("y"), 1) == 1001  # x's counter, served to the y caller


def test_a_client_interrupted_by_a_timeout_is_discarded(
    make_pool: MakePool, proxy: FaultProxy, key: Key
) -> None:
    """The same scenario through the pool: the next user reads y's own counter."""
    pool = _one_client_behind_a_slow_proxy(make_pool, proxy, key)
    with pytest.raises(Timeout), Timeout(0.01), pool.reserve() as mc:
        mc.incr(key("x"), 1)
    with pool.reserve() as mc:
        assert mc.incr(key("y"), 1) == 6
    stats = pool.stats()
    assert (stats["discarded"], stats["created"], stats["size"], stats["in_use"]) == (1, 2, 1, 0)


def _interrupt_with_kill(job: gevent.Greenlet) -> None:
    job.kill(block=True, timeout=5)


def _interrupt_with_keyboard_interrupt(job: gevent.Greenlet) -> None:
    job.kill(KeyboardInterrupt, block=True, timeout=5)


@pytest.mark.parametrize("interrupt", [_interrupt_with_kill, _interrupt_with_keyboard_interrupt])
def test_a_client_interrupted_by_a_kill_is_discarded(
    make_pool: MakePool, proxy: FaultProxy, key: Key, interrupt: Callable[[gevent.Greenlet], None]
) -> None:
    """GreenletExit and KeyboardInterrupt mid-command also cost the client its connection."""
    pool = _one_client_behind_a_slow_proxy(make_pool, proxy, key)

    def incr_x() -> None:
        try:
            with pool.reserve() as mc:
                mc.incr(key("x"), 1)
        except KeyboardInterrupt:
            pass  # caught here so gevent does not re-raise it in the test's main greenlet

    sent = proxy.sent
    job = gevent.spawn(incr_x)
    wait_until(lambda: proxy.sent > sent, "the incr reached the proxy, which holds its reply")
    assert pool.stats()["in_use"] == 1
    interrupt(job)
    with pool.reserve() as mc:
        assert mc.incr(key("y"), 1) == 6
    assert pool.stats()["discarded"] == 1


def test_a_cut_connection_is_discarded_and_the_slot_refilled(
    make_pool: MakePool, proxy: FaultProxy, key: Key
) -> None:
    """A socket error mid-command discards the client; the next reservation works."""
    pool = _one_client_behind_a_slow_proxy(make_pool, proxy, key)

    def incr_x_in_a_block() -> Any:
        with pool.reserve() as mc:
            return mc.incr(key("x"), 1)

    sent = proxy.sent
    job = gevent.spawn(incr_x_in_a_block)
    wait_until(lambda: proxy.sent > sent, "the incr reached the proxy, which holds its reply")
    proxy.cut()
    job.join(5)
    assert isinstance(job.exception, MemcacheUnexpectedCloseError)
    assert pool.stats()["discarded"] == 1
    proxy.reply_delay = 0
    with pool.reserve() as mc:
        assert mc.incr(key("y"), 1) == 6
    assert pool.stats()["in_use"] == 0


def test_an_application_error_after_a_complete_command_keeps_the_client(
    make_pool: MakePool, key: Key
) -> None:
    """Exceptions from the caller's own code do not cost a reconnect."""
    pool = make_pool(1)
    with pytest.raises(ValueError), pool.reserve() as mc:
        mc.set(key("a"), "1")
        first = mc
        raise ValueError("the application's own error")
    with pool.reserve() as mc:
        assert mc is first and mc.get(key("a")) == b"1"
    assert pool.stats()["discarded"] == 0


def test_invalid_input_is_rejected_before_sending_and_keeps_the_client(
    make_pool: MakePool, key: Key
) -> None:
    pool = make_pool(1)
    with pool.reserve() as mc:
        mc.set(key("kept"), "1")
        first = mc
    with pytest.raises(MemcacheIllegalInputError), pool.reserve() as mc:
        mc.set("bad key", "1")
    with pool.reserve() as mc:
        assert mc is first and mc.get(key("kept")) == b"1"
    assert pool.stats()["discarded"] == 0


def test_a_timeout_caught_inside_the_block_never_yields_a_stale_reply(
    make_pool: MakePool, proxy: FaultProxy, key: Key
) -> None:
    """Catching the Timeout and reusing the client in the same block is safe too.

    The pool cannot see a Timeout caught inside the block, so the socket from
    client_factory closes itself at the interruption: the next command fails
    once with ConnectionAbortedError, and the one after reconnects.
    """
    pool = make_pool(1, address=proxy.address)
    with pool.reserve() as mc:
        catch_a_timeout_and_go_on(mc, proxy, key)


def catch_a_timeout_and_go_on(mc: Any, proxy: FaultProxy, key: Key) -> None:
    """Time out x's incr, catch it, and incr y on the same client (test_tls reuses this)."""
    _counters(mc, key)
    proxy.reply_delay = 0.05
    with pytest.raises(Timeout), Timeout(0.01):
        mc.incr(key("x"), 1)
    with pytest.raises(ConnectionAbortedError, match="interrupted"):
        mc.incr(key("y"), 1)
    assert mc.incr(key("y"), 1) == 6


@pytest.mark.parametrize(
    "socket_module", [greenpool._socket, gevent.socket], ids=["guarded", "plain-gevent"]
)
def test_hundreds_of_greenlets_with_random_timeouts_see_no_wrong_value(
    make_pool: MakePool, proxy: FaultProxy, key: Key, socket_module: Any
) -> None:
    """300 greenlets, random reply delays and random timeouts: 0 wrong values, 0 protocol errors.

    Each greenlet owns a counter starting at its own base and a key whose values
    name the greenlet, so a reply meant for anyone else is recognised. With plain
    gevent sockets, as a user's own factory would make, the pool's discard alone
    keeps it so.
    """
    rng = random.Random(20261121)
    pool = make_pool(
        8, address=proxy.address, timeout=30, client_options={"socket_module": socket_module}
    )
    greenlets = 300
    with pool.reserve() as mc:
        for i in range(greenlets):
            mc.set(key(f"c{i}"), str(i * 1_000_000), noreply=False)
    proxy.reply_delay = lambda: rng.choice((0, 0, 0.001, 0.005, 0.02))
    wrong: list[str] = []
    protocol_errors: list[BaseException] = []
    timeouts = 0
    peak_size = 0

    def work(i: int) -> None:
        nonlocal timeouts, peak_size
        incremented = 0  # increments that may have applied (an interrupted one may have)
        for n in range(6):
            limit = Timeout(rng.choice((0.002, 0.01, 0.03, 1.0)))
            outer = i % 2 == 0  # half time out around reserve(), half only inside the block
            try:
                with (
                    limit if outer else _nothing(),
                    pool.reserve() as mc,
                    _nothing() if outer else limit,
                ):
                    peak_size = max(peak_size, pool.stats()["size"])
                    incremented += 1
                    count = mc.incr(key(f"c{i}"), 1)
                    low = i * 1_000_000 + 1
                    if count is None or not low <= count <= i * 1_000_000 + incremented:
                        wrong.append(f"greenlet {i} counter read {count}")
                    value = f"{i}:{n}"
                    mc.set(key(f"v{i}"), value)
                    got = mc.get(key(f"v{i}"))
                    if got != value.encode():
                        wrong.append(f"greenlet {i} read {got!r}, wrote {value!r}")
            except Timeout:
                timeouts += 1
            except Exception as exc:  # pymemcache's protocol errors would land here
                protocol_errors.append(exc)

    jobs = [gevent.spawn(work, i) for i in range(greenlets)]
    gevent.joinall(jobs, timeout=90)
    assert all(job.dead for job in jobs)
    assert wrong == [] and protocol_errors == []
    stats = pool.stats()
    assert timeouts > 100 and stats["discarded"] > 100  # the faults really happened
    assert stats["in_use"] == 0 and peak_size <= 8 and stats["size"] <= 8
    assert stats["created"] - stats["discarded"] == stats["size"]


def test_client_factory_sockets_are_cooperative_and_guarded(proxy: FaultProxy) -> None:
    """The helper's clients use greenpool's guarded gevent socket module by default."""
    mc = greenpool.client_factory(proxy.address)()
    assert mc.socket_module is greenpool._socket
    assert mc.no_delay and mc.timeout == 2.0 and mc.connect_timeout == 1.0
    assert greenpool.client_factory(proxy.address, timeout=9)().timeout == 9
    with pytest.raises(TypeError):
        greenpool.client_factory(proxy.address, no_such_option=1)
