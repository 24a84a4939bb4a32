"""Clusters: pymemcache's HashClient over three real memcached processes, one
greenpool PooledClient per server, a few hundred greenlets at once.

Every cluster waits for store replies (default_noreply=False). With pymemcache's
default noreply, a set returns once sent, and a get that goes out right after on
another pooled connection can reach memcached first and miss: that is a miss,
not a wrong value, but these tests check reads exactly.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from pymemcache.client.base import Client as PymemcacheClient
from pymemcache.client.hash import HashClient as PymemcacheHashClient

import greenpool
from greenpool import HashClient, PooledClient, PoolError
from tests.memcached import MemcachedServer
from tests.threads import in_another_thread

Key = Callable[[str], str]
GREENLETS = 300


@pytest.fixture
def servers(three_memcacheds: list[MemcachedServer]) -> list[MemcachedServer]:
    """Three memcached processes this test alone uses (one may be stopped)."""
    return three_memcacheds


def _connections(servers: list[MemcachedServer]) -> list[int]:
    """Connections each server has accepted so far (stats() opens one more)."""
    return [server.stats()["total_connections"] for server in servers]


def _most_new_connections(servers: list[MemcachedServer], before: list[int]) -> int:
    """The most connections any server accepted since *before*, not counting stats()."""
    now = _connections(servers)
    return max(after - earlier for after, earlier in zip(now, before, strict=True)) - 1


def _name(server: MemcachedServer) -> str:
    return f"{server.host}:{server.port}"  # how HashClient names its nodes


def _write_read_everywhere(cluster: Any, key: Key) -> list[str]:
    """GREENLETS greenlets each write, read back and count on keys of their own."""
    wrong: list[str] = []

    def work(i: int) -> None:
        for n in range(3):
            name, value = key(f"{i}-{n}"), f"{i}:{n}"
            cluster.set(name, value)
            got = cluster.get(name)
            if got != value.encode():
                wrong.append(f"{name}: wrote {value!r}, read {got!r}")
        if cluster.incr(key("count"), 1) is None:
            wrong.append("the counter vanished")

    cluster.set(key("count"), "0")
    jobs = [gevent.spawn(work, i) for i in range(GREENLETS)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert all(job.dead for job in jobs)
    if cluster.get(key("count")) != str(GREENLETS).encode():
        wrong.append(f"count is {cluster.get(key('count'))!r}")
    return wrong


def test_every_value_read_back_is_the_value_written_with_bounded_connections(
    servers: list[MemcachedServer], key: Key
) -> None:
    """No greenlet reads another's value; each server sees at most max_pool_size
    connections (plus the one stats() opens); keys really spread over all three."""
    before = _connections(servers)
    cluster = HashClient(
        [server.address for server in servers], max_pool_size=4, default_noreply=False
    )
    assert _write_read_everywhere(cluster, key) == []
    assert _most_new_connections(servers, before) <= 4
    for server in servers:
        assert server.stats()["curr_items"] > 100  # a third of 900 keys, roughly
    for client in cluster.clients.values():
        assert isinstance(client, PooledClient)
        # gevent switches greenlets only where a recv would block: on a loaded machine
        # a loopback memcached may answer before pymemcache reads, and a server's
        # commands then run one after another. The bound is what must hold.
        assert 1 <= client.pool_stats()["created"] <= 4 and client.pool_stats()["in_use"] == 0
    cluster.close()


def test_pymemcaches_own_hashclient_takes_a_pooled_client_partial(
    servers: list[MemcachedServer], key: Key
) -> None:
    """The recipe for code that builds pymemcache's HashClient itself."""

    class Cluster(PymemcacheHashClient):  # type: ignore[misc]
        client_class = functools.partial(PooledClient, max_pool_size=2)

    before = _connections(servers)
    cluster = Cluster(
        [server.address for server in servers], use_pooling=False, default_noreply=False,
        **greenpool.CLIENT_DEFAULTS,
    )  # fmt: skip
    assert all(client.socket_module is greenpool._socket for client in cluster.clients.values())
    assert _write_read_everywhere(cluster, key) == []
    assert _most_new_connections(servers, before) <= 2


def test_after_a_server_dies_the_others_keep_serving_correctly_and_quickly(
    servers: list[MemcachedServer], key: Key
) -> None:
    """Kill one of three servers under load. With ignore_exc its keys read as
    misses, never as someone else's value; keys on the other two keep their
    values and answer fast; the dead node leaves the ring and nothing hangs."""
    cluster = HashClient(
        [server.address for server in servers], max_pool_size=4, ignore_exc=True,
        dead_timeout=60, retry_attempts=1, retry_timeout=0.05, default_noreply=False,
    )  # fmt: skip
    values = {key(str(i)): f"value-{i}" for i in range(GREENLETS)}
    assert cluster.set_many(values) == []
    dead = _name(servers[0])
    on_dead = {name for name in values if cluster.hasher.get_node(name) == dead}
    assert 50 < len(on_dead) < 150
    servers[0].stop()
    wrong: list[str] = []
    slowest = 0.0
    started = time.monotonic()

    def work(name: str) -> None:
        nonlocal slowest
        for _ in range(5):
            began = time.monotonic()
            got = cluster.get(name)
            if name not in on_dead:
                slowest = max(slowest, time.monotonic() - began)
                if got != values[name].encode():
                    wrong.append(f"{name} on a live server read {got!r}")
            elif got is not None:
                wrong.append(f"{name} on the dead server read {got!r}")
            gevent.sleep(0.01)

    jobs = [gevent.spawn(work, name) for name in values]
    gevent.joinall(jobs, timeout=30)
    assert all(job.dead for job in jobs), "a greenlet hung"
    assert all(job.successful() for job in jobs)
    assert wrong == []
    assert slowest < 1.0 and time.monotonic() - started < 10
    assert dead not in cluster.hasher.nodes  # marked dead: its keys now go elsewhere
    moved = sorted(on_dead)[0]
    assert cluster.set(moved, "moved") and cluster.get(moved) == b"moved"


