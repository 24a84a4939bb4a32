"""HashClient failover under many greenlets: a server stopped, then restarted.

pymemcache's HashClient keeps its failover state (failed servers, dead servers,
the hasher's nodes) in plain dicts and lists that it reads, then writes after a
command, with the command's socket I/O in between. Under gevent another
greenlet runs in that gap. These tests stop and restart real memcacheds under
load and look at what reaches the application.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import pytest
from pymemcache.exceptions import MemcacheError

from greenpool import HashClient
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.waiting import wait_until

Key = Callable[[str], str]
GREENLETS = 60


@pytest.fixture
def servers(three_memcacheds: list[MemcachedServer]) -> list[MemcachedServer]:
    """Three memcached processes this test alone uses (one may be stopped)."""
    return three_memcacheds


def _name(server: MemcachedServer) -> str:
    return f"{server.host}:{server.port}"


class Load:
    """GREENLETS greenlets doing set-then-get on keys of their own until stopped;
    every exception that reaches them is counted by type."""

    def __init__(self, cluster: Any, key: Key) -> None:
        self.cluster = cluster
        self.raised: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.done = 0
        self._stop = gevent.event.Event()
        self._jobs = [gevent.spawn(self._work, key(f"g{n}")) for n in range(GREENLETS)]

    def _work(self, prefix: str) -> None:
        n = 0
        while not self._stop.is_set():
            name = f"{prefix}-{n % 20}"
            n += 1
            try:
                self.cluster.set(name, "v")
                self.cluster.get(name)
                self.done += 1
            except Exception as exc:
                kind = type(exc).__name__
                self.raised[kind] += 1
                self.examples.setdefault(kind, repr(exc))
            gevent.sleep(0.001)

    def stop(self) -> None:
        self._stop.set()
        gevent.joinall(self._jobs, timeout=10)
        assert all(job.dead for job in self._jobs), "a greenlet hung"

    def unexpected(self) -> dict[str, str]:
        """Exceptions other than the dead server's own (socket errors, pymemcache's)."""
        expected = {"ConnectionRefusedError", "ConnectionResetError", "BrokenPipeError"}
        return {
            kind: f"{count}x, e.g. {self.examples[kind]}"
            for kind, count in self.raised.items()
            if kind not in expected and not _is_memcache_error(kind)
        }


def _is_memcache_error(kind: str) -> bool:
    import pymemcache.exceptions as errors

    found = getattr(errors, kind, None)
    return isinstance(found, type) and issubclass(found, MemcacheError)


def _bounce(server: MemcachedServer, load: Load, down_for: float) -> None:
    """Stop *server* under *load*, keep it down *down_for* seconds, start it again."""
    done = load.done
    wait_until(lambda: load.done > done + 200, "the load ran")
    server.stop()
    gevent.sleep(down_for)  # the outage itself: how long the server stays down
    server.start()


def _bounce_twice(cluster: HashClient, server: MemcachedServer, load: Load) -> None:
    """Stop and restart *server* twice under *load*, then wait until it is back in
    the ring."""
    for _ in range(2):
        _bounce(server, load, down_for=0.5)
    wait_until(lambda: _name(server) in cluster.hasher.nodes, "the server is back")


@pytest.mark.parametrize("retry_attempts", [2, 1000], ids=["marked-dead", "retried"])
def test_no_failover_race_reaches_the_application_when_a_server_restarts(
    servers: list[MemcachedServer], key: Key, retry_attempts: int
) -> None:
    """60 greenlets, one of three servers stopped and restarted twice: the
    application sees only that server's own errors (socket errors and
    pymemcache's MemcacheError), never a KeyError or ValueError from the failover
    bookkeeping; afterwards the server is back in the ring. With few retry
    attempts the server is marked dead and comes back after dead_timeout; with
    many it is still being retried when it comes back, by many greenlets at once."""
    cluster = HashClient(
        [server.address for server in servers], max_pool_size=4,
        retry_attempts=retry_attempts, retry_timeout=0.02, dead_timeout=0.3,
        default_noreply=False,
    )  # fmt: skip
    load = Load(cluster, key)
    try:
        _bounce_twice(cluster, servers[0], load)
        served = load.done
        wait_until(lambda: load.done > served + 200, "the load ran after the restart")
    finally:
        load.stop()
    assert load.unexpected() == {}
    assert load.raised, "the stopped server raised nothing: the test saw no outage"


def test_with_ignore_exc_nothing_reaches_the_application_when_a_server_restarts(
    servers: list[MemcachedServer], key: Key
) -> None:
    """The same restarts with ignore_exc=True: no exception at all reaches the
    application, whatever the failover bookkeeping meets."""
    cluster = HashClient(
        [server.address for server in servers], max_pool_size=4, retry_attempts=0,
        retry_timeout=0.02, dead_timeout=0.3, ignore_exc=True, default_noreply=False,
    )  # fmt: skip
    load = Load(cluster, key)
    try:
        _bounce_twice(cluster, servers[0], load)
    finally:
        load.stop()
    assert dict(load.raised) == {}


def test_a_restarted_server_is_back_in_the_ring_within_dead_timeout(
    servers: list[MemcachedServer], key: Key
) -> None:
    """A server marked dead is tried again dead_timeout after it was marked, not
    up to twice that: its keys are served by it again once it answers."""
    dead_timeout = 2.0
    cluster = HashClient(
        [server.address for server in servers], max_pool_size=2, retry_attempts=0,
        dead_timeout=dead_timeout, ignore_exc=True, default_noreply=False,
    )  # fmt: skip
    names = [key(str(n)) for n in range(60)]
    mine = [name for name in names if cluster.hasher.get_node(name) == _name(servers[0])]
    assert mine
    gevent.sleep(dead_timeout * 0.3)  # pymemcache checks dead servers every dead_timeout
    servers[0].stop()
    assert cluster.get(mine[0]) is None  # refused: marked dead at once (retry_attempts=0)
    marked = time.monotonic()
    assert _name(servers[0]) not in cluster.hasher.nodes
    servers[0].start()
    wait_until(
        lambda: cluster.set(mine[0], "back") and cluster.get(mine[0]) == b"back"
        and _name(servers[0]) in cluster.hasher.nodes,
        "the restarted server serves its keys again", timeout=3 * dead_timeout,
    )  # fmt: skip
    assert time.monotonic() - marked < dead_timeout * 1.3


def test_failover_is_logged_once_per_transition_naming_the_server(
    servers: list[MemcachedServer], key: Key, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that fails under load and is marked dead logs one WARNING on the
    greenpool logger (the server, the error, how long it stays out); back in the
    ring, one INFO. Not one record per command: dozens of commands fail meanwhile."""
    caplog.set_level(logging.INFO, logger="greenpool")
    dead_timeout = 2.0
    cluster = HashClient(
        [server.address for server in servers], retry_attempts=1, retry_timeout=0,
        dead_timeout=dead_timeout, ignore_exc=True, default_noreply=False,
    )  # fmt: skip
    stopped = _name(servers[0])
    mine = [k for k in (key(str(n)) for n in range(200)) if cluster.hasher.get_node(k) == stopped]
    servers[0].stop()
    jobs = [gevent.spawn(lambda k=k: [cluster.get(k) for _ in range(5)]) for k in mine]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    assert stopped not in cluster.hasher.nodes
    servers[0].start()
    wait_until(
        lambda: cluster.set(mine[0], "back") and stopped in cluster.hasher.nodes,
        "the server is back in the ring", timeout=3 * dead_timeout,
    )  # fmt: skip
    for _ in range(20):
        assert cluster.get(mine[0]) == b"back"
    records = [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "greenpool"]
    assert [level for level, _ in records] == ["WARNING", "INFO"], records
    (_, dead), (_, back) = records
    assert stopped in dead and "ConnectionRefusedError" in dead and "2.0 s" in dead
    assert stopped in back and "back" in back


