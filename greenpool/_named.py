"""Errors that say which memcached server they came from.

A socket error reads ``[Errno 111] Connection refused`` or ``timed out``; with
several servers nobody can tell which one failed. :func:`naming` makes a copy
of such an error that names the server (``host:port``, or the socket path) in
its message and keeps everything an ``except`` clause or a handler looks at:
the same class, ``errno``, the other arguments and attributes. The client
raises the copy ``from`` the original, so tracebacks still show where it began.

Only ``OSError`` (the socket's errors: refused, reset, timed out, a name that
does not resolve, TLS) and pymemcache's ``MemcacheError`` (memcached's error
replies, a connection closed mid-reply) are named; any other exception, a
serde's for instance, is the application's and passes as it is.
"""

from __future__ import annotations

from typing import Any, Optional, TypeVar

from pymemcache.exceptions import (
    MemcacheError,
    MemcacheIllegalInputError,
    MemcacheUnexpectedCloseError,
)

__all__ = ["mark", "naming", "server_name"]

E = TypeVar("E", bound=BaseException)

# What an error raised without a message says happened.
_NO_MESSAGE = {MemcacheUnexpectedCloseError: "the connection was closed"}
# Set on every error that names its server already, so it is named only once.
_NAMED = "_greenpool_server"


def server_name(server: Any) -> str:
    """*server* as HashClient names its nodes: ``"host:port"``, or the socket path."""
    if isinstance(server, tuple) and len(server) == 2:
        return f"{server[0]}:{server[1]}"
    return str(server)


def naming(exc: BaseException, server: Any, doing: str = "memcached at") -> Optional[BaseException]:
    """A copy of *exc* whose message ends with ``(<doing> <server>)``, or ``None``
    when *exc* is not an error to name (or names its server already, or cannot be
    rebuilt, which leaves it as it was)."""
    if getattr(exc, _NAMED, None) is not None or not isinstance(exc, (OSError, MemcacheError)):
        return None
    if isinstance(exc, MemcacheIllegalInputError):  # bad input, never sent: no server involved
        return None
    where = server_name(server)
    suffix = f" ({doing} {where})"
    args = list(exc.args)
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror is not None:
        args = [exc.errno, f"{exc.strerror}{suffix}"]
        if exc.filename is not None or exc.filename2 is not None:
            args += [exc.filename, None, exc.filename2]  # OSError's 3rd and 5th arguments
    elif args and isinstance(args[0], bytes):  # pymemcache's error replies are bytes
        args[0] = args[0] + suffix.encode()
    elif args and isinstance(args[0], str):
        args[0] = f"{args[0]}{suffix}"
    else:  # no message: pymemcache's MemcacheUnexpectedCloseError() has none
        args.insert(0, f"{_NO_MESSAGE.get(type(exc), type(exc).__name__)}{suffix}")
    try:
        named = type(exc)(*args)
    except Exception:  # a constructor of its own: leave the error alone
        return None
    named.__dict__.update(exc.__dict__)  # TLS errors' library and reason, for one
    mark(named, where)
    return named


def mark(exc: E, where: str) -> E:
    """Record that *exc* names its server (*where*) already; return it."""
    setattr(exc, _NAMED, where)
    return exc
