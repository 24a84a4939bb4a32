"""AutoBatcher: what many greenlets ask in one hub loop iteration, sent together.

The pattern is graphql's DataLoader (and emcache's autobatching, and ioredis's
and rueidis's auto-pipelining): a caller's keys join the *pending* batch, and
its other commands (sets, deletes, incrs, touches) the pending pipeline; the
first of them schedules a hub callback, which runs once the greenlets that the
hub is running in this loop iteration have asked for theirs. Then each key goes
out once, in multi-key gets of at most *max_keys* keys, and the commands in
order, each pipeline of them and of one get in one write on one reserved client
(:mod:`greenpool._dispatch`)::

    get(key), set(...) -> checks (a bad key raises here, in its own caller)
                       -> alone? nothing pending, nothing in flight: the plain call, now
                       -> join what is pending; the first schedules the flush; wait
    flush (hub) -> pipelines of commands and a chunk of keys, each on a client
                -> each caller woken with its own outcome

Callers never touch a socket while they wait, so a caller's ``gevent.Timeout``
or kill withdraws only its own interest: the pipeline goes on, and its client
is put back, or discarded, by the reservation exactly as any other. A
pipeline's failure (a socket timeout, a server gone, :class:`~greenpool.PoolTimeout`,
a closed pool) reaches the callers whose replies it did not read, and no one
else; a complete error reply (``SERVER_ERROR``) is its own command's. The
parts of a batch are in :mod:`greenpool._batch`, a pipeline's reading in
:mod:`greenpool._pipeline`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Optional, TypedDict, TypeVar

from gevent.hub import Waiter
from gevent.monkey import get_original

from greenpool import _fork
from greenpool._batch import MISS, Call, Caller, Key, Splitting, collect
from greenpool._checks import CheckedKeys, check_bool, check_key_prefix, check_size
from greenpool._dispatch import Dispatch
from greenpool._pipeline import Op
from greenpool.pool import ClientPool

__all__ = ["DEFAULT_AUTOBATCH", "DEFAULT_MAX_KEYS", "AutoBatcher", "BatchStats"]

#: Whether PooledClient and HashClient batch their gets unless told.
DEFAULT_AUTOBATCH = True
#: Default *max_keys*: the most keys in one ``get`` command (the "Autobatching" page).
DEFAULT_MAX_KEYS = 128

_thread_ident = get_original("_thread", "get_ident")
T = TypeVar("T")


class BatchStats(TypedDict):
    """What :meth:`AutoBatcher.stats` returns; the "Autobatching" page documents each."""

    batches: int
    batches_alone: int
    batch_commands: int
    keys_asked: int
    keys_sent: int
    keys_per_batch: float
    keys_retried: int
    pipelines: int
    commands_pipelined: int


class AutoBatcher(Dispatch):
    """Batch the gets and pipeline the commands of concurrent greenlets on *pool*'s clients.

    *pool* is a :class:`~greenpool.ClientPool` of pymemcache clients.
    :meth:`get`, :meth:`gets`, :meth:`get_many` and :meth:`gets_many` take
    pymemcache's arguments and return or raise exactly what the same call on
    one of the pool's clients would. The gets asked for in one hub loop
    iteration go out together, each key once, in commands of at most
    *max_keys* keys that run in parallel, each on a client reserved from *pool*
    (waiting up to the pool's *timeout*, in turn). A get that finds nothing
    pending and nothing in flight is sent at once, as the plain call would be.
    *key_prefix* and *allow_unicode_keys* must be the clients' own: keys are
    checked with them before they join a batch. :meth:`run` pipelines any other
    command of a :class:`~greenpool.Client` (a :class:`~greenpool.PooledClient`
    sends its writes so).

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

    It belongs to the OS thread its pool belongs to, and after a fork the child
    starts with nothing pending.
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
        self._pending = {}
        self._ops = []
        self._scheduled = False  # a flush is due
        #: The key check, remembered (CheckedKeys): the key as sent, or raise.
        self.checked = CheckedKeys(key_prefix, allow_unicode_keys)
        self._known = self.checked.known
        self._cas = False  # a gets is pending
        self._running = 0  # plain calls, pipelines and callers still to wake
        self._thread = None
        self._epoch = _fork.epoch
        self._hub = None
        self._batches = self._alone_calls = self._commands = self._asked = self._sent = 0
        self._retried = self._pipelines = self._piped = 0
        self._splitting = Splitting()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.pool!r} max_keys={self.max_keys}>"

    def stats(self) -> BatchStats:
        """Return the batcher's counters (the "Autobatching" page)."""
        return BatchStats(
            batches=self._batches,
            batches_alone=self._alone_calls,
            batch_commands=self._commands,
            keys_asked=self._asked,
            keys_sent=self._sent,
            keys_per_batch=self._sent / self._batches if self._batches else 0.0,
            keys_retried=self._retried,
            pipelines=self._pipelines,
            commands_pipelined=self._piped,
        )

    # -- the callers' side -------------------------------------------------------------

    def get(self, key: Any, default: Any = None) -> Any:
        """pymemcache's ``Client.get``, in a batch with the other greenlets' gets."""
        if self._thread != _thread_ident() or self._epoch != _fork.epoch:
            self._adopt()
        self._asked += 1
        if not self._running and not self._scheduled:
            return self._alone(1, "get", key, default)
        waiter = Waiter(self._hub)
        wire = self._known.get(key) or self._check(key)  # the memo of CheckedKeys, inlined
        entry = self._pending.get(wire)  # _join's, inlined: gets are the hot path
        if entry is None:
            if not self._scheduled:
                self._schedule()
            entry = self._pending[wire] = Key(wire, key, False, waiter)
        else:
            entry.calls.append(waiter)
        outcome = waiter.get()  # an interruption leaves: the pipeline wakes no one then
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
        if not self._running and not self._scheduled:
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

    def run(
        self,
        cmd: bytes,
        read: Callable[[Any], tuple[T, bytes]],
        noreply: bool = False,
        follow_up: Optional[Callable[[T], None]] = None,
    ) -> T:
        """Send *cmd*, a command a :class:`~greenpool.Client` built, in the pending
        pipeline, and return what *read*, its reply's reader, makes of its reply
        (as ``Client._exchange`` does for one command alone); a *noreply* command
        returns once it is sent. If the caller leaves before the result comes (a
        ``gevent.Timeout``, a kill), ``follow_up(result)`` runs instead, in the
        hub: then the command never goes alone, so no interruption can cut it."""
        if self._thread != _thread_ident() or self._epoch != _fork.epoch:
            self._adopt()
        if follow_up is None and not self._running and not self._scheduled:
            return self._alone(0, "_exchange", cmd, read, built=True)  # type: ignore[no-any-return]
        op = Op(cmd, read, Waiter(self._hub), noreply, follow_up)
        self._enqueue(op)
        try:
            outcome = op.waiter.get()
        except BaseException:  # a Timeout or kill: the follow-up takes the result
            op.abandoned = True
            raise
        if outcome is not None:
            raise outcome
        if op.error is not None:
            raise op.error
        result: T = op.result
        return result

    def post(self, cmd: bytes, read: Callable[[Any], tuple[Any, bytes]]) -> None:
        """Send *cmd* in the pending pipeline; nobody waits for its reply (an error
        is logged at debug level). Never blocks: fit for a ``finally`` clause."""
        if self._thread != _thread_ident() or self._epoch != _fork.epoch:
            self._adopt()
        self._enqueue(Op(cmd, read, None))

    def _enqueue(self, op: Op) -> None:
        if not self._scheduled:
            self._schedule()
        self._ops.append(op)

    def _many(self, keys: Iterable[Any], cas: bool) -> dict[Any, Any]:
        if self._thread != _thread_ident() or self._epoch != _fork.epoch:
            self._adopt()
        keys = list(keys)  # iterated twice, as pymemcache does, so no generator
        if not keys:
            return {}
        self._asked += len(keys)
        if not self._running and not self._scheduled:  # pymemcache sends a repeated key again
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
        """The key as sent (checked as memcached parses it, with the clients'
        prefix), or raise MemcacheIllegalInputError in the caller, before the key
        joins anything."""
        wire = self.checked(key)
        if key.__class__ is not str and key.__class__ is not bytes:
            hash(key)  # pymemcache names its results by the key: an unhashable one fails
        return wire

    def _schedule(self) -> None:
        self._scheduled = True
        self._hub.loop.run_callback(self._flush)

    def _join(self, wire: bytes, key: Any, call: Caller, cas: bool) -> Key:
        pending = self._pending
        entry = pending.get(wire)
        if entry is None:
            if not self._scheduled:
                self._schedule()
            entry = pending[wire] = Key(wire, key, cas, call)
        else:
            entry.calls.append(call)
            if cas:
                entry.cas = True
        if cas:
            self._cas = True
        return entry

    def _alone(self, keys: int, method: str, *args: Any, built: bool = False) -> Any:
        """The plain call on a reserved client, for a caller with no one to batch
        with: a batch of its own, running while it runs. A command *built* by a
        greenpool Client needs one of those to run on."""
        epoch = self._epoch
        self._running += 1
        self._batches += 1
        self._alone_calls += 1
        self._commands += keys > 0
        self._sent += keys
        try:
            with self.pool.reserve() as client:
                if built:
                    self._check_client(client, pipelined=True)
                return getattr(client, method)(*args)
        finally:
            if epoch == _fork.epoch:  # else it forked meanwhile, and _adopt reset _running
                self._running -= 1