def test_use_pooling_is_accepted_and_every_server_gets_a_greenpool_client(
    servers: list[MemcachedServer], key: Key
) -> None:
    """pymemcache would nest its own PooledClient around ours with use_pooling=True."""
    cluster = HashClient([server.address for server in servers], use_pooling=True, max_pool_size=3)
    assert {type(client) for client in cluster.clients.values()} == {PooledClient}
    assert {client.max_pool_size for client in cluster.clients.values()} == {3}
    assert cluster.set(key("a"), "1", noreply=False) and cluster.get(key("a")) == b"1"


def test_pool_stats_has_each_servers_pooled_client_stats(
    servers: list[MemcachedServer], key: Key
) -> None:
    """HashClient.pool_stats() is {"host:port": that server's PooledClient
    pool_stats()}, every server listed, the gets counted where they went."""
    cluster = HashClient([server.address for server in servers], default_noreply=False)
    names = [key(str(n)) for n in range(30)]
    assert cluster.set_many(dict.fromkeys(names, "v")) == []
    assert all(cluster.get(name) == b"v" for name in names)
    stats = cluster.pool_stats()
    assert set(stats) == {_name(server) for server in servers}
    for server, pooled in stats.items():
        assert pooled == cluster.clients[server].pool_stats()
        assert pooled["in_use"] == 0 and pooled["created"] >= 1
    assert sum(pooled["keys_asked"] for pooled in stats.values()) == len(names)


@pytest.mark.parametrize("autobatch", [True, False], ids=["autobatch", "unbatched"])
def test_from_another_thread_a_cluster_raises_pool_error_even_with_ignore_exc(
    servers: list[MemcachedServer], key: Key, autobatch: bool
) -> None:
    """As PooledClient: a cluster used from a thread its pools do not belong to
    raises PoolError, whatever ignore_exc says, for reads and writes alike;
    nothing is marked failed."""
    cluster = HashClient(
        [server.address for server in servers], ignore_exc=True, autobatch=autobatch,
        default_noreply=False,
    )  # fmt: skip
    names = [key(str(n)) for n in range(30)]
    assert cluster.set_many(dict.fromkeys(names, "v")) == []
    assert cluster.get_many(names) == dict.fromkeys(names, b"v")  # pools and batchers bound
    assert {cluster.hasher.get_node(name) for name in names} == set(cluster.clients)
    for call in (lambda: cluster.get(names[0]), lambda: cluster.set(names[0], "w")):
        error = in_another_thread(call)
        assert isinstance(error, PoolError) and "belongs to thread" in str(error)
    assert cluster._failed_clients == {} and cluster.get(names[0]) == b"v"


def test_remove_server_of_a_non_member_raises_and_changes_nothing(
    servers: list[MemcachedServer], key: Key
) -> None:
    """remove_server of a server the cluster does not have raises ValueError naming
    it, and leaves the ring and the dead list as they were: once dead_timeout has
    passed, commands still work (they met a KeyError past ignore_exc before)."""
    cluster = HashClient(
        [server.address for server in servers[:2]], ignore_exc=True, dead_timeout=0.05,
        default_noreply=False,
    )  # fmt: skip
    ring = list(cluster.hasher.nodes)
    stranger = servers[2].address
    with pytest.raises(ValueError, match=_name(servers[2])):
        cluster.remove_server(*stranger)
    assert cluster.hasher.nodes == ring and cluster._dead_clients == {}
    gevent.sleep(0.1)  # dead_timeout passes: a dead server would be retried now
    assert cluster.set(key("a"), "1") is True and cluster.get(key("a")) == b"1"
    cluster.remove_server(*servers[0].address)  # a member leaves the ring
    assert cluster.hasher.nodes == [_name(servers[1])]


def test_a_str_key_prefix_is_encoded_and_keys_are_stored_under_it(
    servers: list[MemcachedServer], key: Key
) -> None:
    """HashClient(key_prefix="p:") works as pymemcache's Client(key_prefix="p:"):
    every key goes over the wire with the prefix, on the server its hasher says."""
    cluster = HashClient([server.address for server in servers], key_prefix="p:")
    assert cluster.key_prefix == b"p:"
    assert cluster.set(key("a"), "1", noreply=False) is True
    assert cluster.get(key("a")) == b"1" and cluster.get_many([key("a")]) == {key("a"): b"1"}
    home = next(s for s in servers if _name(s) == cluster.hasher.get_node(key("a")))
    raw = PymemcacheClient(home.address, socket_module=greenpool._socket)
    assert raw.get(f"p:{key('a')}") == b"1"
