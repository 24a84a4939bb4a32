"""What the pool knows of each client, and how a reservation ended.

The pool keeps each client in an :class:`Entry` with its history: the process
generation and connection generation it belongs to, when it expires, when it
was last lent or returned.
"""

from __future__ import annotations

from typing import Any, Generic, Optional, TypeVar

from pymemcache.exceptions import (
    MemcacheError,
    MemcacheIllegalInputError,
    MemcacheUnexpectedCloseError,
)

C = TypeVar("C")

# The server went away: a restart, a crash, a cut network. Other idle
# connections made before this failure are likely dead too.
_SERVER_GONE = (
    ConnectionResetError,
    ConnectionRefusedError,
    BrokenPipeError,
    MemcacheUnexpectedCloseError,
)


class Entry(Generic[C]):
    """A pooled client and its history."""

    __slots__ = ("client", "epoch", "expires", "generation", "leak", "since")

    def __init__(self, client: C, epoch: int, generation: int, expires: float) -> None:
        self.client = client
        #: The process generation (greenpool._fork.epoch) it was created in.
        self.epoch = epoch
        #: The pool's connection generation when it last (re)connected.
        self.generation = generation
        #: time.monotonic() after which it is not lent again (max_lifetime).
        self.expires = expires
        #: time.monotonic() when it was last lent, or last returned.
        self.since = 0.0
        #: The leak-warning timer while it is lent, if leak_warning_after is set.
        self.leak: Optional[Any] = None


def failure(exc_type: type[BaseException]) -> Optional[str]:
    """Return why leaving a reservation by *exc_type* costs the client, or None.

    ``"interrupted"``: a BaseException that is not an Exception
    (``gevent.Timeout``, ``GreenletExit``, ``KeyboardInterrupt``) can arrive
    while a command is half sent or its reply half read, and pymemcache does not
    clean up after those, so the socket may hold another command's reply.
    ``"error"``: a socket or protocol error leaves the connection unknown too.
    ``None``: invalid input is rejected before anything is sent, and any other
    exception is the application's, raised between complete commands.
    """
    if not issubclass(exc_type, Exception):
        return "interrupted"
    if issubclass(exc_type, (OSError, MemcacheError)) and not issubclass(
        exc_type, MemcacheIllegalInputError
    ):
        return "error"
    return None


def server_gone(exc_type: type[BaseException]) -> bool:
    """Whether *exc_type* says the server dropped or refused the connection."""
    return issubclass(exc_type, _SERVER_GONE)
