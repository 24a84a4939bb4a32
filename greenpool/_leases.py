"""LeaseBatcher: the meta requests of one hub loop iteration, for one server, in one write.

What get_or_compute sends (lease requests, stores, releases, invalidations)
goes through here. A request joins the *pending* list; the first one of a loop
iteration schedules a hub callback, :meth:`LeaseBatcher._flush`, which runs
once the greenlets the hub runs in this iteration have asked for theirs, and
spawns one greenlet per chunk of at most *max_requests*. That greenlet reserves
a pooled client, sends the chunk with :meth:`greenpool.Client.meta_batch` (one
write, one reply per request, read in order) and wakes the callers in a hub
callback::

    ask(request) -> join pending (the first schedules _flush) -> wait
    _flush (hub) -> a greenlet per chunk (_send)
    _send -> pool.reserve() -> client.meta_batch(chunk) -> _wake (hub)

Callers never touch a socket, so a caller's ``gevent.Timeout`` or kill cannot
cut a lease request off halfway: the server's answer is always read. A caller
gone by the time its reply is in is *abandoned*: if that reply handed it a
lease, its *follow_up* request (the release) is sent instead, so a lease won by
a greenlet that left is given back at once rather than held for ``lease_ttl``.
A chunk's error reaches that chunk's callers, and no one else's.

This is the hook for a general auto-pipeliner: it needs :meth:`ask` (a reply
for a caller), :meth:`send` (no one waits) and ``Client.meta_batch``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional, Union

from gevent import get_hub, spawn_raw
from gevent.hub import Waiter

from greenpool import _fork
from greenpool.errors import PoolError
from greenpool.meta import MetaReply, MetaRequest
from greenpool.pool import ClientPool

__all__ = ["MAX_REQUESTS", "LeaseBatcher"]

log = logging.getLogger("greenpool")

#: The most requests one ``meta_batch`` carries.
MAX_REQUESTS = 128

FollowUp = Callable[[MetaReply], Optional[MetaRequest]]


class _Ask:
    """One request of a batch, and who waits for its reply (nobody: *waiter* None)."""

    __slots__ = ("abandoned", "follow_up", "request", "waiter")

    def __init__(
        self, request: MetaRequest, waiter: Optional[Waiter], follow_up: Optional[FollowUp]
    ) -> None:
        self.request = request
        self.waiter = waiter
        self.follow_up = follow_up
        self.abandoned = False  # the caller left before its reply was in


class LeaseBatcher:
    """Send the meta requests asked for in one loop iteration together, on *pool*'s
    clients (greenpool Clients), in ``meta_batch`` calls of at most *max_requests*."""

    def __init__(self, pool: ClientPool[Any], max_requests: int = MAX_REQUESTS) -> None:
        self.pool = pool
        self.max_requests = max_requests
        self._pending: list[_Ask] = []
        self._hub: Any = None
        self._epoch = _fork.epoch
        #: ``meta_batch`` calls made, and the requests they carried.
        self.batches = self.requests = 0

    def ask(self, request: MetaRequest, follow_up: Optional[FollowUp] = None) -> MetaReply:
        """Send *request* with this iteration's others; return its reply, or raise
        its chunk's error. If the caller leaves first (a Timeout, a kill),
        ``follow_up(reply)`` says what to send in its place, if anything."""
        ask = _Ask(request, Waiter(self._ready()), follow_up)
        self._join(ask)
        try:
            outcome: Union[MetaReply, BaseException] = ask.waiter.get()  # type: ignore[union-attr]
        except BaseException:
            ask.abandoned = True
            raise
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def send(self, request: MetaRequest) -> None:
        """Send *request* with this iteration's others; nobody waits for its reply
        (an error is logged). It never blocks: fit for a ``finally`` clause."""
        self._ready()
        self._join(_Ask(request, None, None))

    def _ready(self) -> Any:
        if self._epoch != _fork.epoch:
            self._after_fork()
        hub = get_hub()
        if self._hub is None:
            self._hub = hub
        elif hub is not self._hub:
            raise PoolError(
                f"the lease requests of pool {self.pool.name!r} belong to another thread's "
                "gevent hub; create one client per thread"
            )
        return hub

    def _join(self, ask: _Ask) -> None:
        if not self._pending:
            self._hub.loop.run_callback(self._flush)
        self._pending.append(ask)

    # -- the hub's side and the chunks' -------------------------------------------------

    def _flush(self) -> None:
        """Send what is pending (a hub callback), in chunks that run in parallel."""
        if self._epoch != _fork.epoch:
            self._after_fork()
            return
        pending, self._pending = self._pending, []
        step = self.max_requests
        for start in range(0, len(pending), step):
            spawn_raw(self._send, pending[start : start + step], self._epoch)

    def _send(self, chunk: list[_Ask], epoch: int) -> None:
        """One chunk, in a greenlet of its own: reserve, send, wake its callers."""
        replies: Optional[list[MetaReply]] = None
        error: Optional[BaseException] = None
        interrupted: Optional[BaseException] = None
        try:
            with self.pool.reserve() as client:
                replies = client.meta_batch([ask.request for ask in chunk])
            self.batches += 1
            self.requests += len(chunk)
        except Exception as exc:
            error = exc
        except BaseException as exc:  # killed: no caller may see a GreenletExit
            interrupted = exc
            error = PoolError(f"meta requests to pool {self.pool.name!r} were interrupted: {exc!r}")
        if epoch != _fork.epoch:  # the child: its _after_fork may have let go of the hub
            error = PoolError(f"the process forked while meta requests to {self.pool.name!r} ran")
        (self._hub or get_hub()).loop.run_callback(self._wake, chunk, replies, error)
        if interrupted is not None:
            raise interrupted

    def _wake(
        self, chunk: list[_Ask], replies: Optional[list[MetaReply]], error: Optional[BaseException]
    ) -> None:
        """Hand each caller its reply or the chunk's *error* (a hub callback); send
        the follow-ups of callers that left."""
        for index, ask in enumerate(chunk):
            if error is not None or replies is None:
                outcome: Union[MetaReply, BaseException] = error or PoolError("no reply")
            else:
                outcome = replies[index]
            if ask.waiter is None or ask.abandoned:
                if isinstance(outcome, BaseException):
                    log.debug("pool %r: %r failed: %r", self.pool.name, ask.request, outcome)
                elif ask.follow_up is not None:
                    follow_up = ask.follow_up(outcome)
                    if follow_up is not None:
                        self._join(_Ask(follow_up, None, None))
                continue
            ask.waiter.switch(outcome)

    def _after_fork(self) -> None:
        """In the child: what was pending was the parent's; fail its callers' copies."""
        self._epoch = _fork.epoch
        self._hub = None
        pending, self._pending = self._pending, []
        if pending:
            forked = PoolError(
                f"the process forked while meta requests to {self.pool.name!r} waited"
            )
            get_hub().loop.run_callback(self._wake, pending, None, forked)
