"""LendPolicy: whether an idle client may be lent again, by the pool's operating options.

The pool asks it on the way out (:meth:`LendPolicy.verdict`, for each idle
client about to be lent, when any option is set), on the way back
(:meth:`LendPolicy.expires`, when a client is made) and after each return
(:meth:`LendPolicy.cold`, to shrink an idle pool toward its demand). The
options are ClientPool's keyword arguments (the docs' "Operations" page); all
are off by default, and then no idle client needs a look.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from typing import Any, Generic, Optional, TypeVar

import gevent

from greenpool._checks import check_seconds
from greenpool._entry import Entry

__all__ = ["LendPolicy"]

log = logging.getLogger("greenpool")
C = TypeVar("C")


class LendPolicy(Generic[C]):
    """*max_idle*, *max_lifetime*, *check_after_idle* and *check* of the pool named
    *pool_name* (for its log lines)."""

    def __init__(
        self,
        pool_name: str,
        *,
        max_idle: Optional[float],
        max_lifetime: Optional[float],
        check_after_idle: Optional[float],
        check: Optional[Callable[[C], object]],
    ) -> None:
        if check is not None and not callable(check):
            raise TypeError(f"check must be a callable taking a client, not {type(check).__name__}")
        self.pool_name = pool_name
        self.max_idle = _optional_seconds("max_idle", max_idle)
        self.max_lifetime = _optional_seconds("max_lifetime", max_lifetime)
        self.check_after = _optional_seconds("check_after_idle", check_after_idle)
        if check is not None and self.check_after is None:
            self.check_after = 0.0  # a check alone checks every idle client
        self.check: Callable[[C], object] = check or _version
        #: Whether an idle client needs a look before it is lent again.
        self.active = not (self.max_idle is None and self.max_lifetime is None
                           and self.check_after is None)  # fmt: skip

    def expires(self, now: float) -> float:
        """When a client made *now* reaches *max_lifetime*, less up to 5% jitter so
        that clients made together do not expire together."""
        if self.max_lifetime is None:
            return math.inf
        return now + self.max_lifetime * random.uniform(0.95, 1.0)

    def verdict(self, entry: Entry[C], now: float) -> Optional[str]:
        """Why the idle *entry* may not be lent *now* (a discard reason), or ``None``."""
        if now >= entry.expires:
            return "lifetime"
        idle = now - entry.since
        if self.max_idle is not None and idle > self.max_idle:
            return "idle"
        if self.check_after is None or idle < self.check_after:
            return None
        error = self._run_check(entry.client)
        if error is None:
            return None
        log.info("pool %r: a client failed its check (%r) and is replaced", self.pool_name, error)
        return "check_failed"

    def cold(self, entry: Entry[C], now: float) -> bool:
        """Whether the idle *entry* idled past *max_idle* (the pool trims such)."""
        return self.max_idle is not None and now - entry.since > self.max_idle

    def _run_check(self, client: C) -> Optional[BaseException]:
        """Run the check in a greenlet of its own, and return what it raised.

        Whatever the check raises, its own ``gevent.Timeout`` included, is a
        failed check; an interruption aimed at the caller, who waits here,
        propagates (and the check is killed).
        """
        outcome: list[Optional[BaseException]] = []

        def check() -> None:
            try:
                self.check(client)
            except BaseException as exc:  # the check's own failure, whatever it is
                outcome.append(exc)
            else:
                outcome.append(None)

        job = gevent.spawn(check)
        try:
            job.join()
        except BaseException:
            job.kill(block=False)
            raise
        return outcome[0] if outcome else job.exception


def _optional_seconds(name: str, value: Any) -> Optional[float]:
    return None if value is None else check_seconds(name, value)


def _version(client: Any) -> object:
    return client.version()
