"""GreenletMappedPool: one client per greenlet, handed back when the greenlet ends.

The data path of a mapped reservation, all in this file::

    reserve() -> MappedReservation.__enter__ -> this greenlet mapped? its client (one dict lookup)
              -> otherwise ClientPool.lend (waiting as ClientPool does), map it and
                 link the greenlet's end (_map)
    with-body uses the client
    MappedReservation.__exit__ -> spoiled (a command cut off)? unmap, ClientPool.take_back
                                  discards it
                               -> otherwise it stays mapped for the greenlet's next reserve()
    the greenlet ends, or relinquish() -> unmap, ClientPool.take_back takes it back, once

The mapping is keyed by ``id(greenlet)`` so that it holds no greenlet alive. A
key is never stale: a gevent Greenlet's entry is removed by its link, which
runs while the Greenlet object is still referenced by its own notifier, and a
raw greenlet's by a weakref callback, which runs as the greenlet is freed, both
before its id can be reused.
"""

from __future__ import annotations

import functools
import logging
import weakref
from types import TracebackType
from typing import Any, Generic

from gevent import get_hub, getcurrent

from greenpool import _fork
from greenpool._admin import close_quietly
from greenpool._checks import check_seconds
from greenpool._entry import Entry, spoiled
from greenpool.errors import PoolError
from greenpool.pool import C, ClientPool
from greenpool.stats import PoolStats

__all__ = ["GreenletMappedPool", "MappedReservation", "MappedStats"]

log = logging.getLogger("greenpool")


class MappedStats(PoolStats):
    """What :meth:`GreenletMappedPool.stats` returns: the pool's stats and ``mapped``."""

    mapped: int


class _Mapping(Generic[C]):
    """One greenlet's client, and what that greenlet's reserve blocks did with it."""

    __slots__ = ("broken", "depth", "entry", "gone", "returned")

    def __init__(self, entry: Entry[C]) -> None:
        self.entry = entry  # the pool's record of the client, and its process generation
        self.depth = 0  # reserve blocks of the greenlet open now
        self.broken: str | None = None  # why the client may not be lent again
        self.gone: weakref.ref[Any] | None = None  # a raw greenlet's death hook
        self.returned = False  # handed back to the pool: never again

    def hand_back(self, pool: ClientPool[C], reason: str | None) -> None:
        """Give the client back to *pool* (discarded for *reason*, if any): once,
        whichever of the greenlet's end, relinquish() or a late block exit comes first."""
        if not self.returned:
            self.returned = True
            pool.take_back(self.entry, reason=reason)


class MappedReservation(Generic[C]):
    """The context manager :meth:`GreenletMappedPool.reserve` returns.

    Entering it yields the current greenlet's client, taking one from the pool
    the first time. Leaving it keeps the client mapped, unless one of its
    commands was cut off (for a client that does not keep its connection's
    state: unless the block was left by an interruption or a connection error):
    then the client is discarded exactly as :class:`~greenpool.ClientPool`
    would discard it. One block at a time may enter it.
    """

    __slots__ = ("_mapped", "_mapping", "_timeout")

    def __init__(self, mapped: GreenletMappedPool[C], timeout: float | None) -> None:
        self._mapped = mapped
        self._timeout = timeout
        self._mapping: _Mapping[C] | None = None

    def __enter__(self) -> C:
        mapped = self._mapped
        if self._mapping is not None:
            raise PoolError(
                f"this reservation of pool {mapped._pool.name!r} is already entered: "
                f"call reserve() for each with-block"
            )
        mapping = mapped._mappings.get(id(getcurrent()))
        if mapping is None or mapping.entry.epoch != _fork.epoch or mapped._pool.closed:
            mapping = mapped._map(self._timeout)
        mapping.depth += 1
        self._mapping = mapping
        return mapping.entry.client

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        mapping = self._mapping
        if mapping is None:
            return  # entered by another block that holds it, which failed
        self._mapping = None
        mapping.depth -= 1
        entry = mapping.entry
        reason = None
        if exc_type is not None or (
            entry.tracked and (entry.client.busy or entry.client.cut_by is not None)  # type: ignore[attr-defined]
        ):
            reason = spoiled(entry, exc_type)
        if reason is not None:
            mapping.broken = reason
            if mapping.depth and not mapping.entry.tracked:
                # An outer block of this greenlet still holds the client. Drop the
                # connection now, so that block's next command reconnects instead
                # of reading the interrupted reply (a greenpool Client did so at the
                # cut already); discard it when that block ends.
                close_quietly(mapping.entry.client, self._mapped._pool.name)
        if not mapping.depth and (mapping.broken is not None or mapping.entry.epoch != _fork.epoch):
            self._mapped._release(mapping)


