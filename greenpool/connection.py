"""Client: a pymemcache ``Client`` that knows whether its connection is in step.

memcached answers each command in order on one connection, so a reply left
half read is read by the next command: another caller's data. pymemcache closes
its socket after an ``Exception``, but not after a BaseException
(``gevent.Timeout``, a kill, ``KeyboardInterrupt``) that lands between its reads
(in a deserializer that yields, say), and it drops any bytes it read past the
end of a reply. This client keeps the state of its connection as a fact:

- before anything is sent (key, integer and flag checks, serialization), an
  error leaves the connection as it was;
- from the first byte sent until the reply is read to its end, the command is
  unfinished (:attr:`Client.busy`). Whatever ends it early (any exception, from
  the socket, the parser, or a serde that decodes while the reply is read,
  caught by the caller or not) closes the connection at once and is recorded in
  :attr:`Client.cut_by`; the pool then never lends the client again;
- get and gets read their whole reply before they decode it
  (:mod:`greenpool._reply`), so a deserializer that yields or raises (or a
  ``gevent.Timeout`` that fires in it) leaves the connection in step; a subclass
  that overrides pymemcache's ``_extract_value`` decodes as it reads, as
  pymemcache does;
- a reply read to its end leaves the connection in step, unless bytes nobody
  asked for came with it (then it is closed and the command raises). A complete
  error reply counts as read to its end, once the call's other replies are read
  too: a ``SERVER_ERROR`` (memcached's for an item too large, twemproxy's and
  mcrouter's for a failed backend: they answer so and carry on), or a
  ``CLIENT_ERROR`` to an incr or decr (a value that is not a number);
- a ``raw_command`` reply's length cannot be known, so its connection is closed
  after it: the next command reconnects;
- a connect that fails (refused, a name that does not resolve, timed out) is
  recorded too (:attr:`Client.connect_failed`), so that the pool counts it.

A socket or memcached error raised by a command or a connect names the server
(:mod:`greenpool._named`), keeping its class and errno.

Integers are checked against memcached's ranges before anything is sent
(:meth:`Client._check_integer`): out of range, memcached rejects a storage
command's line and then runs its data block as a command of its own.
"""

from __future__ import annotations

import select
from collections.abc import Callable
from typing import Any, NoReturn, Optional, TypeVar, Union

import gevent
from gevent.monkey import get_original
from pymemcache.client.base import Client as _PymemcacheClient
from pymemcache.exceptions import MemcacheIllegalInputError, MemcacheUnknownError

from greenpool._checks import check_key, check_key_prefix, check_memcached_integer
from greenpool._commands import Commands
from greenpool._named import mark, naming, server_name
from greenpool._reply import IN_STEP, complete_error
from greenpool.meta import MetaCommands

__all__ = ["Client"]

# poll(2) itself, even under monkey-patching: a zero timeout never blocks.
_poll = get_original("select", "poll")
_POLLIN = select.POLLIN
_CAS_MAX = 2**64 - 1
T = TypeVar("T")


