"""One memcached client per process and OS thread, shared by a framework's cache backends.

Django builds a cache backend object per context (an asgiref ``Local``, which
is contextvars-based, and every gevent greenlet has a context of its own), and
any framework may build several backends with the same settings. If each built
its own client, each would open its own connections. :func:`shared_client`
hands every backend with the same servers and options the same
:class:`~greenpool.HashClient`, one per OS thread (a pool belongs to one gevent
hub) and per process: after a fork the child builds its own, so it never
touches a client, nor the failover state, its parent made. The process also
keeps a weak list of every thread's client, for :meth:`SharedCluster.pool_stats`
to read from any thread (a metrics exporter's) without making one there.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, cast

from gevent.monkey import get_original

from greenpool import _fork
from greenpool.client import PooledClientStats
from greenpool.cluster import HashClient

__all__ = ["OneServerClient", "SharedCluster", "cluster_client", "shared_client"]

# The OS thread's own storage, even under monkey-patching (where threading.local
# is per greenlet). A thread's clients go with the thread.
_ThreadLocal: type[Any] = get_original("_thread", "_local")


class _Clients(_ThreadLocal):  # type: ignore[misc]
    epoch = -1  # the process generation the clients below were made in
    clients: dict[Hashable, Any]


_local = _Clients()


class _EveryThread:
    """Every thread's client of each key, in this process: held weakly (a thread's
    clients go with it), forgotten after a fork, guarded by an OS lock (threads
    add while an exporter reads)."""

    def __init__(self) -> None:
        self._lock = get_original("_thread", "allocate_lock")()
        self._epoch = -1
        self._clients: dict[Hashable, weakref.WeakSet[Any]] = {}

    def add(self, key: Hashable, client: Any) -> None:
        with self._lock:
            self._current().setdefault(key, weakref.WeakSet()).add(client)

    def of(self, key: Hashable) -> list[Any]:
        with self._lock:
            return list(self._current().get(key, ()))

    def _current(self) -> dict[Hashable, weakref.WeakSet[Any]]:
        if self._epoch != _fork.epoch:
            self._epoch = _fork.epoch
            self._clients = {}
        return self._clients


_every_thread = _EveryThread()


def shared_client(key: Hashable, make: Callable[[], Any]) -> Any:
    """Return this thread's client for *key*, made by *make* the first time.

    Made again after a fork: the child never uses a client made in its parent.
    """
    local = _local
    if local.epoch != _fork.epoch:
        local.clients = {}
        local.epoch = _fork.epoch
    client = local.clients.get(key)
    if client is None:
        client = local.clients[key] = make()
        _every_thread.add(key, client)
    return client


def summed(stats: list[PooledClientStats]) -> PooledClientStats:
    """The stats of several pools of one server as one: counters and gauges
    added up (``maxsize`` too: the most clients they may hold together),
    ``keys_per_batch`` over all their batches."""
    total: dict[str, Any] = dict(stats[0])
    for each in stats[1:]:
        for key, value in each.items():
            total[key] += value
    total["keys_per_batch"] = total["keys_sent"] / total["batches"] if total["batches"] else 0.0
    return cast(PooledClientStats, total)


def frozen(value: Any) -> Hashable:
    """A hashable stand-in for *value* (settings: dicts, lists, any object),
    equal for equal settings; objects that are not hashable stand for themselves."""
    if isinstance(value, Mapping):
        return ("mapping", tuple(sorted((str(k), frozen(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("sequence", tuple(frozen(v) for v in value))
    if isinstance(value, (set, frozenset)):
        return ("set", frozenset(frozen(v) for v in value))
    try:
        hash(value)
    except TypeError:
        return _Identity(value)
    return value  # type: ignore[no-any-return]


class _Identity:
    """An unhashable setting, equal only to itself (and kept alive, so its id
    is never reused for another object)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __hash__(self) -> int:
        return id(self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Identity) and other.value is self.value


class OneServerClient(HashClient):
    """:class:`~greenpool.HashClient` for a single server: no failover.

    With one server there is nothing to fail over to, so pymemcache's failover
    bookkeeping (*retry_attempts*, *retry_timeout*, *dead_timeout*) is off: it
    would answer defaults without trying for *retry_timeout* after an error,
    then refuse every command for *dead_timeout* after a restart. Every command
    goes to the server's pool (a ring of one needs no hashing); *ignore_exc*
    still turns every command's errors into HashClient's defaults (misses,
    ``False``).
    """

    def _mark_failed_server(self, server: Any, error: BaseException | None = None) -> None:
        pass


def cluster_client(servers: Iterable[Any], options: Mapping[str, Any]) -> HashClient:
    """A :class:`~greenpool.HashClient` over *servers* (a :class:`OneServerClient`
    for one) with pymemcache and pool *options*."""
    servers = list(servers)
    if not servers:
        raise ValueError("servers must name at least one memcached server, got none")
    client_class = OneServerClient if len(servers) == 1 else HashClient
    return client_class(servers, **options)


class SharedCluster:
    """What a framework backend holds: the settings of its client, and the key
    under which every backend with the same settings shares one per process and
    thread. :meth:`client` returns that client, made the first time."""

    __slots__ = ("_key", "options", "servers")

    def __init__(self, servers: Iterable[Any], options: Mapping[str, Any]) -> None:
        self.servers = list(servers)
        self.options = options
        self._key: Hashable = (tuple(self.servers), frozen(options))

    def client(self) -> HashClient:
        """This process's and thread's client for these servers and options."""
        client: HashClient = shared_client(self._key, self._make)
        return client

    def pool_stats(self) -> dict[str, PooledClientStats]:
        """Each server's pool stats, by ``"host:port"``, over the clients of every
        thread of this process (one under gevent): from any thread, a metrics
        exporter's included, which this makes no client for."""
        clients = _every_thread.of(self._key) or [self.client()]
        if len(clients) == 1:
            return clients[0].pool_stats()  # type: ignore[no-any-return]
        each = [client.pool_stats() for client in clients]
        return {server: summed([stats[server] for stats in each]) for server in each[0]}

    def _make(self) -> HashClient:
        return cluster_client(self.servers, self.options)