class GreenletMappedPool(Generic[C]):
    """Lend each greenlet one client of *pool* for as long as the greenlet lives.

    The first :meth:`reserve` in a greenlet takes a client from *pool*; later
    and nested ones in the same greenlet get the same client at the cost of a
    dict lookup. The client goes back by itself when the greenlet ends:

    - a ``gevent.Greenlet`` (``gevent.spawn``, a ``pywsgi`` or ``StreamServer``
      handler, a monkey-patched ``threading.Thread``): a ``rawlink`` on it hands
      the client back as soon as the greenlet finishes, by returning, raising,
      being killed or timing out;
    - a raw ``greenlet.greenlet`` (``gevent.spawn_raw``): a weak reference hands
      it back once the finished greenlet object is freed, not while anything
      still refers to it;
    - the main greenlet never ends: call :meth:`relinquish`.

    >>> mapped = GreenletMappedPool(ClientPool(client_factory(memcached_address)))
    >>> with mapped.reserve() as mc:
    ...     with mapped.reserve() as same:
    ...         same is mc
    True
    >>> mapped.stats()["mapped"]
    1
    >>> mapped.relinquish()
    >>> mapped.stats()["mapped"], mapped.stats()["in_use"]
    (0, 0)

    The pool still bounds the number of clients: a greenlet holds its client
    between reserve blocks too, so size *pool* for the greenlets alive at once.
    """

    def __init__(self, pool: ClientPool[C]) -> None:
        if not isinstance(pool, ClientPool):
            raise TypeError(f"pool must be a ClientPool, not {type(pool).__name__}")
        self._pool = pool
        self._mappings: dict[int, _Mapping[C]] = {}
        self._epoch = _fork.epoch
        # One bound method for every rawlink, so that unlink() finds it again.
        self._on_finished = self._greenlet_finished

    @property
    def pool(self) -> ClientPool[C]:
        """The :class:`~greenpool.ClientPool` the clients come from."""
        return self._pool

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self._pool!r} mapped={len(self._mappings)}>"

    def reserve(self, timeout: float | None = None) -> MappedReservation[C]:
        """Return a context manager that yields the current greenlet's client.

        If the greenlet holds no client yet, one is taken from the pool: with
        *timeout* ``None`` (the default), waiting up to the pool's own
        *timeout*; with a non-negative number, at most that many seconds.
        Waiting is cooperative and fair, as in :meth:`ClientPool.reserve`; when
        no client came free in time, :class:`~greenpool.PoolTimeout` is raised.
        A greenlet that already holds a client gets it at once, whatever
        *timeout* says, nested blocks included.

        The client stays with the greenlet after the block. If one of its
        commands was cut off (by a ``gevent.Timeout``, a kill, a socket error...),
        the client is discarded instead, and the greenlet's next reserve takes a
        new one.
        """
        if timeout is not None:
            timeout = check_seconds("timeout", timeout)
        return MappedReservation(self, timeout)

    def relinquish(self) -> None:
        """Hand the current greenlet's client back to the pool now.

        Calling it when the greenlet holds no client does nothing.

        :raises PoolError: a reserve block of this greenlet is still open, so
            its client is still in use.
        """
        if self._epoch != _fork.epoch:
            self._after_fork()
        mapping = self._mappings.get(id(getcurrent()))
        if mapping is None:
            return
        if mapping.depth:
            raise PoolError(
                f"relinquish() called inside {mapping.depth} open reserve() block(s) of "
                f"pool {self._pool.name!r}: the client is still in use; relinquish "
                f"after the outermost block"
            )
        self._release(mapping)

    def stats(self) -> MappedStats:
        """Return the pool's :meth:`~ClientPool.stats` and ``mapped``, the number
        of greenlets holding a client."""
        if self._epoch != _fork.epoch:
            self._after_fork()
        return MappedStats(**self._pool.stats(), mapped=len(self._mappings))

    # -- mapping and handing back ------------------------------------------------

    def _map(self, timeout: float | None) -> _Mapping[C]:
        """The slow path of __enter__: take a client and link the greenlet's end."""
        if self._epoch != _fork.epoch:
            self._after_fork()
        current = getcurrent()
        mapping = self._mappings.get(id(current))
        if mapping is not None:
            if mapping.depth:  # the pool was closed under an open block: keep lending
                return mapping
            self._release(mapping)  # the pool was closed: lend raises PoolClosed below
        mapping = _Mapping(self._pool.lend(True, timeout))
        rawlink = getattr(current, "rawlink", None)
        if rawlink is not None:
            rawlink(self._on_finished)
        else:
            gone = functools.partial(self._raw_greenlet_gone, id(current), get_hub())
            mapping.gone = weakref.ref(current, gone)
        self._mappings[id(current)] = mapping
        return mapping

    def _release(self, mapping: _Mapping[C]) -> None:
        """Unmap the current greenlet's *mapping* and give its client back."""
        current = getcurrent()
        if self._mappings.get(id(current)) is mapping:
            del self._mappings[id(current)]
            unlink = getattr(current, "unlink", None)
            if unlink is not None:
                unlink(self._on_finished)
        # else: mapped before a fork, and forgotten since; take_back closes it.
        mapping.gone = None
        mapping.hand_back(self._pool, mapping.broken)

    def _greenlet_finished(self, greenlet: Any) -> None:
        """The rawlink of a gevent Greenlet. It runs in the hub: never blocks or raises."""
        mapping = self._mappings.pop(id(greenlet), None)
        if mapping is not None:
            self._give_back(mapping)

    def _raw_greenlet_gone(self, key: int, hub: Any, gone: weakref.ref[Any]) -> None:
        """The weakref callback of a raw greenlet, run wherever it is freed.

        That may be in the middle of any code, so only the unmapping happens
        here; the client goes back from the hub's loop. Never raises.
        """
        mapping = self._mappings.get(key)
        if mapping is None or mapping.gone is not gone:
            return
        del self._mappings[key]
        try:
            hub.loop.run_callback_threadsafe(self._give_back, mapping)
        except Exception:  # the hub is gone, and with it the pool's thread
            log.debug("pool %r: cannot hand back %r", self._pool.name, mapping.entry.client)

    def _give_back(self, mapping: _Mapping[C]) -> None:
        """Hand an ended greenlet's client back, from the hub. Never raises."""
        # A block cannot outlive its greenlet; if one was left open anyway (a
        # generator suspended inside it), its client may still be used there:
        # never lend it again. Its later exit finds it returned already.
        broken = mapping.broken or ("interrupted" if mapping.depth else None)
        try:
            mapping.hand_back(self._pool, broken)
        except Exception:
            log.exception("pool %r: handing back %r failed", self._pool.name, mapping.entry.client)

    def _after_fork(self) -> None:
        """Forget the parent's greenlets: their clients share sockets with the parent.

        Idle ones go to take_back now, which closes the child's copy of the socket;
        one still inside a reserve block is closed when that block ends.
        """
        parents, self._mappings = self._mappings, {}
        self._epoch = _fork.epoch
        for mapping in parents.values():
            if not mapping.depth:
                self._give_back(mapping)
