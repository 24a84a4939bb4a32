"""The greenlets waiting for a slot: served in arrival order, by direct hand-off.

A slot is handed to the oldest waiter (:meth:`Waiters.hand`), never put where
a greenlet that happens to run first could take it: with a plain LifoQueue a
put only schedules the waiter's wake-up, and a greenlet that releases and
reserves again in a loop takes the client back first, forever.

The hand-off is synchronous: the slot is the waiter's the moment it is handed,
and only the wake-up waits for the hub. So a waiter interrupted between the two
(its Timeout fires, it is killed) finds the slot already its own, and passes it
on, or the pool would lose it. A waiter is in the queue exactly as long as it
has been handed nothing.

This is gevent's ``Waiter`` with the slot kept beside it: lighter than an
``AsyncResult`` (no link list, no notifier greenlet), which matters because
under load nearly every reservation waits.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Optional, TypeVar

from gevent import get_hub
from gevent.hub import Waiter

T = TypeVar("T")


class _Waiting:
    """One waiting greenlet: its gevent Waiter, and what it was handed."""

    __slots__ = ("error", "handed", "slot", "waiter")

    def __init__(self) -> None:
        self.waiter = Waiter()
        self.handed = False
        self.slot: Any = None
        self.error: Optional[BaseException] = None

    def expire(self) -> None:
        """The wait's timer: wake the greenlet empty-handed, unless it was handed
        a slot already (then its wake-up is on its way). Runs in the hub."""
        if not self.handed:
            self.waiter.switch(None)


class Waiters(deque, Generic[T]):  # type: ignore[type-arg]
    """A FIFO of greenlets waiting for a slot of type *T*.

    A deque itself, so that the pool's ``if self._waiters:`` on every release
    stays a C-level length check.
    """

    __slots__ = ()

    def hand(self, slot: T) -> None:
        """Give *slot* to the oldest waiter (there must be one), and wake it."""
        waiting: _Waiting = self.popleft()
        waiting.slot = slot
        waiting.handed = True
        get_hub().loop.run_callback(waiting.waiter.switch, None)

    def fail_all(self, error: BaseException) -> None:
        """Wake every waiter with *error* raised in it."""
        loop = get_hub().loop
        while self:
            waiting: _Waiting = self.popleft()
            waiting.error = error
            waiting.handed = True
            loop.run_callback(waiting.waiter.switch, None)

    def wait(self, seconds: Optional[float], pass_on: Callable[[T], None]) -> tuple[bool, T]:
        """Wait up to *seconds* (``None``: without limit) for a slot.

        Return ``(True, slot)`` when one was handed over, ``(False, None)``
        when the time ran out; raise what :meth:`fail_all` set. If this
        greenlet is interrupted after a slot was handed to it, the slot goes to
        *pass_on* before the interruption propagates.
        """
        waiting = _Waiting()
        self.append(waiting)
        # A bare hub timer, not a gevent.Timeout: no exception to build and throw
        # on every wait, and under load nearly every reservation waits.
        timer = None
        if seconds is not None:
            timer = get_hub().loop.timer(seconds)
            timer.start(waiting.expire)
        try:
            waiting.waiter.get()
        except BaseException:  # a Timeout or kill of the caller's: an interruption
            self._interrupted(waiting, pass_on)
            raise
        finally:
            if timer is not None:
                timer.close()
        if not waiting.handed:  # woken by expire()
            self._leave(waiting)
            return False, None  # type: ignore[return-value]
        if waiting.error is not None:
            raise waiting.error
        slot: T = waiting.slot
        return True, slot

    def _interrupted(self, waiting: _Waiting, pass_on: Callable[[T], None]) -> None:
        if not waiting.handed:
            self._leave(waiting)
        elif waiting.error is None:
            pass_on(waiting.slot)

    def _leave(self, waiting: _Waiting) -> None:
        with contextlib.suppress(ValueError):  # handed or failed meanwhile: gone already
            self.remove(waiting)
