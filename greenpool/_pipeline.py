"""A pipeline: several commands in one write on one connection, their replies read in order.

memcached answers the commands of one connection in the order they came, so
commands of many callers can go out together and each reply be read by its
own command's reader, the same reader the command uses alone
(:meth:`greenpool.Client._exchange`). :func:`run` keeps the connection's
promise for all of them at once:

- the connection is busy from the write until the last reply is read;
- a complete error reply (``SERVER_ERROR``; ``CLIENT_ERROR`` for an incr or
  decr) is its own command's outcome, and the pipeline reads on;
- anything else that ends a reader early (a socket error or timeout, a reply
  that fits no reply of its command, an interruption) cuts the connection
  there, and every command whose reply was not read is left unanswered: the
  caller of each gets the error, never another command's reply;
- bytes past the last reply cut it too.

Errors name the server, as a command's alone do (:mod:`greenpool._named`).

A noreply command's reader reads nothing, so it takes its place in the
pipeline without a reply.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Optional

from greenpool._named import naming
from greenpool._reply import IN_STEP
from greenpool.connection import Client

__all__ = ["Op", "run"]

log = logging.getLogger("greenpool")


class Op:
    """One command of a pipeline: its bytes, its reply's reader, and its outcome.

    *waiter* is its caller's (``None``: nobody waits); *follow_up* is called with
    the result if the caller left before it came (a ``gevent.Timeout``, a kill),
    to do what the caller would have done with it (give back a lease it won).
    """

    __slots__ = (
        "abandoned", "cmd", "done", "error", "follow_up", "noreply", "read", "result", "waiter",
    )  # fmt: skip

    def __init__(
        self,
        cmd: bytes,
        read: Callable[[Any], tuple[Any, bytes]],
        waiter: Any,
        noreply: bool = False,
        follow_up: Optional[Callable[[Any], None]] = None,
    ) -> None:
        self.cmd = cmd
        self.read = read
        self.waiter = waiter  # the caller's, woken with the outcome
        self.noreply = noreply  # read reads nothing: answered once sent
        self.follow_up = follow_up
        self.abandoned = False  # the caller left before its outcome came
        self.done = False  # its reply was read: result or error
        self.result: Any = None
        self.error: Optional[BaseException] = None

    def switch(self, error: Optional[BaseException]) -> None:
        """Hand the outcome to the caller, with *error* if the pipeline failed
        before this op's reply was read (a hub callback). If nobody waits for it
        any more: its follow-up, or a debug log line for an error."""
        waiter = self.waiter
        if waiter is not None and not self.abandoned:
            waiter.switch(error)
            return
        error = error or self.error
        if error is not None:
            log.debug("a command nobody waits for any more failed: %r", error)
        elif self.follow_up is not None:
            self.follow_up(self.result)


class _Replay:
    """The connection as a reader sees it: first the bytes the previous reader
    read past its reply, then the socket."""

    __slots__ = ("pending", "sock")

    def __init__(self, sock: Any) -> None:
        self.sock = sock
        self.pending = b""

    def recv(self, size: int) -> bytes:
        pending = self.pending
        if pending:
            self.pending = b""
            return pending
        data: bytes = self.sock.recv(size)
        return data


def run(client: Client, ops: list[Op], sent: Optional[Callable[[list[Op]], None]] = None) -> None:
    """Send *ops* on *client* in one write and read each reply in order, recording
    each op's outcome (``done``, then ``result`` or ``error``). Once the write is
    done, the noreply ops are answered and given to *sent*. Whatever cuts the
    pipeline short closes the connection and is raised; the ops not ``done``
    then have no reply of their own."""
    sock = client._start()
    try:
        sock.sendall(b"".join([op.cmd for op in ops]))
        replay = _Replay(sock)
        unanswered = [op for op in ops if op.noreply]
        for op in unanswered:
            op.result, _ = op.read(replay)  # reads nothing
            op.done = True
        if unanswered and sent is not None:
            sent(unanswered)
        for op in ops:
            if op.noreply:
                continue
            try:
                op.result, rest = op.read(replay)
            except Exception as exc:
                past: Optional[bytes] = getattr(exc, IN_STEP, None)
                if past is None:
                    raise
                op.error, rest = exc, past
            op.done = True
            replay.pending = rest + replay.pending
        client._done(replay.pending)
    except BaseException as exc:
        client._cut(exc)
        named = naming(exc, client.server)
        if named is None:
            raise
        raise named from exc
