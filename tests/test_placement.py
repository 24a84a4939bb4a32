"""Key placement: greenpool's hashers put keys exactly where the other clients do.

Each hasher is checked against the real thing: pymemcache's own RendezvousHash
on 10,000 keys, libmemcached (what pylibmc wraps, through ctypes, with pylibmc's
behaviours) and nutcracker itself, whose placement is read back by storing
through it and looking on each memcached. The keys include text with non-ASCII
characters and bytes of 0x80 and more, which C reads as negative ``char``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import mmh3
import pytest
from pymemcache.client.base import Client
from pymemcache.client.murmur3 import murmur3_32 as pure_murmur3_32
from pymemcache.client.rendezvous import RendezvousHash as PymemcacheRendezvousHash

from greenpool import HashClient, LibmemcachedKetama, RendezvousHash, TwemproxyKetama, rendezvous
from tests.libmemcached import PYLIBMC_BEHAVIORS, Libmemcached
from tests.memcached import MemcachedServer
from tests.nutcracker import Nutcracker

SERVERS = [("127.0.0.1", 11211), ("127.0.0.1", 11212), ("10.1.2.3", 24000), ("cache-4", 11211)]


def _text_keys(count: int) -> list[str]:
    words = ["user", "sess", "ÿ-latin1", "é-utf8", "ключ", "键", "page:/a?b=c"]
    return [f"{words[n % len(words)]}:{n}:{n * 7919 % 1000}" for n in range(count)]


def _byte_keys(count: int) -> list[bytes]:
    return [b"b:%d:\x80\xff\xc3\xa9" % n if n % 3 == 0 else b"b:%d" % n for n in range(count)]


def _names(servers: list[tuple[str, int]]) -> list[str]:
    return [f"{host}:{port}" for host, port in servers]


def _filled(hasher: Any, servers: list[tuple[str, int]]) -> Any:
    for name in _names(servers):
        hasher.add_node(name)
    return hasher


@pytest.mark.parametrize(
    "hash_function",
    [None, pure_murmur3_32],
    ids=["default (mmh3)", "pymemcache's pure Python murmur3"],
)
def test_rendezvous_places_10000_keys_as_pymemcache_does(
    hash_function: Callable[[str, int], int] | None,
) -> None:
    """Text, bytes and non-ASCII keys over 3 and 4 servers, and after a server
    leaves: the same node as pymemcache's RendezvousHash for every key."""
    keys: list[Any] = [*_text_keys(8000), *_byte_keys(2000)]
    for servers in (SERVERS[:3], SERVERS):
        theirs = _filled(PymemcacheRendezvousHash(), servers)
        ours = _filled(RendezvousHash(hash_function=hash_function), servers)
        assert [ours.get_node(k) for k in keys] == [theirs.get_node(k) for k in keys]
    theirs.remove_node(_names(SERVERS)[1])
    ours.remove_node(_names(SERVERS)[1])
    assert [ours.get_node(k) for k in keys[:2000]] == [theirs.get_node(k) for k in keys[:2000]]


def test_the_fast_murmur3_is_pymemcaches_on_every_kind_of_character() -> None:
    """mmh3 is used (greenpool requires it) and gives pymemcache's value
    for ASCII, Latin-1 and wider characters."""
    assert rendezvous.murmur3_32 is not pure_murmur3_32
    for text in ["", "a", "ab", "abc", "abcd", "abcde", "é", "ÿÿÿÿÿ", "ключ-キー-🔑", "x" * 301]:
        for seed in (0, 1, 0xFFFFFFFF):
            assert rendezvous.murmur3_32(text, seed) == pure_murmur3_32(text, seed), text


def test_mmh3_is_installed_with_greenpool_so_placement_runs_in_c() -> None:
    """``pip install greenpool``, no extras, brings mmh3: the package requires it
    unconditionally, so RendezvousHash hashes in C as installed."""
    requires = importlib.metadata.requires("greenpool") or []
    plain = [r for r in requires if "extra ==" not in r]
    assert any(re.match(r"mmh3\b", r) for r in plain), plain
    assert rendezvous.murmur3_32 is not pure_murmur3_32
    assert rendezvous._mmh3_hash is mmh3.hash


def test_hashclient_sends_each_key_where_its_ring_says_after_every_change(
    three_memcacheds: list[MemcachedServer], key: Callable[[str], str]
) -> None:
    """Before a server leaves the ring, while it is out and after it is back,
    every key is stored on the server the hasher names for it then: no placement
    outlives a change of the ring."""
    servers = three_memcacheds
    raw = {f"{s.host}:{s.port}": Client(s.address) for s in servers}
    cluster = HashClient([s.address for s in servers], dead_timeout=0.05, default_noreply=False)
    names = [key(str(n)) for n in range(90)]

    def stored_where_the_ring_says(phase: str) -> None:
        for name in names:
            assert cluster.set(name, phase) is True
        for name in names:
            home = cluster.hasher.get_node(name)
            assert raw[home].get(name) == phase.encode(), (name, home, phase)
            assert cluster.get(name) == phase.encode()

    stored_where_the_ring_says("all")
    leaving = _names([servers[0].address])[0]
    cluster.remove_server(*servers[0].address)
    assert leaving not in cluster.hasher.nodes
    stored_where_the_ring_says("one-out")
    time.sleep(0.1)  # dead_timeout passes: the next command puts the server back
    cluster.get(names[0])
    assert leaving in cluster.hasher.nodes
    stored_where_the_ring_says("back")


