"""Nothing a caller passes becomes a command: keys are checked as memcached parses them.

memcached's text protocol splits a command line on spaces and ends it at a
line end, so a key that is empty, or holds a space, a line end or another
control byte, turns the rest of the line (and a storage command's data block)
into commands of their own: ``set(" ", b"flush_all")`` flushed the whole cache.
Every key path checks the key, after prefixing and encoding, before anything
is sent; a bad key fails its own caller with ``MemcacheIllegalInputError``
naming it, and nothing reaches the server.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gevent
import pytest
from pymemcache.exceptions import MemcacheIllegalInputError

from greenpool import HashClient, PooledClient
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.test_batching import busy

Key = Callable[[str], str]

#: Keys that memcached would not read as one key.
BAD_KEYS: list[Any] = [
    "",
    " ",
    "\r\n",
    "\t",
    "a b",
    "a\r\nb",
    "a\x00b",
    "\x01",
    "a\x1fb",
    "a\x7fb",
    "k" * 251,
    b"",
    b" ",
    b"\r\n",
    b"a\nflush_all",
    b"\x00",
    b"k" * 251,
]
_IDS = [repr(key)[:20] for key in BAD_KEYS]

# Every command that takes a key, as a call on a client.
COMMANDS: dict[str, Callable[[Any, Any], Any]] = {
    "set": lambda mc, k: mc.set(k, b"flush_all", noreply=False),
    "set noreply": lambda mc, k: mc.set(k, b"flush_all", noreply=True),
    "add noreply": lambda mc, k: mc.add(k, b"flush_all", noreply=True),
    "set_many noreply": lambda mc, k: mc.set_many({"fine": b"x", k: b"flush_all"}, noreply=True),
    "get": lambda mc, k: mc.get(k),
    "get_many": lambda mc, k: mc.get_many(["fine", k]),
    "gets": lambda mc, k: mc.gets(k),
    "delete noreply": lambda mc, k: mc.delete(k, noreply=True),
    "delete_many": lambda mc, k: mc.delete_many(["fine", k], noreply=False),
    "incr noreply": lambda mc, k: mc.incr(k, 1, noreply=True),
    "touch noreply": lambda mc, k: mc.touch(k, 10, noreply=True),
    "cas": lambda mc, k: mc.cas(k, b"flush_all", 1, noreply=False),
}


@pytest.fixture
def sentinels(memcached: MemcachedServer, key: Key) -> Callable[[], None]:
    """Store sentinel keys; return a check that they are all still there."""
    from pymemcache.client.base import Client

    values = {key(f"sentinel{i}"): f"kept-{i}".encode() for i in range(3)}
    plain = Client(memcached.address)
    plain.set_many(values, noreply=False)

    def intact() -> None:
        assert plain.get_many(list(values)) == values, "the cache lost what it held"

    return intact


@pytest.mark.parametrize("bad", BAD_KEYS, ids=_IDS)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_key_memcached_would_split_is_refused_before_anything_is_sent(
    proxy: FaultProxy, sentinels: Callable[[], None], bad: Any, command: str
) -> None:
    """PooledClient (autobatching on): the bad key's command raises naming the key,
    not one byte reaches the server, and the cache keeps what it held."""
    mc = PooledClient(proxy.address)
    sent = proxy.sent
    with pytest.raises(MemcacheIllegalInputError, match=r"[Kk]ey"):
        COMMANDS[command](mc, bad)
    assert proxy.sent == sent
    sentinels()
    assert mc.get("fine-after") is None  # the connection, if any, is in step
    mc.pool.close()


@pytest.mark.parametrize("bad", ["", " ", "\r\n", "a\x01b", "k" * 251], ids=repr)
@pytest.mark.parametrize("command", ["set", "set noreply", "get", "delete noreply"])
def test_hash_client_refuses_the_same_keys_before_placing_them(
    memcached: MemcachedServer,
    proxy_to: Callable[..., FaultProxy],
    sentinels: Callable[[], None],
    bad: str,
    command: str,
) -> None:
    """HashClient (over one server and over two): the same keys fail, unsent."""
    proxies = [proxy_to(memcached.address) for _ in range(2)]
    for servers in ([proxies[0].address], [p.address for p in proxies]):
        mc = HashClient(servers)
        with pytest.raises(MemcacheIllegalInputError):
            COMMANDS[command](mc, bad)
        assert [p.sent for p in proxies] == [0, 0]
    sentinels()


def test_a_value_set_under_a_blank_key_never_runs_as_a_command(
    memcached: MemcachedServer, sentinels: Callable[[], None]
) -> None:
    """The report's own case: ``set(" ", b"flush_all")`` flushed the cache."""
    mc = PooledClient(memcached.address)
    flushes = memcached.stats()["cmd_flush"]
    for blank in (" ", "", "\r\n"):
        with pytest.raises(MemcacheIllegalInputError):
            mc.set(blank, b"flush_all")
    assert memcached.stats()["cmd_flush"] == flushes
    sentinels()


