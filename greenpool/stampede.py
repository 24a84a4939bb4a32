"""Stampede protection: get_or_compute, one computation per key at a time across processes.

One :class:`Stampede` per pool (so per server) keeps a *flight* per key: the
first caller in this process *leads*, later ones wait on the flight and never
touch a socket. The leader asks memcached for a lease, in the same write as the
other leaders' of this loop iteration (:mod:`greenpool._leases`)::

    mg <key> v f c k N<lease_ttl> [R<recache_before>]

and acts on the reply (:func:`greenpool._flights.action`): a value is returned; ``W`` on the
empty stub (a miss) means compute now and store with the stub's CAS
(``ms <key> <len> T<ttl> F<flags> C<cas>``); ``W`` with a value (an early
recache, or an invalidated value) means return it and recompute in a background
greenlet this client owns; ``Z`` on the stub means another process computes:
poll with backoff until a value comes or *wait* runs out. Where the server does
not speak the meta protocol (probed once: :meth:`greenpool.Client.probe_meta`),
:mod:`greenpool._classic` takes over with an ``add`` lock.

Whatever ends a leader early reaches its waiters: an exception from compute
(which releases the lease: ``md <key> C<cas>`` deletes the stub, ``md <key> I
C<cas>`` re-arms an invalidated value), or an interruption (the waiters retry,
and one of them leads). A waiter's own timeout or kill withdraws only itself.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from typing import Any, Optional

import gevent
from gevent import Greenlet, getcurrent
from gevent.event import AsyncResult

from greenpool import _classic, _fork
from greenpool._flights import (
    COMPUTE,
    FIRST_POLL,
    MAX_POLL,
    POLL_FACTOR,
    REFRESH,
    RETRY,
    TIMED_OUT,
    VALUE,
    Counts,
    OnCacheError,
    Options,
    Raw,
    StampedeStats,
    action,
    release_request,
    serialized,
)
from greenpool._leases import Leases
from greenpool.errors import PoolError
from greenpool.meta import MetaReply, MetaRequest
from greenpool.pool import ClientPool

__all__ = ["Stampede"]

log = logging.getLogger("greenpool")
_monotonic = time.monotonic


class Stampede:
    """get_or_compute and invalidate for the clients of *pool* (one server), values
    stored with *serde* (text encoded with *encoding*), as pymemcache's set does."""

    def __init__(self, pool: ClientPool[Any], serde: Any, encoding: str, leases: Leases) -> None:
        self.pool = pool
        self.serde = serde
        self.encoding = encoding
        self.leases = leases
        self.counts = Counts()
        #: Whether the server speaks the meta protocol; None until probed.
        self.meta: Optional[bool] = None
        self._probing: Optional[AsyncResult] = None
        self._flights: dict[bytes, AsyncResult] = {}
        self._refreshes: dict[bytes, Greenlet] = {}
        self._queued: dict[bytes, tuple[Any, ...]] = {}  # a refresh won while one runs
        self._epoch = _fork.epoch

    def stats(self) -> StampedeStats:
        return self.counts.snapshot()

    def join(self) -> None:
        """Wait for the background recomputes (each one's compute runs to its end)."""
        while self._refreshes and self._epoch == _fork.epoch:
            gevent.joinall(list(self._refreshes.values()))

    # -- callers ---------------------------------------------------------------------

    def get_or_compute(
        self,
        key: Any,
        wire: bytes,
        compute: Callable[[], Any],
        opts: Options,
        failed: OnCacheError,
        offline: bool = False,
    ) -> Any:
        """The value of *key* (sent as *wire*), computed at most once at a time;
        *offline*: without asking the server (computed, not stored)."""
        if self._epoch != _fork.epoch:
            self._after_fork()
        deadline = _monotonic() + opts.wait
        while True:
            flight = self._flights.get(wire)
            if flight is None:
                outcome = self._lead(key, wire, compute, opts, deadline, failed, offline)
            else:
                self.counts.waits += 1
                left = deadline - _monotonic()
                flight.wait(None if left == float("inf") else max(0.0, left))
                outcome = flight.get() if flight.ready() else TIMED_OUT  # raises its error
            if outcome is RETRY:
                if _monotonic() < deadline:
                    continue
                outcome = TIMED_OUT
            if outcome is TIMED_OUT:
                self.counts.wait_timeouts += 1
                return opts.default
            if outcome.stale:
                self.counts.stale_served += 1
            return self.serde.deserialize(key, outcome.data, outcome.flags)

    def invalidate(self, key: Any, wire: bytes, stale_ttl: Optional[int]) -> bool:
        """Mark *key* stale for *stale_ttl* seconds (``md <key> I T<stale_ttl>``),
        or delete it (*stale_ttl* None, or no meta protocol); whether it was there."""
        if self._protocol(_monotonic() + self.pool.timeout, lambda exc: False):
            flags = [] if stale_ttl is None else ["I", f"T{stale_ttl}"]
            return self.leases.ask(MetaRequest("md", wire, flags)).status == "HD"
        with self.pool.reserve() as client:
            return bool(client.delete(key, noreply=False))

    # -- the leader ------------------------------------------------------------------

    def _lead(
        self, key: Any, wire: bytes, compute: Callable[[], Any], opts: Options, deadline: float,
        failed: OnCacheError, offline: bool,
    ) -> Any:  # fmt: skip
        flight = self._flights[wire] = AsyncResult()
        outcome: Any = RETRY  # if the leader leaves early, a waiter leads instead
        error: Optional[Exception] = None
        try:
            if offline:
                outcome = self.computed(wire, compute)
            else:
                outcome = self._resolve(key, wire, compute, opts, deadline, failed)
        except Exception as exc:
            error = exc
            raise
        finally:
            if self._flights.get(wire) is flight:
                del self._flights[wire]
            if error is not None:
                flight.set_exception(error)
            else:  # a waiter whose own wait is not over takes over from a leader whose is
                flight.set(RETRY if outcome is TIMED_OUT else outcome)
        return outcome

    def _resolve(
        self, key: Any, wire: bytes, compute: Callable[[], Any], opts: Options, deadline: float,
        failed: OnCacheError,
    ) -> Any:  # fmt: skip
        """The leader's work: a Raw value, or TIMED_OUT."""
        meta = self._protocol(deadline, failed)
        if meta is None:  # no cache: compute, store nothing
            return self.computed(wire, compute)
        if not meta:
            return _classic.resolve(self, key, wire, compute, opts, deadline, failed)
        flags = ["v", "f", "c", "k", f"N{opts.lease_ttl}"]
        if opts.recache_before is not None:
            flags.append(f"R{opts.recache_before}")
        lease = MetaRequest("mg", wire, flags)
        delay = FIRST_POLL
        while True:
            try:
                reply = self.leases.ask(lease, release_request)
            except Exception as exc:
                if not failed(exc):
                    raise
                return self.computed(wire, compute)
            todo = action(reply, opts.serve_stale)
            if todo is VALUE or todo is REFRESH:
                assert reply.value is not None
                if todo is REFRESH:
                    self.counts.lease_wins += 1
                    self._refresh_later(wire, compute, opts.ttl, reply)
                return Raw(reply.value, reply.client_flags or 0, reply.stale)
            if todo is COMPUTE:
                self.counts.lease_wins += 1
                raw = self.computed(wire, compute, reply)
                self.store(wire, raw, opts.ttl, reply, failed)
                return raw
            left = deadline - _monotonic()
            if left <= 0:
                return TIMED_OUT
            if delay == FIRST_POLL:
                self.counts.waits += 1
            gevent.sleep(min(delay, left))
            delay = min(delay * POLL_FACTOR, MAX_POLL)
            self.counts.lease_polls += 1

    def computed(
        self, wire: bytes, compute: Callable[[], Any], won: Optional[MetaReply] = None
    ) -> Raw:
        """compute()'s value, serialized. If it fails, or is empty (which is not
        stored: memcached's lease stub is an empty value too), the lease *won* is
        given back."""
        self.counts.recomputes += 1
        raw: Optional[Raw] = None
        try:
            raw = serialized(self.serde, wire, compute(), self.encoding)
        except Exception:
            self.counts.compute_errors += 1
            raise
        finally:
            stored = raw is not None and raw.data
            release = None if won is None or stored else release_request(won)
            if release is not None:
                self.leases.send(release)  # never blocks: fit for a killed greenlet
        return raw

    def store(self, wire: bytes, raw: Raw, ttl: int, won: MetaReply, failed: OnCacheError) -> None:
        """Store *raw* with the CAS of the lease *won* (``EX``, ``NF``: invalidated or
        lapsed meanwhile, so the value is returned but not stored), or with add.
        An empty value is not stored."""
        if not raw.data:
            return
        check = f"C{won.cas}" if won.cas is not None else "ME"
        request = MetaRequest("ms", wire, [f"T{ttl}", f"F{raw.flags}", check, "k"], raw.data)
        try:
            self.leases.ask(request)
        except Exception as exc:
            if not failed(exc):
                raise

    # -- background recomputes -----------------------------------------------------------

    def _refresh_later(
        self, wire: bytes, compute: Callable[[], Any], ttl: int, won: MetaReply
    ) -> None:
        """Recompute in a greenlet of this client's, in a copy of the caller's context
        (contextvars: an application context, say); one at a time per key, the
        latest win queued behind a running one."""
        job = (compute, ttl, won, contextvars.copy_context())
        if wire in self._refreshes:
            self._queued[wire] = job
            return
        refresh = self._refreshes[wire] = Greenlet(self._refresh, wire, job)
        refresh.start()

    def _refresh(self, wire: bytes, job: Optional[tuple[Any, ...]]) -> None:
        epoch = _fork.epoch
        try:
            while job is not None and epoch == _fork.epoch:
                compute, ttl, won, context = job
                self.counts.background_recomputes += 1
                try:
                    raw = context.run(self.computed, wire, compute, won)
                    if epoch == _fork.epoch:  # a child never stores its parent's work
                        self.store(wire, raw, ttl, won, lambda exc: False)
                except Exception:
                    log.warning(
                        "pool %r: recomputing %r failed", self.pool.name, wire, exc_info=True
                    )
                job = self._queued.pop(wire, None)
        finally:
            if self._refreshes.get(wire) is getcurrent():
                del self._refreshes[wire]

    # -- the server's protocol, and forks ------------------------------------------------

    def _protocol(self, deadline: float, failed: OnCacheError) -> Optional[bool]:
        """Whether the server speaks meta, probed once; None if it cannot be asked
        and *failed* says to go on without the cache."""
        if self.meta is not None:
            return self.meta
        probing = self._probing
        if probing is None:
            probing = self._probing = AsyncResult()
            gevent.spawn_raw(self._probe, probing)
        left = deadline - _monotonic()
        probing.wait(None if left == float("inf") else max(0.0, left))
        try:
            if not probing.ready():
                raise PoolError(
                    f"pool {self.pool.name!r}: probing for the meta protocol took too long"
                )
            return bool(probing.get())
        except Exception as exc:
            if failed(exc):
                return None
            raise

    def _probe(self, probing: AsyncResult) -> None:
        try:
            with self.pool.reserve() as client:
                meta = client.probe_meta()
        except BaseException as exc:  # not cached: the next caller probes again
            self._probing = None
            probing.set_exception(exc if isinstance(exc, Exception) else PoolError(repr(exc)))
            return
        self.meta = meta
        self._probing = None
        probing.set(meta)

    def _after_fork(self) -> None:
        """The child's flights and recomputes start empty: what runs is the parent's."""
        self._epoch = _fork.epoch
        self._flights = {}
        self._refreshes = {}
        self._queued = {}
        self._probing = None