class Client(Commands, MetaCommands, _PymemcacheClient):  # type: ignore[misc]
    """A pymemcache ``Client`` whose connection is never left out of step.

    Same constructor, commands and results as pymemcache's; what differs is
    what happens when a command does not finish (see the module docstring). Its
    commands build their replies' readers in ``greenpool._commands``; it adds
    memcached's meta commands (``meta_get``, ``meta_set``... below).
    :func:`greenpool.client_factory` builds these.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        check_key_prefix(self.key_prefix)
        #: Whether a command is running: sent, its reply not yet read to its end.
        self.busy = False
        #: The type of the exception that cut the last unfinished command off
        #: (its connection was closed there and then) or made its connect fail,
        #: or ``None``.
        self.cut_by: Optional[type[BaseException]] = None
        #: Whether a connect failed (refused, unresolvable, timed out...).
        self.connect_failed = False
        self._poller: Any = None
        # Values read by greenpool's reader unless a subclass extracts its own.
        self._fast_values = type(self)._extract_value is _PymemcacheClient._extract_value

    # -- the connection ------------------------------------------------------------

    def _connect(self) -> None:
        """Connect within *connect_timeout*, name resolution included. A connect
        that fails is recorded (:attr:`connect_failed`, :attr:`cut_by`: the pool
        counts it and discards the client) and raised naming the server."""
        limit = self.connect_timeout
        timeout = None
        if limit is not None:
            timeout = gevent.Timeout(limit, _connect_timed_out(self.server, limit))
            timeout.start()
        try:
            super()._connect()
        except Exception as exc:
            self.cut_by = type(exc)
            self.connect_failed = True
            named = naming(exc, self.server, "connecting to memcached at")
            if named is None:
                raise
            raise named from exc
        finally:
            if timeout is not None:
                timeout.close()
        self._poller = poller = _poll()
        poller.register(self.sock.fileno(), _POLLIN)

    def close(self) -> None:
        self._poller = None
        super().close()

    def unread(self) -> bool:
        """Whether the connection, idle now, is readable: closed by the server, or
        holding bytes nobody asked for. No round trip: one ``poll(2)``."""
        poller = self._poller  # set while connected
        if poller is None:
            return False
        if self.tls_context is not None and self.sock.pending():
            return True
        return bool(poller.poll(0))

    # -- what goes on a command line: keys and integers ------------------------------

    def check_key(self, key: Any, key_prefix: bytes) -> bytes:
        """*key* as sent, checked as memcached parses it (:func:`greenpool._checks.check_key`)."""
        return check_key(key, self.allow_unicode_keys, key_prefix)

    def _check_integer(self, value: Any, name: str) -> bytes:
        """An ``int`` (not a ``bool``) within memcached's range for *name*, encoded."""
        check_memcached_integer(name, value)
        return str(value).encode(self.encoding)

    def _check_cas(self, cas: Union[int, str, bytes]) -> bytes:
        checked: bytes = super()._check_cas(cas)
        if int(checked) > _CAS_MAX:
            raise MemcacheIllegalInputError(f"cas must be at most {_CAS_MAX}, got {cas!r}")
        return checked

    # -- a command's life: _exchange (_start, then _done or _cut) -------------------

    def _exchange(
        self,
        cmd: bytes,
        read: Callable[[Any], tuple[T, bytes]],
        ignored: Optional[T] = None,
        noreply: bool = False,
    ) -> T:
        """Send *cmd* and read its reply with *read* (the socket -> the result, and
        the bytes read past the reply): one command, from start to end. With
        *ignored* given and pymemcache's *ignore_exc*, an Exception returns
        *ignored* instead (what pymemcache's reads do). *noreply* says that *read*
        reads nothing (a pipeline answers such a command once it is sent)."""
        try:
            sock = self._start()
        except Exception:  # nothing sent: pymemcache's ignore_exc covers connecting too
            if ignored is not None and self.ignore_exc:
                return ignored
            raise
        try:
            sock.sendall(cmd)
            result, rest = read(sock)
            self._done(rest)
        except BaseException as exc:
            self._cut(exc)
            if ignored is not None and self.ignore_exc and isinstance(exc, Exception):
                return ignored
            named = naming(exc, self.server)
            if named is None:
                raise
            raise named from exc
        return result

    def _start(self) -> Any:
        """Connect if need be, and mark a command as running; return the socket."""
        if self.busy:
            raise RuntimeError(
                f"this memcached client of {self.server!r} is running a command already: "
                "a client serves one greenlet at a time, and a serde must not use it"
            )
        if self.sock is None:
            self._connect()
        self.busy = True
        return self.sock

    def _done(self, buf: bytes) -> None:
        """The reply was read to its end; *buf* is what was read past it."""
        if buf:
            raise MemcacheUnknownError(f"bytes nobody asked for after the reply: {buf[:32]!r}")
        self.busy = False

    def _cut(self, exc: BaseException) -> None:
        """The running command ended early by *exc*: close the connection, unless
        *exc* came from a complete error reply with nothing read past it (see
        :meth:`_error`)."""
        self.busy = False
        if getattr(exc, IN_STEP, None) == b"":
            return
        self.cut_by = type(exc)
        self.close()

    def _error(self, line: bytes, name: bytes, buf: bytes, last: bool) -> NoReturn:
        """Raise pymemcache's exception for an error reply *line*, else for a line
        that fits no reply of command *name*. A ``SERVER_ERROR`` for the *last*
        command of the call, or a ``CLIENT_ERROR`` for an incr or decr (memcached's
        answer for a value that is not a number), is a complete reply: the
        exception carries :data:`IN_STEP`, the bytes *buf* read past it."""
        exc = self._error_of(line, name)
        if last and complete_error(line, name):
            setattr(exc, IN_STEP, buf)
        raise exc

    def _error_of(self, line: bytes, name: bytes) -> Exception:
        """The exception pymemcache raises for the error reply *line*, or
        ``MemcacheUnknownError`` for a line that is no error reply, naming the
        server (see :mod:`greenpool._named`)."""
        try:
            self._raise_errors(line, name)
        except Exception as exc:
            error: Exception = exc
        else:
            error = MemcacheUnknownError(line[:32])
        named = naming(error, self.server)
        return error if named is None else named  # type: ignore[return-value]


def _connect_timed_out(server: Any, seconds: float) -> TimeoutError:
    """What a connect slower than *connect_timeout* raises: the socket's own
    ``TimeoutError``, naming the server."""
    where = server_name(server)
    return mark(
        TimeoutError(
            f"timed out (connecting to memcached at {where} took more than "
            f"connect_timeout={seconds}s, name resolution included)"
        ),
        where,
    )
