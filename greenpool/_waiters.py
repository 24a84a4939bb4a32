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

Under load nearly every reservation waits, so a wait should cost little more
than the one extra trip through the hub that any fair hand-off takes (a
greenlet that must queue behind others has to switch out and be switched back):

- a waiting greenlet switches to the hub itself and is switched back with its
  own record, as in gevent's ``Semaphore``, with no ``Waiter`` in between; any
  other switch into it raises ``InvalidSwitchError``, as there;
- one hub callback wakes, in turn, every waiter handed a slot (or failed, or
  expired) before it ran, as a ``Semaphore`` notifies its links, instead of one
  callback each; those handed a slot meanwhile wait for the next callback, so
  greenlets passing a slot around never keep the hub from its timers and I/O;
- no timer per wait: waits share one hub timer as long as each one's deadline
  is no earlier than the one before (always, when all use the pool's timeout;
  the order starts afresh whenever no one waits). Their deadlines then rise
  with their place in the queue, so the timer, set for the earliest, expires
  waiters from the front, stops at the first whose time is not up, and is set
  again for that one. A wait whose deadline is earlier (a shorter timeout given
  to ``reserve``) gets a timer of its own.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, Optional, TypeVar, Union

from gevent import get_hub, getcurrent
from gevent.exceptions import InvalidSwitchError

T = TypeVar("T")
_INF = float("inf")
_monotonic = time.monotonic


class _Waiting:
    """One waiting greenlet, and what it was handed."""

    __slots__ = ("deadline", "greenlet", "outcome", "slot")

    def __init__(self, greenlet: Any) -> None:
        #: The greenlet to wake; None once it stopped waiting (interrupted).
        self.greenlet: Optional[Any] = greenlet
        #: When the shared timer expires it (inf: it does not; see the module).
        self.deadline = _INF
        #: None while it waits; True: handed :attr:`slot`; False: its time ran
        #: out; an exception: to raise in it.
        self.outcome: Union[bool, BaseException, None] = None
        self.slot: Any = None


class Waiters(deque, Generic[T]):  # type: ignore[type-arg]
    """A FIFO of greenlets waiting for a slot of type *T*.

    A deque itself, so that the pool's ``if self._waiters:`` on every release
    stays a C-level length check. All of it runs in the pool's thread.
    """

    __slots__ = ("_hub", "_latest", "_timer", "_waking", "_woken")

    def __init__(self) -> None:
        super().__init__()
        self._hub: Any = None
        #: The latest deadline the shared timer covers (-inf while none is queued).
        self._latest = -_INF
        #: The shared timer, while one is set.
        self._timer: Any = None
        #: Waiters given their outcome and not woken yet, and the callback that wakes them.
        self._woken: deque[_Waiting] = deque()
        self._waking: Any = None

    def hand(self, slot: T) -> None:
        """Give *slot* to the oldest waiter (there must be one), and wake it."""
        waiting: _Waiting = self.popleft()
        waiting.slot = slot
        waiting.outcome = True
        if not self:
            self._emptied()
        self._wake(waiting)

    def fail_all(self, error: BaseException) -> None:
        """Wake every waiter with *error* raised in it."""
        while self:
            waiting: _Waiting = self.popleft()
            waiting.outcome = error
            self._wake(waiting)
        self._emptied()

    def wait(self, started: float, seconds: float, pass_on: Callable[[T], None]) -> tuple[bool, T]:
        """Wait until *seconds* after *started* (a ``time.monotonic()``; *seconds*
        may be ``math.inf``) for a slot.

        Return ``(True, slot)`` when one was handed over, ``(False, None)``
        when the time ran out; raise what :meth:`fail_all` set. If this
        greenlet is interrupted after a slot was handed to it, the slot goes to
        *pass_on* before the interruption propagates.
        """
        if not self:  # else the greenlets waiting already are of this thread's hub
            self._hub = get_hub()
        hub = self._hub
        waiting = _Waiting(getcurrent())
        self.append(waiting)
        timer = None
        if seconds != _INF:
            deadline = started + seconds
            if deadline >= self._latest:  # in deadline order: the shared timer's
                self._latest = waiting.deadline = deadline
                if self._timer is None:
                    self._set_timer(seconds)
            else:
                timer = hub.loop.timer(seconds)
                timer.start(self._expire, waiting)
        try:
            if hub.switch() is not waiting:
                raise InvalidSwitchError("a greenlet waiting for a pool's slot was switched into")
        except BaseException:  # a Timeout or kill of the caller's: an interruption
            self._interrupted(waiting, pass_on)
            raise
        finally:
            if timer is not None:
                timer.close()
        outcome = waiting.outcome
        if outcome is True:
            slot: T = waiting.slot
            return True, slot
        if outcome is False:
            return False, None  # type: ignore[return-value]
        raise outcome  # type: ignore[misc]

    def _interrupted(self, waiting: _Waiting, pass_on: Callable[[T], None]) -> None:
        waiting.greenlet = None  # its wake-up, if one is queued, does nothing
        if waiting.outcome is None:
            self._leave(waiting)
        elif waiting.outcome is True:
            pass_on(waiting.slot)

    def _leave(self, waiting: _Waiting) -> None:
        self.remove(waiting)
        if not self:
            self._emptied()

    def _emptied(self) -> None:
        """No one waits any more: a later wait starts a new deadline order."""
        self._latest = -_INF
        if self._timer is not None:
            self._timer.close()
            self._timer = None

    # -- in the hub: the shared timer, and the wake-ups -------------------------

    def _set_timer(self, seconds: float) -> None:
        self._timer = self._hub.loop.timer(seconds)
        self._timer.start(self._sweep)

    def _sweep(self) -> None:
        """The shared timer: expire the waiters whose time is up, from the front,
        and set the timer for the next deadline."""
        self._timer.close()
        self._timer = None
        now = _monotonic()
        expired = []
        for waiting in self:
            if waiting.deadline <= now:
                expired.append(waiting)
            elif waiting.deadline != _INF:
                self._set_timer(waiting.deadline - now)
                break
        for waiting in expired:
            self._expire(waiting)

    def _expire(self, waiting: _Waiting) -> None:
        """Wake *waiting* empty-handed, unless it was handed something already."""
        if waiting.outcome is None:
            waiting.outcome = False
            self._leave(waiting)
            self._wake(waiting)

    def _wake(self, waiting: _Waiting) -> None:
        self._woken.append(waiting)
        if self._waking is None:
            self._waking = self._hub.loop.run_callback(self._wake_all)

    def _wake_all(self) -> None:
        """Switch to each waiter woken before this callback ran, in turn: each
        runs until it blocks again. Those woken meanwhile get the next callback."""
        woken = self._woken
        try:
            for _ in range(len(woken)):
                waiting = woken.popleft()
                greenlet = waiting.greenlet
                if greenlet is not None:
                    try:
                        greenlet.switch(waiting)
                    except BaseException:  # a raw greenlet's own, raised as it ended
                        self._hub.handle_error(greenlet, *sys.exc_info())
        finally:
            self._waking = None
            if woken:
                self._waking = self._hub.loop.run_callback(self._wake_all)
