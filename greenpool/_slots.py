"""Slots: where each of a pool's *maxsize* slots is, and who waits for one.

A slot holds an idle client, or is empty (no client made for it yet), or is
lent. Idle clients live in a ``gevent.queue.LifoQueue``, the most recently
returned on top, so the warmest is lent first. Empty slots are a count, so a
huge *maxsize* costs nothing until clients exist.

Waiting is not the queue's: its blocking ``get()`` lets a greenlet that
releases and reserves in a loop take its client straight back and starve a
waiter, so a returned slot is handed to the oldest waiter instead
(:mod:`greenpool._waiters`), and nothing ever blocks on the queue. So the pool
puts and takes with ``append`` and ``pop`` on the queue's own list
(``LifoQueue.queue``): what the queue's ``_put`` and ``_get`` do, without the
unfinished task that gevent (since 24.10) counts on each ``_put`` and that
nothing would mark done.

The queue binds the gevent hub of the thread that builds it, and a pool belongs
to the thread that first uses it, so :meth:`Slots.adopt` builds it then, not
when the pool is made.

The pool's data path (greenpool.pool) takes from ``idle`` and ``empty``, and
gives back to ``idle`` or the oldest waiter, itself; this class owns the rest:
waiting, giving a slot back otherwise, resizing, draining.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Optional, TypeVar

from gevent.queue import LifoQueue

from greenpool._entry import Entry
from greenpool._waiters import Waiters
from greenpool.errors import PoolOverloaded, PoolTimeout
from greenpool.stats import Counters

__all__ = ["Slots"]

C = TypeVar("C")
_monotonic = time.monotonic


class Slots(Generic[C]):
    """*maxsize* slots, all empty at first."""

    __slots__ = ("empty", "excess", "idle", "lent", "queue", "waiters")

    def __init__(self, maxsize: int) -> None:
        #: The queue of idle entries, once :meth:`adopt` built it.
        self.queue: Optional[LifoQueue] = None
        #: Idle entries, the warmest on top (last): the queue's own list.
        self.idle: list[Entry[C]] = []
        #: Slots with no client yet.
        self.empty = maxsize
        #: Slots lent now (a waiter handed one counts from the hand-off).
        self.lent = 0
        #: Lent slots beyond *maxsize* after a shrink: they do not come back.
        self.excess = 0
        #: Greenlets waiting for a slot, oldest first.
        self.waiters: Waiters[Optional[Entry[C]]] = Waiters()

    def adopt(self) -> None:
        """Build the queue of idle entries, in the thread the pool belongs to."""
        if self.queue is None:
            self.queue = LifoQueue()
            self.queue.queue.extend(self.idle)
            self.idle = self.queue.queue

    def give(self, slot: Optional[Entry[C]], closed: bool) -> Optional[str]:
        """Give back a lent *slot* (``None``: emptied): to the oldest waiter, or to
        the idle clients or the empty count. Return why *slot*'s client must be
        discarded instead (the pool shrank, or is *closed*), or ``None``."""
        if self.excess:
            self.excess -= 1
            self.lent -= 1
            return "resized"
        if self.waiters:
            self.waiters.hand(slot)  # still lent: now to the waiter
            return None
        self.lent -= 1
        if closed:
            return "closed"
        if slot is None:
            self.empty += 1
        else:
            self.idle.append(slot)
        return None

    def wait(
        self,
        pool: str,
        maxsize: int,
        seconds: float,
        max_waiting: Optional[int],
        counts: Counters,
        pass_on: Callable[[Optional[Entry[C]]], None],
    ) -> Optional[Entry[C]]:
        """Wait up to *seconds* for a slot handed over by :meth:`give` (the pool
        *pool* with *maxsize* slots calls this). If this greenlet is interrupted
        after a slot was handed to it, the slot goes to *pass_on*.

        :raises PoolTimeout: no slot came in time (at once for 0 seconds).
        :raises PoolOverloaded: *max_waiting* greenlets wait already.
        """
        if seconds == 0:
            counts.timeouts += 1
            raise PoolTimeout(
                f"no client free in pool {pool!r} (maxsize={maxsize}) "
                f"and block=False or timeout=0 was given"
            )
        if max_waiting is not None and len(self.waiters) >= max_waiting:
            counts.overloaded += 1
            raise PoolOverloaded(
                f"pool {pool!r} already has max_waiting={max_waiting} "
                f"greenlets waiting for its {maxsize} clients"
            )
        counts.waits += 1
        started = _monotonic()
        try:
            served, slot = self.waiters.wait(started, seconds, pass_on)
        finally:
            counts.wait_s += _monotonic() - started
        if not served:
            counts.timeouts += 1
            raise PoolTimeout(
                f"no client came free in pool {pool!r} (maxsize={maxsize}) "
                f"within timeout={seconds}s"
            )
        return slot

    def grow(self, more: int) -> None:
        """Add *more* empty slots: waiters get them first."""
        absorbed = min(self.excess, more)
        self.excess -= absorbed
        more -= absorbed
        while more and self.waiters:
            self.lent += 1
            self.waiters.hand(None)
            more -= 1
        self.empty += more

    def shrink(self, fewer: int) -> list[Entry[C]]:
        """Remove *fewer* slots: empty ones first, then the coldest idle (returned,
        to be discarded), then lent ones as they come back."""
        dropped = min(fewer, self.empty)
        self.empty -= dropped
        fewer -= dropped
        coldest, self.idle[:fewer] = self.idle[:fewer], []
        self.excess += fewer - len(coldest)
        return coldest

    def fill(self, entry: Entry[C]) -> None:
        """Turn an empty slot into an idle one holding *entry*, below the warm ones."""
        self.empty -= 1
        self.idle.insert(0, entry)

    def coldest(self) -> Optional[Entry[C]]:
        """The idle entry returned longest ago, if any."""
        return self.idle[0] if self.idle else None

    def drop_coldest(self) -> None:
        """Empty the slot of the coldest idle entry (the caller discards it)."""
        del self.idle[0]
        self.empty += 1

    def drain(self) -> list[Entry[C]]:
        """Take every idle entry out, warmest first (to be discarded)."""
        entries, self.idle[:] = self.idle[::-1], []
        return entries
