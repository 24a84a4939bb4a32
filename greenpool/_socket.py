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
"""

from __future__ import annotations

import errno
from typing import Any

from gevent import socket as _gevent_socket
from gevent.socket import *


class socket(_gevent_socket.socket):  # type: ignore[misc]  # noqa: N801
    """A gevent socket that closes itself when a BaseException interrupts it."""

    interrupted = False

    def _interrupted(self) -> None:
        self.interrupted = True
        self.close()

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._interrupted()
            raise

    def recv(self, *args: Any) -> bytes:
        try:
            data: bytes = super().recv(*args)
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
            super().sendall(data, flags)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self._interrupted()
            raise
