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

    The pool cannot see a Timeout caught inside the block, but the client closed
    its connection at the cut: the next command reconnects and reads its own
    reply, and the pool discards the client when the block ends.
    """
    pool = make_pool(1, address=proxy.address)
    with pool.reserve() as mc:
        catch_a_timeout_and_go_on(mc, proxy, key)
    assert pool.stats()["discarded_interrupted"] == 1


def catch_a_timeout_and_go_on(mc: Any, proxy: FaultProxy, key: Key) -> None:
    """Time out x's incr, catch it, and incr y on the same client (test_tls reuses this)."""
    _counters(mc, key)
    proxy.reply_delay = 0.05
    with pytest.raises(Timeout), Timeout(0.01):
        mc.incr(key("x"), 1)
    assert mc.sock is None  # closed at the cut, not when the block ends
    assert mc.incr(key("y"), 1) == 6


def _plain_pymemcache_client(address: tuple[str, int]) -> Callable[[], Client]:
    """A user's own factory: pymemcache's Client, which does not track its connection."""
    return lambda: Client(address, socket_module=gevent.socket, connect_timeout=1, timeout=2)


@pytest.mark.parametrize("plain", [False, True], ids=["greenpool.Client", "pymemcache.Client"])
def test_hundreds_of_greenlets_with_random_timeouts_see_no_wrong_value(
    proxy: FaultProxy, key: Key, plain: bool
) -> None:
    """300 greenlets, random reply delays and random timeouts: 0 wrong values, 0 protocol errors.

    Each greenlet owns a counter starting at its own base and a key whose values
    name the greenlet, so a reply meant for anyone else is recognised. With
    pymemcache's own Client, as a user's own factory would make, the pool's
    judgement of the exception that left the block keeps it so.
    """
    rng = random.Random(20261121)
    factory = (
        _plain_pymemcache_client(proxy.address)
        if plain
        else greenpool.client_factory(proxy.address)
    )
    pool: ClientPool[Any] = ClientPool(factory, 8, timeout=30)
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


def test_client_factory_clients_keep_their_state_over_cooperative_sockets(
    proxy: FaultProxy,
) -> None:
    """The helper builds greenpool Clients over greenpool's gevent socket module."""
    mc = greenpool.client_factory(proxy.address)()
    assert isinstance(mc, greenpool.Client) and mc.socket_module is greenpool._socket
    assert mc.no_delay and mc.timeout == 2.0 and mc.connect_timeout == 1.0
    assert greenpool.client_factory(proxy.address, timeout=9)().timeout == 9
    with pytest.raises(TypeError):
        greenpool.client_factory(proxy.address, no_such_option=1)


class _Deserializing(Exception):
    """What the hostile serde raises now and then: an Exception mid-reply."""


class _Stop(BaseException):
    """A BaseException from the serde, as KeyboardInterrupt during an unpickle is."""


class _HostileSerde:
    """Values name their greenlet ("i:n"); deserializing sometimes yields to the
    hub (a logging handler, another service), sometimes raises."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def serialize(self, key: Any, value: Any) -> tuple[bytes, int]:
        return str(value).encode(), 0

    def deserialize(self, key: Any, value: bytes, flags: int) -> Any:
        roll = self.rng.random()
        if roll < 0.2:
            gevent.sleep(0)
        elif roll < 0.23:
            raise _Deserializing(key)
        elif roll < 0.25:
            raise _Stop(key)
        return value.decode()


def test_a_hostile_mix_of_interruptions_never_serves_another_keys_value(
    proxy: FaultProxy, key: Key
) -> None:
    """200 greenlets, over 5,000 operations through delayed replies: a serde that
    yields and raises, timeouts caught inside and outside blocks, noreply commands
    with out-of-range integers, raw commands whose replies outrun their end
    tokens. 0 values of another greenlet's key, 0 protocol errors."""
    rng = random.Random(20261122)
    factory = greenpool.client_factory(proxy.address, serde=_HostileSerde(rng))
    pool: ClientPool[Any] = ClientPool(factory, 8, timeout=30)
    greenlets, rounds = 200, 30
    with pool.reserve() as mc:
        for i in range(greenlets):
            mc.set(key(f"c{i}"), str(i * 1_000_000), noreply=False)
            mc.set(key(f"v{i}"), f"{i}:0" + "." * rng.choice((1, 5000)), noreply=False)
    proxy.reply_delay = lambda: rng.choice((0, 0, 0, 0.001, 0.005, 0.02))
    wrong: list[str] = []
    protocol_errors: list[BaseException] = []
    operations = 0

    def mine(i: int, value: Any) -> bool:
        return value is None or str(value).startswith(f"{i}:")

    def operation(i: int, n: int, mc: Any) -> None:
        choice = rng.randrange(6)
        if choice == 0:
            mc.set(key(f"v{i}"), f"{i}:{n}" + "." * rng.choice((1, 5000)), noreply=False)
        elif choice == 1:
            got = mc.get(key(f"v{i}"))
            if not mine(i, got):
                wrong.append(f"greenlet {i} got {got!r:.40}")
        elif choice == 2:
            got_many = mc.get_many([key(f"v{i}"), key(f"w{i}")])
            if set(got_many) - {key(f"v{i}"), key(f"w{i}")} or not all(
                mine(i, v) for v in got_many.values()
            ):
                wrong.append(f"greenlet {i} got_many {got_many!r:.60}")
        elif choice == 3:
            count = mc.incr(key(f"c{i}"), 1)
            if count is not None and not i * 1_000_000 < count < (i + 1) * 1_000_000:
                wrong.append(f"greenlet {i} counted {count}")
        elif choice == 4:
            with contextlib.suppress(MemcacheIllegalInputError):
                mc.set(key(f"w{i}"), f"{i}:{n}", expire=2**63, noreply=True)
                wrong.append("an out-of-range expire was sent")
        else:
            raw = mc.raw_command(f"mg {key(f'v{i}')} v")
            if raw.startswith(b"VA ") is False and raw != b"EN":
                wrong.append(f"greenlet {i} raw {raw!r:.40}")

    def work(i: int) -> None:
        nonlocal operations
        for n in range(1, rounds + 1):
            operations += 1
            limit = Timeout(rng.choice((0.002, 0.01, 0.05, 5.0)))
            inside = rng.random() < 0.5
            try:
                with limit if not inside else _nothing(), pool.reserve() as mc:
                    try:
                        with limit if inside else _nothing():
                            operation(i, n, mc)
                    except Timeout as caught:
                        if caught is not limit:
                            raise
                        got = mc.get(key(f"v{i}"))  # the same client, after the catch
                        if not mine(i, got):
                            wrong.append(f"greenlet {i} got {got!r:.40} after a timeout")
            except (Timeout, _Deserializing, _Stop):
                pass
            except Exception as exc:
                protocol_errors.append(exc)
            finally:
                limit.close()

    jobs = [gevent.spawn(work, i) for i in range(greenlets)]
    gevent.joinall(jobs, timeout=120)
    assert all(job.dead for job in jobs)
    assert operations >= 5000
    assert wrong == [] and protocol_errors == []
    stats = pool.stats()
    assert stats["in_use"] == 0 and stats["size"] <= 8
    assert stats["discarded_interrupted"] > 50  # the faults really happened
