"""Autobatching under faults: a caller interrupted while it waits, a chunk that
fails beside one that succeeds, a closed pool, a restart under random kills and
timeouts, a fork, another thread, a dead server in a cluster.

Callers never hold a socket while they wait for a batch: an interruption
withdraws the caller and costs no connection, and a chunk's failure costs its
own client and reaches its own callers only.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent import Timeout
from pymemcache.exceptions import MemcacheUnexpectedCloseError

from greenpool import (
    AutoBatcher,
    ClientPool,
    HashClient,
    PoolClosed,
    PooledClient,
    PoolError,
    PoolTimeout,
    client_factory,
)
from tests.forking import Child
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.test_batching import busy
from tests.threads import in_another_thread
from tests.waiting import wait_until

Key = Callable[[str], str]


@pytest.mark.parametrize("interrupt", ["timeout", "kill"])
def test_a_caller_interrupted_while_waiting_withdraws_and_costs_no_connection(
    proxy: FaultProxy, key: Key, interrupt: str
) -> None:
    """A caller timed out or killed while its batch is in flight leaves: the other
    caller of the same key gets its value, and no client is discarded."""
    mc = PooledClient(proxy.address, autobatch=True, default_noreply=False)
    mc.set_many({key("a"): "1", key("b"): "2"})
    proxy.reply_delay = 0.1
    lone = busy(mc.get, proxy, key("b"))
    if interrupt == "timeout":

        def impatient() -> Any:
            with Timeout(0.02):
                return mc.get(key("a"))

        leaving = gevent.spawn(impatient)
    else:
        leaving = gevent.spawn(mc.get, key("a"))
    staying = gevent.spawn(mc.get_many, [key("a"), key("b")])
    wait_until(lambda: mc.pool_stats()["in_use"] == 2, "the batch is in flight")
    if interrupt == "kill":
        leaving.kill(block=True, timeout=5)
    gevent.joinall([lone, leaving, staying], timeout=5)
    if interrupt == "timeout":
        assert isinstance(leaving.exception, Timeout)
    else:
        assert isinstance(leaving.value, gevent.GreenletExit)
    assert staying.value == {key("a"): b"1", key("b"): b"2"} and lone.value == b"2"
    stats = mc.pool_stats()
    assert (stats["discarded"], stats["in_use"], stats["size"]) == (0, 0, 2)
    mc.pool.close()


def test_a_failing_chunk_fails_its_own_callers_and_the_other_chunk_is_served(
    memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    """Two chunks of one batch on two clients: the one behind a silent proxy times
    out, its callers get the socket timeout and its client is discarded; the
    other chunk's callers get their values."""
    holding, silent = proxy_to(memcached.address), proxy_to(memcached.address)
    factories = iter(
        [
            client_factory(holding.address),  # the lone get's client
            client_factory(silent.address, timeout=0.2),  # the first chunk's
            client_factory(memcached.address),  # the second chunk's
        ]
    )
    pool: ClientPool[Any] = ClientPool(lambda: next(factories)(), 3)
    batcher = AutoBatcher(pool, max_keys=2)
    values = {key(str(i)): str(i).encode() for i in range(5)}
    client_factory(memcached.address)().set_many(values, noreply=False)
    holding.reply_delay, silent.reply_delay = 0.3, 5.0
    lone = busy(batcher.get, holding, key("0"))
    jobs = [gevent.spawn(batcher.get, key(str(i))) for i in range(1, 5)]
    gevent.joinall([lone, *jobs], timeout=5)
    assert all(isinstance(job.exception, TimeoutError) for job in jobs[:2])
    assert [job.value for job in jobs[2:]] == [b"3", b"4"] and lone.value == b"0"
    stats = pool.stats()
    assert (stats["discarded_error"], stats["in_use"], stats["size"]) == (1, 0, 2)
    pool.close()


def test_closing_the_pool_fails_the_waiting_chunks_callers_with_pool_closed(
    make_pool: Callable[..., ClientPool[Any]], key: Key
) -> None:
    """A chunk waiting for a client when the pool closes fails its callers, as a
    waiting reservation does; nothing hangs."""
    pool = make_pool(1)
    batcher = AutoBatcher(pool)
    with pool.reserve():
        jobs = [gevent.spawn(batcher.get, key(str(i))) for i in range(3)]
        wait_until(lambda: pool.stats()["waiting"] == 2, "the lone get and the chunk wait")
        pool.close()
    gevent.joinall(jobs, timeout=5)
    assert all(isinstance(job.exception, PoolClosed) for job in jobs)


