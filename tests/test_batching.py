"""Autobatching: the gets asked for in one hub loop iteration go out once each, in
multi-key gets, and every caller gets exactly what the unbatched call gives.

A get that finds the batcher idle goes out alone, at once; the others batch.
So these tests first put one get in flight behind a FaultProxy that holds
replies back (:func:`busy`): every get asked for while it waits joins a batch.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from pymemcache import serde
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheIllegalInputError

import greenpool
from greenpool import AutoBatcher, ClientPool, PooledClient, PoolTimeout, client_factory
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.test_dropin import SCENARIOS, _transcript
from tests.waiting import wait_until

Key = Callable[[str], str]
MakeClient = Callable[..., PooledClient]


@pytest.fixture
def make_client(proxy: FaultProxy) -> Iterator[MakeClient]:
    """PooledClient(autobatch=True) through the proxy, waiting for store replies."""
    clients: list[PooledClient] = []

    def make(**options: Any) -> PooledClient:
        options = {"default_noreply": False, "autobatch": True, **options}
        clients.append(PooledClient(proxy.address, **options))
        return clients[-1]

    yield make
    for client in clients:
        client.pool.close()


def busy(get: Callable[[Any], Any], proxy: FaultProxy, key: str) -> gevent.Greenlet:
    """Start a lone get and return once the proxy holds its reply: from then on
    the batcher is busy, and the gets asked for meanwhile batch."""
    sent = proxy.sent
    job = gevent.spawn(get, key)
    wait_until(lambda: proxy.sent > sent, "the lone get reached the proxy")
    return job


def test_the_gets_of_one_loop_iteration_go_out_once_each_in_one_command(
    own_memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """20 greenlets asking for 5 keys: one batch, one get command of 5 keys (as
    memcached counts them too), each greenlet its own key's value."""
    proxy = proxy_to(own_memcached.address)
    mc = PooledClient(proxy.address, autobatch=True, default_noreply=False)
    values = {key(str(i)): f"value-{i}" for i in range(5)}
    assert mc.set_many(values) == []
    proxy.reply_delay = 0.1
    counted = own_memcached.stats()["cmd_get"]
    lone = busy(mc.get, proxy, key("0"))
    asked = [key(str(i % 5)) for i in range(20)]
    jobs = [gevent.spawn(mc.get, name) for name in asked]
    gevent.joinall([lone, *jobs], timeout=5, raise_error=True)
    assert [job.value for job in jobs] == [values[name].encode() for name in asked]
    stats = mc.pool_stats()
    assert stats["batches"] == 3 and stats["batch_commands"] == 2  # set_many, lone get, batch
    assert (stats["keys_asked"], stats["keys_sent"], stats["keys_per_batch"]) == (21, 6, 2.0)
    assert own_memcached.stats()["cmd_get"] - counted == 6
    assert stats["in_use"] == 0 and stats["reserves"] == 3  # the set_many, the lone get, the batch
    mc.pool.close()


def test_two_greenlets_asking_for_one_key_get_their_own_decoded_values(
    make_client: MakeClient, proxy: FaultProxy, key: Key
) -> None:
    """The key goes out once; each caller decodes it with the serde, so a mutable
    value is not shared: one caller changing its list leaves the other's alone."""
    mc = make_client(serde=serde.pickle_serde)
    mc.set(key("list"), [1, 2, 3])
    proxy.reply_delay = 0.05
    lone = busy(mc.get, proxy, key("other"))
    first, second = gevent.spawn(mc.get, key("list")), gevent.spawn(mc.get, key("list"))
    gevent.joinall([lone, first, second], timeout=5, raise_error=True)
    assert first.value == second.value == [1, 2, 3] and first.value is not second.value
    assert mc.pool_stats()["keys_sent"] == 2  # the lone get's key, and this one once