def test_hashclient_places_keys_with_greenpools_rendezvous_by_default() -> None:
    """greenpool.HashClient uses the fast RendezvousHash; no server is contacted."""
    cluster = HashClient(SERVERS[:3])
    assert isinstance(cluster.hasher, RendezvousHash)
    theirs = _filled(PymemcacheRendezvousHash(), SERVERS[:3])
    keys = _text_keys(300)
    assert [cluster.hasher.get_node(k) for k in keys] == [theirs.get_node(k) for k in keys]


@pytest.mark.parametrize("pylibmc_behaviors", list(PYLIBMC_BEHAVIORS))
def test_libmemcached_ketama_places_keys_as_libmemcached_does(pylibmc_behaviors: str) -> None:
    """2,000 keys over four servers (two on port 11211, which libmemcached leaves
    out of point names), then over three: the server libmemcached picks."""
    options = {
        '{"ketama": True}': {},
        '{"ketama": True, "hash": "md5"}': {"hash": "md5"},
        '{"ketama_weighted": True}': {"weighted": True},
    }[pylibmc_behaviors]
    keys = [k.encode() for k in _text_keys(1500)] + _byte_keys(500)
    for servers in (SERVERS, SERVERS[:3]):
        reference = Libmemcached(servers, PYLIBMC_BEHAVIORS[pylibmc_behaviors])
        try:
            ours = _filled(LibmemcachedKetama(**options), servers)
            expected = [f"{host}:{port}" for host, port in map(reference.server_for, keys)]
        finally:
            reference.close()
        assert [ours.get_node(k) for k in keys] == expected


@pytest.fixture
def four_memcacheds() -> Iterator[list[MemcachedServer]]:
    started = [MemcachedServer().start() for _ in range(4)]
    yield started
    for server in started:
        server.stop()


def _where_stored(servers: list[MemcachedServer], keys: list[bytes]) -> dict[bytes, str]:
    """Which server holds each of *keys*, read from each memcached directly."""
    found: dict[bytes, str] = {}
    for server in servers:
        client = Client(server.address)
        for start in range(0, len(keys), 100):
            for key in client.get_many(keys[start : start + 100]):
                assert key not in found, f"{key!r} is on two servers"
                found[key] = f"{server.host}:{server.port}"
        client.close()
    return found


def test_twemproxy_ketama_places_keys_where_nutcracker_stores_them(
    four_memcacheds: list[MemcachedServer], start_nutcracker: Callable[..., Nutcracker]
) -> None:
    """1,000 keys stored through nutcracker (ketama, fnv1a_64) in front of four
    memcacheds, then a second run with only three: each key is on the memcached
    TwemproxyKetama names."""
    keys = [k.encode() for k in _text_keys(800)] + _byte_keys(200)
    for servers in (four_memcacheds, four_memcacheds[:3]):
        proxy = start_nutcracker([server.address for server in servers])
        through = Client(proxy.address)
        for server in servers:
            Client(server.address).flush_all(noreply=False)  # done before the sets
        for start in range(0, len(keys), 100):
            batch = dict.fromkeys(keys[start : start + 100], b"v")
            assert through.set_many(batch, noreply=False) == []
        through.close()
        stored = _where_stored(servers, keys)
        assert len(stored) == len(keys)
        ours = _filled(TwemproxyKetama(), [server.address for server in servers])
        assert {key: ours.get_node(key) for key in keys} == stored


def test_hashclient_with_twemproxy_ketama_shares_a_fleet_with_nutcracker(
    four_memcacheds: list[MemcachedServer],
    start_nutcracker: Callable[..., Nutcracker],
) -> None:
    """What greenpool.HashClient stores, with a key_prefix, nutcracker reads back
    from the same servers: the hasher hashes the prefixed key, as it goes over
    the wire."""
    addresses = [server.address for server in four_memcacheds]
    proxy = start_nutcracker(addresses)
    cluster = HashClient(
        addresses, hasher=TwemproxyKetama, key_prefix=b"app:", default_noreply=False
    )
    keys = [f"user:{n}:{n * 7919}" for n in range(200)]
    assert cluster.set_many({key: key for key in keys}) == []
    through = Client(proxy.address)
    assert all(through.get(f"app:{key}".encode()) == key.encode() for key in keys)
    through.close()


@pytest.mark.parametrize(
    "hasher",
    [
        functools.partial(LibmemcachedKetama, hash="crc"),
        functools.partial(LibmemcachedKetama, weighted=1),
        functools.partial(TwemproxyKetama, key_prefix="app:"),
    ],
    ids=["unknown hash", "weighted not a bool", "text key_prefix"],
)
def test_hashers_reject_bad_options(hasher: Callable[[], Any]) -> None:
    with pytest.raises((TypeError, ValueError)) as raised:
        hasher()
    assert any(word in str(raised.value) for word in ("hash", "weighted", "key_prefix"))
