"""Meta commands on greenpool.Client: typed replies, strict reading, checks before sending.

A reply that does not parse, or that answers another command, cuts the
connection like any other command's: the proxy (tests/proxy.py) injects the
bytes a server out of step would send, and the next command must read its own
reply on a new connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent import Timeout
from pymemcache.exceptions import (
    MemcacheClientError,
    MemcacheIllegalInputError,
    MemcacheUnexpectedCloseError,
    MemcacheUnknownError,
)

from greenpool import ClientPool, HashClient, MetaReply, MetaRequest, PooledClient
from tests.memcached import MemcachedServer
from tests.nutcracker import Nutcracker
from tests.proxy import FaultProxy

MakePool = Callable[..., ClientPool[Any]]
Key = Callable[[str], str]


def test_meta_commands_return_typed_replies(make_pool: MakePool, key: Key) -> None:
    """mg, ms, md, ma and mn, and the flags memcached returns, read as their types."""
    with make_pool(1).reserve() as mc:
        assert mc.meta_set(key("a"), b"hello", "T60", "F7") == MetaReply("HD", {})
        got = mc.meta_get(key("a"), "v", "t", "f", "c", "s", "k", "O42")
        assert (got.status, got.value, got.ttl, got.client_flags, got.size) == (
            "VA", b"hello", 60, 7, 5
        )  # fmt: skip
        assert got.key == key("a").encode() and got.opaque == b"42" and got.cas
        assert mc.meta_get(key("a")).status == "HD"  # no flags: found, no value
        assert mc.meta_set(key("a"), b"x", f"C{got.cas + 1}").status == "EX"
        assert mc.meta_get(key("missing"), "v").status == "EN"
        assert mc.meta_arithmetic(key("n"), "N0", "J10", "v").value == b"10"
        assert mc.meta_arithmetic(key("n"), "D5", "v").value == b"15"
        assert mc.meta_delete(key("a")).status == "HD"
        assert mc.meta_delete(key("a")).status == "NF"
        assert mc.meta_noop() == MetaReply("MN", {})


def test_leases_stale_values_and_wins_are_read_from_the_flags(
    make_pool: MakePool, key: Key
) -> None:
    """N gives one caller W on a miss and the next Z, on a 0-byte stub that a
    classic get reads as an empty value (the stub trap); md I marks stale (X)."""
    with make_pool(1).reserve() as mc:
        first = mc.meta_get(key("hot"), "v", "c", "N30")
        second = mc.meta_get(key("hot"), "v", "c", "N30")
        assert first.win and not first.won_elsewhere and first.value == b""
        assert second.won_elsewhere and not second.win and second.cas == first.cas
        assert mc.get(key("hot")) == b""  # what a classic reader sees during the lease
        assert mc.meta_set(key("hot"), b"v1", "T60", f"C{first.cas}").status == "HD"
        assert mc.meta_delete(key("hot"), "I", "T30").status == "HD"
        stale = mc.meta_get(key("hot"), "v", "c", "N30")
        assert stale.stale and stale.win and stale.value == b"v1"
        assert mc.meta_get(key("hot"), "v").stale


def test_meta_batch_sends_in_one_write_and_reads_replies_in_order(
    make_pool: MakePool, proxy: FaultProxy, key: Key
) -> None:
    """One write for the whole batch (one proxy chunk), one reply per request, in order."""
    pool = make_pool(1, address=proxy.address)
    with pool.reserve() as mc:
        mc.meta_noop()  # connected
        before = proxy.sent
        requests = [
            MetaRequest("ms", key("b1").encode(), ["T60"], b"one"),
            MetaRequest("mg", key("b1").encode(), ["v", "k"]),
            MetaRequest("mg", key("b2").encode(), ["v", "k"]),
            MetaRequest("md", key("b1").encode()),
            MetaRequest("mn"),
        ]
        replies = mc.meta_batch(requests)
        assert proxy.sent - before == sum(len(r.wire) for r in requests)
    assert [r.status for r in replies] == ["HD", "VA", "EN", "HD", "MN"]
    assert replies[1].value == b"one" and replies[1].key == key("b1").encode()


@pytest.mark.parametrize(
    "flag", ["q", "b", "v v", "", "1", "é", "T3\r\nflush_all", "O" + "1" * 33, 7]
)
def test_bad_flags_are_refused_before_anything_is_sent(
    make_pool: MakePool, proxy: FaultProxy, key: Key, flag: Any
) -> None:
    """Every flag token is checked before sending: nothing reaches the server."""
    pool = make_pool(1, address=proxy.address)
    with pytest.raises(MemcacheIllegalInputError), pool.reserve() as mc:
        mc.meta_get(key("k"), "v", flag)
    assert proxy.sent == 0 and pool.stats()["discarded"] == 0


@pytest.mark.parametrize(
    "bad", ["", "a b", "a\x01b", "a\x7fb", "tab\tkey", "x" * 251, "é"], ids=repr
)
def test_bad_keys_are_refused_before_anything_is_sent(
    make_pool: MakePool, proxy: FaultProxy, bad: str
) -> None:
    """A meta key is 1 to 250 bytes without space, control bytes or DEL (pymemcache
    lets an empty key and control bytes other than whitespace and NUL through)."""
    pool = make_pool(1, address=proxy.address)
    for command in ("meta_get", "meta_delete", "meta_arithmetic"):
        with pytest.raises(MemcacheIllegalInputError), pool.reserve() as mc:
            getattr(mc, command)(bad, "v")
    with pytest.raises(MemcacheIllegalInputError), pool.reserve() as mc:
        mc.meta_set(bad, b"x")
    if bad.isascii():  # UTF-8 bytes are fine on the wire: allow_unicode_keys sends them
        with pytest.raises(MemcacheIllegalInputError):
            MetaRequest("mg", bad.encode())
    assert proxy.sent == 0


def test_a_bad_request_is_refused_with_its_parameter_named() -> None:
    with pytest.raises(ValueError, match="command must be one of"):
        MetaRequest("get", b"k")
    with pytest.raises(TypeError, match="key must be bytes"):
        MetaRequest("mg", "k")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="value must be bytes"):
        MetaRequest("ms", b"k", (), "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="only ms takes a value"):
        MetaRequest("mg", b"k", (), b"x")
    with pytest.raises(ValueError, match="mn takes no key"):
        MetaRequest("mn", b"k")


@pytest.mark.parametrize(
    "injected",
    [
        b"HD\r\n",  # a reply nobody asked for ahead of ours: mg v cannot get HD
        b"VA 99999999999 v\r\n",  # a size beyond any item
        b"VA -1\r\n",
        b"VA 2\r\nabcdef\r\n",  # data not ending where its size says
        b"EN Ofoo\r\n",  # an opaque that is not ours
        b"HD \x01x\r\n",  # a flag that is no letter
        b"MN\r\n",  # mn's reply to an mg
        b"VALUE k 0 1\r\nx\r\nEND\r\n",  # a classic reply
    ],
    ids=repr,
)
def test_a_reply_that_does_not_parse_cuts_the_connection(
    make_pool: MakePool, proxy: FaultProxy, key: Key, injected: bytes
) -> None:
    """Whatever does not parse as the reply to the request sent raises, closes the
    connection and discards the client; the next command reads its own reply."""
    pool = make_pool(1, address=proxy.address)
    with pool.reserve() as mc:
        mc.meta_set(key("a"), b"mine", "T60")
    proxy.inject(injected)
    with pytest.raises(MemcacheUnknownError), pool.reserve() as mc:
        mc.meta_get(key("a"), "v", "O1")
    assert mc.sock is None and pool.stats()["discarded_error"] == 1
    with pool.reserve() as mc:
        assert mc.meta_get(key("a"), "v").value == b"mine"


def test_an_error_reply_raises_and_a_client_error_cuts_the_connection(
    make_pool: MakePool, key: Key
) -> None:
    """CLIENT_ERROR (an unknown flag) raises pymemcache's MemcacheClientError and
    costs the connection, as pymemcache's other commands do."""
    pool = make_pool(1)
    with pytest.raises(MemcacheClientError), pool.reserve() as mc:
        mc.meta_get(key("a"), "v", "Zz")
    assert pool.stats()["discarded_error"] == 1


