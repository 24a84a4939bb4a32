"""A pool's counters, and the keys of :meth:`ClientPool.stats() <greenpool.ClientPool.stats>`.

Gauges describe the pool now; counters only grow (a fork resets nothing, it
counts the parent's clients as discarded). Durations carry their unit in the
name. Every discard has exactly one reason, so
``created - discarded == size`` always holds, where ``discarded`` is the sum of
the ``discarded_<reason>`` counters.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["DISCARD_REASONS", "Counters", "PoolStats"]

#: Why a client is closed and dropped, each with its own ``discarded_<reason>`` key.
DISCARD_REASONS = (
    "interrupted",  # a Timeout, kill or KeyboardInterrupt cut one of its commands off
    "error",  # a socket, protocol or serde error cut one of its commands off, or a connect failed
    "idle",  # idle longer than max_idle
    "lifetime",  # older than max_lifetime, on its way back
    "check_failed",  # the liveness check before lending it failed
    "fork",  # the process forked: the parent owns its socket
    "closed",  # the pool was closed
    "resized",  # resize() made the pool smaller
)


class PoolStats(TypedDict):
    """What :meth:`ClientPool.stats` returns; the "Operations" page documents each."""

    maxsize: int
    size: int
    idle: int
    in_use: int
    waiting: int
    created: int
    discarded: int
    discarded_interrupted: int
    discarded_error: int
    discarded_idle: int
    discarded_lifetime: int
    discarded_check_failed: int
    discarded_fork: int
    discarded_closed: int
    discarded_resized: int
    reconnects: int
    connection_errors: int
    connect_errors: int
    reserves: int
    waits: int
    timeouts: int
    overloaded: int
    leak_warnings: int
    wait_ms: float
    usage_ms: float


class Counters:
    """What a pool has done so far: the counters of :class:`PoolStats`."""

    __slots__ = (
        "connect_errors",
        "connection_errors",
        "created",
        "discards",
        "overloaded",
        "reconnects",
        "reserves",
        "timeouts",
        "usage_s",
        "wait_s",
        "waits",
    )

    def __init__(self) -> None:
        self.created = self.reconnects = self.connection_errors = self.connect_errors = 0
        self.reserves = self.waits = self.timeouts = self.overloaded = 0
        self.wait_s = self.usage_s = 0.0
        self.discards = dict.fromkeys(DISCARD_REASONS, 0)

    def live(self) -> int:
        """The clients that exist now: every one created and not yet discarded."""
        return self.created - sum(self.discards.values())

    def snapshot(
        self, *, maxsize: int, idle: int, in_use: int, waiting: int, leak_warnings: int
    ) -> PoolStats:
        """The stats, with the pool's gauges as given."""
        discards = self.discards
        return PoolStats(
            maxsize=maxsize,
            size=self.live(),
            idle=idle,
            in_use=in_use,
            waiting=waiting,
            created=self.created,
            discarded=sum(discards.values()),
            discarded_interrupted=discards["interrupted"],
            discarded_error=discards["error"],
            discarded_idle=discards["idle"],
            discarded_lifetime=discards["lifetime"],
            discarded_check_failed=discards["check_failed"],
            discarded_fork=discards["fork"],
            discarded_closed=discards["closed"],
            discarded_resized=discards["resized"],
            reconnects=self.reconnects,
            connection_errors=self.connection_errors,
            connect_errors=self.connect_errors,
            reserves=self.reserves,
            waits=self.waits,
            timeouts=self.timeouts,
            overloaded=self.overloaded,
            leak_warnings=leak_warnings,
            wait_ms=self.wait_s * 1000.0,
            usage_ms=self.usage_s * 1000.0,
        )
