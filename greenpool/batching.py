"""AutoBatcher: the gets of many greenlets in one hub loop iteration, sent as one multi-key get.

The pattern is graphql's DataLoader (and emcache's autobatching): a caller's
keys join the *pending* batch, and the first key of a batch schedules a hub
callback, :meth:`AutoBatcher._flush`, which runs once the greenlets that the
hub is running in this loop iteration have asked for theirs. The flush takes
each key once, splits the keys into chunks of at most *max_keys*, and spawns a
greenlet per chunk that reserves a pooled client like any other reservation
(waiting in turn when none is free), sends one ``get``, and wakes the chunk's
callers with their results, in one hub callback per chunk::

    get(key) -> check the key (a bad one raises here, in its own caller)
             -> alone? nothing pending, nothing in flight: the plain call, now
             -> join the pending batch; its first key schedules _flush; wait
    _flush (hub) -> dedup, chunks of max_keys -> a greenlet per chunk (_fetch)
    _fetch -> pool.reserve() -> client.get_many(chunk) -> _wake its callers (hub)

Callers never touch a socket while they wait, so a caller's ``gevent.Timeout``
or kill withdraws only its own interest: the chunk goes on, and its client is
put back, or discarded, by the reservation exactly as any other. A chunk's
error (a socket timeout, a server gone, :class:`~greenpool.PoolTimeout`, a
closed pool) reaches that chunk's callers and no one else. The parts of a
batch are in :mod:`greenpool._batch`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Optional, TypedDict

from gevent import get_hub, spawn_raw
from gevent.hub import Waiter
from gevent.monkey import get_original
from pymemcache.exceptions import MemcacheServerError

from greenpool import _fork
from greenpool._batch import MISS, Call, Caller, Key, Splitting, answered, chunks, collect, fetch
from greenpool._checks import CheckedKeys, check_bool, check_key_prefix, check_size
from greenpool.connection import Client
from greenpool.errors import PoolError
from greenpool.pool import ClientPool

__all__ = ["DEFAULT_AUTOBATCH", "DEFAULT_MAX_KEYS", "AutoBatcher", "BatchStats"]

#: Whether PooledClient and HashClient batch their gets unless told.
DEFAULT_AUTOBATCH = True
#: Default *max_keys*: the most keys in one ``get`` command (README.rst, "Autobatching").
DEFAULT_MAX_KEYS = 128

_thread_ident = get_original("_thread", "get_ident")
_monotonic = time.monotonic


class BatchStats(TypedDict):
    """What :meth:`AutoBatcher.stats` returns; README.rst documents each key."""

    batches: int
    batches_alone: int
    batch_commands: int
    keys_asked: int
    keys_sent: int
    keys_per_batch: float
    keys_retried: int


class AutoBatcher:
    """Batch the gets of concurrent greenlets into multi-key gets on *pool*'s clients.

    *pool* is a :class:`~greenpool.ClientPool` of pymemcache clients.
    :meth:`get`, :meth:`gets`, :meth:`get_many` and :meth:`gets_many` take
    pymemcache's arguments and return or raise exactly what the same call on
    one of the pool's clients would. The gets asked for in one hub loop
    iteration go out together, each key once, in commands of at most
    *max_keys* keys that run in parallel, each on a client reserved from *pool*
    (waiting up to the pool's *timeout*, in turn). A get that finds nothing
    pending and nothing in flight is sent at once, as the plain call would be.
    *key_prefix* and *allow_unicode_keys* must be the clients' own: keys are
    checked with them before they join a batch.

    >>> import gevent
    >>> pool = ClientPool(client_factory(memcached_address), maxsize=4)
    >>> batcher = AutoBatcher(pool)
    >>> with pool.reserve() as mc:
    ...     mc.set_many({"b1": "one", "b2": "two"}, noreply=False)
    []
    >>> jobs = [gevent.spawn(batcher.get, key) for key in ("b1", "b2", "b1", "nope")]
    >>> [job.get() for job in jobs]
    [b'one', b'two', b'one', None]
    >>> batcher.get_many(["b1", "b2", "nope"])
    {'b1': b'one', 'b2': b'two'}
    >>> batcher.stats()["keys_asked"]
    7

    It belongs to the OS thread that first uses it, as the pool does, and
    after a fork the child starts with nothing pending.
    """

    def __init__(
        self,
        pool: ClientPool[Any],
        *,
        max_keys: int = DEFAULT_MAX_KEYS,
        key_prefix: bytes | str = b"",
        allow_unicode_keys: bool = False,
    ) -> None:
        if not isinstance(pool, ClientPool):
            raise TypeError(f"pool must be a greenpool ClientPool, not {type(pool).__name__}")
        key_prefix = check_key_prefix(key_prefix)
        check_bool("allow_unicode_keys", allow_unicode_keys)
        self.pool = pool
        self.max_keys = check_size("max_keys", max_keys)
        self.key_prefix = key_prefix
        self.allow_unicode_keys = allow_unicode_keys
        self._pending: dict[bytes, Key] = {}
        self._checked = CheckedKeys(key_prefix, allow_unicode_keys)
        self._cas = False  # a gets is pending
        self._running = 0  # plain calls, chunks and callers still to wake
        self._thread: Optional[int] = None
        self._epoch = _fork.epoch
        self._hub: Any = None
        self._batches = self._alone_calls = self._commands = self._asked = self._sent = 0
        self._retried = 0
        self._splitting = Splitting()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.pool!r} max_keys={self.max_keys}>"

    def stats(self) -> BatchStats:
        """Return the batcher's counters (README.rst, "Autobatching")."""
        return BatchStats(
            batches=self._batches,
            batches_alone=self._alone_calls,
            batch_commands=self._commands,
            keys_asked=self._asked,
            keys_sent=self._sent,
            keys_per_batch=self._sent / self._batches if self._batches else 0.0,
            keys_retried=self._retried,
        )

    # -- the callers' side -------------------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """pymemcache's ``Client.get``, in a batch with the other greenlets' gets."""
        if self._thread != _thread_ident() or self._epoch != _fork.epoch:
            self._adopt()
        self._asked += 1
        if not self._running and not self._pending:
            return self._alone(1, "get", key, default)
        waiter = Waiter(self._hub)
        entry = self._join(self._check(key), key, waiter, False)
        outcome = waiter.get()  # an interruption leaves: the chunk wakes no one then
        if outcome is not None:
            raise outcome
        item = entry.item
        if item is MISS:
            return default
        if entry.cas:
            item = item[0]
        return item if entry.serde is None else entry.serde.deserialize(key, *item)

    def gets(self, key: Any, default: Any = None, cas_default: Any = None) -> tuple[Any, Any]:
        """pymemcache's ``Client.gets``, in a batch with the other greenlets' gets."""
        if self._thread != _thread_ident() or self._epoch != _fork.epoch:
            self._adopt()
        self._asked += 1
        if not self._running and not self._pending:
            return self._alone(1, "gets", key, default, cas_default)  # type: ignore[no-any-return]
        waiter = Waiter(self._hub)
        entry = self._join(self._check(key), key, waiter, True)
        outcome = waiter.get()
        if outcome is not None:
            raise outcome
        if entry.item is MISS:
            return default, cas_default
        value, cas = entry.item
        return (value if entry.serde is None else entry.serde.deserialize(key, *value)), cas

    def get_many(self, keys: Iterable[Any]) -> dict[Any, Any]:
        """pymemcache's ``Client.get_many``: its keys join the batch."""
        return self._many(keys, False)

    get_multi = get_many

    def gets_many(self, keys: Iterable[Any]) -> dict[Any, tuple[Any, Any]]:
        """pymemcache's ``Client.gets_many``: its keys join the batch."""
        return self._many(keys, True)

    def _many(self, keys: Iterable[Any], cas: bool) -> dict[Any, Any]:
        if self._thread != _thread_ident() or self._epoch != _fork.epoch:
            self._adopt()
        keys = list(keys)  # iterated twice, as pymemcache does, so no generator
        if not keys:
            return {}
        self._asked += len(keys)
        if not self._running and not self._pending:  # pymemcache sends a repeated key again
            found: dict[Any, Any] = self._alone(len(keys), "gets_many" if cas else "get_many", keys)
            return found
        wires = [self._check(key) for key in keys]  # all checked before any joins
        # As pymemcache's _fetch_cmd: one entry per distinct key, named by its last spelling.
        named = dict(zip(wires, keys, strict=True))
        call = Call(Waiter(self._hub), len(named))
        joined = [(key, self._join(wire, key, call, cas)) for wire, key in named.items()]
        try:
            outcome = call.waiter.get()
        except BaseException:  # a Timeout or kill: withdraw, so no other chunk wakes it
            call.done = True
            raise
        if outcome is not None:
            raise outcome
        return collect(joined, cas)

    def _check(self, key: Any) -> bytes:
        """The key as sent (pymemcache's check, with the clients' prefix), or raise
        MemcacheIllegalInputError in the caller, before the key joins anything."""
        wire = self._checked(key)
        if key.__class__ is not str and key.__class__ is not bytes:
            hash(key)  # pymemcache names its results by the key: an unhashable one fails
        return wire

    def _join(self, wire: bytes, key: Any, call: Caller, cas: bool) -> Key:
        pending = self._pending
        entry = pending.get(wire)
        if entry is None:
            if not pending:
                self._hub.loop.run_callback(self._flush)
            entry = pending[wire] = Key(wire, key, cas, call)
        else:
            entry.calls.append(call)
            if cas:
                entry.cas = True
        if cas:
            self._cas = True
        return entry

    def _alone(self, keys: int, method: str, *args: Any) -> Any:
        """The plain call on a reserved client, for a caller with no one to batch
        with: a batch of its own, running while it runs."""
        epoch = self._epoch
        self._running += 1
        self._batches += 1
        self._alone_calls += 1
        self._commands += 1
        self._sent += keys
        try:
            with self.pool.reserve() as client:
                return getattr(client, method)(*args)
        finally:
            if epoch == _fork.epoch:  # else it forked meanwhile, and _adopt reset _running
                self._running -= 1

    # -- the hub's side and the chunks' ------------------------------------------------

    def _flush(self) -> None:
        """Send the pending batch (a hub callback): each key once, in chunks that
        run in parallel, gets apart from gets (whose keys carry cas)."""
        if self._epoch != _fork.epoch:
            self._adopt()  # the child: pending keys were the parent's, failed there
            return
        pending, self._pending = self._pending, {}
        entries = list(pending.values())
        groups = [(entries, False)]
        if self._cas:
            self._cas = False
            groups = [
                ([e for e in entries if not e.cas], False),
                ([e for e in entries if e.cas], True),
            ]
        self._batches += 1
        self._sent += len(entries)
        for group, cas in groups:
            for chunk in chunks(group, self.max_keys) if group else ():
                self._running += 1
                self._commands += 1
                spawn_raw(self._fetch, chunk, cas)

    def _fetch(self, chunk: list[Key], cas: bool) -> None:
        """One chunk, in a greenlet of its own: reserve, get, wake its callers."""
        epoch = _fork.epoch
        interrupted: Optional[BaseException] = None
        error: Optional[BaseException] = None
        try:
            self._get(chunk, cas)
        except Exception as exc:
            error = exc
        except BaseException as exc:  # killed: no caller may see a GreenletExit
            interrupted = exc
            error = PoolError(f"a batch of pool {self.pool.name!r} was interrupted: {exc!r}")
        if epoch != _fork.epoch:
            error = PoolError(f"the process forked while a batch of pool {self.pool.name!r} ran")
        ready = answered(chunk, error)
        self._hub.loop.run_callback(self._wake, ready, epoch)
        if interrupted is not None:
            raise interrupted

    def _get(self, chunk: list[Key], cas: bool) -> None:
        """Get *chunk*'s keys on a reserved client: in one multi-key get, or key by
        key while a proxy fails multi-key gets whole (see _batch.Splitting). A
        multi-key get that fails so is asked again key by key, once, so that each
        caller gets what its own unbatched get would."""
        splitting = self._splitting
        each = len(chunk) > 1 and splitting.each(_monotonic())
        retry = False
        try:
            with self.pool.reserve() as client:
                self._check_client(client)
                retry = each is not True and len(chunk) > 1 and isinstance(client, Client)
                fetch(client, chunk, cas, each is True)
        except MemcacheServerError:
            if not retry:
                raise
            splitting.failed(_monotonic())
        else:
            return
        finally:
            if each is None and splitting.probing:  # the probe ended otherwise: done
                splitting.probed()
        self._retried += len(chunk)
        with self.pool.reserve() as client:  # the one that failed was cut: another
            fetch(client, chunk, cas, True)

    def _check_client(self, client: Any) -> None:
        """Keys were checked with the batcher's settings: the client's must match."""
        if (
            client.key_prefix != self.key_prefix
            or client.allow_unicode_keys != self.allow_unicode_keys
        ):
            raise ValueError(
                f"the clients of pool {self.pool.name!r} have key_prefix={client.key_prefix!r} "
                f"and allow_unicode_keys={client.allow_unicode_keys}; the AutoBatcher was given "
                f"key_prefix={self.key_prefix!r} and allow_unicode_keys={self.allow_unicode_keys}"
            )

    def _wake(self, ready: list[tuple[Waiter, Optional[BaseException]]], epoch: int) -> None:
        """Wake a chunk's callers, each with its error or None (a hub callback).
        Each one woken sees the callers still to wake as running, so it batches
        with them rather than go alone."""
        counted = epoch == _fork.epoch
        if counted:
            self._running += len(ready) - 1
        for waiter, error in ready:
            if counted:
                self._running -= 1
            waiter.switch(error)

    # -- owner: thread and process ---------------------------------------------------------

    def _adopt(self) -> None:
        """Bind to this thread's hub on first use, if the pool belongs to it (or to
        no thread yet); after a fork, start empty."""
        if self._epoch != _fork.epoch:
            self._epoch = _fork.epoch
            self._thread = None
            pending, self._pending = self._pending, {}
            self._running = 0
            self._cas = False
            forked = PoolError(
                f"the process forked while a batch of pool {self.pool.name!r} waited"
            )
            ready = answered(pending.values(), forked)
            if ready:
                get_hub().loop.run_callback(self._wake, ready, -1)
        ident = _thread_ident()
        if self._thread is None:
            self.pool.claim()  # PoolError if the pool belongs to another thread
            self._thread = ident
            self._hub = get_hub()
        elif self._thread != ident:
            raise PoolError(
                f"the AutoBatcher of pool {self.pool.name!r} belongs to thread {self._thread} "
                f"(its gevent hub) and was used from thread {ident}; create one per thread"
            )
