"""The hub's side of an AutoBatcher: what one loop iteration asked for goes out as pipelines.

:meth:`Dispatch._flush` runs as a hub callback once the greenlets the hub ran
in this loop iteration have asked for theirs. It takes each pending key once,
in chunks of at most *max_keys*, and the pending commands (sets, deletes,
incrs...) in groups of at most *max_keys*, and spawns a greenlet per pipeline:
a group of commands and a chunk of keys, sent in one write on one reserved
client, the chunk's ``get`` last (:meth:`Dispatch._pipeline`)::

    _flush (hub) -> chunks of keys, groups of commands -> a greenlet per pipeline
    _pipeline -> pool.reserve() -> _pipeline.run(commands + the chunk's get)
              -> the get failed whole (a proxy's SERVER_ERROR)? its keys again, alone
              -> _wake each caller with its own outcome (hub)

The chunk's get goes last so that a proxy that fails it whole, and closes the
connection after, costs no command before it its reply. A pipeline's failure
reaches the callers whose replies it did not read, and no one else.
"""

from __future__ import annotations

import time
from typing import Any, Optional

from gevent import get_hub, spawn_raw
from gevent.monkey import get_original
from pymemcache.exceptions import MemcacheServerError

from greenpool import _fork
from greenpool._batch import Key, Splitting, chunks, exchange, fetch, record, wake
from greenpool._pipeline import Op, run
from greenpool.connection import Client
from greenpool.errors import PoolError
from greenpool.pool import ClientPool

__all__ = ["Dispatch"]

_monotonic = time.monotonic
_thread_ident = get_original("_thread", "get_ident")


