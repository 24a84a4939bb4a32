"""The gevent worker's rounds: greenpool, and the pymemcache ways a gevent program might use.

In ``python -m benchmarks.worker_process gevent``, ``preload`` stores the values
and ``round`` runs one contender on one workload (``overhead`` and ``profile``
are :mod:`benchmarks.overhead`'s).

Every pymemcache client here talks through gevent sockets: greenpool's own
clients through ``client_factory``'s default, the others through
``gevent.socket``, with the same ``connect_timeout``, ``timeout`` and
``no_delay`` as greenpool's (:data:`greenpool.CLIENT_DEFAULTS`). The process is
not monkey-patched; it does not need to be.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.event
import gevent.socket
from pymemcache.client.base import Client
from pymemcache.client.base import PooledClient as PymemcachePooledClient

import greenpool
from benchmarks.workers import Reply, Request, Tally, value_for
from greenpool import CLIENT_DEFAULTS, ClientPool, GreenletMappedPool, client_factory

#: pymemcache clients that are not greenpool's: gevent sockets, greenpool's timeouts.
PYMEMCACHE_OPTIONS: dict[str, Any] = {**CLIENT_DEFAULTS, "socket_module": gevent.socket}
#: How long a greenpool reservation may wait for a client. Generous, so that a
#: round measures throughput and not this setting: at 5,000 greenlets a
#: GreenletMappedPool's last greenlets wait for whole greenlets before them.
POOL_TIMEOUT = 30.0
#: Seconds a round may run past its window before its greenlets are killed.
GRACE = 30.0

Get = Callable[[str], Any]
Set = Callable[[str, bytes], Any]
Delete = Callable[[str], Any]
Ops = tuple[Get, Set, Delete, Callable[[], None]]


def _nothing() -> None:
    pass


class Contender:
    """A way for greenlets to reach memcached, made for one round.

    :meth:`ops` is called once per greenlet and returns its ``get(key)``,
    ``set(key, value)`` and ``delete(key)`` (acknowledged: ``noreply=False``) and
    ``done()``, called when the greenlet ends; :meth:`close` ends the round.
    """

    def __init__(self, get: Get, set_: Set, delete: Delete, close: Callable[[], None]) -> None:
        self._ops: Ops = (get, set_, delete, _nothing)
        self.close = close

    def ops(self) -> Ops:
        return self._ops


def reserving(reserve: Callable[[], Any], close: Callable[[], None]) -> Contender:
    """One ``with reserve() as mc:`` block per operation, as greenpool's README says."""

    def get(key: str) -> Any:
        with reserve() as mc:
            return mc.get(key)

    def set_(key: str, value: bytes) -> Any:
        with reserve() as mc:
            return mc.set(key, value, noreply=False)

    def delete(key: str) -> Any:
        with reserve() as mc:
            return mc.delete(key, noreply=False)

    return Contender(get, set_, delete, close)


def client_pool(address: tuple[str, int], maxsize: int) -> Contender:
    pool: ClientPool[Client] = ClientPool(client_factory(address), maxsize, timeout=POOL_TIMEOUT)
    return reserving(pool.reserve, pool.close)


def mapped_pool(address: tuple[str, int], maxsize: int) -> Contender:
    pool: ClientPool[Client] = ClientPool(client_factory(address), maxsize, timeout=POOL_TIMEOUT)
    return reserving(GreenletMappedPool(pool).reserve, pool.close)


def pooled_client(client: Any) -> Contender:
    """A client object shared by every greenlet: a PooledClient, ours or pymemcache's,
    or greenpool's HashClient (here over the one memcached, so the cost of its
    hashing shows beside a PooledClient's)."""
    return Contender(
        client.get,
        functools.partial(client.set, noreply=False),
        functools.partial(client.delete, noreply=False),
        client.close,
    )


