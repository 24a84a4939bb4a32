"""The greenlets waiting for a slot: served in arrival order, by direct hand-off.

A slot is handed to the oldest waiter (:meth:`Waiters.hand`), never put where
a greenlet that happens to run first could take it: with a plain LifoQueue a
put only schedules the waiter's wake-up, and a greenlet that releases and
reserves again in a loop takes the client back first, forever.

The one race to get right: a waiter can be handed a slot and then, before it
runs, be interrupted (its Timeout fires, it is killed). The slot is then its
own to pass on, or the pool would lose it. A waiter is in the queue exactly
as long as it has been handed nothing.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from typing import Generic, Optional, TypeVar

from gevent.event import AsyncResult

T = TypeVar("T")


class Waiters(deque, Generic[T]):  # type: ignore[type-arg]
    """A FIFO of greenlets waiting for a slot of type *T*.

    A deque itself, so that the pool's ``if self._waiters:`` on every release
    stays a C-level length check.
    """

    __slots__ = ()

    def hand(self, slot: T) -> None:
        """Give *slot* to the oldest waiter; there must be one."""
        self.popleft().set(slot)

    def fail_all(self, error: BaseException) -> None:
        """Wake every waiter with *error* raised in it."""
        waiters = list(self)
        self.clear()
        for waiter in waiters:
            waiter.set_exception(error)

    def wait(self, seconds: Optional[float], pass_on: Callable[[T], None]) -> tuple[bool, T]:
        """Wait up to *seconds* (``None``: without limit) for a slot.

        Return ``(True, slot)`` when one was handed over, ``(False, None)``
        when the time ran out; raise what :meth:`fail_all` set. If this
        greenlet is interrupted after a slot was handed to it, the slot goes to
        *pass_on* before the interruption propagates.
        """
        waiter: AsyncResult = AsyncResult()
        self.append(waiter)
        try:
            waiter.wait(seconds)
        except BaseException:
            if waiter.ready() and waiter.successful():
                pass_on(waiter.value)
            else:
                self._leave(waiter)
            raise
        if not waiter.ready():
            self._leave(waiter)
            return False, None  # type: ignore[return-value]
        return True, waiter.get()

    def _leave(self, waiter: AsyncResult) -> None:
        with contextlib.suppress(ValueError):  # fail_all() already emptied the queue
            self.remove(waiter)
