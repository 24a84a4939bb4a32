"""ClientPool: a bounded, cooperative, interruption-safe LIFO pool of clients.

The data path of one reservation, all in this file::

    reserve() -> Reservation.__enter__ -> lend: the warmest idle client, or an
                 empty slot, or wait for one (Slots.waiters)
              -> idle: its connection closed or holding unread bytes? reconnect
              -> empty: make a client (_prepare); idle and past a limit of the
                 LendPolicy: discard it, try the next (_prepare)
    with-body uses the client
    Reservation.__exit__ -> take_back: a command cut off, or the block broken?
                            discard the client, keep its slot
                         -> Slots.give: to the oldest waiter, or back on top

Where the rest lives: greenpool._admin (filling, resizing, closing, stats,
threads and forks), greenpool._slots (the slots, the waiters, resizing),
greenpool.policy (may an idle client be lent again), greenpool._entry (a
client's record, and whether a returned one is spoiled), greenpool.stats (the
counters), greenpool._fork (forks), greenpool._leaks (leak warnings).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, Generic, Optional, TypeVar

from greenpool import _fork, _leaks
from greenpool._admin import Administration, Closable, _thread_ident, close_quietly
from greenpool._checks import check_bool, check_seconds, check_size
from greenpool._entry import Entry, failure, spoiled
from greenpool._slots import Slots
from greenpool.errors import PoolError
from greenpool.policy import LendPolicy
from greenpool.stats import Counters

__all__ = ["DEFAULT_MAXSIZE", "DEFAULT_TIMEOUT", "ClientPool", "Reservation"]

#: Default *maxsize*: enough for a busy gevent worker, far below memcached's 1024.
DEFAULT_MAXSIZE = 16
#: Default seconds a reservation waits for a free client before PoolTimeout.
DEFAULT_TIMEOUT = 5.0

_monotonic = time.monotonic
_pool_numbers = itertools.count(1)


C = TypeVar("C", bound=Closable)


class Reservation(Generic[C]):
    """The context manager :meth:`ClientPool.reserve` returns.

    Entering it lends a client; leaving it takes the client back, discarding it
    if one of its commands was cut off (for a client that does not keep its
    connection's state: if the block was left by an interruption or a
    connection error). One block at a time may enter it.
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
        self._entry = entry = self._pool.lend(self._block, self._timeout)
        return entry.client

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        entry = self._entry
        if entry is not None:  # else entered by another block, which failed
            self._entry = None
            self._pool.take_back(entry, exc_type)