class Dedicated(Contender):
    """One pymemcache ``Client`` per greenlet, connected on its first command and
    closed when the greenlet ends."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.close = _nothing

    def ops(self) -> Ops:
        client = Client(self.address, **PYMEMCACHE_OPTIONS)
        return (
            client.get,
            functools.partial(client.set, noreply=False),
            functools.partial(client.delete, noreply=False),
            client.close,
        )


def per_operation(address: tuple[str, int]) -> Contender:
    """A new connection for every operation, closed after it."""

    def get(key: str) -> Any:
        client = Client(address, **PYMEMCACHE_OPTIONS)
        try:
            return client.get(key)
        finally:
            client.close()

    def set_(key: str, value: bytes) -> Any:
        client = Client(address, **PYMEMCACHE_OPTIONS)
        try:
            return client.set(key, value, noreply=False)
        finally:
            client.close()

    def delete(key: str) -> Any:
        client = Client(address, **PYMEMCACHE_OPTIONS)
        try:
            return client.delete(key, noreply=False)
        finally:
            client.close()

    return Contender(get, set_, delete, _nothing)


CONTENDERS: dict[str, Callable[[tuple[str, int]], Contender]] = {
    "ClientPool(8)": functools.partial(client_pool, maxsize=8),
    "ClientPool(16)": functools.partial(client_pool, maxsize=16),
    "ClientPool(64)": functools.partial(client_pool, maxsize=64),
    "GreenletMappedPool(16)": functools.partial(mapped_pool, maxsize=16),
    "greenpool.PooledClient(16)": lambda address: pooled_client(
        greenpool.PooledClient(
            address, max_pool_size=16, pool_timeout=POOL_TIMEOUT, autobatch=False
        )
    ),
    "greenpool.PooledClient(16) autobatching": lambda address: pooled_client(
        greenpool.PooledClient(address, max_pool_size=16, pool_timeout=POOL_TIMEOUT, autobatch=True)
    ),
    "greenpool.HashClient(16) autobatching": lambda address: pooled_client(
        greenpool.HashClient([address], max_pool_size=16, pool_timeout=POOL_TIMEOUT, autobatch=True)
    ),
    "pymemcache PooledClient": lambda address: pooled_client(
        PymemcachePooledClient(address, max_pool_size=None, **PYMEMCACHE_OPTIONS)
    ),
    "dedicated Client": Dedicated,
    "Client per operation": per_operation,
}


def hash_client(request: Request, autobatch: bool) -> Contender:
    """greenpool's HashClient over the cluster's memcacheds, 16 clients a server,
    batched or not as the single server's PooledClient(16) it is compared with
    (batched: its defaults)."""
    servers = [tuple(address) for address in request["cluster"]["servers"]]
    client = greenpool.HashClient(
        servers, max_pool_size=16, pool_timeout=POOL_TIMEOUT, autobatch=autobatch
    )
    return pooled_client(client)


def through_nutcracker(request: Request) -> Contender:
    """greenpool's PooledClient through the nutcracker in front of the same memcacheds."""
    proxy = tuple(request["cluster"]["proxy"])
    return pooled_client(
        greenpool.PooledClient(proxy, max_pool_size=16, pool_timeout=POOL_TIMEOUT, autobatch=False)
    )


#: Contenders over several memcacheds: made from the request's ``cluster``.
CLUSTER_CONTENDERS: dict[str, Callable[[Request], Contender]] = {
    "greenpool.HashClient(16), 3 servers": functools.partial(hash_client, autobatch=False),
    "greenpool.HashClient(16) autobatching, 3 servers": functools.partial(
        hash_client, autobatch=True
    ),
    "greenpool.PooledClient(16), nutcracker": through_nutcracker,
}


def keys(request: Request) -> list[str]:
    return [f"{request['prefix']}{n}" for n in range(request["greenlets"])]


def preload(request: Request) -> Reply:
    """Store every key's value, acknowledged, before any round reads it."""
    client = Client(tuple(request["address"]), **PYMEMCACHE_OPTIONS)
    try:
        batch = [keys(request)[n : n + 500] for n in range(0, request["greenlets"], 500)]
        for chunk in batch:
            failed = client.set_many({key: value_for(key) for key in chunk}, noreply=False)
            if failed:
                raise RuntimeError(f"memcached did not store {len(failed)} keys")
    finally:
        client.close()
    return {}


def run_round(request: Request) -> Reply:
    """Run *greenlets* greenlets, each doing 1 to *ops* operations on its own key:
    all start together, and none starts another operation after the *seconds*
    window closes (its first one always runs). Every *set_every*-th is a set;
    with *writes*, the first half are sets of keys of its own and the second
    half deletes of them (right: each delete found its key)."""
    name = request["contender"]
    if name in CLUSTER_CONTENDERS:
        contender = CLUSTER_CONTENDERS[name](request)
    else:
        contender = CONTENDERS[name](tuple(request["address"]))
    ops, set_every, writes = request["ops"], request["set_every"], request.get("writes", False)
    tally = Tally()
    clock = time.perf_counter
    go = gevent.event.Event()
    deadline = math.inf

    def work(key: str) -> None:
        expected = value_for(key)
        get, set_, delete, done = contender.ops()
        go.wait()
        half = ops // 2
        try:
            for n in range(ops):
                if n and clock() >= deadline:
                    return
                started = clock()
                try:
                    if writes:
                        if n < half:
                            right = set_(f"{key}:{n}", expected) is not False
                        else:
                            right = delete(f"{key}:{n - half}") is True
                    elif set_every and n % set_every == set_every - 1:
                        right = set_(key, expected) is not False
                    else:
                        right = get(key) == expected
                except Exception as exc:
                    tally.error(exc)
                    continue
                tally.finished(started, right)
        finally:
            done()

    greenlets = [gevent.spawn(work, key) for key in keys(request)]
    gevent.idle()  # every greenlet is at the starting line
    started = tally.start()
    deadline = started + request["seconds"]
    go.set()
    gevent.joinall(greenlets, timeout=request["seconds"] + GRACE)
    unfinished = [g for g in greenlets if not g.dead]
    gevent.killall(unfinished, timeout=5)
    seconds = clock() - started
    gevent.idle()  # the greenlets' links run: a GreenletMappedPool gets its clients back
    for _ in unfinished:
        tally.error(f"greenlet unfinished {GRACE:.0f} s after the window")
    contender.close()
    return tally.reply(seconds)
