"""ClientPool: a bounded, cooperative, interruption-safe LIFO pool of clients.

The data path of one reservation, all in this file::

    reserve() -> Reservation.__enter__ -> _get: the warmest idle client, or a slot
                 not yet filled, or wait for one
              -> idle: its connection closed or holding unread bytes? reconnect it
              -> an empty slot: create a client now (_create); an idle one past
                 its limits is replaced first (_prepare)
    with-body uses the client
    Reservation.__exit__ -> spoiled (a command cut off, or the block broken)? discard,
                            keep the slot (_put)
                         -> _put_slot: to the oldest waiter, or back on the stack

Idle entries live in a deque, the most recently returned on the right, so it
is reused first; slots with no client yet are only a count (``_unmade``), so a
new client is made only when no idle one exists, and a huge *maxsize* costs
nothing (urllib3's ``LifoQueue`` of ``None`` placeholders, made fair, see
:meth:`ClientPool._put_slot`).
"""

from __future__ import annotations

import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Optional, Protocol, TypeVar

import gevent
from gevent.monkey import get_original

from greenpool import _fork, _leaks
from greenpool._checks import check_bool, check_seconds, check_size
from greenpool._entry import Entry, spoiled
from greenpool._waiters import Waiters
from greenpool.errors import PoolClosed, PoolError, PoolOverloaded, PoolTimeout
from greenpool.stats import DISCARD_REASONS, PoolStats

__all__ = ["DEFAULT_MAXSIZE", "DEFAULT_TIMEOUT", "ClientPool", "Reservation"]

log = logging.getLogger("greenpool")

#: Default *maxsize*: enough for a busy gevent worker, far below memcached's 1024.
DEFAULT_MAXSIZE = 16
#: Default seconds a reservation waits for a free client before PoolTimeout.
DEFAULT_TIMEOUT = 5.0

# The OS thread, even under monkey-patching (where threading's ident is a greenlet's).
_thread_ident: Callable[[], int] = get_original("_thread", "get_ident")
_monotonic = time.monotonic
_pool_numbers = itertools.count(1)