def test_a_blank_noreply_set_never_answers_the_next_callers_incr(
    proxy: FaultProxy, key: Key
) -> None:
    """The report's second case: a noreply ``set("", b"incr ctr_a 0")`` made memcached
    run ``incr ctr_a 0`` and its late reply answered the next caller's incr, behind
    1 ms of latency, 20 times in 40. Now the set is refused and nothing is owed."""
    mc = PooledClient(proxy.address, max_pool_size=1)
    mc.set(key("ctr_a"), "1000", noreply=False)
    mc.set(key("ctr_b"), "7", noreply=False)
    proxy.reply_delay = 0.001
    wrong = []
    for _ in range(40):
        with pytest.raises(MemcacheIllegalInputError):
            mc.set("", f"incr {key('ctr_a')} 0".encode(), noreply=True)
        got = mc.incr(key("ctr_b"), 0)
        if got != 7:
            wrong.append(got)
    assert wrong == []


def test_a_key_prefix_memcached_cannot_take_is_refused_by_name(memcached: MemcachedServer) -> None:
    """A bad key_prefix fails at construction, naming key_prefix, not at every command."""
    for prefix in ("a b", "p\r\n", b"\x00", "x" * 251):
        with pytest.raises(MemcacheIllegalInputError, match="key_prefix"):
            PooledClient(memcached.address, key_prefix=prefix)
    mc = PooledClient(memcached.address, key_prefix="p:")
    assert mc.set("k", b"v", noreply=False) and mc.get("k") == b"v"


def test_a_prefix_that_pushes_a_key_past_250_bytes_refuses_that_key(
    memcached: MemcachedServer,
) -> None:
    """The length is memcached's: the key as sent, prefix included."""
    mc = PooledClient(memcached.address, key_prefix="p" * 200)
    assert mc.set("k" * 50, b"v", noreply=False)
    with pytest.raises(MemcacheIllegalInputError, match="Key is too long"):
        mc.set("k" * 51, b"v", noreply=False)


def test_unicode_keys_keep_pymemcaches_rule(memcached: MemcachedServer) -> None:
    """Non-ASCII str keys need allow_unicode_keys (then UTF-8 on the wire); bytes
    keys with high bytes are memcached's to take either way."""
    strict = PooledClient(memcached.address)
    with pytest.raises(MemcacheIllegalInputError, match="Non-ASCII"):
        strict.set("clé", b"v")
    assert strict.set(b"cl\xc3\xa9-bytes", b"v", noreply=False)
    loose = PooledClient(memcached.address, allow_unicode_keys=True)
    assert loose.set("clé", b"v", noreply=False) and loose.get("clé") == b"v"
    assert strict.get("clé".encode()) == b"v"
    with pytest.raises(MemcacheIllegalInputError):
        loose.set("cl é", b"v")


def test_commands_that_carry_arguments_refuse_line_ends(memcached: MemcachedServer) -> None:
    """stats arguments and a raw command are one line each: a line end in them
    would be a second command."""
    mc = PooledClient(memcached.address)
    flushes = memcached.stats()["cmd_flush"]
    with pytest.raises(MemcacheIllegalInputError):
        mc.stats("items\r\nflush_all")
    with pytest.raises(MemcacheIllegalInputError, match="line"):
        mc.raw_command("version\r\nflush_all")
    assert memcached.stats()["cmd_flush"] == flushes


def test_one_bad_key_in_a_batch_fails_only_its_own_caller(proxy: FaultProxy, key: Key) -> None:
    """Batched beside good keys, each bad key's caller gets what its unbatched call
    gets (MemcacheIllegalInputError), and every good caller its value."""
    mc = PooledClient(proxy.address, default_noreply=False)
    good = {key(str(i)): str(i).encode() for i in range(4)}
    mc.set_many(good)
    proxy.reply_delay = 0.05
    lone = busy(mc.get, proxy, key("0"))
    bad = ["\r\n", "", " ", "a\r\nb", key("x") + " " + key("1")]
    jobs = {name: gevent.spawn(mc.get, name) for name in [*good, *bad]}
    many = gevent.spawn(mc.get_many, [*good, "\r\n"])
    gevent.joinall([lone, many, *jobs.values()], timeout=5)
    assert {name: jobs[name].value for name in good} == good
    for name in bad:
        assert isinstance(jobs[name].exception, MemcacheIllegalInputError), name
    assert isinstance(many.exception, MemcacheIllegalInputError)
    assert mc.pool_stats()["discarded"] == 0
