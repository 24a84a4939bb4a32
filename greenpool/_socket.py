"""A socket module for pymemcache whose sockets close themselves when interrupted.

pymemcache closes its connection on an ``Exception``, but ``gevent.Timeout``,
``GreenletExit`` and ``KeyboardInterrupt`` are BaseExceptions: they leave the
socket open with a command half sent or a reply half read. A caller that
catches the Timeout inside a ``with pool.reserve()`` block and sends another
command would read the old reply. These sockets close themselves at the
interruption, and the next command on them fails with ``ConnectionAbortedError``
(an ``OSError``, so pymemcache drops the socket and reconnects after that).

The module re-exports :mod:`gevent.socket`, so it is cooperative whether or not
the process is monkey-patched. pymemcache looks up ``socket``,
``getaddrinfo`` and the address constants on it.

TLS: pymemcache wraps its socket with ``tls_context.wrap_socket()``. A standard
library ``ssl.SSLContext`` in a process that is not monkey-patched would turn
the gevent socket into a *blocking* ``ssl.SSLSocket``, stalling every greenlet
on each command. :class:`TLSContext` wraps any context so that it makes
gevent's cooperative TLS sockets, here :class:`SSLSocket`, with the same guard.
"""

from __future__ import annotations

import errno
import ssl
from typing import Any

from gevent import socket as _gevent_socket
from gevent import ssl as _gevent_ssl
from gevent.socket import *


class _Guarded:
    """Mixin: close the socket when a BaseException interrupts connect, recv or sendall."""

    interrupted = False

    def _interrupted(self) -> None:
        self.interrupted = True
        self.close()  # type: ignore[attr-defined]

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)  # type: ignore[misc]
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._interrupted()
            raise

    def recv(self, *args: Any) -> bytes:
        try:
            data: bytes = super().recv(*args)  # type: ignore[misc]
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._interrupted()
            raise
        return data

    def sendall(self, data: Any, flags: int = 0) -> None:
        if self.interrupted:
            raise ConnectionAbortedError(
                errno.ECONNABORTED,
                "memcached connection closed because an earlier command on it was "
                "interrupted; its reply was discarded and the next command reconnects",
            )
        try:
            super().sendall(data, flags)  # type: ignore[misc]
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._interrupted()
            raise


class socket(_Guarded, _gevent_socket.socket):  # type: ignore[misc]  # noqa: N801
    """A gevent socket that closes itself when a BaseException interrupts it."""


class SSLSocket(_Guarded, _gevent_ssl.SSLSocket):  # type: ignore[misc]
    """A gevent TLS socket that closes itself when a BaseException interrupts it."""


class TLSContext:
    """Wrap sockets with *context*'s settings into *socket_class* (gevent TLS sockets).

    *context* is any ``ssl.SSLContext``: the standard library's or gevent's.
    Its certificates, verification mode and ciphers are used as they are; only
    the socket class differs. gevent's own ``SSLContext.wrap_socket`` builds
    its sockets the same way, passing the context as ``_context``.
    """

    __slots__ = ("context", "socket_class")

    def __init__(
        self, context: ssl.SSLContext, socket_class: type[_gevent_ssl.SSLSocket] = SSLSocket
    ) -> None:
        self.context = context
        self.socket_class = socket_class

    def __repr__(self) -> str:
        made = f"{self.socket_class.__module__}.{self.socket_class.__name__}"
        return f"<greenpool TLSContext: {self.context!r} making {made}>"

    def wrap_socket(
        self, sock: Any, server_side: bool = False, server_hostname: str | None = None
    ) -> _gevent_ssl.SSLSocket:
        return self.socket_class(
            sock=sock, server_side=server_side, server_hostname=server_hostname,
            _context=self.context,
        )  # fmt: skip
