"""Prometheus metrics for everything that pools (``pip install greenpool[prometheus]``).

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> pool = ClientPool(client_factory(memcached_address), maxsize=4, name="sessions")
>>> collector = PoolCollector(pool, registry=registry)
>>> registry.get_sample_value("greenpool_clients_max", {"pool": "sessions"})
4.0
>>> collector.unregister()

A :class:`PoolCollector` reads its pool's stats at scrape time, so it costs
nothing between scrapes. The exposition formats allow each metric family once
per scrape, and a registry asks each of its collectors in turn, so the
collectors of one registry share one collector there, which gives every family
once with a sample per pool: any number of them may be on a registry,
prometheus_client's default one included.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Optional

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from greenpool.client import PooledClient
from greenpool.cluster import HashClient
from greenpool.mapped import GreenletMappedPool
from greenpool.pool import ClientPool
from greenpool.stats import DISCARD_REASONS

__all__ = ["PoolCollector"]

Labels = dict[str, str]
Row = tuple[Labels, Mapping[str, Any]]  # a sample's labels, and the stats it reads

# (metric name without _total, help, stats key, scale) for the plain counters.
_COUNTERS = (
    ("greenpool_clients_created", "Clients created.", "created", 1.0),
    ("greenpool_reconnects", "Idle clients reconnected after a server failure.", "reconnects", 1.0),
    ("greenpool_connection_errors", "Reservations ended by a connection or protocol error.",
     "connection_errors", 1.0),
    ("greenpool_connect_errors", "Reservations whose client could not connect.",
     "connect_errors", 1.0),
    ("greenpool_reservations", "Reservations that got a client.", "reserves", 1.0),
    ("greenpool_waits", "Reservations that had to wait for a client.", "waits", 1.0),
    ("greenpool_timeouts", "Reservations that gave up with PoolTimeout.", "timeouts", 1.0),
    ("greenpool_overloaded", "Reservations refused with PoolOverloaded.", "overloaded", 1.0),
    ("greenpool_leak_warnings", "Reservations held past leak_warning_after.", "leak_warnings", 1.0),
    ("greenpool_wait_seconds", "Time spent waiting for a client.", "wait_ms", 0.001),
    ("greenpool_usage_seconds", "Time clients spent reserved.", "usage_ms", 0.001),
)  # fmt: skip

# The same, from an AutoBatcher's counters (a PooledClient's pool_stats() has them).
_BATCH_COUNTERS = (
    ("greenpool_batches", "Batches of gets sent (a lone get counts as one).", "batches", 1.0),
    ("greenpool_batches_alone", "Gets sent at once: nothing else pending or in flight.",
     "batches_alone", 1.0),
    ("greenpool_batch_commands", "get and gets commands that batches sent.", "batch_commands", 1.0),
    ("greenpool_batch_keys_asked", "Keys that callers asked batches for.", "keys_asked", 1.0),
    ("greenpool_batch_keys_sent", "Keys that batches sent to memcached.", "keys_sent", 1.0),
    ("greenpool_batch_keys_retried", "Keys asked for again alone after a multi-key get failed "
     "whole.", "keys_retried", 1.0),
    ("greenpool_pipelines", "Writes that carried a batch's commands, one connection each.",
     "pipelines", 1.0),
    ("greenpool_commands_pipelined", "Commands other than gets sent in pipelines.",
     "commands_pipelined", 1.0),
)  # fmt: skip


class PoolCollector(Collector):
    """Expose a pool's :class:`~greenpool.PoolStats` as Prometheus metrics.

    *source* is a :class:`~greenpool.ClientPool`, a
    :class:`~greenpool.GreenletMappedPool`, a :class:`~greenpool.PooledClient`
    (its batcher's counters come too), a :class:`~greenpool.HashClient` or a
    framework backend (``greenpool.django.MemcachedCache``,
    ``greenpool.flask_caching.MemcachedCache``): these two give a sample per
    server, labelled ``server="host:port"``. *name* is the ``pool`` label: by
    default the pool's own name, or the class name of a cluster or backend.

    The collector is put on *registry*, prometheus_client's default one unless
    told otherwise, at once (as prometheus_client's own metrics are), beside
    any other PoolCollectors there; :meth:`unregister` takes it off. Two of
    them with the same *name* on one registry would expose the same series:
    the second raises :class:`ValueError`. With ``registry=None`` it is on no
    registry, and yields its own metrics to whoever collects it.
    """

    def __init__(
        self,
        source: Any,
        name: Optional[str] = None,
        *,
        registry: Optional[CollectorRegistry] = REGISTRY,
    ) -> None:
        self.source = source
        default_name, self._read, self._by_server = _reader(source)
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self.name = default_name if name is None else name
        self._group: Optional[_Group] = None
        if registry is not None:
            self._group = _Group.join(registry, self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pool={self.name!r} of {self.source!r}>"

    def rows(self) -> list[Row]:
        """Each sample's labels and the stats it reads, as of now."""
        if not self._by_server:
            return [({"pool": self.name}, self._read())]
        return [
            ({"pool": self.name, "server": server}, stats) for server, stats in self._read().items()
        ]

    def describe(self) -> list[Metric]:
        """The families this collector yields; none on a registry, where the
        registry's shared collector yields them."""
        return [] if self._group is not None else list(_families([]))

    def collect(self) -> Iterator[Metric]:
        """The metrics now; none on a registry (its shared collector has them)."""
        if self._group is None:
            yield from _families(self.rows())

    def unregister(self) -> None:
        """Take this collector off its registry; doing it twice does nothing."""
        group, self._group = self._group, None
        if group is not None:
            group.leave(self)


def _reader(source: Any) -> tuple[str, Callable[[], Any], bool]:
    """*source*'s default pool label, what reads its stats, and whether those are
    by server."""
    if isinstance(source, ClientPool):
        return source.name, source.stats, False
    if isinstance(source, GreenletMappedPool):  # its pool's stats() may be read from any thread
        return source.pool.name, source.pool.stats, False
    if isinstance(source, PooledClient):
        return source.pool.name, source.pool_stats, False
    pool_stats = getattr(source, "pool_stats", None)
    if isinstance(source, HashClient) or callable(pool_stats):  # a cluster, or a backend
        return type(source).__name__, pool_stats, True  # type: ignore[return-value]
    raise TypeError(
        f"PoolCollector needs a ClientPool, GreenletMappedPool, PooledClient, HashClient or "
        f"framework backend, not {type(source).__name__}"
    )


class _Group(Collector):
    """What a registry holds for all the PoolCollectors on it: one collector that
    yields each family once, with every member's samples."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.members: tuple[PoolCollector, ...] = ()

    @classmethod
    def join(cls, registry: CollectorRegistry, member: PoolCollector) -> _Group:
        """Put *member* in *registry*'s group, made and registered the first time."""
        with _lock:
            group = _groups.get(registry)
            if group is None:
                group = cls(registry)
                registry.register(group)  # a clash with another collector raises here
                _groups[registry] = group
            if any(other.name == member.name for other in group.members):
                raise ValueError(
                    f"a PoolCollector of pool {member.name!r} is on this registry already; "
                    f"pass name= to tell them apart"
                )
            group.members += (member,)
            return group

    def leave(self, member: PoolCollector) -> None:
        """Take *member* out; the last one out takes the group off its registry."""
        with _lock:
            self.members = tuple(other for other in self.members if other is not member)
            if not self.members and _groups.get(self.registry) is self:
                del _groups[self.registry]
                self.registry.unregister(self)

    def describe(self) -> list[Metric]:
        return list(_families([]))

    def collect(self) -> Iterator[Metric]:
        yield from _families([row for member in self.members for row in member.rows()])


# The group of each registry that has PoolCollectors, and the lock of joining and leaving.
_groups: weakref.WeakKeyDictionary[CollectorRegistry, _Group] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def _families(rows: Iterable[Row]) -> Iterator[Metric]:
    """Every family, with a sample per row (the families alone for no row)."""
    rows = list(rows)
    clients = GaugeMetricFamily("greenpool_clients", "Clients that exist, by state.")
    for labels, stats in rows:
        for state in ("idle", "in_use"):
            clients.add_sample("greenpool_clients", {**labels, "state": state}, float(stats[state]))
    yield clients
    for name, doc, key in (
        ("greenpool_clients_max", "The pool's maxsize.", "maxsize"),
        ("greenpool_waiting", "Greenlets waiting for a client.", "waiting"),
    ):
        gauge = GaugeMetricFamily(name, doc)
        for labels, stats in rows:
            gauge.add_sample(name, labels, float(stats[key]))
        yield gauge
    discarded = CounterMetricFamily(
        "greenpool_clients_discarded", "Clients closed and dropped, by reason."
    )
    for labels, stats in rows:
        for reason in DISCARD_REASONS:
            sample = {**labels, "reason": reason}
            value = float(stats[f"discarded_{reason}"])
            discarded.add_sample("greenpool_clients_discarded_total", sample, value)
    yield discarded
    yield from _counters(_COUNTERS, rows)
    yield from _counters(_BATCH_COUNTERS, [(labels, s) for labels, s in rows if "batches" in s])


def _counters(
    counters: tuple[tuple[str, str, str, float], ...], rows: list[Row]
) -> Iterator[Metric]:
    for name, doc, key, scale in counters:
        counter = CounterMetricFamily(name, doc)
        for labels, stats in rows:
            counter.add_sample(f"{name}_total", labels, stats[key] * scale)
        yield counter