def test_a_batch_larger_than_max_keys_runs_as_parallel_even_chunks(
    own_memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """100 keys with autobatch_max_keys=32: four get commands of 25 keys, each on a
    client of its own at the same time, every value right."""
    proxy = proxy_to(own_memcached.address)
    mc = PooledClient(proxy.address, autobatch=True, autobatch_max_keys=32, max_pool_size=8)
    values = {key(str(i)): str(i) for i in range(100)}
    assert mc.set_many(values, noreply=False) == []
    proxy.reply_delay = 0.1
    lone = busy(mc.get, proxy, key("lone"))
    peak = 0

    def watch() -> None:
        nonlocal peak
        while True:
            peak = max(peak, mc.pool_stats()["in_use"])
            gevent.sleep(0.005)

    watcher = gevent.spawn(watch)
    jobs = {name: gevent.spawn(mc.get, name) for name in values}
    gevent.joinall([lone, *jobs.values()], timeout=5, raise_error=True)
    watcher.kill()
    assert {name: job.value for name, job in jobs.items()} == {
        name: value.encode() for name, value in values.items()
    }
    stats = mc.pool_stats()
    assert (stats["batch_commands"], stats["keys_sent"]) == (1 + 4, 1 + 100)
    assert peak == 5  # the lone get's client and four chunks' at once
    mc.pool.close()


def test_get_gets_and_get_many_merge_into_one_gets_per_key(
    make_client: MakeClient, proxy: FaultProxy, key: Key
) -> None:
    """A key asked for by get, gets and get_many goes out once, by gets; each caller
    gets its own shape, defaults included, and the cas token works."""
    mc = make_client()
    mc.set(key("k"), "v")
    proxy.reply_delay = 0.05
    lone = busy(mc.get, proxy, key("other"))
    calls = {
        "get": lambda: mc.get(key("k")),
        "gets": lambda: mc.gets(key("k")),
        "get_many": lambda: mc.get_many([key("k"), key("missing")]),
        "gets_many": lambda: mc.gets_many([key("missing"), key("k")]),
        "get default": lambda: mc.get(key("missing"), "fallback"),
        "gets defaults": lambda: mc.gets(key("missing"), "no", "cas"),
    }
    jobs = {name: gevent.spawn(call) for name, call in calls.items()}
    gevent.joinall([lone, *jobs.values()], timeout=5, raise_error=True)
    got = {name: job.value for name, job in jobs.items()}
    token = got["gets"][1]
    assert got == {
        "get": b"v",
        "gets": (b"v", token),
        "get_many": {key("k"): b"v"},
        "gets_many": {key("k"): (b"v", token)},
        "get default": "fallback",
        "gets defaults": ("no", "cas"),
    }
    assert mc.pool_stats()["keys_sent"] == 1 + 2  # the lone get's key, k and missing once
    assert mc.cas(key("k"), "v2", token) and mc.get(key("k")) == b"v2"


_partners = itertools.count()


_WRITES = ("set", "set_many", "add", "replace", "append", "prepend", "cas", "delete",
           "delete_many", "incr", "decr", "touch")  # fmt: skip


class _KeptBusy(PooledClient):
    """PooledClient(autobatch=True) with a partner greenlet that reads a key of its
    own through the batcher without pause. Through a proxy that delays every
    reply, the partner's get is in flight whenever another greenlet runs, so that
    greenlet's reads join a batch: none goes out alone (``batches_alone`` stays as
    it was across each), or the client records it as wrong.

    Unless *pipelined*, each write is followed by a ``version`` round trip on its
    own connection, so memcached has applied it before the next read: a noreply
    write and a batched get on another connection may otherwise arrive in either
    order (docs/autobatching.rst, "Your own writes"), which is not what the scenarios
    compare. With *pipelined*, each write goes in a pipeline instead (none goes
    out alone), on the pool's one connection, which keeps them all in order.
    """

    def __init__(self, server: Any, pipelined: bool = False, **options: Any) -> None:
        if pipelined:
            options["max_pool_size"] = 1
        super().__init__(server, autobatch=True, **options)
        self.wrong: list[str] = []
        self.batched_reads = 0
        partner = f"partner-{next(_partners)}"  # a scenario's clients may share a prefix
        self.set(partner, b"partner", noreply=False)
        expected = PooledClient.get(self, partner)  # the unbatched method, for reference
        self._partner = gevent.spawn(self._read_partner, self.get, partner, expected)
        wait_until(lambda: self.pool_stats()["in_use"] > 0, "the partner's get is in flight")
        for name in ("get", "gets", "get_many", "gets_many"):  # the batcher's, bound by __init__
            setattr(self, name, functools.partial(self._batched, getattr(self, name)))
        for name in _WRITES:
            if pipelined:
                setattr(self, name, functools.partial(self._batched, getattr(self, name)))
            else:
                setattr(self, name, functools.partial(self._applied, getattr(Client, name)))

    def _applied(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        with self.pool.reserve() as client:
            result = write(client, *args, **kwargs)
            client.version()
        return result

    def _read_partner(self, get: Callable[[str], Any], partner: str, expected: Any) -> None:
        while True:
            got = get(partner)
            if got != expected:
                self.wrong.append(f"the partner read {got!r}")

    def _batched(self, read: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        alone = self.pool_stats()["batches_alone"]
        try:
            return read(*args, **kwargs)
        finally:
            self.batched_reads += 1
            if self.pool_stats()["batches_alone"] != alone:
                self.wrong.append(f"{read.__name__}{args} went out alone")

    def close(self) -> None:
        self._partner.kill()
        assert self.wrong == []
        super().close()


@pytest.mark.parametrize("writes", ["applied", "pipelined"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_batched_calls_give_exactly_the_unbatched_results(
    memcached: MemcachedServer, proxy: FaultProxy, scenario: str, writes: str
) -> None:
    """test_dropin's scenarios, each read in a batch and each write applied alone or
    in a pipeline: values, defaults, cas tokens, results of writes, serde, key
    prefixes, unicode keys, and bad keys' errors all as pymemcache's own Client
    over the plain socket module gives them."""
    import socket

    proxy.reply_delay = 0.002
    expected = _transcript((Client, socket), memcached, SCENARIOS[scenario])
    clients: list[_KeptBusy] = []

    def kept_busy(*args: Any, **options: Any) -> _KeptBusy:
        clients.append(_KeptBusy(*args, pipelined=writes == "pipelined", **options))
        return clients[-1]

    assert _transcript((kept_busy, greenpool._socket), proxy, SCENARIOS[scenario]) == expected
    assert sum(client.batched_reads for client in clients) > 0  # and none went alone


def test_a_value_that_fails_to_decode_fails_its_own_callers_only(
    make_client: MakeClient, proxy: FaultProxy, key: Key
) -> None:
    """A value flagged as text that is not UTF-8 raises UnicodeDecodeError in its
    callers only, as unbatched; the other keys of the same command are served."""
    mc = make_client(serde=serde.pickle_serde)
    mc.set(key("good"), {"a": 1})
    mc.set(key("bad"), b"\xff not UTF-8", flags=serde.FLAG_TEXT)
    with pytest.raises(UnicodeDecodeError) as unbatched:
        PooledClient(proxy.address, serde=serde.pickle_serde).get(key("bad"))
    proxy.reply_delay = 0.05
    lone = busy(mc.get, proxy, key("other"))
    good = gevent.spawn(mc.get_many, [key("good")])
    bad = gevent.spawn(mc.get, key("bad"))
    gevent.joinall([lone, good, bad], timeout=5)
    assert good.value == {key("good"): {"a": 1}}
    assert type(bad.exception) is type(unbatched.value)
    assert str(bad.exception) == str(unbatched.value)
    assert mc.pool_stats()["discarded"] == 0 and mc.pool_stats()["batch_commands"] == 2


def test_a_bad_key_fails_its_own_caller_before_joining_and_no_one_else(
    make_client: MakeClient, proxy: FaultProxy, key: Key
) -> None:
    """pymemcache's MemcacheIllegalInputError, raised in the caller: its keys never
    join the batch (a get_many with one bad key sends none of its keys), and the
    other callers of the same loop iteration are served. So with a key pymemcache
    takes but cannot name its result by (a bytearray): its caller's TypeError."""
    mc = make_client()
    mc.set_many({key("a"): "1", key("b"): "2"})
    proxy.reply_delay = 0.05
    lone = busy(mc.get, proxy, key("lone"))
    good = [gevent.spawn(mc.get, key("a")), gevent.spawn(mc.get_many, [key("a"), key("b")])]
    bad = [
        gevent.spawn(mc.get, "with space"),
        gevent.spawn(mc.get_many, [key("c"), "x" * 251]),
        gevent.spawn(mc.gets, "nul\x00"),
    ]
    unhashable = gevent.spawn(mc.get, bytearray(key("a").encode()))  # passes the key check
    gevent.joinall([lone, *good, *bad, unhashable], timeout=5)
    assert [job.value for job in good] == [b"1", {key("a"): b"1", key("b"): b"2"}]
    assert all(isinstance(job.exception, MemcacheIllegalInputError) for job in bad)
    with pytest.raises(TypeError, match="unhashable type: 'bytearray'"):
        PooledClient(proxy.address).get(bytearray(key("a").encode()))  # as unbatched
    assert isinstance(unhashable.exception, TypeError)
    assert "unhashable type: 'bytearray'" in str(unhashable.exception)
    assert mc.pool_stats()["keys_sent"] == 1 + 2  # lone, a and b: not c
    with pytest.raises(MemcacheIllegalInputError) as ours:
        mc.get("with space")
    with pytest.raises(MemcacheIllegalInputError) as theirs:
        Client(proxy.address).get("with space")
    assert str(ours.value) == str(theirs.value)


def test_writes_are_pipelined_and_a_get_after_an_acknowledged_set_reads_it(
    make_client: MakeClient, key: Key
) -> None:
    """Sets go out in the loop iteration's pipelines, with the gets; 200 greenlets
    each writing and reading back their own key always read what they just
    wrote, and the 2,000 commands take a few dozen reservations."""
    mc = make_client(max_pool_size=4)
    wrong: list[str] = []

    def work(i: int) -> None:
        for n in range(5):
            mc.set(key(str(i)), f"{i}:{n}")
            got = mc.get(key(str(i)))
            if got != f"{i}:{n}".encode():
                wrong.append(f"{i}: wrote {i}:{n}, read {got!r}")

    gevent.joinall([gevent.spawn(work, i) for i in range(200)], timeout=30, raise_error=True)
    assert wrong == []
    stats = mc.pool_stats()
    assert stats["keys_asked"] == 1000 and stats["batches_alone"] < stats["batches"]
    assert stats["commands_pipelined"] + stats["batches_alone"] >= 1000  # every set
    assert stats["reserves"] == stats["pipelines"] + stats["batches_alone"] < 100


def test_a_lone_greenlet_sends_each_get_at_once_as_the_plain_call(
    make_client: MakeClient, key: Key
) -> None:
    """Sequential commands never wait for a batch: one command, one reservation each."""
    mc = make_client()
    mc.set(key("a"), "1")
    for _ in range(50):
        assert mc.get(key("a")) == b"1"
        assert mc.get_many([key("a"), key("a")]) == {key("a"): b"1"}
    stats = mc.pool_stats()
    assert stats["batches"] == stats["batches_alone"] == stats["batch_commands"] + 1 == 101
    assert stats["reserves"] == 101 and stats["pipelines"] == 0
    assert (stats["keys_asked"], stats["keys_sent"]) == (150, 150)  # as pymemcache sends them


def test_a_full_pool_raises_pool_timeout_in_every_caller_of_the_chunk(
    make_client: MakeClient, proxy: FaultProxy, key: Key
) -> None:
    """A chunk waits for a client like any reservation, and gives up as one does."""
    mc = make_client(max_pool_size=1, pool_timeout=0.1)
    with mc.pool.reserve():  # holds the only client
        jobs = [gevent.spawn(mc.get, key(str(i))) for i in range(3)]
        gevent.joinall(jobs, timeout=5)
    assert all(isinstance(job.exception, PoolTimeout) for job in jobs)
    assert mc.pool_stats()["timeouts"] == 2  # the lone get's and the batch's


def test_ignore_exc_turns_a_chunks_failure_into_misses(
    make_client: MakeClient, proxy: FaultProxy, key: Key
) -> None:
    """With ignore_exc, callers of a failed chunk read misses (their defaults), as
    the unbatched PooledClient's do; a full pool and a bad key too."""
    mc = make_client(ignore_exc=True, timeout=0.2, max_pool_size=2, pool_timeout=0.1)
    mc.set(key("a"), "1")
    proxy.reply_delay = 1.0  # longer than the clients' timeout: every get times out
    lone = busy(mc.get, proxy, key("a"))
    jobs = [
        gevent.spawn(mc.get, key("a"), "default"),
        gevent.spawn(mc.gets, key("a"), "no", "cas"),
        gevent.spawn(mc.get_many, [key("a")]),
        gevent.spawn(mc.gets_many, [key("a")]),
        gevent.spawn(mc.get, "bad key", "bad"),
    ]
    gevent.joinall([lone, *jobs], timeout=5, raise_error=True)
    assert lone.value is None
    assert [job.value for job in jobs] == ["default", ("no", "cas"), {}, {}, "bad"]
    assert mc.pool_stats()["discarded_error"] == 2 and mc.pool_stats()["in_use"] == 0
    with mc.pool.reserve(), mc.pool.reserve():
        assert gevent.spawn(mc.get, key("a"), "full").get(timeout=5) == "full"


def test_a_batcher_over_a_clientpool_checks_keys_with_the_clients_prefix(
    proxy: FaultProxy, key: Key
) -> None:
    """ClientPool users build an AutoBatcher themselves, with the clients' key
    prefix. One given another prefix fails its batches with a ValueError saying
    so, rather than send keys checked against the wrong one."""
    pool: ClientPool[Client] = ClientPool(client_factory(proxy.address, key_prefix="p:"))
    with pool.reserve() as mc:
        mc.set(key("a"), "1", noreply=False)
    proxy.reply_delay = 0.05
    right, wrong = AutoBatcher(pool, key_prefix="p:"), AutoBatcher(pool)
    lone = busy(right.get, proxy, key("a"))
    batched = gevent.spawn(right.get_many, [key("a"), key("b")])
    gevent.joinall([lone, batched], timeout=5, raise_error=True)
    assert (lone.value, batched.value) == (b"1", {key("a"): b"1"})
    lone = busy(wrong.get, proxy, key("a"))
    mismatched = gevent.spawn(wrong.get, key("a"))
    gevent.joinall([lone, mismatched], timeout=5)
    assert lone.value == b"1"  # the plain call, on a client that adds its own prefix
    assert isinstance(mismatched.exception, ValueError)
    assert "key_prefix=b'p:'" in str(mismatched.exception)
    assert pool.stats()["discarded"] == 0  # the clients' fault, not the connections'
    pool.close()


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"autobatch": "yes"}, TypeError, "autobatch must be a bool, not str"),
        ({"autobatch_max_keys": 0}, ValueError, "autobatch_max_keys must be at least 1"),
        ({"autobatch_max_keys": 2.5}, TypeError, "autobatch_max_keys must be an int"),
    ],
)
def test_bad_autobatch_options_are_named(
    memcached: MemcachedServer, options: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        PooledClient(memcached.address, **options)
    with pytest.raises(error, match=message):
        greenpool.HashClient([memcached.address], **options)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"max_keys": 0}, ValueError, "max_keys must be at least 1"),
        ({"key_prefix": 3}, TypeError, "key_prefix must be bytes or str, not int"),
        ({"allow_unicode_keys": 1}, TypeError, "allow_unicode_keys must be a bool, not int"),
    ],
)
def test_bad_batcher_arguments_are_named(
    make_pool: Callable[..., ClientPool[Any]], options: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        AutoBatcher(make_pool(), **options)
    with pytest.raises(TypeError, match="pool must be a greenpool ClientPool, not PooledClient"):
        AutoBatcher(PooledClient(("127.0.0.1", 1)))  # type: ignore[arg-type]
