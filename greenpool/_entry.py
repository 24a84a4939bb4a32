"""What the pool knows of each client, and whether a returned one may be lent again.

The pool keeps each client in an :class:`Entry` with its history: the process
generation it belongs to, when it expires, when it was last lent or returned,
and how its connection can be checked.

Whether a client comes back fit to lend again is, for greenpool's own
:class:`~greenpool.Client`, a fact the client keeps (:func:`spoiled`); for any
other client, a guess from the exception that ended its reservation
(:func:`failure`).
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, Generic, Optional, TypeVar

from gevent.monkey import get_original
from pymemcache.client.base import Client as _PymemcacheClient
from pymemcache.exceptions import MemcacheError, MemcacheIllegalInputError

from greenpool.connection import Client

C = TypeVar("C")
_poll = get_original("select", "poll")  # poll(2) itself: a zero timeout never blocks


class Entry(Generic[C]):
    """A pooled client and its history."""

    __slots__ = ("client", "epoch", "expires", "leak", "lender", "probe", "since", "tracked")

    def __init__(self, client: C, epoch: int, expires: float) -> None:
        self.client = client
        #: The process generation (greenpool._fork.epoch) it was created in.
        self.epoch = epoch
        #: time.monotonic() after which it is not lent again (max_lifetime).
        self.expires = expires
        #: time.monotonic() when it was last lent, or last returned.
        self.since = 0.0
        #: The leak-warning timer while it is lent, if leak_warning_after is set.
        self.leak: Optional[Any] = None
        #: The pool that lent it, while it is lent.
        self.lender: Optional[object] = None
        #: Whether the client keeps its connection's state itself (greenpool.Client).
        self.tracked = isinstance(client, Client)
        #: Checks, with no round trip, whether the idle connection has been
        #: closed or holds bytes nobody asked for (pymemcache clients only).
        self.probe: Optional[Callable[[], bool]] = None
        if self.tracked:
            self.probe = client.unread  # type: ignore[attr-defined]
        elif isinstance(client, _PymemcacheClient):
            self.probe = lambda: unread(client)


def spoiled(entry: Entry[Any], exc_type: Optional[type[BaseException]]) -> Optional[str]:
    """Return why *entry*'s client may not be lent again after a reservation that
    *exc_type* ended (``None``: it ended normally), or ``None`` if it may.

    A greenpool client knows: it is spoiled if a command of it is still running
    (another greenlet uses it) or one was cut off, whatever exception, if any,
    left the block. Any other client is judged by :func:`failure`.
    """
    if entry.tracked:
        client: Any = entry.client
        if client.busy:
            return "interrupted"
        if client.cut_by is not None:
            return "interrupted" if not issubclass(client.cut_by, Exception) else "error"
        return None
    return None if exc_type is None else failure(exc_type)


def failure(exc_type: type[BaseException]) -> Optional[str]:
    """Return why leaving a reservation by *exc_type* costs a client that does not
    track its own connection, or None.

    ``"interrupted"``: a BaseException that is not an Exception
    (``gevent.Timeout``, ``GreenletExit``, ``KeyboardInterrupt``) can arrive
    while a command is half sent or its reply half read, and pymemcache does not
    clean up after those, so the socket may hold another command's reply.
    ``"error"``: a socket or protocol error leaves the connection unknown too.
    ``None``: invalid input is rejected before anything is sent, and any other
    exception is taken for the application's, raised between complete commands.
    """
    if not issubclass(exc_type, Exception):
        return "interrupted"
    if issubclass(exc_type, (OSError, MemcacheError)) and not issubclass(
        exc_type, MemcacheIllegalInputError
    ):
        return "error"
    return None


def unread(client: Any) -> bool:
    """Whether a pymemcache client's idle connection is readable: closed by the
    server, or holding bytes nobody asked for (see :meth:`Client.unread`)."""
    sock = client.sock
    if sock is None:
        return False
    pending = getattr(sock, "pending", None)  # TLS: bytes decrypted already
    if pending is not None and pending():
        return True
    poller = _poll()
    poller.register(sock.fileno(), select.POLLIN)
    return bool(poller.poll(0))
