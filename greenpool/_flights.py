"""The parts of get_or_compute that are neither the wire nor the flow: options,
outcomes, what a lease reply asks for, counters, a computed value as stored.

:func:`check_options` checks get_or_compute's arguments by name before anything
is sent. A flight's outcome is a :class:`Raw` value (what memcached stores:
serialized bytes and client flags, which every caller decodes for itself, so
no two callers share a mutable object), or :data:`RETRY` (its leader left
before it was done: a waiter leads now), or :data:`TIMED_OUT`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Optional, TypedDict, cast

from pymemcache.exceptions import MemcacheIllegalInputError

from greenpool._checks import MEMCACHED_RANGES, check_bool, check_memcached_integer, check_seconds
from greenpool.meta import MetaReply, MetaRequest

__all__ = [
    "COMPUTE",
    "FIRST_POLL",
    "MAX_POLL",
    "POLL_FACTOR",
    "REFRESH",
    "RETRY",
    "TIMED_OUT",
    "VALUE",
    "WAIT",
    "Counts",
    "OnCacheError",
    "Options",
    "Raw",
    "StampedeStats",
    "action",
    "check_options",
    "release_request",
    "serialized",
]

#: A flight's outcome when its leader left before it was done: a waiter leads now.
RETRY: Any = object()
#: A caller's outcome when *wait* ran out before a value came.
TIMED_OUT: Any = object()
_MAX_SECONDS = MEMCACHED_RANGES["expire"][1]
#: Seconds between a waiting leader's requests: the first, the factor, the most.
FIRST_POLL, POLL_FACTOR, MAX_POLL = 0.02, 1.5, 0.5
#: What to do about a cache error: True to go on without the cache (compute,
#: store nothing), False to raise it.
OnCacheError = Callable[[Exception], bool]


class Raw(NamedTuple):
    """A value as memcached stores it: the serde's bytes and client flags, and
    whether it was invalidated (served stale)."""

    data: bytes
    flags: int
    stale: bool = False


class Options(NamedTuple):
    """get_or_compute's options, checked (see :func:`check_options`)."""

    ttl: int
    lease_ttl: int
    recache_before: Optional[int]
    serve_stale: bool
    wait: float
    default: Any


def _seconds(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int number of seconds, not {type(value).__name__}")
    if not minimum <= value <= _MAX_SECONDS:
        raise ValueError(f"{name} must be between {minimum} and {_MAX_SECONDS}, got {value}")
    return value


def check_options(
    compute: Any,
    ttl: Any,
    *,
    lease_ttl: Any = 30,
    recache_before: Any = None,
    serve_stale: Any = True,
    wait: Any = 2.0,
    default: Any = None,
) -> Options:
    """Check get_or_compute's arguments, each error naming its parameter.

    *ttl* is memcached's expiry (0: none; beyond 30 days, a Unix time), *lease_ttl*
    at least 1, *recache_before* ``None`` or at least 2 (memcached's clock ticks
    once a second: see the "Stampede protection" page) and below a *ttl* of
    30 days or less; *wait* non-negative seconds (``math.inf``: no limit).
    """
    if not callable(compute):
        raise TypeError(f"compute must be a callable returning the value, not {compute!r}")
    _seconds("ttl", ttl, 0)
    _seconds("lease_ttl", lease_ttl, 1)
    if recache_before is not None:
        _seconds("recache_before", recache_before, 2)
        if ttl == 0 or ttl <= recache_before:
            raise ValueError(
                f"recache_before={recache_before} needs a ttl above it, got ttl={ttl} "
                "(0 never expires, so there is nothing to refresh before)"
            )
    check_bool("serve_stale", serve_stale)
    check_seconds("wait", wait)
    return Options(ttl, lease_ttl, recache_before, serve_stale, float(wait), default)


def check_stale_ttl(stale_ttl: Any) -> Optional[int]:
    """invalidate's *stale_ttl*: ``None`` (delete), or at least 1 second."""
    return None if stale_ttl is None else _seconds("stale_ttl", stale_ttl, 1)


#: What a lease reply asks of its leader (:func:`action`).
VALUE, REFRESH, COMPUTE, WAIT = "value", "refresh", "compute", "wait"


def action(reply: MetaReply, serve_stale: bool) -> str:
    """What a leader does with *reply* to its lease request (flags ``v c k N``)."""
    if reply.status == "EN":  # no stub (out of memory?): compute, store with add
        return COMPUTE
    if not reply.value:  # the lease's stub: ours (W), another's (Z), or a stored b""
        return COMPUTE if reply.win else WAIT if reply.won_elsewhere else VALUE
    if reply.win:  # an early recache, or an invalidated value: recompute
        return REFRESH if serve_stale or not reply.stale else COMPUTE
    return WAIT if reply.stale and not serve_stale else VALUE


def release_request(reply: MetaReply) -> Optional[MetaRequest]:
    """What gives back the lease *reply* won, if anything: the stub is deleted (if
    still ours), an invalidated value is marked stale again so the next caller
    wins; an early recache lapses by itself."""
    cas, key = reply.cas, reply.key
    if not reply.win or cas is None or key is None:
        return None
    if not reply.value:
        return MetaRequest("md", key, [f"C{cas}"])
    if reply.stale:
        return MetaRequest("md", key, ["I", f"C{cas}"])
    return None


def serialized(serde: Any, wire: bytes, value: Any, encoding: str) -> Raw:
    """*value* as the client's *serde* stores it under the key *wire*, as
    pymemcache's set does (data that is not bytes is encoded as text)."""
    data, flags = serde.serialize(wire, value)
    if not isinstance(data, bytes):
        try:
            data = str(data).encode(encoding)
        except UnicodeEncodeError as e:
            raise MemcacheIllegalInputError(f"Data values must be binary-safe: {e}") from e
    check_memcached_integer("flags", flags)
    return Raw(data, flags)


class StampedeStats(TypedDict):
    """What ``stampede_stats()`` returns; the "Stampede protection" page documents each."""

    lease_wins: int
    waits: int
    wait_timeouts: int
    lease_polls: int
    stale_served: int
    recomputes: int
    background_recomputes: int
    compute_errors: int


_NAMES = tuple(StampedeStats.__annotations__)


class Counts:
    """The counters of :class:`StampedeStats`."""

    __slots__ = _NAMES

    def __init__(self) -> None:
        self.lease_wins = self.waits = self.wait_timeouts = self.lease_polls = 0
        self.stale_served = self.recomputes = self.background_recomputes = 0
        self.compute_errors = 0

    def snapshot(self) -> StampedeStats:
        return cast(StampedeStats, {name: getattr(self, name) for name in _NAMES})


def total(stats: list[StampedeStats]) -> StampedeStats:
    """The sum of several clients' stats (a HashClient's servers)."""
    return cast(StampedeStats, {name: sum(one[name] for one in stats) for name in _NAMES})  # type: ignore[literal-required]
