"""A connection whose command did not finish, or that holds bytes nobody asked
for, is never lent again: the client knows, whatever the exception and wherever
it was caught.

Each test sets two counters and a flag key, breaks one command in the way a
hostile user found, then checks that the *next* caller's commands read their
own replies: ``delete`` of an existing key is True, each ``incr`` is that
counter's next value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from gevent import Timeout
from pymemcache.exceptions import MemcacheIllegalInputError, MemcacheUnknownError
from pymemcache.serde import pickle_serde

import greenpool
from greenpool import ClientPool, GreenletMappedPool, PooledClient
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy

MakePool = Callable[..., ClientPool[Any]]
Key = Callable[[str], str]


class YieldingSerde:
    """pickle_serde, but deserializing *slow_key* yields to the hub first, as a
    deserializer that logs to a network handler or reads another service would;
    with *raising* it raises that instead of yielding."""

    def __init__(self, slow_key: str, raising: BaseException | None = None) -> None:
        self.slow_key = slow_key
        self.raising = raising

    def serialize(self, key: Any, value: Any) -> tuple[bytes, int]:
        return pickle_serde.serialize(key, value)  # type: ignore[no-any-return]

    def deserialize(self, key: Any, value: bytes, flags: int) -> Any:
        if key == self.slow_key:
            if self.raising is not None:
                raise self.raising
            gevent.sleep(0.2)
        return pickle_serde.deserialize(key, value, flags)


#: Larger than pymemcache's 4 KB reads: the end of b's reply is still on the
#: socket when the deserializer of a runs.
B = "B" * 20000


def _prepare(mc: Any, key: Key) -> None:
    for name, value in (("a", "A"), ("b", B), ("x", "X"), ("c1", 100), ("c2", 500)):
        mc.set(key(name), value, noreply=False)


def _next_caller_reads_its_own_replies(mc: Any, key: Key, c1: int = 101) -> None:
    """*c1*: what incr of counter c1 must answer (the cut command may have applied)."""
    assert mc.delete(key("x"), noreply=False) is True
    assert mc.incr(key("c1"), 1) == c1
    assert mc.incr(key("c2"), 1) == 501
    assert mc.get(key("b")) == B


class ExtractingClient(greenpool.Client):
    """Overrides pymemcache's ``_extract_value`` hook, so its values are read and
    decoded one by one, the serde running between recv calls."""

    def _extract_value(self, *args: Any) -> Any:
        return super()._extract_value(*args)


@pytest.fixture(params=["greenpool.Client", "ExtractingClient"])
def pool(
    request: pytest.FixtureRequest, memcached: MemcachedServer, key: Key
) -> Iterator[ClientPool[Any]]:
    """One client, whose deserializer yields on key a: greenpool's, which reads a
    get's whole reply before it decodes; or one that decodes as it reads."""
    client_class = greenpool.Client if request.param == "greenpool.Client" else ExtractingClient
    serde = YieldingSerde(key("a"))
    made: ClientPool[Any] = ClientPool(
        lambda: client_class(memcached.address, serde=serde, **greenpool.CLIENT_DEFAULTS), 1
    )
    with made.reserve() as mc:
        _prepare(mc, key)
    yield made
    made.close()


def _cut_off_while_decoding(pool: ClientPool[Any]) -> int:
    """How many clients a Timeout in the deserializer should cost: none if the
    reply was read before decoding (greenpool.Client), one if it cut it off."""
    with pool.reserve() as mc:
        return 0 if type(mc) is greenpool.Client else 1


def _get_many_cut_off_inside_the_block(mc: Any, key: Key) -> None:
    """gevent.Timeout fires in the deserializer, and is caught inside the block:
    the block then ends normally."""
    with pytest.raises(Timeout), Timeout(0.05):
        mc.get_many([key("a"), key("b")])


def test_a_timeout_caught_inside_the_block_while_decoding(pool: ClientPool[Any], key: Key) -> None:
    """Decoding after the reply is read leaves the connection in step (greenpool's
    reader); decoding between recv calls cuts the reply off, and the connection
    is closed there and then: either way the next caller reads its own replies."""
    expected_cuts = _cut_off_while_decoding(pool)
    with pool.reserve() as mc:
        _get_many_cut_off_inside_the_block(mc, key)
    with pool.reserve() as mc:
        _next_caller_reads_its_own_replies(mc, key)
    assert pool.stats()["discarded_interrupted"] == expected_cuts


def test_the_same_caller_reads_its_own_replies_after_catching_the_timeout(
    pool: ClientPool[Any], key: Key
) -> None:
    """A cut closes the connection at once, not when the block ends: the caller's
    own next command, in the same block, reads its own reply too."""
    with pool.reserve() as mc:
        _get_many_cut_off_inside_the_block(mc, key)
        _next_caller_reads_its_own_replies(mc, key)


def test_a_keyboard_interrupt_from_the_deserializer_caught_inside_the_block(
    make_pool: MakePool, key: Key
) -> None:
    pool = make_pool(1, client_options={"serde": YieldingSerde(key("a"), KeyboardInterrupt())})
    with pool.reserve() as mc:
        _prepare(mc, key)
        with pytest.raises(KeyboardInterrupt):
            mc.get_many([key("a"), key("b")])
    with pool.reserve() as mc:
        _next_caller_reads_its_own_replies(mc, key)


