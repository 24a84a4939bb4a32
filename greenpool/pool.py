"""ClientPool: a bounded, cooperative, interruption-safe LIFO pool of clients.

The data path of one reservation, all in this file::

    reserve() -> Reservation.__enter__ -> _get: pop a slot, or wait for one
              -> a None slot means "create a client now" (_new_client)
    with-body uses the client
    Reservation.__exit__ -> _put: interrupted or broken? discard, keep the slot
                         -> hand the slot to the oldest waiter, or push it back

Slots live in a deque: placeholders (``None``) on the left, idle clients on the
right, so the most recently returned client is reused first and a new one is
made only when no idle one exists (urllib3's ``LifoQueue`` of ``None``, made
fair, see :meth:`ClientPool._put_slot`).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Protocol, TypedDict, TypeVar

from gevent.event import AsyncResult
from gevent.monkey import get_original
from pymemcache.exceptions import MemcacheError, MemcacheIllegalInputError

from greenpool import _fork
from greenpool._checks import check_seconds, check_size
from greenpool.errors import PoolClosed, PoolError, PoolTimeout

__all__ = ["DEFAULT_MAXSIZE", "DEFAULT_TIMEOUT", "ClientPool", "PoolStats", "Reservation"]

log = logging.getLogger("greenpool")

#: Default *maxsize*: enough for a busy gevent worker, far below memcached's 1024.
DEFAULT_MAXSIZE = 16
#: Default seconds a reservation waits for a free client before PoolTimeout.
DEFAULT_TIMEOUT = 5.0

# The OS thread, even under monkey-patching (where threading's ident is a greenlet's).
_thread_ident: Callable[[], int] = get_original("_thread", "get_ident")
_pool_numbers = itertools.count(1)


class Closable(Protocol):
    """What the pool needs of a client: a ``close()`` that drops its connection."""

    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class PoolStats(TypedDict):
    """What :meth:`ClientPool.stats` returns; README.rst documents each key."""

    maxsize: int
    size: int
    idle: int
    in_use: int
    waiting: int
    created: int
    discarded: int
    reserves: int
    waits: int
    timeouts: int
    wait_ms: float


def breaks_connection(exc_type: type[BaseException]) -> bool:
    """Whether leaving a reservation by *exc_type* may leave the client unusable.

    A BaseException that is not an Exception (``gevent.Timeout``, ``GreenletExit``,
    ``KeyboardInterrupt``) can arrive while a command is half sent or its reply
    half read: pymemcache does not clean up after those, so the socket may hold
    another command's reply. Socket and protocol errors leave the connection
    unknown too. Invalid input is rejected before anything is sent, and any
    other exception is the application's, raised between complete commands.
    """
    if not issubclass(exc_type, Exception):
        return True
    return issubclass(exc_type, (OSError, MemcacheError)) and not issubclass(
        exc_type, MemcacheIllegalInputError
    )


class Reservation(Generic[C]):
    """The context manager :meth:`ClientPool.reserve` returns.

    Entering it takes a client from the pool; leaving it puts the client back,
    or discards it when the block was left by an interruption or a connection
    error (see :func:`breaks_connection`).
    """

    __slots__ = ("_block", "_epoch", "_pool", "_timeout", "client")

    def __init__(self, pool: ClientPool[C], block: bool, timeout: float | None) -> None:
        self._pool = pool
        self._block = block
        self._timeout = timeout

    def __enter__(self) -> C:
        self.client = client = self._pool._get(self._block, self._timeout)
        self._epoch = _fork.epoch
        return client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._pool._put(self.client, exc_type, self._epoch)


class ClientPool(Generic[C]):
    """A bounded pool of memcached clients for gevent programs.

    *factory* is a zero-argument callable returning a new client, for example
    ``greenpool.client_factory(("127.0.0.1", 11211))``. Clients are created
    lazily, only when no idle one exists, and never more than *maxsize* at once.
    The most recently returned client is reused first. *timeout* is how long
    :meth:`reserve` waits by default, in seconds. *name* appears in errors and
    logs.

    >>> pool = ClientPool(client_factory(memcached_address), maxsize=4)
    >>> with pool.reserve() as mc:
    ...     mc.set("greeting", "hello")
    ...     mc.get("greeting")
    True
    b'hello'
    >>> pool.stats()["in_use"]
    0

    The pool belongs to the OS thread that first reserves from it (that
    thread's gevent hub); using it from another thread raises
    :class:`~greenpool.PoolError`. After a fork, the child never reuses a
    client its parent created.
    """

    def __init__(
        self,
        factory: Callable[[], C],
        maxsize: int = DEFAULT_MAXSIZE,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        name: str | None = None,
    ) -> None:
        if not callable(factory):
            raise TypeError(
                f"factory must be a zero-argument callable returning a client, "
                f"not {type(factory).__name__}"
            )
        self._factory = factory
        self._maxsize = check_size("maxsize", maxsize)
        self.timeout = check_seconds("timeout", timeout)
        self.name = name if name is not None else f"pool-{next(_pool_numbers)}"
        self._slots: deque[C | None] = deque([None] * self._maxsize)
        self._waiters: deque[AsyncResult] = deque()
        self._closed = False
        self._thread: int | None = None
        self._epoch = _fork.epoch
        self._in_use = 0
        self._size = 0
        self._created = 0
        self._discarded = 0
        self._reserves = 0
        self._waits = 0
        self._timeouts = 0
        self._wait_s = 0.0

    @property
    def maxsize(self) -> int:
        """The most clients that may exist at once."""
        return self._maxsize

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has been called."""
        return self._closed

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.name!r} maxsize={self._maxsize} "
            f"size={self._size} in_use={self._in_use}>"
        )

    def reserve(self, block: bool = True, timeout: float | None = None) -> Reservation[C]:
        """Return a context manager that lends a client for the ``with`` block.

        If *block* is true and *timeout* is ``None`` (the default), wait up to
        the pool's *timeout* (5 seconds unless configured) for a client to come
        free. If *timeout* is a non-negative number, wait at most that many
        seconds. If *block* is false, take a client only if one is free now
        (*timeout* is ignored). Waiting is cooperative: other greenlets run
        meanwhile, and waiters are served in the order they arrived. When no
        client came free in time, :class:`~greenpool.PoolTimeout` is raised;
        after :meth:`close`, :class:`~greenpool.PoolClosed`.

        The client goes back when the block ends. If the block was left by an
        interruption (``gevent.Timeout``, a kill, ``KeyboardInterrupt``) or by a
        socket or protocol error, the client is closed and its slot refilled
        with a new client on demand: a half-read reply never reaches the next
        user.
        """
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
        from greenpool.factory import cloner  # factory imports pool's users, not pool

        check_size("n_slots", n_slots, minimum=0)
        self._check_usable()
        free = self._slots.count(None)
        if n_slots > free:
            raise ValueError(
                f"n_slots={n_slots} exceeds the {free} clients pool {self.name!r} may "
                f"still create (maxsize={self._maxsize}, size={self._size})"
            )
        make: Callable[[], C] = self._factory if client is None else cloner(client)
        for _ in range(n_slots):
            new = self._new_client(make)
            self._slots.popleft()  # a placeholder: they sit on the left
            self._slots.append(new)

    def close(self) -> None:
        """Close idle clients now and clients in use when they come back.

        Greenlets waiting for a client get :class:`~greenpool.PoolClosed`, and
        so does every later :meth:`reserve`. Closing twice is harmless.
        """
        if self._closed:
            return
        self._closed = True
        waiters, self._waiters = self._waiters, deque()
        for waiter in waiters:
            waiter.set_exception(PoolClosed(f"pool {self.name!r} was closed while waiting"))
        while self._slots:
            slot = self._slots.pop()
            if slot is not None:
                self._discard(slot)

    def __enter__(self) -> ClientPool[C]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def stats(self) -> PoolStats:
        """Return a snapshot of the pool's gauges and counters (see README.rst)."""
        if self._epoch != _fork.epoch:
            self._after_fork()
        return PoolStats(
            maxsize=self._maxsize,
            size=self._size,
            idle=len(self._slots) - self._slots.count(None),
            in_use=self._in_use,
            waiting=len(self._waiters),
            created=self._created,
            discarded=self._discarded,
            reserves=self._reserves,
            waits=self._waits,
            timeouts=self._timeouts,
            wait_ms=self._wait_s * 1000.0,
        )

    # -- the lifecycle: _get, _new_client, _put ---------------------------------

    def _get(self, block: bool, timeout: float | None) -> C:
        """Take a client: the warmest idle one, a new one, or one handed over."""
        self._check_usable()
        if self._slots:
            slot = self._slots.pop()
            self._in_use += 1
        else:
            slot = self._wait(block, timeout)  # counted in _in_use by the giver
        self._reserves += 1
        if slot is None:
            try:
                slot = self._new_client(self._factory)
            except BaseException:
                self._put_slot(None)
                raise
        return slot

    def _new_client(self, make: Callable[[], C]) -> C:
        client = make()
        if client is None:
            raise TypeError(f"the factory of pool {self.name!r} returned None, not a client")
        self._size += 1
        self._created += 1
        return client

    def _put(self, client: C, exc_type: type[BaseException] | None, epoch: int) -> None:
        """Take back a client reserved in process generation *epoch*.

        *exc_type* is the exception that ended the client's use, or ``None``.
        """
        if epoch != _fork.epoch:
            # Reserved before a fork: the parent owns its socket. Our own slots
            # were renewed by _after_fork, so only drop our file descriptor.
            if self._epoch != _fork.epoch:
                self._after_fork()
            _close_quietly(client, self.name)
            return
        if exc_type is not None and breaks_connection(exc_type):
            self._discard(client)
            self._put_slot(None)
        else:
            self._put_slot(client)

    def _put_slot(self, slot: C | None) -> None:
        """Hand *slot* to the oldest waiter, or push it back.

        A direct hand-off keeps the pool fair. With a plain LifoQueue, a put
        only schedules a waiter's wake-up, and a greenlet that releases and
        reserves again in a loop takes the client back first, forever.
        """
        if self._waiters:
            self._waiters.popleft().set(slot)
            return
        self._in_use -= 1
        if self._closed:
            if slot is not None:
                self._discard(slot)
        elif slot is None:
            self._slots.appendleft(None)
        else:
            self._slots.append(slot)

    def _discard(self, client: C) -> None:
        self._size -= 1
        self._discarded += 1
        _close_quietly(client, self.name)

    # -- waiting and checks ------------------------------------------------------

    def _wait(self, block: bool, timeout: float | None) -> C | None:
        """Wait for a slot handed over by _put_slot; raise PoolTimeout if none."""
        seconds = self.timeout if timeout is None else timeout
        if not block or seconds == 0:
            self._timeouts += 1
            raise PoolTimeout(
                f"no client free in pool {self.name!r} (maxsize={self._maxsize}) "
                f"and block=False or timeout=0 was given"
            )
        waiter: AsyncResult = AsyncResult()
        self._waiters.append(waiter)
        self._waits += 1
        started = time.monotonic()
        try:
            waiter.wait(None if math.isinf(seconds) else seconds)
        except BaseException:
            # Interrupted while waiting. A slot handed over meanwhile is ours
            # to pass on; otherwise leave the queue.
            if waiter.ready() and waiter.successful():
                self._put_slot(waiter.value)
            else:
                self._leave(waiter)
            raise
        finally:
            self._wait_s += time.monotonic() - started
        if not waiter.ready():
            self._leave(waiter)
            self._timeouts += 1
            raise PoolTimeout(
                f"no client came free in pool {self.name!r} (maxsize={self._maxsize}) "
                f"within timeout={seconds}s"
            )
        slot: C | None = waiter.get()  # raises PoolClosed set by close()
        return slot

    def _leave(self, waiter: AsyncResult) -> None:
        with contextlib.suppress(ValueError):  # close() already dropped the queue
            self._waiters.remove(waiter)

    def _check_usable(self) -> None:
        if self._closed:
            raise PoolClosed(f"pool {self.name!r} is closed; reserve() needs an open pool")
        if self._epoch != _fork.epoch:
            self._after_fork()
        ident = _thread_ident()
        if ident != self._thread:
            if self._thread is not None:
                raise PoolError(
                    f"pool {self.name!r} belongs to thread {self._thread} (its gevent "
                    f"hub) and was used from thread {ident}; create one pool per thread"
                )
            self._thread = ident

    def _after_fork(self) -> None:
        """Forget the parent's clients: they share sockets with the parent."""
        parents = [slot for slot in self._slots if slot is not None]
        self._discarded += self._size
        self._size = 0
        self._in_use = 0
        self._slots = deque([None] * self._maxsize)
        waiters, self._waiters = self._waiters, deque()
        self._thread = None
        self._epoch = _fork.epoch
        for waiter in waiters:
            waiter.set_exception(PoolError(f"pool {self.name!r}: the process forked while waiting"))
        for client in parents:
            _close_quietly(client, self.name)


def _close_quietly(client: Closable, pool_name: str) -> None:
    try:
        client.close()
    except Exception:
        log.debug("pool %r: closing %r failed", pool_name, client, exc_info=True)
