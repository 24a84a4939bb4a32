"""RelinquishMiddleware with a real gevent.pywsgi server and keep-alive HTTP clients.

pywsgi serves every request of a keep-alive connection from one greenlet, so a
mapped client outlives the request unless something hands it back. The test
learns that a response is finished from the server itself: the outermost
response object reports its ``close()`` on a queue.
"""

from __future__ import annotations

import http.client
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import gevent
import gevent.socket
import pytest
from gevent import getcurrent
from gevent.pywsgi import WSGIServer
from gevent.queue import Queue

from greenpool import GreenletMappedPool
from greenpool.wsgi import RelinquishMiddleware

MakeMapped = Callable[..., GreenletMappedPool[Any]]
Key = Callable[[str], str]
App = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class _GeventHTTPConnection(http.client.HTTPConnection):
    """http.client over a gevent socket: cooperative, with no monkey-patching."""

    def connect(self) -> None:
        self.sock = gevent.socket.create_connection((self.host, self.port), self.timeout)


class _ReportClose:
    """The outermost response: puts None on *closed* once the server has closed it."""

    def __init__(self, response: Iterable[bytes], closed: Queue) -> None:
        self.response = response
        self.closed = closed

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.response)

    def close(self) -> None:
        try:
            close = getattr(self.response, "close", None)
            if close is not None:
                close()
        finally:
            self.closed.put(None)


@pytest.fixture
def serve() -> Iterator[Callable[[App], tuple[tuple[str, int], Queue]]]:
    """Serve a WSGI app with gevent.pywsgi; return its address and its closed-queue."""
    servers: list[WSGIServer] = []

    def start(app: App) -> tuple[tuple[str, int], Queue]:
        closed: Queue = Queue()

        def reported(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            return _ReportClose(app(environ, start_response), closed)

        server = WSGIServer(("127.0.0.1", 0), reported, log=None)
        server.start()
        servers.append(server)
        return ("127.0.0.1", server.server_port), closed

    yield start
    for server in servers:
        server.stop(timeout=1)


def _counter_app(mapped: GreenletMappedPool[Any], key: Key, seen: list[tuple[Any, str]]) -> App:
    """GET /<name> increments a counter through the mapped pool and answers its value."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        seen.append((getcurrent(), environ["REMOTE_PORT"]))
        name = key(environ["PATH_INFO"].strip("/"))
        with mapped.reserve() as mc:
            count = mc.incr(name, 1)
            if count is None:
                mc.add(name, "0", noreply=False)
                count = mc.incr(name, 1)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [str(count).encode()]

    return app


def test_keep_alive_requests_hand_the_client_back_between_requests(
    make_mapped: MakeMapped, key: Key, serve: Callable[..., Any]
) -> None:
    """Five requests on one keep-alive connection, served by one greenlet: after each
    response nothing is mapped or in use, and the greenlet lives on."""
    mapped = make_mapped(2)
    seen: list[tuple[Any, str]] = []
    address, closed = serve(RelinquishMiddleware(_counter_app(mapped, key, seen), mapped))
    connection = _GeventHTTPConnection(*address, timeout=10)
    for n in range(1, 6):
        connection.request("GET", "/visits")
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, str(n).encode())
        closed.get(timeout=10)
        stats = mapped.stats()
        assert (stats["mapped"], stats["in_use"]) == (0, 0), f"after request {n}"
    connection.close()
    greenlets, ports = {g for g, _ in seen}, {port for _, port in seen}
    assert len(greenlets) == 1 and len(ports) == 1  # really one connection, one greenlet
    stats = mapped.stats()
    assert (stats["reserves"], stats["created"], stats["discarded"]) == (5, 1, 0)


def test_without_the_middleware_a_keep_alive_connection_holds_its_client(
    make_mapped: MakeMapped, key: Key, serve: Callable[..., Any]
) -> None:
    """The control: unwrapped, the client stays with the connection's greenlet while it
    idles, and comes back only when the connection ends and its greenlet with it."""
    mapped = make_mapped(2)
    seen: list[tuple[Any, str]] = []
    address, closed = serve(_counter_app(mapped, key, seen))
    connection = _GeventHTTPConnection(*address, timeout=10)
    for n in range(1, 3):
        connection.request("GET", "/visits")
        assert connection.getresponse().read() == str(n).encode()
        closed.get(timeout=10)
        assert (mapped.stats()["mapped"], mapped.stats()["in_use"]) == (1, 1)
    connection.close()
    handler = seen[0][0]
    handler.join(10)
    assert handler.dead
    gevent.idle()  # let the hub run the handler's links
    assert (mapped.stats()["mapped"], mapped.stats()["in_use"]) == (0, 0)


def test_a_client_disconnecting_mid_response_still_hands_the_client_back(
    make_mapped: MakeMapped, key: Key, serve: Callable[..., Any]
) -> None:
    """A streamed response whose HTTP client goes away after the first chunk: the server
    closes the response early and the mapped client is back, unharmed."""
    mapped = make_mapped(1)
    produced = 0
    chunk_key = key("chunk")

    def streaming(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
        nonlocal produced
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        for _ in range(1000):  # 64 MB if nobody stops it
            with mapped.reserve() as mc:
                chunk = mc.get(chunk_key)
            produced += 1
            yield chunk  # outside the block: the client is held, but not mid-command

    with mapped.pool.reserve() as mc:
        mc.set(chunk_key, b"x" * 65536, noreply=False)
    address, closed = serve(RelinquishMiddleware(streaming, mapped))
    sock = gevent.socket.create_connection(address, timeout=10)
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
    assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    sock.close()  # with unread data: the server's next writes fail
    closed.get(timeout=10)
    stats = mapped.stats()
    assert (stats["mapped"], stats["in_use"], stats["discarded"]) == (0, 0, 0)
    assert produced < 1000


def test_an_application_that_raises_hands_the_client_back_before_the_error_page(
    make_mapped: MakeMapped, serve: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The middleware relinquishes as the exception passes, so by the time the HTTP
    client has its 500 the mapped client is back."""
    mapped = make_mapped(1)

    def failing(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        with mapped.reserve() as mc:
            mc.version()
        raise RuntimeError("the application's own bug")

    monkeypatch.setattr(gevent.get_hub(), "print_exception", lambda *args: None)
    address, _ = serve(RelinquishMiddleware(failing, mapped))
    connection = _GeventHTTPConnection(*address, timeout=10)
    connection.request("GET", "/")
    assert connection.getresponse().status == 500
    connection.close()
    assert (mapped.stats()["mapped"], mapped.stats()["in_use"]) == (0, 0)


def test_the_middleware_wants_a_mapped_pool(make_mapped: MakeMapped) -> None:
    """A ClientPool has nothing to relinquish: it is refused at once, by name."""
    with pytest.raises(TypeError, match="mapped must be a GreenletMappedPool, not ClientPool"):
        RelinquishMiddleware(lambda environ, start_response: [], make_mapped(1).pool)
