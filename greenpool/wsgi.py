"""WSGI middleware that hands a request's mapped client back when its response ends.

``gevent.pywsgi`` (and gunicorn's gevent workers) serve every request of a
keep-alive connection from one greenlet, so a :class:`~greenpool.GreenletMappedPool`
client would stay with that connection across requests and the idle time
between them. :class:`RelinquishMiddleware` ends the mapping with the response.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from greenpool.mapped import GreenletMappedPool

__all__ = ["RelinquishMiddleware"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RelinquishMiddleware:
    """Wrap the WSGI application *app* so that the client it reserved from *mapped*
    goes back to the pool when the response is finished.

    That is when the response iterable is exhausted, or when the server calls its
    ``close()``, as WSGI servers must, also when the HTTP client disconnects
    mid-response, and at once if *app* raises. The client relinquished is the
    one of the greenlet that iterates and closes the response, which for
    ``gevent.pywsgi`` and gunicorn's gevent workers is the greenlet that called
    *app*. The wrapped response hides a ``wsgi.file_wrapper`` from servers that
    would send it specially; it is still sent, as an iterable.

    >>> from greenpool.wsgi import RelinquishMiddleware
    >>> mapped = GreenletMappedPool(ClientPool(client_factory(memcached_address)))
    >>> def app(environ, start_response):
    ...     with mapped.reserve() as mc:
    ...         value = mc.get("greeting") or b"none"
    ...     start_response("200 OK", [("Content-Type", "text/plain")])
    ...     return [value]
    >>> response = RelinquishMiddleware(app, mapped)({}, lambda status, headers: None)
    >>> mapped.stats()["mapped"]
    1
    >>> body = b"".join(response); response.close()
    >>> mapped.stats()["mapped"], mapped.stats()["in_use"]
    (0, 0)
    """

    def __init__(self, app: WSGIApp, mapped: GreenletMappedPool[Any]) -> None:
        if not callable(app):
            raise TypeError(f"app must be a WSGI callable, not {type(app).__name__}")
        if not isinstance(mapped, GreenletMappedPool):
            raise TypeError(f"mapped must be a GreenletMappedPool, not {type(mapped).__name__}")
        self.app = app
        self.mapped = mapped

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> _Response:
        try:
            response = self.app(environ, start_response)
        except BaseException:
            self.mapped.relinquish()
            raise
        return _Response(response, self.mapped)


class _Response:
    """The application's response iterable, relinquishing when exhausted or closed."""

    __slots__ = ("_iterator", "_mapped", "_response")

    def __init__(self, response: Iterable[bytes], mapped: GreenletMappedPool[Any]) -> None:
        self._response = response
        self._mapped = mapped
        self._iterator: Iterator[bytes] = iter(())  # the real one once iterated

    def __iter__(self) -> _Response:
        self._iterator = iter(self._response)
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._iterator)
        except StopIteration:
            self._mapped.relinquish()
            raise

    def close(self) -> None:
        """Close the application's response, as PEP 3333 asks, then relinquish."""
        try:
            close = getattr(self._response, "close", None)
            if close is not None:
                close()
        finally:
            self._mapped.relinquish()
