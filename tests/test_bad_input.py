"""Bad arguments get TypeError or ValueError naming the parameter; bad keys and
values get pymemcache's own MemcacheIllegalInputError, before anything is sent."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheIllegalInputError

from greenpool import ClientPool, HashClient, PooledClient, client_factory
from greenpool.wsgi import RelinquishMiddleware
from tests.proxy import FaultProxy


def factory() -> Any:
    return object()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"maxsize": 0}, ValueError, "maxsize must be at least 1, got 0"),
        ({"maxsize": -3}, ValueError, "maxsize must be at least 1"),
        ({"maxsize": 2.5}, TypeError, "maxsize must be an int, not float"),
        ({"maxsize": "4"}, TypeError, "maxsize must be an int, not str"),
        ({"maxsize": True}, TypeError, "maxsize must be an int, not bool"),
        ({"factory": None}, TypeError, "factory must be a zero-argument callable"),
        ({"factory": "client"}, TypeError, "factory must be .* not str"),
        ({"timeout": -1}, ValueError, "timeout must be a non-negative number of seconds, got -1"),
        ({"timeout": math.nan}, ValueError, "timeout must be a non-negative"),
        ({"timeout": "5"}, TypeError, "timeout must be a number of seconds, not str"),
        ({"timeout": None}, TypeError, "timeout must be a number of seconds, not NoneType"),
    ],
)
def test_bad_constructor_arguments(kwargs: dict[str, Any], error: type, message: str) -> None:
    arguments: dict[str, Any] = {"factory": factory, "maxsize": 2, **kwargs}
    with pytest.raises(error, match=message):
        ClientPool(**arguments)


@pytest.mark.parametrize(
    ("timeout", "error", "message"),
    [
        (-0.5, ValueError, "timeout must be a non-negative number of seconds, got -0.5"),
        ("1", TypeError, "timeout must be a number of seconds, not str"),
        ([], TypeError, "timeout must be a number of seconds, not list"),
    ],
)
def test_bad_reserve_timeout(timeout: Any, error: type, message: str) -> None:
    pool = ClientPool(factory, 1)
    with pytest.raises(error, match=message):
        pool.reserve(timeout=timeout)
    assert pool.stats()["in_use"] == 0


def test_a_factory_returning_none_is_named(memcached: Any) -> None:
    pool = ClientPool(lambda: None, 1, name="nones")
    with pytest.raises(TypeError, match="factory of pool 'nones' returned None"), pool.reserve():
        pass
    assert pool.stats()["in_use"] == 0 and pool.stats()["size"] == 0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"max_pool_size": 0}, ValueError, "max_pool_size must be at least 1, got 0"),
        ({"max_pool_size": -1}, ValueError, "max_pool_size must be at least 1"),
        ({"max_pool_size": 2.5}, TypeError, "max_pool_size must be an int, not float"),
        ({"max_pool_size": "4"}, TypeError, "max_pool_size must be an int, not str"),
        ({"max_pool_size": True}, TypeError, "max_pool_size must be an int, not bool"),
        ({"pool_timeout": -1}, ValueError, "pool_timeout must be a non-negative number"),
        ({"pool_timeout": math.nan}, ValueError, "pool_timeout must be a non-negative"),
        ({"pool_timeout": "5"}, TypeError, "pool_timeout must be a number of seconds, not str"),
        ({"pool_timeout": None}, TypeError, "pool_timeout must be a number of seconds"),
        ({"pool_idle_timeout": -1}, ValueError, "pool_idle_timeout must be a non-negative"),
        ({"pool_idle_timeout": None}, TypeError, "pool_idle_timeout must be a number"),
        ({"lock_generator": "lock"}, TypeError, "lock_generator must be None or a callable"),
        ({"pool_options": {"maxsize": 3}}, TypeError, "'maxsize'; pass max_pool_size instead"),
        ({"pool_options": {"timeout": 1}}, TypeError, "'timeout'; pass pool_timeout instead"),
        ({"pool_options": {"no_such": 1}}, TypeError, "unexpected keyword argument 'no_such'"),
        ({"no_such_option": 1}, TypeError, "unexpected keyword argument 'no_such_option'"),
        ({"key_prefix": 3}, TypeError, "key_prefix should be bytes"),
    ],
)
def test_bad_pooled_client_arguments(kwargs: dict[str, Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        PooledClient(("127.0.0.1", 11211), **kwargs)


BAD_KEYS = ["with space", "cr\r\nlf", "nul\x00", "k" * 251, "ключ"]
COMMANDS: dict[str, Callable[[Any, Any], Any]] = {
    "get": lambda mc, key: mc.get(key),
    "set": lambda mc, key: mc.set(key, "v", noreply=False),
    "get_many": lambda mc, key: mc.get_many(["fine", key]),
    "delete": lambda mc, key: mc.delete(key),
    "incr": lambda mc, key: mc.incr(key, 1),
    "touch": lambda mc, key: mc.touch(key, 10),
    "gets": lambda mc, key: mc.gets(key),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    "bad_key", BAD_KEYS, ids=["space", "crlf", "nul", "251-bytes", "non-ascii"]
)
def test_invalid_keys_are_rejected_before_anything_is_sent(
    proxy: FaultProxy, key: Callable[[str], str], command: str, bad_key: str
) -> None:
    """Exactly pymemcache's MemcacheIllegalInputError, no byte sent, and the same
    connection serves the next command."""
    mc = PooledClient(proxy.address, max_pool_size=1)
    mc.set(key("kept"), "1", noreply=False)
    sent = proxy.sent
    with pytest.raises(MemcacheIllegalInputError) as ours:
        COMMANDS[command](mc, bad_key)
    assert proxy.sent == sent
    with pytest.raises(MemcacheIllegalInputError) as theirs:
        COMMANDS[command](Client(proxy.address), bad_key)
    assert str(ours.value) == str(theirs.value)
    assert mc.get(key("kept")) == b"1"
    assert (mc.pool_stats()["created"], mc.pool_stats()["discarded"]) == (1, 0)
    assert proxy.connections == 1


@pytest.mark.parametrize(
    "call",
    [
        lambda mc, k: mc.set(k, "v", expire="10"),
        lambda mc, k: mc.set(k, "v", expire=1.5),
        lambda mc, k: mc.set_many({k: "v"}, expire=None),
        lambda mc, k: mc.add(k, "v", expire="1"),
        lambda mc, k: mc.touch(k, expire=2.0),
        lambda mc, k: mc.incr(k, "1"),
        lambda mc, k: mc.cas(k, "v", "abc"),
    ],
    ids=[
        "set-str",
        "set-float",
        "set_many-none",
        "add-str",
        "touch-float",
        "incr-str",
        "cas-token",
    ],
)
def test_non_integer_arguments_are_rejected_before_anything_is_sent(
    proxy: FaultProxy, key: Callable[[str], str], call: Callable[[Any, str], Any]
) -> None:
    mc = PooledClient(proxy.address, max_pool_size=1)
    mc.set(key("k"), "1", noreply=False)
    sent = proxy.sent
    with pytest.raises(MemcacheIllegalInputError) as ours:
        call(mc, key("k"))
    assert proxy.sent == sent
    with pytest.raises(MemcacheIllegalInputError) as theirs:
        call(Client(proxy.address), key("k"))
    assert str(ours.value) == str(theirs.value)
    assert mc.get(key("k")) == b"1"
    assert mc.pool_stats()["discarded"] == 0


CLUSTER_SERVERS = [("127.0.0.1", 11211), ("127.0.0.1", 11212)]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"retry_attempts": "2"}, TypeError, "retry_attempts must be an int, not str"),
        ({"retry_attempts": -1}, ValueError, "retry_attempts must be at least 0, got -1"),
        ({"retry_attempts": 1.5}, TypeError, "retry_attempts must be an int"),
        ({"retry_timeout": math.nan}, ValueError, "retry_timeout must be a non-negative"),
        ({"retry_timeout": "1"}, TypeError, "retry_timeout must be a number of seconds"),
        ({"dead_timeout": math.nan}, ValueError, "dead_timeout must be a non-negative"),
        ({"dead_timeout": -60}, ValueError, "dead_timeout must be a non-negative"),
        ({"dead_timeout": None}, TypeError, "dead_timeout must be a number of seconds"),
        ({"ignore_exc": "yes"}, TypeError, "ignore_exc must be a bool, not str"),
        ({"use_pooling": 1}, TypeError, "use_pooling must be a bool, not int"),
        ({"hasher": "rendezvous"}, TypeError, "hasher must be a callable"),
        ({"key_prefix": 5}, TypeError, "key_prefix must be bytes or str, not int"),
        ({"key_prefix": b"a b"}, MemcacheIllegalInputError, "key_prefix b'a b'"),
        ({"key_prefix": "tab\t"}, MemcacheIllegalInputError, "key_prefix b'tab\\\\t'"),
        ({"key_prefix": b"nul\0"}, MemcacheIllegalInputError, "key_prefix"),
        ({"key_prefix": b"del\x7f"}, MemcacheIllegalInputError, "key_prefix"),
        ({"key_prefix": b"x" * 251}, MemcacheIllegalInputError, "key_prefix .* 251 bytes"),
        ({"key_prefix": "caf\u00e9:"}, MemcacheIllegalInputError, "key_prefix 'caf\u00e9:'"),
        ({"timeout": -1}, ValueError, "timeout must be a positive"),
    ],
)
@pytest.mark.parametrize("servers", [CLUSTER_SERVERS, []], ids=["two servers", "no server"])
def test_every_cluster_argument_is_checked_by_name_at_construction(
    servers: list[Any], kwargs: dict[str, Any], error: type, message: str
) -> None:
    """HashClient checks its own arguments (failover, hasher, key prefix) and its
    clients' options by name when it is made, with servers or none yet; nothing
    connects."""
    with pytest.raises(error, match=message):
        HashClient(servers, **kwargs)


def test_a_unicode_key_prefix_needs_allow_unicode_keys() -> None:
    """A str prefix is ASCII, or UTF-8 with allow_unicode_keys, as keys are."""
    cluster = HashClient(CLUSTER_SERVERS, key_prefix="caf\u00e9:", allow_unicode_keys=True)
    assert cluster.key_prefix == "caf\u00e9:".encode()
    assert {client.key_prefix for client in cluster.clients.values()} == {cluster.key_prefix}


def test_bad_cluster_pool_arguments_are_named(memcached: Any) -> None:
    """greenpool.HashClient checks its pool arguments through each server's PooledClient."""
    with pytest.raises(ValueError, match="max_pool_size must be at least 1"):
        HashClient([memcached.address], max_pool_size=0)
    with pytest.raises(TypeError, match="pool_timeout must be a number of seconds"):
        HashClient([memcached.address], pool_timeout="1")


