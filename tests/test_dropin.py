"""The drop-in claim, tested as a user would: same calls, same results.

Every scenario runs against pymemcache's own ``Client`` over the plain
``socket`` module (the reference) and against each other implementation: the
reference over ``gevent.socket``, and ``greenpool.PooledClient`` over both and
with autobatching.
Each records a transcript of return values and exceptions (type and message),
and the transcripts must be identical. Keys are isolated by a per-run
``key_prefix``, so results such as ``get_many`` dicts read the same everywhere
(error messages, which quote the prefixed key, show it as ``<prefix>``).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import socket
from collections.abc import Callable, Iterator
from typing import Any

import gevent.socket
import pytest
from pymemcache import serde
from pymemcache.client.base import Client

import greenpool
from greenpool import PooledClient
from tests.memcached import MemcachedServer

Record = Callable[[Callable[[], Any]], None]
Scenario = Callable[[Callable[..., Any], Record], None]

_runs = itertools.count()

IMPLEMENTATIONS = {
    "Client+gevent.socket": (Client, gevent.socket),
    "greenpool.Client+socket": (greenpool.Client, socket),
    "PooledClient+socket": (PooledClient, socket),
    "PooledClient+gevent.socket": (PooledClient, gevent.socket),
    # Sequential, so each read goes out alone; test_batching runs these scenarios batched.
    "PooledClient(autobatch=True)": (
        functools.partial(PooledClient, autobatch=True),
        gevent.socket,
    ),
}


def _transcript(
    implementation: tuple[type, Any], server: MemcachedServer, scenario: Scenario
) -> list[Any]:
    client_class, socket_module = implementation
    prefix = f"dropin{next(_runs)}-"
    clients: list[Any] = []
    transcript: list[Any] = []

    def connect(**options: Any) -> Any:
        own_prefix = prefix + options.pop("key_prefix", "")
        options = {"key_prefix": own_prefix, "socket_module": socket_module, **options}
        client = client_class(server.address, **options)
        clients.append(client)
        return client

    def record(call: Callable[[], Any]) -> None:
        try:
            transcript.append(call())
        except Exception as exc:
            message = str(exc).replace(prefix, "<prefix>")
            if client_class is not Client:  # greenpool's errors from memcached name it
                message = _named_server(message, server)
            transcript.append((type(exc).__name__, message))

    try:
        scenario(connect, record)
    finally:
        for client in clients:
            client.close()
    return transcript


def _named_server(message: str, server: Any) -> str:
    """*message* without the server greenpool names in an error from memcached
    (the rest must read as pymemcache's)."""
    host, port = server.address
    named = f" (memcached at {host}:{port})"
    return message.replace(named, "")


def _storage(connect: Callable[..., Any], record: Record) -> None:
    mc = connect(default_noreply=False)
    for call in (
        lambda: mc.set("a", "1"),
        lambda: mc.get("a"),
        lambda: mc.add("a", "2"),
        lambda: mc.add("b", "2"),
        lambda: mc.replace("missing", "3"),
        lambda: mc.replace("a", "one"),
        lambda: mc.append("a", "-end"),
        lambda: mc.prepend("a", "start-"),
        lambda: mc.append("missing", "x"),
        lambda: mc.get("a"),
        lambda: mc.get("missing"),
        lambda: mc.get("missing", "fallback"),
        lambda: mc.set_many({"c": "3", "d": b"4"}),
        lambda: mc.get_many(["a", "b", "c", "d", "missing"]),
        lambda: mc.get_multi([]),
        lambda: mc.set("e", 5, expire=60, flags=7),
        lambda: mc.get("e"),
        lambda: mc.set("noreply", "x", noreply=True),
        lambda: mc.get("noreply"),
        lambda: mc["a"],
    ):
        record(call)


def _default_noreply(connect: Callable[..., Any], record: Record) -> None:
    """pymemcache's default_noreply=True: store commands return True regardless."""
    mc = connect()
    for call in (
        lambda: mc.add("a", "1"),
        lambda: mc.add("a", "2"),
        lambda: mc.replace("missing", "x"),
        lambda: mc.get("a"),
        lambda: mc.delete("missing"),
    ):
        record(call)


def _cas_and_gets(connect: Callable[..., Any], record: Record) -> None:
    mc = connect(default_noreply=False)
    record(lambda: mc.gets("k"))
    record(lambda: mc.gets("k", "no", "cas"))
    record(lambda: mc.cas("k", "v", b"1"))
    mc.set("k", "v1")
    value, cas = mc.gets("k")
    record(lambda: (value, type(cas)))
    record(lambda: mc.cas("k", "v2", cas))
    record(lambda: mc.cas("k", "v3", cas))  # the token is spent
    record(lambda: mc.get("k"))
    many = mc.gets_many(["k", "missing"])
    record(lambda: {key: (value, type(token)) for key, (value, token) in many.items()})
    record(lambda: mc.cas("k", "v", "not-a-number"))


def _delete_touch_and_counters(connect: Callable[..., Any], record: Record) -> None:
    mc = connect(default_noreply=False)
    mc.set_many({"a": "1", "b": "2", "n": "10", "text": "abc"})
    for call in (
        lambda: mc.delete("a"),
        lambda: mc.delete("a"),
        lambda: mc.delete_many(["b", "missing"]),
        lambda: mc.get_many(["a", "b"]),
        lambda: mc.touch("n", 100),
        lambda: mc.touch("missing", 100),
        lambda: mc.incr("n", 5),
        lambda: mc.decr("n", 3),
        lambda: mc.decr("n", 100),  # memcached stops at 0
        lambda: mc.incr("n", 2**64 - 1),  # the largest 64-bit counter
        lambda: mc.incr("missing", 1),
        lambda: mc.decr("missing", 1),
        lambda: mc.incr("n", 1, noreply=True),
        lambda: mc.incr("text", 1),
    ):  # incr("n", -1): pymemcache sends it, greenpool refuses it (test_in_step)
        record(call)


def _serde_round_trips(connect: Callable[..., Any], record: Record) -> None:
    mc = connect(serde=serde.pickle_serde)
    values = {
        "str": "text", "bytes": b"\x00\xffraw", "int": 42, "float": 1.5,
        "list": [1, "two", None], "dict": {"nested": {"x": (1, 2)}}, "none": None,
        "bool": True,
    }  # fmt: skip
    for key, value in values.items():
        record(lambda key=key, value=value: mc.set(key, value))
        record(lambda key=key: mc.get(key))
    record(lambda: mc.get_many(list(values)))
    legacy = connect(
        serializer=lambda k, v: (str(v).encode(), 9), deserializer=lambda k, v, f: (v, f)
    )
    record(lambda: legacy.set("legacy", 123))
    record(lambda: legacy.get("legacy"))


def _large_values(connect: Callable[..., Any], record: Record) -> None:
    mc = connect(default_noreply=False)
    big = bytes(range(256)) * 2048  # 512 KiB, every byte value
    record(lambda: mc.set("big", big))
    record(lambda: mc.get("big") == big)
    record(lambda: mc.set("too-big", b"x" * (2 * 1024 * 1024)))  # over memcached's 1 MiB item
    record(lambda: mc.get("big") == big)  # the connection recovered


def _unicode_keys(connect: Callable[..., Any], record: Record) -> None:
    mc = connect(allow_unicode_keys=True, default_noreply=False)
    record(lambda: mc.set("ключ", "значение".encode()))
    record(lambda: mc.get("ключ"))
    record(lambda: mc.get_many(["ключ", "键"]))
    record(lambda: mc.incr("ключ", 1))
    strict = connect()
    record(lambda: strict.get("ключ"))
    record(lambda: strict.set("ключ", "x"))


def _key_prefixes(connect: Callable[..., Any], record: Record) -> None:
    mc = connect(default_noreply=False)
    other = connect(key_prefix="other-")
    record(lambda: mc.set("shared", "mine"))
    record(lambda: other.get("shared"))
    record(lambda: other.set("shared", "theirs"))
    record(lambda: mc.get("shared"))
    if isinstance(mc, PooledClient):  # pymemcache's PooledClient.check_key takes no prefix
        record(lambda: mc.check_key("k") == mc.key_prefix + b"k")
    else:
        record(lambda: mc.check_key("k", mc.key_prefix) == mc.key_prefix + b"k")


def _error_cases(connect: Callable[..., Any], record: Record) -> None:
    mc = connect(default_noreply=False)
    mc.set("kept", "1")
    for bad_key in ("with space", "cr\rlf\n", "nul\x00", "x" * 251, "ключ", b"bytes key"):
        record(lambda bad_key=bad_key: mc.get(bad_key))
        record(lambda bad_key=bad_key: mc.set(bad_key, "v"))
        record(lambda bad_key=bad_key: mc.get_many(["ok", bad_key]))
        record(lambda bad_key=bad_key: mc.delete(bad_key))
    for call in (
        lambda: mc.set("k", "v", expire="10"),
        lambda: mc.set("k", "v", expire=1.5),
        lambda: mc.touch("kept", expire="1"),
        lambda: mc.incr("kept", "1"),
        lambda: mc.flush_all(delay="soon"),
        lambda: mc.set("k", object()),  # not bytes-like, no serde
        lambda: mc.raw_command("no_such_command"),
        lambda: mc.get("kept"),  # every error above left the connection usable
        lambda: mc.version().startswith(b"1."),
        lambda: sorted(mc.stats())[:3],
        lambda: mc.raw_command("version").startswith(b"VERSION"),
    ):
        record(call)


SCENARIOS: dict[str, Scenario] = {
    "storage": _storage,
    "default_noreply": _default_noreply,
    "cas_and_gets": _cas_and_gets,
    "delete_touch_counters": _delete_touch_and_counters,
    "serde": _serde_round_trips,
    "large_values": _large_values,
    "unicode_keys": _unicode_keys,
    "key_prefixes": _key_prefixes,
    "errors": _error_cases,
}


@pytest.fixture(scope="module")
def reference(memcached: MemcachedServer) -> Iterator[dict[str, list[Any]]]:
    """pymemcache's Client over the plain socket module: the transcripts to match."""
    yield {
        name: _transcript((Client, socket), memcached, scenario)
        for name, scenario in SCENARIOS.items()
    }


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_same_calls_give_the_same_results_as_pymemcache(
    memcached: MemcachedServer, reference: dict[str, list[Any]], scenario: str, implementation: str
) -> None:
    transcript = _transcript(IMPLEMENTATIONS[implementation], memcached, SCENARIOS[scenario])
    assert transcript == reference[scenario]


def test_the_reference_transcripts_say_what_we_expect(reference: dict[str, list[Any]]) -> None:
    """Spot checks, so that identical transcripts cannot mean identically broken."""
    storage = reference["storage"]
    assert storage[:4] == [True, b"1", False, True]
    assert storage[9] == b"start-one-end" and storage[11] == "fallback"
    assert reference["cas_and_gets"][:3] == [(None, None), ("no", "cas"), None]
    assert reference["cas_and_gets"][4:7] == [True, False, b"v2"]
    counters = reference["delete_touch_counters"]
    assert counters[6:11] == [15, 12, 0, 2**64 - 1, None]
    assert reference["serde"][1::2][:8] == ["text", b"\x00\xffraw", 42, 1.5, [1, "two", None],
                                           {"nested": {"x": (1, 2)}}, None, True]  # fmt: skip
    assert reference["large_values"] == [
        True, True, ("MemcacheServerError", "b'object too large for cache'"), True,
    ]  # fmt: skip
    errors = reference["errors"]
    assert errors[0][0] == "MemcacheIllegalInputError" and "whitespace" in errors[0][1]
    assert errors[-4:-2] == [b"1", True]


def test_every_public_client_method_is_offered_with_its_signature() -> None:
    """Everything public on pymemcache's Client exists on PooledClient; commands keep
    their signature, defaults and docstring (check_key keeps PooledClient's)."""
    for name, member in inspect.getmembers(Client, inspect.isfunction):
        if name.startswith("_") and name not in ("__getitem__", "__setitem__", "__delitem__"):
            continue
        ours = getattr(PooledClient, name)
        if name in ("check_key", "close", "disconnect_all"):
            continue
        assert inspect.signature(ours) == inspect.signature(member), name
        assert ours.__doc__ == member.__doc__, name
