"""Any key, prefix and value a caller passes: either memcached receives exactly that
one key, or nothing is sent. Driven by hypothesis through every public key path.

The oracle is memcached's own rule, restated here apart from greenpool's code:
a key as sent (prefix, then the key encoded as ASCII, or UTF-8 with
``allow_unicode_keys``) is 1 to 250 bytes, none of them a control byte, space
or DEL. For each example, on a memcached of its own that holds sentinel keys:
a key outside the rule sent nothing (a relay counts the bytes); a key inside it
was stored under exactly itself (read back by a plain client straight from
memcached); and the sentinels are intact, nothing was flushed, at most one item
was added.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import pytest
from django.core.cache import CacheHandler, InvalidCacheKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheIllegalInputError

from greenpool import HashClient, PooledClient
from greenpool.flask_caching import MemcachedCache as FlaskCache
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy

SENTINELS = {f"sentinel-{n}".encode(): f"kept-{n}".encode() for n in range(3)}
REFUSED = (MemcacheIllegalInputError, InvalidCacheKey, TypeError)


def wire_key(key: str | bytes, prefix: bytes, unicode: bool) -> bytes | None:
    """The key memcached would receive, or None where the rule refuses it."""
    if isinstance(key, str):
        try:
            key = key.encode("utf8" if unicode else "ascii")
        except UnicodeEncodeError:
            return None
    wire = prefix + key
    if not 0 < len(wire) <= 250 or any(b <= 0x20 or b == 0x7F for b in wire):
        return None
    return wire


class Paths:
    """Each public key path, over one relay to one memcached."""

    def __init__(self, relay: FaultProxy) -> None:
        self.relay = relay
        address = f"{relay.address[0]}:{relay.address[1]}"
        self.django = CacheHandler(
            {"default": {"BACKEND": "greenpool.django.MemcachedCache", "LOCATION": address}}
        )["default"]
        self.location = address

    def run(self, path: str, key: Any, prefix: bytes, value: bytes) -> None:
        """Store *value* under *key* (with *prefix*) through *path*, and read it back
        through the same path where it can."""
        addr = self.relay.address
        if path in ("set", "set noreply", "set_many", "batched get", "get_many"):
            mc = PooledClient(addr, key_prefix=prefix, default_noreply=False)
            if path == "set":
                assert mc.set(key, value)
            elif path == "set noreply":
                mc.set(key, value, noreply=True)
                mc.get(b"flush-the-pipe")  # its reply comes after the noreply set
            elif path == "set_many":
                assert mc.set_many({key: value}) == []
            else:
                mc.set(key, value)
                if path == "get_many":
                    assert mc.get_many([key]) == {key: value}
                else:  # two at once: the second joins a batch
                    jobs = [gevent.spawn(mc.get, key) for _ in range(2)]
                    gevent.joinall(jobs, timeout=5, raise_error=True)
                    assert [job.value for job in jobs] == [value, value]
            mc.pool.close()
        elif path == "hash client":
            cluster = HashClient([addr], key_prefix=prefix, default_noreply=False)
            assert cluster.set(key, value)
            assert cluster.get(key) == value
        elif path == "django":
            self.django.set(key, value)
            assert self.django.get(key) == value
        else:  # flask: cachelib's get misses a key its own rule refuses, unsent
            cache = FlaskCache([self.location], key_prefix=prefix.decode("ascii"))
            assert cache.set(key, value)


PATHS = ["set", "set noreply", "set_many", "batched get", "get_many", "hash client", "django",
         "flask"]  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[MemcachedServer]:
    started = MemcachedServer().start()
    yield started
    started.stop()


@pytest.fixture(scope="module")
def relay(server: MemcachedServer) -> Iterator[FaultProxy]:
    relay = FaultProxy(server.address).start()
    yield relay
    relay.stop()


@pytest.fixture(scope="module")
def plain(server: MemcachedServer) -> Iterator[Client]:
    client = Client(server.address, connect_timeout=2, timeout=2)
    yield client
    client.close()


PREFIXES = st.sampled_from([b"", b"p:", b"x" * 200, b"ns/"])
KEYS = st.one_of(
    st.text(max_size=12),
    st.text(alphabet=st.characters(max_codepoint=0x7F), min_size=0, max_size=60),
    st.binary(max_size=12),
    st.sampled_from(["", " ", "\r\n", "a b", "\x00", "\x7f", "k" * 250, "k" * 251, "é"]),
)


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(path=st.sampled_from(PATHS), key=KEYS, prefix=PREFIXES, value=st.binary(max_size=40))
def test_a_key_is_sent_whole_as_one_key_or_not_at_all(
    server: MemcachedServer,
    relay: FaultProxy,
    plain: Client,
    path: str,
    key: Any,
    prefix: bytes,
    value: bytes,
) -> None:
    plain.flush_all(noreply=False)
    assert plain.set_many(SENTINELS, noreply=False) == []
    before = server.stats()
    sent = relay.sent
    paths = Paths(relay)
    if path == "flask":  # Flask-Caching's keys are str, pickled values, unicode keys allowed
        key = key.decode("latin-1") if isinstance(key, bytes) else key
    unicode = path in ("django", "flask")
    expected = wire_key(key, prefix if path != "django" else b"", unicode)
    try:
        paths.run(path, key, prefix, value)
    except REFUSED:
        refused = True
    else:
        refused = False
    after = server.stats()
    assert plain.get_many(list(SENTINELS)) == SENTINELS, "the cache lost what it held"
    assert after["cmd_flush"] == before["cmd_flush"]
    assert after["curr_items"] - before["curr_items"] <= 1
    if path == "django":  # Django's own key function and key check come first
        return
    if expected is None:
        assert refused, f"{path}: {key!r} with {prefix!r} was accepted"
        assert relay.sent == sent, f"{path}: {key!r} with {prefix!r} sent bytes"
    else:
        assert not refused, f"{path}: {key!r} with {prefix!r} was refused"
        assert plain.get(expected) == value, (path, expected)


def test_the_oracle_refuses_what_memcached_cannot_parse() -> None:
    """The test's own rule, checked on the keys of the report."""
    assert wire_key("", b"", False) is None
    assert wire_key(" ", b"", False) is None
    assert wire_key("\r\n", b"", False) is None
    assert wire_key("a", b"p:", False) == b"p:a"
    assert wire_key("é", b"", False) is None and wire_key("é", b"", True) == "é".encode()