def _mapped() -> Any:
    from greenpool import GreenletMappedPool

    return GreenletMappedPool(ClientPool(factory, 1))


SERVER = ("127.0.0.1", 11211)  # never contacted: every call below fails before connecting


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda: ClientPool(factory, name=123), TypeError, "name must be a str, not int"),
        (lambda: ClientPool(factory, max_idle="1"), TypeError, "max_idle must be a number"),
        (lambda: ClientPool(factory, max_waiting=-1), ValueError, "max_waiting must be at least 0"),
        (lambda: ClientPool(factory, check="version"), TypeError, "check must be a callable"),
        (lambda: ClientPool(factory, 1).reserve(block="no"), TypeError, "block must be a bool"),
        (lambda: ClientPool(factory, 1).resize(0), ValueError, "maxsize must be at least 1"),
        (lambda: _mapped().reserve(timeout=math.nan), ValueError, "timeout must be a non-neg"),
        (lambda: RelinquishMiddleware(None, _mapped()), TypeError, "app must be a WSGI callable"),
        (
            lambda: HashClient([], max_pool_size="4"),
            TypeError,
            "max_pool_size must be an int, not str",
        ),
        (lambda: HashClient([], pool_timeout=-1), ValueError, "pool_timeout must be a non-neg"),
        (lambda: HashClient("127.0.0.1:11211"), TypeError, "servers must be a list"),
        (lambda: PooledClient(SERVER, timeout=math.nan), ValueError, "timeout must be a positive"),
        (lambda: PooledClient(SERVER, timeout=-1), ValueError, "timeout must be a positive"),
        (lambda: PooledClient(SERVER, timeout=0), ValueError, "timeout must be a positive"),
        (lambda: PooledClient(SERVER, timeout="2"), TypeError, "timeout must be a number"),
        (lambda: PooledClient(SERVER, connect_timeout=True), TypeError, "connect_timeout must be"),
        (lambda: PooledClient(SERVER, connect_timeout=-5), ValueError, "connect_timeout must be"),
        (lambda: PooledClient(SERVER, pool_options=5), TypeError, "pool_options must be a mapping"),
        (lambda: PooledClient(SERVER, ignore_exc="yes"), TypeError, "ignore_exc must be a bool"),
        (lambda: PooledClient(SERVER, no_delay=1), TypeError, "no_delay must be a bool"),
        (lambda: PooledClient(SERVER, default_noreply=None), TypeError, "default_noreply must be"),
        (lambda: PooledClient(("127.0.0.1", "11211")), TypeError, "server port must be an int"),
        (lambda: PooledClient(("127.0.0.1", 70000)), ValueError, "server port must be between"),
        (lambda: PooledClient(42), TypeError, "server must be"),
        (lambda: client_factory(SERVER, encoding="no-such-codec"), ValueError, "encoding"),
        (lambda: client_factory(SERVER, serde=object()), TypeError, "serde must have"),
    ],
)
def test_every_public_argument_is_checked_by_name_before_anything_connects(
    call: Callable[[], Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize(
    "call",
    [lambda: ClientPool(factory, maxsize=10**8), lambda: ClientPool(factory, 1).resize(10**8)],
    ids=["maxsize", "resize"],
)
def test_a_huge_maxsize_allocates_nothing_per_slot(call: Callable[[], Any]) -> None:
    """Slots not yet filled are a count, not a placeholder each."""
    import tracemalloc

    tracemalloc.start()
    try:
        call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