class ClientPool(Administration[C]):
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

    Operating options, all off by default (the "Operations" page):
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
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, not {type(name).__name__}")
        self._factory = factory
        self._maxsize = check_size("maxsize", maxsize)
        self.timeout = check_seconds("timeout", timeout)
        self.name = name if name is not None else f"pool-{next(_pool_numbers)}"
        self._policy: LendPolicy[C] = LendPolicy(
            self.name, max_idle=max_idle, max_lifetime=max_lifetime,
            check_after_idle=check_after_idle, check=check,
        )  # fmt: skip
        self._max_waiting = (
            None if max_waiting is None else check_size("max_waiting", max_waiting, minimum=0)
        )
        leak_after = None if leak_warning_after is None else check_seconds(
            "leak_warning_after", leak_warning_after
        )  # fmt: skip
        self._leaks = None if leak_after is None else _leaks.LeakWatch(self.name, leak_after)
        # What the data path asks of the policy on every reservation, kept at hand.
        self._vetting = self._policy.active
        self._trimming = self._policy.max_idle is not None
        self._slots: Slots[C] = Slots(self._maxsize)
        self._counts = Counters()
        #: Whether :meth:`close` has been called (read it; :meth:`close` sets it).
        self.closed = False
        self._attention = False  # closed, or forked since last used: see _check_usable
        self._thread: Optional[int] = None
        self._epoch = _fork.epoch
        _fork.pools.add(self)

    @property
    def maxsize(self) -> int:
        """The most clients that may exist at once (see :meth:`resize`)."""
        return self._maxsize

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} maxsize={self._maxsize} "
            f"size={self._counts.live()} in_use={self._slots.lent}>"
        )

    def __enter__(self) -> ClientPool[C]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

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

    # -- the data path: lend and take_back, for Reservation and the layers above ----

    def lend(self, block: bool = True, timeout: Optional[float] = None) -> Entry[C]:
        """Take a slot and return its entry, ready to use: what a reservation's
        ``__enter__`` does (*block* and *timeout* as for :meth:`reserve`, checked).
        Hand it back with :meth:`take_back`, exactly once."""
        if self._attention or self._thread != _thread_ident():
            self._check_usable()
        slots = self._slots
        entry: Optional[Entry[C]]
        if slots.idle:
            entry = slots.idle.pop()
            slots.lent += 1
        elif slots.empty:
            slots.empty -= 1
            slots.lent += 1
            entry = None
        else:  # wait; the slot handed over is counted as lent by the giver
            seconds = (self.timeout if timeout is None else timeout) if block else 0
            entry = slots.wait(
                self.name, self._maxsize, seconds, self._max_waiting, self._counts, self._give
            )
        now = _monotonic()
        if entry is None or self._vetting:
            entry = self._prepare(entry, now)
        elif entry.probe is not None and entry.probe():
            self._reconnect(entry)
        self._counts.reserves += 1
        entry.since = now
        entry.lender = self
        if self._leaks is not None:
            self._leaks.watch(entry)
        return entry

    def _prepare(self, entry: Optional[Entry[C]], now: float) -> Entry[C]:
        """Make the slot just taken lendable: make a client for an empty one;
        replace an idle one the policy refuses. Whatever interrupts this gives
        the slot back."""
        try:
            while entry is not None:
                if entry.probe is not None and entry.probe():
                    self._reconnect(entry)
                reason = self._policy.verdict(entry, now)
                if reason is None:
                    return entry
                refused, entry = entry, None  # the slot is ours, and empty
                self._discard(refused, reason)
                if self._slots.idle:  # trade it for the next idle client
                    self._slots.empty += 1
                    entry = self._slots.idle.pop()
            return self._new_entry(self._factory, now)
        except BaseException:
            if entry is not None:
                self._discard(entry, "interrupted")
            self._give(None)
            raise

    def _reconnect(self, entry: Entry[C]) -> None:
        """Close an idle connection found closed by the server or holding bytes
        nobody asked for: the client reconnects on its next command."""
        close_quietly(entry.client, self.name)
        self._counts.reconnects += 1

    def _new_entry(self, make: Callable[[], C], now: float) -> Entry[C]:
        try:
            client = make()
        except Exception as exc:  # a factory that connects, and could not
            if failure(type(exc)) == "error":
                self._counts.connection_errors += 1
                self._counts.connect_errors += 1
            raise
        if client is None:
            raise TypeError(f"the factory of pool {self.name!r} returned None, not a client")
        self._counts.created += 1
        return Entry(client, _fork.epoch, self._policy.expires(now))

    def take_back(
        self,
        entry: Entry[C],
        exc_type: Optional[type[BaseException]] = None,
        reason: Optional[str] = None,
    ) -> None:
        """Take back a lent *entry*, whose use ended by *exc_type* (``None``:
        normally). Its client is discarded if it is spoiled (see
        :func:`greenpool._entry.spoiled`), or for *reason* if one is given.

        :raises PoolError: *entry* is not lent by this pool now (taken back
            already, or another pool's); nothing changes.
        """
        if entry.lender is not self:
            raise PoolError(
                f"pool {self.name!r} cannot take back an entry it has not lent "
                f"(taken back already, or another pool's): {entry.client!r}"
            )
        entry.lender = None
        now = _monotonic()
        self._counts.usage_s += now - entry.since
        entry.since = now
        if entry.leak is not None:
            _leaks.LeakWatch.stop(entry)
        if entry.tracked:
            client: Any = entry.client
            fit = not client.busy and client.cut_by is None
        else:
            fit = exc_type is None
        if reason is not None or not fit or now >= entry.expires or entry.epoch != _fork.epoch:
            self._take_back_unusual(entry, reason or spoiled(entry, exc_type), now)
        elif (slots := self._slots).excess or self.closed:
            self._give(entry)
        elif slots.waiters:  # under load, the common case: to the oldest waiter
            slots.waiters.hand(entry)
        else:  # else the common case; both inlined from Slots.give
            slots.lent -= 1
            slots.idle.append(entry)
            if self._trimming:
                self._trim(now)

    def _take_back_unusual(self, entry: Entry[C], reason: Optional[str], now: float) -> None:
        """Take back an entry lent before a fork, spoiled, or expired."""
        if entry.epoch != _fork.epoch:
            # Lent before a fork: the parent owns its socket. Our own slots were
            # renewed by _after_fork, so only drop our file descriptor.
            if self._epoch != _fork.epoch:
                self._after_fork()
            close_quietly(entry.client, self.name)
            return
        if reason is None and now < entry.expires:  # the application's own exception
            self._give(entry)
            return
        if reason == "error":
            self._counts.connection_errors += 1
            if entry.tracked and entry.client.connect_failed:  # type: ignore[attr-defined]
                self._counts.connect_errors += 1
        self._discard(entry, reason or "lifetime")
        self._give(None)

    def _give(self, slot: Optional[Entry[C]]) -> None:
        """Give a lent slot back (see Slots.give), discarding its client if it must."""
        reason = self._slots.give(slot, self.closed)
        if reason is not None and slot is not None:
            self._discard(slot, reason)

    def _discard(self, entry: Entry[C], reason: str) -> None:
        self._counts.discards[reason] += 1
        close_quietly(entry.client, self.name)

    def _trim(self, now: float) -> None:
        """Close the coldest idle client if it idled past max_idle: the pool
        shrinks toward demand while it is used, one client per return."""
        coldest = self._slots.coldest()
        if coldest is not None and self._policy.cold(coldest, now):
            self._slots.drop_coldest()
            self._discard(coldest, "idle")