def test_random_timeouts_kills_and_a_restart_never_give_a_wrong_value(
    own_memcached: MemcachedServer, key: Key
) -> None:
    """200 greenlets reading and writing keys of their own through a proxy with
    random delays, with random timeouts, kills and a memcached restart: 0 values
    of another key, 0 protocol errors, in_use back to 0, and every fault happened."""
    rng = random.Random(12)
    proxy = FaultProxy(own_memcached.address).start()
    proxy.reply_delay = lambda: rng.choice((0, 0, 0.001, 0.005, 0.02))
    mc = PooledClient(
        proxy.address, autobatch=True, autobatch_max_keys=8, max_pool_size=8,
        pool_timeout=5, connect_timeout=0.5, timeout=1.0, default_noreply=False,
    )  # fmt: skip
    wrong: list[str] = []
    protocol_errors: list[BaseException] = []
    outcomes = dict.fromkeys(("ok", "timeout", "connection", "pool_timeout"), 0)
    deadline = time.monotonic() + 6.0

    def work(worker: int) -> None:
        mine = key(str(worker))
        for n in itertools.count():
            if time.monotonic() > deadline:
                return
            try:
                with Timeout(rng.choice((0.002, 0.01) + (2.0,) * 8)):
                    if n % 5 == 0:
                        mc.set(mine, f"{mine}:{n}")
                    got = (
                        mc.get_many([mine, key(str(rng.randrange(200)))])
                        if n % 3
                        else {mine: mc.get(mine)}
                    )
                for name, value in got.items():
                    if value is not None and not value.startswith(f"{name}:".encode()):
                        wrong.append(f"{name} read {value!r}")
                outcomes["ok"] += 1
            except Timeout:
                outcomes["timeout"] += 1
            except PoolTimeout:
                outcomes["pool_timeout"] += 1
            except (OSError, MemcacheUnexpectedCloseError):
                outcomes["connection"] += 1
            except Exception as exc:
                protocol_errors.append(exc)
            gevent.sleep(rng.uniform(0, 0.005))

    workers = {i: gevent.spawn(work, i) for i in range(200)}
    kills = 0
    restarted = False
    while time.monotonic() < deadline:
        gevent.sleep(0.02)
        victim = rng.choice(list(workers))
        workers.pop(victim).kill(block=False)
        workers[victim] = gevent.spawn(work, victim)
        kills += 1
        if not restarted and time.monotonic() > deadline - 4.0:
            own_memcached.stop()
            gevent.sleep(0.2)
            own_memcached.start()
            restarted = True
    gevent.joinall(list(workers.values()), timeout=15)
    proxy.stop()
    assert all(job.dead for job in workers.values())
    assert wrong == [] and protocol_errors == []
    stats = mc.pool_stats()
    print(outcomes, stats)  # shown with -s
    assert stats["in_use"] == 0 and stats["waiting"] == 0 and stats["size"] <= 8
    assert kills > 100 and outcomes["timeout"] > 50 and outcomes["connection"] > 0
    assert outcomes["ok"] > 1000 and stats["keys_per_batch"] > 2
    assert stats["discarded_error"] > 0  # the restart cut chunks off


def test_a_batch_never_crosses_a_fork(memcached: MemcachedServer, key: Key) -> None:
    """Callers waiting in a batch when the process forks get their values in the
    parent; in the child their copies fail with PoolError, and the child's own
    gets are served from batches of its own.

    No proxy here: the test's process would fork its greenlets too. The batch
    waits for the only client, which this greenlet holds across the fork.
    """
    mc = PooledClient(memcached.address, autobatch=True, max_pool_size=1, default_noreply=False)
    mc.set_many({key("a"): "1", key("b"): "2", key("child"): "3"})

    def in_the_child() -> dict[str, Any]:
        own = [gevent.spawn(mc.get, key("child")) for _ in range(3)]
        gevent.joinall([*own, *waiting], timeout=5)
        return {
            "own": [job.get().decode() for job in own],
            "waiting": [type(job.exception).__name__ for job in waiting],
            "forked": all("forked" in str(job.exception) for job in waiting),
        }

    with mc.pool.reserve():
        lone = gevent.spawn(mc.get, key("b"))
        waiting = [gevent.spawn(mc.get, key("a")), gevent.spawn(mc.get_many, [key("b")])]
        wait_until(lambda: mc.pool_stats()["waiting"] == 2, "the lone get and the batch wait")
        child = Child(in_the_child)
    gevent.joinall([lone, *waiting], timeout=5, raise_error=True)
    assert [job.value for job in waiting] == [b"1", {key("b"): b"2"}] and lone.value == b"2"
    assert child.result() == {
        "own": ["3", "3", "3"], "waiting": ["PoolError", "PoolError"], "forked": True,
    }  # fmt: skip
    mc.pool.close()