def test_the_mapped_pool_never_lends_the_cut_off_connection_either(
    pool: ClientPool[Any], key: Key
) -> None:
    mapped = GreenletMappedPool(pool)

    def first_greenlet() -> None:
        with mapped.reserve() as mc:
            _get_many_cut_off_inside_the_block(mc, key)

    def second_greenlet() -> None:
        with mapped.reserve() as mc:
            _next_caller_reads_its_own_replies(mc, key)

    expected_cuts = _cut_off_while_decoding(pool)
    gevent.spawn(first_greenlet).get(timeout=10)
    gevent.idle()  # the first greenlet's death link hands its client back
    gevent.spawn(second_greenlet).get(timeout=10)
    gevent.idle()
    assert mapped.stats()["discarded_interrupted"] == expected_cuts


@pytest.fixture
def traced(proxy: FaultProxy, key: Key) -> Iterator[PooledClient]:
    """A PooledClient of one connection through the fault proxy, with the keys set."""
    mc = PooledClient(proxy.address, max_pool_size=1, default_noreply=False, serde=pickle_serde)
    _prepare(mc, key)
    yield mc
    mc.pool.close()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"expire": 2**63}, "expire"),
        ({"expire": 2**31}, "expire"),
        ({"expire": -(2**31) - 1}, "expire"),
        ({"flags": -1}, "flags"),
        ({"flags": 2**32}, "flags"),
    ],
    ids=["expire-2**63", "expire-2**31", "expire-below-int32", "flags-negative", "flags-2**32"],
)
def test_an_out_of_range_integer_is_refused_before_anything_is_sent(
    traced: PooledClient, proxy: FaultProxy, key: Key, arguments: dict[str, int], named: str
) -> None:
    """memcached answers ERROR to these (or silently truncates them); with noreply
    nobody reads that, and the next caller's get did."""
    sent = proxy.sent
    with pytest.raises(MemcacheIllegalInputError, match=named):
        traced.set(key("a"), "new", noreply=True, **arguments)
    assert proxy.sent == sent
    assert traced.get(key("a")) == "A"  # what was stored stays
    _next_caller_reads_its_own_replies(traced, key)
    assert traced.pool_stats()["discarded"] == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda mc, k: mc.touch(k, expire=2**63, noreply=True),
        lambda mc, k: mc.incr(k, 2**64, noreply=True),
        lambda mc, k: mc.incr(k, -1, noreply=True),
        lambda mc, k: mc.flush_all(delay=2**63, noreply=True),
    ],
    ids=["touch-expire", "incr-2**64", "incr-negative", "flush_all-delay"],
)
def test_other_commands_refuse_out_of_range_integers_too(
    traced: PooledClient, proxy: FaultProxy, key: Key, call: Callable[[Any, str], Any]
) -> None:
    sent = proxy.sent
    with pytest.raises(MemcacheIllegalInputError, match="must be between"):
        call(traced, key("c1"))
    assert proxy.sent == sent
    _next_caller_reads_its_own_replies(traced, key)


def test_a_raw_command_reply_longer_than_its_end_tokens_reaches_nobody(
    traced: PooledClient, key: Key
) -> None:
    """``mg key v`` answers ``VA 12000`` and the value: the default end_tokens stop
    after the first line, and the rest must never be read by the next caller."""
    traced.set(key("big"), "v" * 12000)
    assert traced.raw_command(f"mg {key('big')} v").startswith(b"VA ")
    _next_caller_reads_its_own_replies(traced, key)


def test_a_reply_that_does_not_fit_its_command_costs_the_connection(
    traced: PooledClient, proxy: FaultProxy, key: Key
) -> None:
    """A server out of step answers incr with another command's reply: pymemcache
    raises ValueError after the reply line, which is no application error;
    greenpool's client sees the reply does not fit and says so."""
    proxy.inject(b"DELETED\r\n")
    with pytest.raises((ValueError, MemcacheUnknownError)):
        traced.incr(key("c1"), 1)  # memcached did increment it: its reply came after
    _next_caller_reads_its_own_replies(traced, key, c1=102)
    assert traced.pool_stats()["discarded_error"] == 1


def test_a_value_for_a_key_nobody_asked_for_costs_the_connection(
    traced: PooledClient, proxy: FaultProxy, key: Key
) -> None:
    """get_many meets a key it did not ask for: pymemcache's KeyError."""
    proxy.inject(b"VALUE nobody-asked 0 1\r\nx\r\n")
    with pytest.raises((KeyError, MemcacheUnknownError)):
        traced.get_many([key("a")])
    _next_caller_reads_its_own_replies(traced, key)
    assert traced.pool_stats()["discarded_error"] == 1


def test_bytes_nobody_asked_for_are_found_before_the_client_is_lent(
    traced: PooledClient, proxy: FaultProxy, key: Key
) -> None:
    """Bytes that arrive while the client is idle (a late reply, a server's error
    to a noreply command) are seen without a round trip: the client reconnects."""
    traced.version()  # connected, and idle in the pool
    proxy.push(b"VALUE " + key("b").encode() + b" 0 1\r\nZ\r\nEND\r\n")
    _next_caller_reads_its_own_replies(traced, key)
    assert traced.pool_stats()["reconnects"] == 1