class Closable(Protocol):
    """What the pool needs of a client: ``close()`` drops its connection, and the
    next command reconnects (as pymemcache's clients do)."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class Reservation(Generic[C]):
    """The context manager :meth:`ClientPool.reserve` returns.

    Entering it takes a client from the pool; leaving it puts the client back,
    or discards it when one of its commands was cut off (or, for a client that
    does not keep its connection's state, when the block was left by an
    interruption or a connection error). A reservation is entered by one block
    at a time.
    """

    __slots__ = ("_block", "_entry", "_pool", "_timeout")

    def __init__(self, pool: ClientPool[C], block: bool, timeout: Optional[float]) -> None:
        self._pool = pool
        self._block = block
        self._timeout = timeout
        self._entry: Optional[Entry[C]] = None

    def __enter__(self) -> C:
        if self._entry is not None:
            raise PoolError(
                f"this reservation of pool {self._pool.name!r} is already entered: "
                f"call reserve() for each with-block"
            )
        self._entry = entry = self._pool._get(self._block, self._timeout)
        return entry.client

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        entry = self._entry
        if entry is None:
            return  # entered by another block that holds it, which failed
        self._entry = None
        self._pool._put(entry, spoiled(entry, exc_type))


class ClientPool(Generic[C]):
    """A bounded pool of memcached clients for gevent programs.

    *factory* is a zero-argument callable returning a new client, for example
    ``greenpool.client_factory(("127.0.0.1", 11211))``. Clients are created
    lazily, only when no idle one exists, and never more than *maxsize* at once.
    The most recently returned client is reused first. *timeout* is how long
    :meth:`reserve` waits by default, in seconds. *name* appears in errors, logs
    and metrics.

    >>> pool = ClientPool(client_factory(memcached_address), maxsize=4)
    >>> with pool.reserve() as mc:
    ...     mc.set("greeting", "hello")
    ...     mc.get("greeting")
    True
    b'hello'
    >>> pool.stats()["in_use"]
    0

    Operating options, all off by default (README.rst, "Operating in production"):
    *max_idle* seconds before an idle client is closed instead of reused;
    *max_lifetime* seconds (less up to 5% jitter) before a client is closed on
    its way back; *check_after_idle* seconds idle before a client is verified
    with *check* (default: its ``version()`` command) before it is lent;
    *leak_warning_after* seconds before a reservation still held is logged with
    the stack that made it; *max_waiting* greenlets waiting before
    :meth:`reserve` fails at once with :class:`~greenpool.PoolOverloaded`.

    The pool belongs to the OS thread that first reserves from it (that
    thread's gevent hub); any other thread gets :class:`~greenpool.PoolError`
    from every method but :meth:`stats`. After a fork, the child never reuses a
    client its parent created.
    """

    def __init__(
        self,
        factory: Callable[[], C],
        maxsize: int = DEFAULT_MAXSIZE,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        name: Optional[str] = None,
        max_idle: Optional[float] = None,
        max_lifetime: Optional[float] = None,
        check_after_idle: Optional[float] = None,
        check: Optional[Callable[[C], object]] = None,
        leak_warning_after: Optional[float] = None,
        max_waiting: Optional[int] = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(
                f"factory must be a zero-argument callable returning a client, "
                f"not {type(factory).__name__}"
            )
        if check is not None and not callable(check):
            raise TypeError(f"check must be a callable taking a client, not {type(check).__name__}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self._factory = factory
        self._maxsize = check_size("maxsize", maxsize)
        self.timeout = check_seconds("timeout", timeout)
        self.name = name if name is not None else f"pool-{next(_pool_numbers)}"
        self._max_idle = _optional_seconds("max_idle", max_idle)
        self._max_lifetime = _optional_seconds("max_lifetime", max_lifetime)
        self._check_after = _optional_seconds("check_after_idle", check_after_idle)
        if check is not None and self._check_after is None:
            self._check_after = 0.0
        self._check: Callable[[C], object] = check or _version
        self._max_waiting = (
            None if max_waiting is None else check_size("max_waiting", max_waiting, minimum=0)
        )
        # Whether an idle entry needs a look before it is lent again.
        self._vetting = not (self._max_idle is None and self._max_lifetime is None
                             and self._check_after is None)  # fmt: skip
        self._idle: deque[Entry[C]] = deque()  # the warmest on the right
        self._unmade = self._maxsize  # slots with no client yet
        self._waiters: Waiters[Optional[Entry[C]]] = Waiters()
        self._excess = 0  # clients in use beyond maxsize after a shrink
        self._closed = False
        self._attention = False  # closed, or forked since last used: see _check_usable
        self._thread: Optional[int] = None
        self._epoch = _fork.epoch
        self._in_use = 0
        self._created = 0
        self._discards = dict.fromkeys(DISCARD_REASONS, 0)
        self._reconnects = self._connection_errors = 0
        self._reserves = self._waits = self._timeouts = self._overloaded = 0
        self._wait_s = self._usage_s = 0.0
        leak_after = _optional_seconds("leak_warning_after", leak_warning_after)
        self._leaks = None if leak_after is None else _leaks.LeakWatch(self.name, leak_after)
        _fork.pools.add(self)

    @property
    def maxsize(self) -> int:
        """The most clients that may exist at once (see :meth:`resize`)."""
        return self._maxsize

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} maxsize={self._maxsize} "
            f"size={self._live()} in_use={self._in_use}>"
        )

    def reserve(self, block: bool = True, timeout: Optional[float] = None) -> Reservation[C]:
        """Return a context manager that lends a client for the ``with`` block.

        If *block* is true and *timeout* is ``None`` (the default), wait up to
        the pool's *timeout* (5 seconds unless configured) for a client to come
        free. If *timeout* is a non-negative number, wait at most that many
        seconds. If *block* is false, take a client only if one is free now
        (*timeout* is ignored). Waiting is cooperative: other greenlets run
        meanwhile, and waiters are served in the order they arrived. When no
        client came free in time, :class:`~greenpool.PoolTimeout` is raised;
        when *max_waiting* greenlets already wait,
        :class:`~greenpool.PoolOverloaded`; after :meth:`close`,
        :class:`~greenpool.PoolClosed`.

        The client goes back when the block ends. A client one of whose commands
        was cut off (by a ``gevent.Timeout``, a kill, a socket error, a failing
        deserializer...), even if the block caught that, is closed, and its slot
        refilled with a new client on demand: a half-read reply never reaches
        the next user.
        """
        if block is not True and block is not False:
            check_bool("block", block)
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        return Reservation(self, block, timeout)

    def fill(self, client: object, n_slots: int) -> None:
        """Pre-create *n_slots* idle clients configured like *client*.

        *client* may be a pymemcache ``Client`` (equivalent clients are built
        from its settings), any object with a ``clone()`` method (as pylibmc
        clients have), or ``None`` to use the pool's factory. The new clients
        connect lazily, on their first command.

        :raises ValueError: *n_slots* exceeds the number of clients the pool may
            still create (*maxsize* minus *size*).
        """
        from greenpool.factory import cloner

        check_size("n_slots", n_slots, minimum=0)
        self._check_usable()
        if n_slots > self._unmade:
            raise ValueError(
                f"n_slots={n_slots} exceeds the {self._unmade} clients pool {self.name!r} may "
                f"still create (maxsize={self._maxsize}, size={self._live()})"
            )
        make: Callable[[], C] = self._factory if client is None else cloner(client)
        for _ in range(n_slots):
            now = _monotonic()
            entry = self._new_entry(make, now)
            entry.since = now
            self._unmade -= 1
            self._idle.appendleft(entry)  # cold: idle ones already warm stay first

    def resize(self, maxsize: int) -> None:
        """Change *maxsize* at run time.

        Growing wakes waiters at once. Shrinking closes idle clients (the
        coldest first) and lets clients in use finish: they are closed when they
        come back, until the pool is within its new size.
        """
        check_size("maxsize", maxsize)
        self._check_usable()
        grow, self._maxsize = maxsize - self._maxsize, maxsize
        if grow >= 0:
            absorbed = min(self._excess, grow)
            self._excess -= absorbed
            grow -= absorbed
            while grow and self._waiters:
                self._in_use += 1
                self._waiters.hand(None)
                grow -= 1
            self._unmade += grow
            return
        shrink = -grow
        dropped = min(shrink, self._unmade)  # slots with no client first
        self._unmade -= dropped
        shrink -= dropped
        while shrink and self._idle:
            self._discard(self._idle.popleft(), "resized")  # then the coldest idle
            shrink -= 1
        self._excess += shrink

    def disconnect_idle(self) -> None:
        """Close the connections of idle clients; each reconnects on its next command.

        Clients in use are left alone. The clients stay in the pool, so nothing
        is counted as discarded (pymemcache's ``PooledClient.close``, which
        Django calls after every request, means this).
        """
        self._check_thread()
        for entry in self._idle:
            _close_quietly(entry.client, self.name)

    def close(self) -> None:
        """Close idle clients now and clients in use when they come back.

        Greenlets waiting for a client get :class:`~greenpool.PoolClosed`, and
        so does every later :meth:`reserve`. Closing twice is harmless.
        """
        self._check_thread()
        if self._closed:
            return
        self._closed = self._attention = True
        self._waiters.fail_all(PoolClosed(f"pool {self.name!r} was closed while waiting"))
        while self._idle:
            self._discard(self._idle.pop(), "closed")

    def __enter__(self) -> ClientPool[C]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> PoolStats:
        """Return a snapshot of the pool's gauges and counters (README.rst, "Stats").

        Unlike the other methods, this one may be called from any thread (a
        metrics exporter's, say): it only reads.
        """
        discards = self._discards
        return PoolStats(
            maxsize=self._maxsize,
            size=self._live(),
            idle=len(self._idle),
            in_use=self._in_use if self._epoch == _fork.epoch else 0,
            waiting=len(self._waiters),
            created=self._created,
            discarded=sum(discards.values()),
            discarded_interrupted=discards["interrupted"],
            discarded_error=discards["error"],
            discarded_idle=discards["idle"],
            discarded_lifetime=discards["lifetime"],
            discarded_check_failed=discards["check_failed"],
            discarded_fork=discards["fork"],
            discarded_closed=discards["closed"],
            discarded_resized=discards["resized"],
            reconnects=self._reconnects,
            connection_errors=self._connection_errors,
            reserves=self._reserves,
            waits=self._waits,
            timeouts=self._timeouts,
            overloaded=self._overloaded,
            leak_warnings=self._leaks.warnings if self._leaks else 0,
            wait_ms=self._wait_s * 1000.0,
            usage_ms=self._usage_s * 1000.0,
        )

    # -- the data path: _get, _prepare, _create, _put, _put_slot -------------------

    def _get(self, block: bool, timeout: Optional[float]) -> Entry[C]:
        """Take an entry: the warmest idle one, a new one, or one handed over."""
        if self._attention or self._thread != _thread_ident():
            self._check_usable()
        entry: Optional[Entry[C]]
        if self._idle:
            entry = self._idle.pop()
            self._in_use += 1
        elif self._unmade:
            self._unmade -= 1
            self._in_use += 1
            entry = None
        else:
            entry = self._wait(block, timeout)  # counted in _in_use by the giver
        now = _monotonic()
        if entry is None or self._vetting:
            entry = self._prepare(entry, now)
        elif entry.probe is not None and entry.probe():
            self._reconnect(entry)
        self._reserves += 1
        entry.since = now
        if self._leaks is not None:
            self._leaks.watch(entry)
        return entry

    def _prepare(self, entry: Optional[Entry[C]], now: float) -> Entry[C]:
        """Make the slot just taken lendable: create into an empty slot; replace an
        idle client past its limits. Whatever interrupts this gives the slot back."""
        try:
            while entry is not None:
                if entry.probe is not None and entry.probe():
                    self._reconnect(entry)
                reason = self._expired(entry, now) or self._checked(entry, now)
                if reason is None:
                    return entry
                failed, entry = entry, None  # the slot is ours, with no client in it
                self._discard(failed, reason)
                if self._idle:  # trade the empty slot for the next idle client
                    self._unmade += 1
                    entry = self._idle.pop()
            return self._new_entry(self._factory, now)
        except BaseException:
            if entry is not None:
                self._discard(entry, "interrupted")
            self._put_slot(None)
            raise

    def _reconnect(self, entry: Entry[C]) -> None:
        """Close an idle connection found closed by the server or holding bytes
        nobody asked for: the client reconnects on its next command."""
        _close_quietly(entry.client, self.name)
        self._reconnects += 1

    def _expired(self, entry: Entry[C], now: float) -> Optional[str]:
        if now >= entry.expires:
            return "lifetime"
        if self._max_idle is not None and now - entry.since > self._max_idle:
            return "idle"
        return None

    def _checked(self, entry: Entry[C], now: float) -> Optional[str]:
        """Run the liveness check on a client idle past check_after_idle.

        The check runs in a greenlet of its own, so that whatever it raises,
        its own ``gevent.Timeout`` included, is a failed check, while an
        interruption aimed at the caller (who waits for it) propagates.
        """
        if self._check_after is None or now - entry.since < self._check_after:
            return None
        outcome: list[Optional[BaseException]] = []

        def check() -> None:
            try:
                self._check(entry.client)
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
        error = outcome[0] if outcome else job.exception
        if error is None:
            return None
        log.info("pool %r: a client failed its check (%r) and is replaced", self.name, error)
        return "check_failed"

    def _new_entry(self, make: Callable[[], C], now: float) -> Entry[C]:
        client = make()
        if client is None:
            raise TypeError(f"the factory of pool {self.name!r} returned None, not a client")
        expires = math.inf
        if self._max_lifetime is not None:
            expires = now + self._max_lifetime * random.uniform(0.95, 1.0)
        self._created += 1
        return Entry(client, _fork.epoch, expires)

    def _put(self, entry: Entry[C], reason: Optional[str]) -> None:
        """Take back a lent entry; *reason* says why it may not be lent again."""
        now = _monotonic()
        self._usage_s += now - entry.since
        entry.since = now
        if entry.leak is not None:
            _leaks.LeakWatch.stop(entry)
        if reason is not None or now >= entry.expires or entry.epoch != _fork.epoch:
            self._put_back_unusual(entry, reason, now)
        elif self._waiters or self._excess or self._closed:
            self._put_slot(entry)
        else:  # the common case, inlined from _put_slot
            self._in_use -= 1
            self._idle.append(entry)
            if self._max_idle is not None:
                self._trim(now)

    def _put_back_unusual(self, entry: Entry[C], reason: Optional[str], now: float) -> None:
        """Take back an entry lent before a fork, spoiled, or expired."""
        if entry.epoch != _fork.epoch:
            # Lent before a fork: the parent owns its socket. Our own slots were
            # renewed by _after_fork, so only drop our file descriptor.
            if self._epoch != _fork.epoch:
                self._after_fork()
            _close_quietly(entry.client, self.name)
            return
        if reason == "error":
            self._connection_errors += 1
        self._discard(entry, reason or "lifetime")
        self._put_slot(None)

    def _put_slot(self, slot: Optional[Entry[C]]) -> None:
        """Hand *slot* (``None``: an empty one) to the oldest waiter, which keeps
        the pool fair (see greenpool._waiters), or push it back."""
        if self._excess:  # the pool shrank while this was lent
            self._excess -= 1
            self._in_use -= 1
            if slot is not None:
                self._discard(slot, "resized")
        elif self._waiters:
            self._waiters.hand(slot)
        else:
            self._in_use -= 1
            if self._closed:
                if slot is not None:
                    self._discard(slot, "closed")
            elif slot is None:
                self._unmade += 1
            else:
                self._idle.append(slot)

    def _live(self) -> int:
        """The clients that exist now: every one created and not yet discarded."""
        return self._created - sum(self._discards.values())

    def _discard(self, entry: Entry[C], reason: str) -> None:
        self._discards[reason] += 1
        _close_quietly(entry.client, self.name)

    def _trim(self, now: float) -> None:
        """Close the coldest idle client if it idled past max_idle: the pool
        shrinks toward demand while it is used, one client per return."""
        coldest = self._idle[0]
        if now - coldest.since > self._max_idle:  # type: ignore[operator]
            self._idle.popleft()
            self._unmade += 1
            self._discard(coldest, "idle")

    # -- waiting and checks ------------------------------------------------------

    def _wait(self, block: bool, timeout: Optional[float]) -> Optional[Entry[C]]:
        """Wait for a slot handed over by _put_slot; raise PoolTimeout if none,
        PoolOverloaded if max_waiting greenlets wait already."""
        seconds = self.timeout if timeout is None else timeout
        if not block or seconds == 0:
            self._timeouts += 1
            raise PoolTimeout(
                f"no client free in pool {self.name!r} (maxsize={self._maxsize}) "
                f"and block=False or timeout=0 was given"
            )
        if self._max_waiting is not None and len(self._waiters) >= self._max_waiting:
            self._overloaded += 1
            raise PoolOverloaded(
                f"pool {self.name!r} already has max_waiting={self._max_waiting} "
                f"greenlets waiting for its {self._maxsize} clients"
            )
        self._waits += 1
        started = _monotonic()
        try:
            served, slot = self._waiters.wait(
                None if math.isinf(seconds) else seconds, self._put_slot
            )
        finally:
            self._wait_s += _monotonic() - started
        if not served:
            self._timeouts += 1
            raise PoolTimeout(
                f"no client came free in pool {self.name!r} (maxsize={self._maxsize}) "
                f"within timeout={seconds}s"
            )
        return slot

    def _check_usable(self) -> None:
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed; reserve() needs an open pool")
        if self._epoch != _fork.epoch:
            self._after_fork()
        self._check_thread()
        self._thread = _thread_ident()

    def _check_thread(self) -> None:
        """Refuse a thread other than the one the pool belongs to (if any yet)."""
        ident = _thread_ident()
        if self._thread is not None and ident != self._thread:
            if self._epoch != _fork.epoch:
                return  # a forked child's only thread: _after_fork forgets the parent's
            raise PoolError(
                f"pool {self.name!r} belongs to thread {self._thread} (its gevent "
                f"hub) and was used from thread {ident}; create one pool per thread"
            )

    def _after_fork(self) -> None:
        """Forget the parent's clients: they share sockets with the parent."""
        parents = list(self._idle)
        self._discards["fork"] += self._live()  # so the parent's clients count out of size
        self._in_use = self._excess = 0
        self._idle = deque()
        self._unmade = self._maxsize
        self._thread = None
        self._epoch = _fork.epoch
        self._attention = self._closed
        self._waiters.fail_all(PoolError(f"pool {self.name!r}: the process forked while waiting"))
        for entry in parents:
            _close_quietly(entry.client, self.name)


def _optional_seconds(name: str, value: Any) -> Optional[float]:
    return None if value is None else check_seconds(name, value)


def _version(client: Any) -> object:
    return client.version()


def _close_quietly(client: Closable, pool_name: str) -> None:
    try:
        client.close()
    except Exception:
        log.debug("pool %r: closing %r failed", pool_name, client, exc_info=True)
