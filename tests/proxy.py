"""A TCP proxy between clients and memcached that delays or cuts replies.

It runs in the test's own gevent hub, so faults land exactly where a real slow
or dying network would put them: inside the client's recv. Set
``reply_delay`` (seconds, or a zero-argument callable returning seconds) to
hold every chunk the server sends; call ``cut()`` to drop every connection.
``inject(data)`` puts *data* in front of the next chunk the server sends, and
``push(data)`` sends it to every client at once, as a server out of step with its
clients would; ``cut_after(n)`` drops every connection once *n* more bytes of
replies have reached the clients, as a server dying mid-reply would. ``sent``
counts the bytes clients sent towards the server, ``open_connections`` the
client connections still open.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Union

import gevent
from gevent import socket
from gevent.server import StreamServer

Delay = Union[float, Callable[[], float]]


class FaultProxy:
    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.reply_delay: Delay = 0.0
        self.connections = 0
        self.sent = 0
        self._injected = b""
        self._left: int | None = None  # bytes of replies to pass before cut()
        self._sockets: set[socket.socket] = set()
        self._clients: set[socket.socket] = set()
        self._server = StreamServer(("127.0.0.1", 0), self._handle)

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self._server.server_port)

    @property
    def open_connections(self) -> int:
        return len(self._sockets) // 2

    def start(self) -> FaultProxy:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout=1)
        self.cut()

    def cut(self) -> None:
        """Close every live connection, both towards clients and the server: the
        peers see the close at once (gevent may defer the close of a socket
        another greenlet waits on; a shutdown is not deferred)."""
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self._sockets.clear()

    def inject(self, data: bytes) -> None:
        """Send *data* to the client before the next chunk of the server's reply."""
        self._injected += data

    def cut_after(self, size: int) -> None:
        """Pass *size* more bytes of replies to the clients, then cut()."""
        self._left = size

    def push(self, data: bytes) -> None:
        """Send *data* to every connected client now, unasked."""
        for client in list(self._clients):
            client.sendall(data)

    def _delay(self) -> float:
        return self.reply_delay() if callable(self.reply_delay) else self.reply_delay

    def _handle(self, client: socket.socket, _address: object) -> None:
        self.connections += 1
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        server.settimeout(None)
        for sock in (client, server):  # as memcached does: no Nagle delay on replies
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sockets.update((client, server))
        self._clients.add(client)
        upstream = gevent.spawn(self._pump, client, server, False)
        downstream = gevent.spawn(self._pump, server, client, True)
        gevent.joinall([upstream, downstream])
        self._sockets.difference_update((client, server))
        self._clients.discard(client)

    def _pump(self, source: socket.socket, sink: socket.socket, delayed: bool) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if delayed:
                    delay = self._delay()
                    if delay:
                        gevent.sleep(delay)
                    data, self._injected = self._injected + data, b""
                    if self._left is not None:
                        data, self._left = data[: self._left], self._left - len(data)
                        if self._left <= 0:
                            self._left = None
                            sink.sendall(data)
                            self.cut()
                            break
                else:
                    self.sent += len(data)
                sink.sendall(data)
        except OSError:
            pass
        finally:
            source.close()
            sink.close()