def test_a_meta_command_interrupted_mid_reply_costs_its_connection_only(
    make_pool: MakePool, proxy: FaultProxy, key: Key
) -> None:
    """A Timeout while the reply is held discards the client; the next caller
    reads its own reply."""
    pool = make_pool(1, address=proxy.address)
    with pool.reserve() as mc:
        mc.meta_set(key("x"), b"x-value", "T60")
        mc.meta_set(key("y"), b"y-value", "T60")
    proxy.reply_delay = 0.05
    with pytest.raises(Timeout), Timeout(0.01), pool.reserve() as mc:
        mc.meta_get(key("x"), "v")
    with pool.reserve() as mc:
        assert mc.meta_get(key("y"), "v").value == b"y-value"
    assert pool.stats()["discarded_interrupted"] == 1


def test_a_value_read_in_several_chunks_is_whole(make_pool: MakePool, key: Key) -> None:
    value = bytes(range(256)) * 4096  # 1 MiB minus nothing: several recv calls
    with make_pool(1).reserve() as mc:
        assert mc.meta_set(key("big"), value[:1000000], "T60").status == "HD"
        assert mc.meta_get(key("big"), "v", "s").value == value[:1000000]


def test_probe_meta_tells_memcached_from_nutcracker(
    memcached: MemcachedServer, start_nutcracker: Callable[..., Nutcracker]
) -> None:
    """memcached 1.6.18 speaks meta; nutcracker 0.5.0 closes the connection on mn,
    which costs the probing client its connection and answers False."""
    direct = PooledClient(memcached.address)
    with direct.pool.reserve() as mc:
        assert mc.probe_meta() is True
    proxy = start_nutcracker([memcached.address])
    behind = PooledClient(proxy.address)
    with behind.pool.reserve() as mc:
        assert mc.probe_meta() is False
        assert mc.sock is None
    assert behind.pool.stats()["discarded_error"] == 1
    with pytest.raises(MemcacheUnexpectedCloseError):
        behind.meta_get("anything", "v")