def test_one_slow_batched_command_counts_one_failure_and_ejects_no_server(
    servers: list[MemcachedServer], proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """Ten greenlets get keys of one server at once: one goes alone, nine share one
    batched get, and both commands time out. That is two failed commands, not
    ten: with retry_attempts=2 the server stays in the ring and, once it answers
    again, serves its keys."""
    proxy = proxy_to(servers[0].address)
    slow = f"{proxy.address[0]}:{proxy.address[1]}"
    cluster = HashClient(
        [proxy.address, servers[1].address, servers[2].address], retry_attempts=2,
        retry_timeout=0.01, timeout=0.2, default_noreply=False,
    )  # fmt: skip
    mine = [k for k in (key(str(n)) for n in range(200)) if cluster.hasher.get_node(k) == slow]
    assert cluster.set_many(dict.fromkeys(mine, "v")) == []
    proxy.reply_delay = 0.5
    jobs = [gevent.spawn(cluster.get, k) for k in mine[:10]]
    gevent.joinall(jobs, timeout=10)
    assert all(isinstance(job.exception, TimeoutError) for job in jobs)
    assert cluster.clients[slow].pool_stats()["batch_commands"] == 2
    proxy.reply_delay = 0
    gevent.sleep(0.02)  # retry_timeout passes: the failing server may be tried again
    assert cluster.get(mine[0]) == b"v"
    assert slow in cluster.hasher.nodes and cluster._dead_clients == {}
