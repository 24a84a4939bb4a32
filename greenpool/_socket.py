"""The socket module greenpool's clients use: gevent's, with two changes.

It re-exports :mod:`gevent.socket`, so clients are cooperative whether or not
the process is monkey-patched (pymemcache looks up ``socket``, ``getaddrinfo``
and the address constants on it). What differs:

- :func:`getaddrinfo` parses numeric addresses itself. gevent's default
  resolver runs in a thread pool, which does not survive ``os.fork()`` in a
  process that is not monkey-patched: a child's first connect would wait on it
  forever. Host names still go through gevent's resolver (and
  :class:`greenpool.Client` bounds that wait by its *connect_timeout*).
- :class:`TLSContext` wraps any ``ssl.SSLContext`` so that it makes gevent's
  cooperative TLS sockets. pymemcache wraps its socket with
  ``tls_context.wrap_socket()``; a standard library context in a process that
  is not monkey-patched would turn the gevent socket into a *blocking*
  ``ssl.SSLSocket``, stalling every greenlet on each command.

Keeping a connection in step after an interruption is the client's work
(:mod:`greenpool.connection`), not the socket's.
"""

from __future__ import annotations

import _socket as _c_socket
import ssl
from typing import Any

from gevent import socket as _gevent_socket
from gevent.socket import *
from gevent.ssl import SSLSocket


def getaddrinfo(
    host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0, flags: int = 0
) -> list[Any]:
    """``socket.getaddrinfo``: numeric hosts parsed at once, names by gevent's resolver."""
    try:
        return _c_socket.getaddrinfo(  # type: ignore[no-any-return]
            host, port, family, type, proto, flags | _c_socket.AI_NUMERICHOST
        )
    except _c_socket.gaierror:  # a host name: resolving it may take a while
        return _gevent_socket.getaddrinfo(host, port, family, type, proto, flags)  # type: ignore[no-any-return]


class TLSContext:
    """Wrap sockets with *context*'s settings into *socket_class* (gevent TLS sockets).

    *context* is any ``ssl.SSLContext``: the standard library's or gevent's.
    Its certificates, verification mode and ciphers are used as they are; only
    the socket class differs. gevent's own ``SSLContext.wrap_socket`` builds
    its sockets the same way, passing the context as ``_context``.
    """

    __slots__ = ("context", "socket_class")

    def __init__(self, context: ssl.SSLContext, socket_class: type[SSLSocket] = SSLSocket) -> None:
        self.context = context
        self.socket_class = socket_class

    def __repr__(self) -> str:
        made = f"{self.socket_class.__module__}.{self.socket_class.__name__}"
        return f"<greenpool TLSContext: {self.context!r} making {made}>"

    def wrap_socket(
        self, sock: Any, server_side: bool = False, server_hostname: str | None = None
    ) -> SSLSocket:
        return self.socket_class(
            sock=sock, server_side=server_side, server_hostname=server_hostname,
            _context=self.context,
        )  # fmt: skip
