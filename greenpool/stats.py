"""The keys of :meth:`ClientPool.stats() <greenpool.ClientPool.stats>`.

Gauges describe the pool now; counters only grow (a fork resets nothing, it
counts the parent's clients as discarded). Durations carry their unit in the
name. Every discard has exactly one reason, so
``created - discarded == size`` always holds, where ``discarded`` is the sum of
the ``discarded_<reason>`` counters.
"""

from __future__ import annotations

from typing import TypedDict

__all__ = ["DISCARD_REASONS", "PoolStats"]

#: Why a client is closed and dropped, each with its own ``discarded_<reason>`` key.
DISCARD_REASONS = (
    "interrupted",  # its reservation was left by a BaseException (Timeout, kill)
    "error",  # its reservation was left by a socket or protocol error
    "idle",  # idle longer than max_idle
    "lifetime",  # older than max_lifetime, on its way back
    "check_failed",  # the liveness check before lending it failed
    "fork",  # the process forked: the parent owns its socket
    "closed",  # the pool was closed
    "resized",  # resize() made the pool smaller
)


class PoolStats(TypedDict):
    """What :meth:`ClientPool.stats` returns; README.rst documents each key."""

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
    reserves: int
    waits: int
    timeouts: int
    overloaded: int
    leak_warnings: int
    wait_ms: float
    usage_ms: float