class Dispatch:
    """The hub's side of :class:`~greenpool.AutoBatcher` (which see)."""

    pool: ClientPool[Any]
    max_keys: int
    key_prefix: bytes
    allow_unicode_keys: bool
    _pending: dict[bytes, Key]
    _ops: list[Op]
    _scheduled: bool
    _cas: bool
    _running: int
    _hub: Any
    _epoch: int
    _thread: Optional[int]
    _splitting: Splitting
    _batches: int
    _commands: int
    _sent: int
    _retried: int
    _pipelines: int
    _piped: int

    def _flush(self) -> None:
        """Send what is pending (a hub callback): each key once, in chunks that run
        in parallel, gets apart from gets (whose keys carry cas), and the commands
        in groups, each group in a pipeline with a chunk."""
        if self._epoch != _fork.epoch:
            self._adopt()  # the child: what was pending was the parent's, failed there
            return
        self._scheduled = False
        pending, self._pending = self._pending, {}
        ops, self._ops = self._ops, []
        entries = list(pending.values())
        groups = [(entries, False)]
        if self._cas:
            self._cas = False
            groups = [
                ([e for e in entries if not e.cas], False),
                ([e for e in entries if e.cas], True),
            ]
        gets = [
            (chunk, cas) for group, cas in groups if group for chunk in chunks(group, self.max_keys)
        ]
        writes = [ops[n : n + self.max_keys] for n in range(0, len(ops), self.max_keys)]
        self._batches += 1
        self._sent += len(entries)
        self._commands += len(gets)
        self._piped += len(ops)
        for n in range(max(len(gets), len(writes))):
            chunk, cas = gets[n] if n < len(gets) else (None, False)
            self._running += 1
            self._pipelines += 1
            spawn_raw(self._pipeline, writes[n] if n < len(writes) else [], chunk, cas)

    def _pipeline(self, ops: list[Op], chunk: Optional[list[Key]], cas: bool) -> None:
        """One pipeline, in a greenlet of its own: reserve, send, wake its callers."""
        epoch = _fork.epoch
        interrupted: Optional[BaseException] = None
        error: Optional[BaseException] = None
        try:
            self._send(ops, chunk, cas)
        except Exception as exc:
            error = exc
        except BaseException as exc:  # killed: no caller may see a GreenletExit
            interrupted = exc
            error = PoolError(f"a batch of pool {self.pool.name!r} was interrupted: {exc!r}")
        if epoch != _fork.epoch:
            error = PoolError(f"the process forked while a batch of pool {self.pool.name!r} ran")
            for op in ops:  # what was read came over a socket the parent shares
                op.done = op.noreply and op.done  # (noreply callers were answered once sent)
        self._hub.loop.run_callback(self._wake, chunk, ops, error, epoch)
        if interrupted is not None:
            raise interrupted

    def _send(self, ops: list[Op], chunk: Optional[list[Key]], cas: bool) -> None:
        """Send *ops*, then the get of *chunk*'s keys, on a reserved client, and
        record every outcome. The keys go in one multi-key get, or key by key
        while a proxy fails multi-key gets whole (see _batch.Splitting); a
        multi-key get that fails so is asked again key by key, once, so that each
        caller gets what its own unbatched get would."""
        splitting = self._splitting
        each = chunk is not None and len(chunk) > 1 and splitting.each(_monotonic())
        get: Optional[Op] = None
        try:
            with self.pool.reserve() as client:
                self._check_client(client, pipelined=bool(ops))
                if not isinstance(client, Client):  # gets only: see AutoBatcher
                    if chunk is not None:
                        fetch(client, chunk, cas)
                    return
                if chunk is None:
                    run(client, ops, self._sent_noreply)
                    return
                get = Op(*exchange(client, chunk, cas, each is True), None)
                run(client, [*ops, get], self._sent_noreply)
                if get.error is None:
                    record(client, chunk, cas, each is True, get.result)
                else:  # a complete error reply (to a get of one key): the chunk's
                    for entry in chunk:
                        entry.error = get.error
        except MemcacheServerError:
            if get is None or get.done or each is True or not all(op.done for op in ops):
                raise
            splitting.failed(_monotonic())  # the multi-key get failed whole
        else:
            return
        finally:
            if each is None and splitting.probing:  # the probe ended otherwise: done
                splitting.probed()
        assert chunk is not None
        self._retried += len(chunk)
        with self.pool.reserve() as client:  # the one that failed was cut: another
            fetch(client, chunk, cas, True)

    def _check_client(self, client: Any, pipelined: bool = False) -> None:
        """Keys were checked with the batcher's settings: the client's must match;
        and commands that were built for a pipeline need a greenpool Client."""
        if pipelined and not isinstance(client, Client):
            raise TypeError(
                f"the clients of pool {self.pool.name!r} are not greenpool Clients: "
                f"AutoBatcher.run needs them (its gets do not)"
            )
        if (
            client.key_prefix != self.key_prefix
            or client.allow_unicode_keys != self.allow_unicode_keys
        ):
            raise ValueError(
                f"the clients of pool {self.pool.name!r} have key_prefix={client.key_prefix!r} "
                f"and allow_unicode_keys={client.allow_unicode_keys}; the AutoBatcher was given "
                f"key_prefix={self.key_prefix!r} and allow_unicode_keys={self.allow_unicode_keys}"
            )

    def _sent_noreply(self, ops: list[Op]) -> None:
        """Noreply *ops* were sent: wake their callers now (a hub callback)."""
        self._running += 1  # until they are woken, as _wake counts
        self._hub.loop.run_callback(self._wake_sent, ops, _fork.epoch)

    def _wake_sent(self, ops: list[Op], epoch: int) -> None:
        for op in ops:
            op.switch(None)
        if epoch == _fork.epoch:
            self._running -= 1

    def _wake(
        self, chunk: Optional[list[Key]], ops: list[Op], error: Optional[BaseException], epoch: int
    ) -> None:
        """Wake a pipeline's callers (a hub callback): *chunk*'s with their keys'
        outcomes, *ops*' with theirs, or *error* for those the pipeline did not
        answer (noreply ops it sent were woken already). The pipeline counts as
        running until the last is woken, so each caller woken batches with the
        others rather than go alone."""
        if chunk:
            wake(chunk, error)
        for op in ops:
            if not (op.noreply and op.done):
                op.switch(None if op.done else error)
        if epoch == _fork.epoch:
            self._running -= 1

    def _adopt(self) -> None:
        """Bind to this thread's hub on first use, if the pool belongs to it (or to
        no thread yet); after a fork, start empty."""
        if self._epoch != _fork.epoch:
            self._epoch = _fork.epoch
            self._thread = None
            pending, self._pending = self._pending, {}
            ops, self._ops = self._ops, []
            self._running = 0
            self._cas = self._scheduled = False
            forked = PoolError(
                f"the process forked while a batch of pool {self.pool.name!r} waited"
            )
            if pending or ops:
                get_hub().loop.run_callback(self._wake, list(pending.values()), ops, forked, -1)
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
