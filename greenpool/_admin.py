"""What a ClientPool does besides lending: filling, resizing, closing, stats, threads and forks.

:class:`Administration` holds the pool's public methods that are not its data
path (that one is :mod:`greenpool.pool`'s, in one screen), and the checks the
data path makes when something unusual happened: the pool closed, the process
forked, another OS thread came. A pool belongs to the OS thread that first uses
it (that thread's gevent hub); after a fork, the child forgets its parent's
clients, whose sockets the parent still uses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, Optional, Protocol, TypeVar

from gevent.monkey import get_original

from greenpool import _fork
from greenpool._checks import check_size
from greenpool._slots import Slots
from greenpool.errors import PoolClosed, PoolError
from greenpool.stats import PoolStats

if TYPE_CHECKING:
    from greenpool import _leaks
    from greenpool._entry import Entry
    from greenpool.stats import Counters

__all__ = ["Administration", "Closable", "close_quietly"]

log = logging.getLogger("greenpool")

# The OS thread, even under monkey-patching (where threading's ident is a greenlet's).
_thread_ident: Callable[[], int] = get_original("_thread", "get_ident")
_monotonic = time.monotonic


class Closable(Protocol):
    """What the pool needs of a client: ``close()`` drops its connection, and the
    next command reconnects (as pymemcache's clients do)."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class Administration(Generic[C]):
    """:class:`~greenpool.ClientPool`'s methods besides its data path (a base)."""

    if TYPE_CHECKING:
        name: str
        closed: bool
        _attention: bool
        _thread: Optional[int]
        _epoch: int
        _maxsize: int
        _slots: Slots[C]
        _counts: Counters
        _leaks: Optional[_leaks.LeakWatch]
        _factory: Callable[[], C]

        def _new_entry(self, make: Callable[[], C], now: float) -> Entry[C]: ...
        def _discard(self, entry: Entry[C], reason: str) -> None: ...

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
        empty = self._slots.empty
        if n_slots > empty:
            raise ValueError(
                f"n_slots={n_slots} exceeds the {empty} clients pool {self.name!r} may "
                f"still create (maxsize={self._maxsize}, size={self._counts.live()})"
            )
        make: Callable[[], C] = self._factory if client is None else cloner(client)
        for _ in range(n_slots):
            now = _monotonic()
            entry = self._new_entry(make, now)
            entry.since = now
            self._slots.fill(entry)

    def resize(self, maxsize: int) -> None:
        """Change *maxsize* at run time.

        Growing wakes waiters at once. Shrinking closes idle clients (the
        coldest first) and lets clients in use finish: they are closed when they
        come back, until the pool is within its new size.
        """
        check_size("maxsize", maxsize)
        self._check_usable()
        more, self._maxsize = maxsize - self._maxsize, maxsize
        if more >= 0:
            self._slots.grow(more)
        for entry in self._slots.shrink(-more) if more < 0 else ():
            self._discard(entry, "resized")

    def disconnect_idle(self) -> None:
        """Close the connections of idle clients; each reconnects on its next command.

        Clients in use are left alone. The clients stay in the pool, so nothing
        is counted as discarded (pymemcache's ``PooledClient.close``, which
        Django calls after every request, means this).
        """
        self._check_thread()
        for entry in self._slots.idle:
            close_quietly(entry.client, self.name)

    def close(self) -> None:
        """Close idle clients now and clients in use when they come back.

        Greenlets waiting for a client get :class:`~greenpool.PoolClosed`, and
        so does every later :meth:`reserve`. Closing twice is harmless.
        """
        self._check_thread()
        if self.closed:
            return
        self.closed = self._attention = True
        self._slots.waiters.fail_all(PoolClosed(f"pool {self.name!r} was closed while waiting"))
        for entry in self._slots.drain():
            self._discard(entry, "closed")

    def claim(self) -> None:
        """Make the pool belong to this OS thread, unless it belongs to another.

        Reserving does this too; a layer over the pool (an
        :class:`~greenpool.AutoBatcher`) calls it before it binds to a thread.

        :raises PoolError: the pool belongs to another thread.
        :raises PoolClosed: the pool is closed.
        """
        self._check_usable()

    def stats(self) -> PoolStats:
        """Return a snapshot of the pool's gauges and counters (the "Operations" page).

        Unlike the other methods, this one may be called from any thread (a
        metrics exporter's, say): it only reads.
        """
        slots = self._slots
        return self._counts.snapshot(
            maxsize=self._maxsize,
            idle=len(slots.idle),
            in_use=slots.lent if self._epoch == _fork.epoch else 0,
            waiting=len(slots.waiters),
            leak_warnings=self._leaks.warnings if self._leaks else 0,
        )

    # -- threads and forks -------------------------------------------------------

    def _check_usable(self) -> None:
        if self.closed:
            raise PoolClosed(f"pool {self.name!r} is closed; reserve() needs an open pool")
        if self._epoch != _fork.epoch:
            self._after_fork()
        self._check_thread()
        if self._thread is None:  # the first use, or the first since a fork: adopt the thread
            self._thread = _thread_ident()
            self._slots.adopt()

    def _check_thread(self) -> None:
        """Refuse a thread other than the one the pool belongs to (if any yet)."""
        ident = _thread_ident()
        if self._thread is not None and ident != self._thread and self._epoch == _fork.epoch:
            raise PoolError(
                f"pool {self.name!r} belongs to thread {self._thread} (its gevent "
                f"hub) and was used from thread {ident}; create one pool per thread"
            )

    def _after_fork(self) -> None:
        """Forget the parent's clients: they share sockets with the parent."""
        parents = self._slots.drain()
        self._counts.discards["fork"] += self._counts.live()  # the parent's count out of size
        self._slots.waiters.fail_all(
            PoolError(f"pool {self.name!r}: the process forked while waiting")
        )
        self._slots = Slots(self._maxsize)
        self._thread = None
        self._epoch = _fork.epoch
        self._attention = self.closed
        for entry in parents:
            close_quietly(entry.client, self.name)


def close_quietly(client: Closable, pool_name: str) -> None:
    try:
        client.close()
    except Exception:
        log.debug("pool %r: closing %r failed", pool_name, client, exc_info=True)