def test_another_thread_gets_a_clear_pool_error_and_nothing_hangs(
    make_pool: Callable[..., ClientPool[Any]], key: Key
) -> None:
    """The batcher belongs to the thread that first used it, as its pool does."""
    batcher = AutoBatcher(make_pool(2, name="threaded"))
    assert batcher.get(key("a")) is None
    error = in_another_thread(lambda: batcher.get(key("a")))
    assert isinstance(error, PoolError) and "'threaded' belongs to thread" in str(error)
    assert batcher.get_many([key("a")]) == {}  # unharmed in its own thread


@pytest.mark.parametrize("ignore_exc", [True, False])
def test_a_cluster_with_a_dead_server_fails_or_misses_only_its_keys(
    three_memcacheds: list[MemcachedServer],
    proxy_to: Callable[..., FaultProxy],
    key: Key,
    ignore_exc: bool,
) -> None:
    """HashClient(autobatch=True) over three servers (behind delay proxies, so
    that gets overlap), one gone: its keys read as misses (ignore_exc), or the
    first of them raise its connection error (refused, or the open connection
    cut) and the rest read the default while the server waits for its retry;
    the keys of the two live servers are served, in batches per server."""
    proxies = [proxy_to(server.address) for server in three_memcacheds]
    cluster = HashClient(
        [proxy.address for proxy in proxies], autobatch=True, ignore_exc=ignore_exc,
        retry_attempts=100, dead_timeout=60, default_noreply=False,
    )  # fmt: skip
    values = {key(str(i)): str(i).encode() for i in range(150)}
    assert cluster.set_many(values) == []
    host, port = proxies[0].address
    dead = f"{host}:{port}"  # how HashClient names its nodes
    on_dead = {name for name in values if cluster.hasher.get_node(name) == dead}
    assert 20 < len(on_dead) < 80
    three_memcacheds[0].stop()
    proxies[0].stop()
    for proxy in proxies:
        proxy.reply_delay = 0.02
    jobs = {name: gevent.spawn(cluster.get, name) for name in values}
    gevent.joinall(list(jobs.values()), timeout=10)
    failed = (ConnectionRefusedError, MemcacheUnexpectedCloseError)
    for name, job in jobs.items():
        if name not in on_dead:
            assert job.value == values[name], name
        elif ignore_exc:
            assert job.successful() and job.value is None, name
        else:  # once the server failed, its keys read the default until retry_timeout
            assert isinstance(job.exception, failed) or job.value is None, name
    if not ignore_exc:
        assert any(isinstance(jobs[name].exception, failed) for name in on_dead)
    for name, client in cluster.clients.items():
        stats = client.pool_stats()
        assert stats["in_use"] == 0
        if name != dead:
            assert stats["batches"] < stats["keys_asked"] / 2, name


def test_the_prometheus_collector_exposes_a_pooled_clients_batching(
    proxy: FaultProxy, key: Key
) -> None:
    """PoolCollector(PooledClient) reads pool_stats(): the pool's metrics and the
    batcher's counters, under the pool's name."""
    from prometheus_client import CollectorRegistry

    from greenpool.prometheus import PoolCollector

    mc = PooledClient(proxy.address, autobatch=True, pool_options={"name": "batched"})
    registry = CollectorRegistry()
    PoolCollector(mc, registry=registry)
    proxy.reply_delay = 0.05
    lone = busy(mc.get, proxy, key("a"))
    gevent.joinall([lone, *(gevent.spawn(mc.get, key("b")) for _ in range(3))], timeout=5)

    def sample(name: str) -> Any:
        return registry.get_sample_value(name, {"pool": "batched"})

    assert (sample("greenpool_batches_total"), sample("greenpool_batches_alone_total")) == (2, 1)
    assert sample("greenpool_batch_commands_total") == 2
    assert sample("greenpool_batch_keys_asked_total") == 4
    assert sample("greenpool_batch_keys_sent_total") == 2
    assert sample("greenpool_reservations_total") == 2 and sample("greenpool_clients_max") == 16
    mc.pool.close()