def test_pooled_and_hash_clients_send_meta_commands_to_the_keys_server(
    three_memcacheds: list[MemcachedServer], key: Key
) -> None:
    cluster = HashClient([s.address for s in three_memcacheds])
    names = [key(f"k{i}") for i in range(20)]
    for name in names:
        assert cluster.meta_set(name, name.encode(), "T60").status == "HD"
    for name in names:
        assert cluster.meta_get(name, "v").value == name.encode()
        assert cluster.get(name) == name.encode()  # the same server as the classic commands
    assert cluster.meta_delete(names[0]).status == "HD"
    assert cluster.meta_arithmetic(key("n"), "N0", "J7", "v").value == b"7"


def test_a_killed_caller_of_a_batch_cuts_only_its_own_connection(
    make_pool: MakePool, proxy: FaultProxy, key: Key
) -> None:
    """meta_batch is one command: a kill mid-batch discards the client."""
    pool = make_pool(2, address=proxy.address)
    proxy.reply_delay = 0.05
    requests = [MetaRequest("mg", key(f"k{i}").encode(), ["v"]) for i in range(5)]

    def batch() -> list[MetaReply]:
        with pool.reserve() as mc:
            return mc.meta_batch(requests)  # type: ignore[no-any-return]

    job = gevent.spawn(batch)
    gevent.sleep(0.02)
    job.kill(block=True, timeout=5)
    assert pool.stats()["discarded_interrupted"] == 1
    proxy.reply_delay = 0
    assert [r.status for r in gevent.spawn(batch).get(timeout=5)] == ["EN"] * 5
