"""Prometheus metrics for a pool (``pip install greenpool[prometheus]``).

>>> from prometheus_client import CollectorRegistry
>>> registry = CollectorRegistry()
>>> pool = ClientPool(client_factory(memcached_address), maxsize=4, name="sessions")
>>> registry.register(PoolCollector(pool))
>>> registry.get_sample_value("greenpool_clients_max", {"pool": "sessions"})
4.0

The collector reads :meth:`ClientPool.stats() <greenpool.ClientPool.stats>` at
scrape time, so it costs nothing between scrapes. Register one collector per
pool; the ``pool`` label tells them apart. Given a
:class:`~greenpool.PooledClient`, it reads ``pool_stats()``, which adds the
autobatching counters (``greenpool_batches_total`` and the others below).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Optional, Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from greenpool.stats import DISCARD_REASONS, PoolStats

__all__ = ["PoolCollector"]


class _HasStats(Protocol):
    name: str

    def stats(self) -> PoolStats: ...


@runtime_checkable
class _HasPoolStats(Protocol):
    pool: _HasStats

    def pool_stats(self) -> Mapping[str, Any]: ...


# (metric name without _total, help, stats key, scale) for the plain counters.
_COUNTERS = (
    ("greenpool_clients_created", "Clients created.", "created", 1.0),
    ("greenpool_reconnects", "Idle clients reconnected after a server failure.", "reconnects", 1.0),
    ("greenpool_connection_errors", "Reservations ended by a connection or protocol error.",
     "connection_errors", 1.0),
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
    ("greenpool_batches", "Batches of gets sent (a lone get counts as one).", "batches"),
    (
        "greenpool_batches_alone",
        "Gets sent at once: nothing else pending or in flight.",
        "batches_alone",
    ),
    ("greenpool_batch_commands", "get and gets commands that batches sent.", "batch_commands"),
    ("greenpool_batch_keys_asked", "Keys that callers asked batches for.", "keys_asked"),
    ("greenpool_batch_keys_sent", "Keys that batches sent to memcached.", "keys_sent"),
    (
        "greenpool_batch_keys_retried",
        "Keys asked for again alone after a multi-key get failed whole.",
        "keys_retried",
    ),
)


class PoolCollector(Collector):
    """Expose one pool's :class:`~greenpool.PoolStats` as Prometheus metrics.

    *pool* is a :class:`~greenpool.ClientPool` (or anything with ``stats()``
    returning the same keys, such as a ``GreenletMappedPool``), or a
    :class:`~greenpool.PooledClient`, whose batching counters come too; *name*
    is the ``pool`` label, the pool's own name by default.
    """

    def __init__(self, pool: _HasStats | _HasPoolStats, name: Optional[str] = None) -> None:
        self.pool = pool
        self._stats: Callable[[], Mapping[str, Any]]
        if isinstance(pool, _HasPoolStats):  # a PooledClient: stats() is memcached's
            self._stats = pool.pool_stats
            default_name = pool.pool.name
        else:
            self._stats = pool.stats
            default_name = pool.name
        self.name = name if name is not None else default_name

    def collect(self) -> Iterator[Metric]:
        stats: Any = self._stats()
        label = [self.name]
        clients = GaugeMetricFamily(
            "greenpool_clients", "Clients that exist, by state.", labels=["pool", "state"]
        )
        clients.add_metric([self.name, "idle"], float(stats["idle"]))
        clients.add_metric([self.name, "in_use"], float(stats["in_use"]))
        yield clients
        for name, doc, key in (
            ("greenpool_clients_max", "The pool's maxsize.", "maxsize"),
            ("greenpool_waiting", "Greenlets waiting for a client.", "waiting"),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["pool"])
            gauge.add_metric(label, float(stats[key]))
            yield gauge
        discarded = CounterMetricFamily(
            "greenpool_clients_discarded", "Clients closed and dropped, by reason.",
            labels=["pool", "reason"],
        )  # fmt: skip
        for reason in DISCARD_REASONS:
            discarded.add_metric([self.name, reason], float(stats[f"discarded_{reason}"]))
        yield discarded
        for name, doc, key, scale in _COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=["pool"])
            counter.add_metric(label, stats[key] * scale)
            yield counter
        if "batches" in stats:
            for name, doc, key in _BATCH_COUNTERS:
                counter = CounterMetricFamily(name, doc, labels=["pool"])
                counter.add_metric(label, float(stats[key]))
                yield counter
