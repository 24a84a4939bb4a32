"""memcached as an HTTP key-value store: greenpool's gevent WSGI example.

Every request borrows one pymemcache client with ``with pool.reserve() as mc:``
and gives it back when the block ends, so hundreds of concurrent HTTP clients
share a pool of 16 memcached connections::

    GET    /<key>              200 and the value, or 404 (HEAD: the same, without the body)
    PUT    /<key>[?ttl=SECS]   the body is the value: 201 if the key was new, 204 if it existed
    DELETE /<key>              204, or 404
    GET    /_stats             JSON: this process's pool stats and memcached's connections
                               (so the key "_stats" is out of reach)
    other methods              405, with an Allow header

Run it alone, with a private memcached on a free loopback port that stops when
the example does (``--memcached HOST:PORT`` uses yours instead)::

    python examples/wsgi_app.py [--host 127.0.0.1] [--port 8000]
                                [--memcached HOST:PORT] [--pool-size N]

or under gunicorn, where each worker process makes its own pool on its first
request and the address comes from ``$GREENPOOL_MEMCACHED``::

    GREENPOOL_MEMCACHED=127.0.0.1:11211 gunicorn -k gevent -w 2 examples.wsgi_app:app

What memcached cannot take is refused before anything is sent to it:

- The request target must be a path (``/<key>``): ``GET key`` or an absolute
  ``GET http://host/key`` is a 400, not the key ``ey`` or ``ttp://host/key``.
- A key is the URL path after the first ``/``, percent-decoded. It must be
  UTF-8 (``/caf%C3%A9`` is the key ``café``), 1 to 250 *bytes* long, and
  printable: no space, no control character (CR, LF, NUL, tab, DEL, C1) and no
  other Unicode separator. Anything else is a 400 with the reason; so
  ``/a%0d%0aflush_all`` is a 400, never a second memcached command.
- ``ttl`` is a whole number of seconds from 1 to 2592000 (30 days: memcached
  reads larger relative times as Unix timestamps); without it, the value stays
  until evicted. Any other query parameter on a PUT is a 400.
- A body longer than memcached's ``item_size_max`` (read once per process from
  ``stats settings``) is a 413 before it is read. One just under that limit
  but too large once memcached adds its item header (about 60 bytes) is refused
  by memcached itself, also a 413, with the stored value untouched (see
  :meth:`KeyValueApp.put`).

201 or 204: memcached has no "set and say whether the key existed", so a PUT
sends ``add`` (stores only a new key: 201) and, if the key existed, ``set``
(204). If another request deletes the key between the two, the PUT creates it
and still answers 204. Either way the value is stored.
"""

from gevent import monkey

monkey.patch_all()

import argparse
import ctypes
import getpass
import json
import os
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import gevent
from gevent.lock import Semaphore
from gevent.pywsgi import WSGIServer
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheError

from greenpool import DEFAULT_MAXSIZE, ClientPool, PoolError, client_factory

#: Where gunicorn workers (and any server that imports ``app``) find memcached.
ADDRESS_ENV = "GREENPOOL_MEMCACHED"
STATS_PATH = "/_stats"
ALLOW = "GET, HEAD, PUT, DELETE"
MAX_KEY_BYTES = 250
MAX_TTL = 30 * 24 * 3600

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Reply = tuple[HTTPStatus, str, bytes]  # status, Content-Type, body

TEXT = "text/plain; charset=utf-8"
BINARY = "application/octet-stream"
JSON = "application/json"


class HTTPError(Exception):
    """An answer other than success: a status, a one-line reason, extra headers."""

    def __init__(self, status: HTTPStatus, reason: str, *headers: tuple[str, str]) -> None:
        super().__init__(reason)
        self.status = status
        self.headers = list(headers)


def parse_key(path_info: str) -> bytes:
    """Return the memcached key that *path_info* names, or raise a 400.

    WSGI servers percent-decode the path and pass its bytes as latin-1 (PEP 3333),
    so encoding it back as latin-1 gives the bytes the URL carried.
    """
    key = path_info[1:].encode("latin-1")
    if not key:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "missing key: use /<key>")
    if len(key) > MAX_KEY_BYTES:
        raise HTTPError(
            HTTPStatus.BAD_REQUEST,
            f"key is {len(key)} bytes; memcached takes at most {MAX_KEY_BYTES}",
        )
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(HTTPStatus.BAD_REQUEST, "key is not UTF-8") from None
    if " " in text or not text.isprintable():
        raise HTTPError(HTTPStatus.BAD_REQUEST, "key contains a space or a control character")
    return key


def parse_ttl(query_string: str) -> int:
    """Return a PUT's ``ttl`` in seconds, 0 when none is given, or raise a 400."""
    params = parse_qs(query_string, keep_blank_values=True)
    unknown = sorted(set(params) - {"ttl"})
    if unknown:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"unknown parameter {unknown[0]!r}: PUT takes ttl")
    values = params.get("ttl", [])
    if not values:
        return 0
    ttl = values[0]
    if len(values) > 1 or not re.fullmatch("[0-9]{1,7}", ttl) or not 0 < int(ttl) <= MAX_TTL:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"ttl must be whole seconds from 1 to {MAX_TTL}")
    return int(ttl)


def read_value(environ: Environ, limit: int) -> bytes:
    """Read the request body, or raise a 413 if it is over *limit* bytes.

    A declared length over the limit is refused before reading anything (the
    server discards the unread body); a chunked body is read up to one byte past it.
    """
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared and not declared.isdigit():
        raise HTTPError(HTTPStatus.BAD_REQUEST, "Content-Length is not a number")
    if declared and int(declared) > limit:
        raise too_large(limit)
    try:
        value: bytes = environ["wsgi.input"].read(int(declared) if declared else limit + 1)
    except OSError as exc:  # the client went away, or sent broken chunks
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"could not read the body: {exc}") from None
    if len(value) > limit:
        raise too_large(limit)
    if declared and len(value) != int(declared):
        raise HTTPError(HTTPStatus.BAD_REQUEST, "the body ended before Content-Length bytes")
    return value


def too_large(limit: int) -> HTTPError:
    return HTTPError(
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        f"value too large: this memcached stores items of at most {limit} bytes",
    )


def parse_address(text: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (``"[::1]:PORT"`` for IPv6) as ``(host, port)``."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"memcached address {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class KeyValueApp:
    """The WSGI application, backed by the memcached at *memcached* (``"HOST:PORT"``).

    Without *memcached*, the address is read from ``$GREENPOOL_MEMCACHED`` on
    the first request. The pool holds at most *pool_size* clients.
    """

    def __init__(self, memcached: str | None = None, pool_size: int = DEFAULT_MAXSIZE) -> None:
        self.memcached = memcached
        self.pool_size = pool_size
        self._pool: ClientPool[Client] | None = None
        self._pool_pid = 0
        self._item_size_max = 0
        self._settings_lock = Semaphore()

    def pool(self) -> ClientPool[Client]:
        """This process's pool, made on its first use.

        gunicorn forks its workers from one master, which has already imported
        this module when started with ``--preload``. A pool made at import would
        be copied into every worker. greenpool copes (a child never reuses its
        parent's clients), but a pool made in the worker, on its first request,
        has nothing to cope with.
        """
        if self._pool is None or self._pool_pid != os.getpid():
            address = self.memcached or os.environ.get(ADDRESS_ENV)
            if not address:
                raise HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR, f"set {ADDRESS_ENV}=HOST:PORT")
            try:
                factory = client_factory(parse_address(address))
            except ValueError as exc:
                raise HTTPError(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc)) from None
            self.memcached = address
            self._pool = ClientPool(factory, self.pool_size, name=f"wsgi_app-{os.getpid()}")
            self._pool_pid = os.getpid()
            self._item_size_max = 0
            self._settings_lock = Semaphore()
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        extra: list[tuple[str, str]] = []
        try:
            status, content_type, body = self.respond(environ)
        except HTTPError as error:
            status, content_type, body = error.status, TEXT, f"{error}\n".encode()
            extra = error.headers
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]
        if status == HTTPStatus.NO_CONTENT:
            headers = []  # a 204 has no body, and may not even say Content-Length: 0
        start_response(f"{status.value} {status.phrase}", headers + extra)
        # gevent.pywsgi would send a body even to a HEAD, desynchronising the connection
        return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]

    def respond(self, environ: Environ) -> Reply:
        method, path = environ["REQUEST_METHOD"], environ.get("PATH_INFO", "")
        # The target as the client sent it (gevent.pywsgi's REQUEST_URI, gunicorn's
        # RAW_URI): anything but origin-form would have its first character dropped.
        target = environ.get("REQUEST_URI") or environ.get("RAW_URI") or path
        if not (target.startswith("/") and path.startswith("/")):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the request target must be a path: /<key>")
        if path == STATS_PATH:
            if method not in ("GET", "HEAD"):
                raise HTTPError(
                    HTTPStatus.METHOD_NOT_ALLOWED, "/_stats is read-only", ("Allow", "GET, HEAD")
                )
            return HTTPStatus.OK, JSON, json.dumps(self.stats()).encode()
        handlers = {"GET": self.get, "HEAD": self.get, "PUT": self.put, "DELETE": self.delete}
        handler = handlers.get(method)
        if handler is None:
            raise HTTPError(
                HTTPStatus.METHOD_NOT_ALLOWED, f"{method} is not allowed", ("Allow", ALLOW)
            )
        key = parse_key(path)
        try:
            return handler(key, environ)
        except (MemcacheError, OSError, PoolError) as exc:
            if "too large" in str(exc):  # memcached's SERVER_ERROR object too large for cache
                raise too_large(self.item_size_max()) from None
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"memcached failed: {exc}") from None

    def get(self, key: bytes, environ: Environ) -> Reply:
        with self.pool().reserve() as mc:
            value = mc.get(key)
        if value is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "no such key")
        return HTTPStatus.OK, BINARY, value

    def put(self, key: bytes, environ: Environ) -> Reply:
        """Store the body under *key*: 201 if the key was new, 204 if it existed.

        ``add`` goes first for a second reason: when memcached refuses a value
        as too large, a refused ``set`` also deletes the value already stored
        under the key, and a refused ``add`` leaves it alone. The body is read
        before reserving, so a slow upload never holds a memcached client.
        """
        ttl = parse_ttl(environ.get("QUERY_STRING", ""))
        value = read_value(environ, self.item_size_max())
        with self.pool().reserve() as mc:
            created = mc.add(key, value, expire=ttl, noreply=False)
            if not created:
                mc.set(key, value, expire=ttl, noreply=False)
        return (HTTPStatus.CREATED if created else HTTPStatus.NO_CONTENT), TEXT, b""

    def delete(self, key: bytes, environ: Environ) -> Reply:
        with self.pool().reserve() as mc:
            deleted = mc.delete(key, noreply=False)
        if not deleted:
            raise HTTPError(HTTPStatus.NOT_FOUND, "no such key")
        return HTTPStatus.NO_CONTENT, TEXT, b""

    def item_size_max(self) -> int:
        """memcached's largest item in bytes, read once per process."""
        pool = self.pool()
        with self._settings_lock:  # the first PUTs, arriving together, wait for one read
            if not self._item_size_max:
                with pool.reserve() as mc:
                    self._item_size_max = int(mc.stats("settings")[b"item_size_max"])
        return self._item_size_max

    def stats(self) -> dict[str, Any]:
        """This process's pool stats, and how many connections memcached has seen."""
        pool = self.pool()
        memcached: dict[str, Any] = {"address": self.memcached}
        try:
            with pool.reserve() as mc:
                server = mc.stats()
            memcached["curr_connections"] = server[b"curr_connections"]
            memcached["total_connections"] = server[b"total_connections"]
        except (MemcacheError, OSError, PoolError) as exc:
            memcached["error"] = str(exc)
        return {
            "pid": os.getpid(),
            "pool": {"name": pool.name, **pool.stats()},
            "memcached": memcached,
        }


#: The WSGI callable for gunicorn and other servers: ``examples.wsgi_app:app``.
app = KeyValueApp()


# -- running it: a private memcached, then the server ---------------------------


class MemcachedUnavailable(Exception):
    """Raised when no memcached address was given and none could be started."""


def start_memcached() -> tuple[Callable[[], Any], str]:
    """Start a memcached of this process's own on a free loopback port.

    Return its ``stop`` function and its ``"HOST:PORT"``. mirakuru starts it and
    waits until the port accepts connections. On Linux it also gets SIGTERM if
    this process dies without stopping it (killed by SIGKILL, say).
    """
    binary = shutil.which("memcached")
    if binary is None:
        raise MemcachedUnavailable(
            "memcached is not installed: install it (Debian: apt-get install memcached) "
            "or pass --memcached HOST:PORT"
        )
    try:
        import port_for
        from mirakuru import TCPExecutor
    except ImportError:
        raise MemcachedUnavailable(
            "a private memcached needs mirakuru and port-for (in a checkout: "
            "pip install -e . --group demo), "
            "or pass --memcached HOST:PORT"
        ) from None

    class Executor(TCPExecutor):
        @property
        def _popen_kwargs(self) -> dict[str, Any]:
            kwargs: dict[str, Any] = super()._popen_kwargs
            kwargs["preexec_fn"] = _new_session_dying_with_parent
            return kwargs

    host, port = "127.0.0.1", port_for.select_random()
    command = [binary, "-l", host, "-p", str(port), "-U", "0"]
    if os.geteuid() == 0:  # memcached refuses to run as root unless told to
        command += ["-u", getpass.getuser()]
    executor = Executor(command, host=host, port=port, timeout=10)
    try:
        executor.start()
    except Exception as exc:
        raise MemcachedUnavailable(f"memcached did not start: {exc}") from exc
    return executor.stop, f"{host}:{port}"


_libc = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None
_PR_SET_PDEATHSIG = 1


def _new_session_dying_with_parent() -> None:
    """In the forked child before exec: a new session, as mirakuru does, and a
    request to Linux for SIGTERM when the parent dies."""
    os.setsid()
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    def address(text: str) -> str:
        try:
            parse_address(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text

    def positive(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
        return int(text)

    parser = argparse.ArgumentParser(description="memcached as an HTTP key-value store")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--memcached", type=address, help="HOST:PORT of memcached (default: start a private one)"
    )
    parser.add_argument(
        "--pool-size", type=positive, default=DEFAULT_MAXSIZE, help="most memcached clients"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    memcached: str = args.memcached
    stop_memcached = None
    if args.memcached is None:
        try:
            stop_memcached, memcached = start_memcached()
        except MemcachedUnavailable as exc:
            print(f"wsgi_app: {exc}", file=sys.stderr)
            return 1
    try:
        return serve(args, memcached, private=stop_memcached is not None)
    finally:
        if stop_memcached is not None:
            stop_memcached()


def serve(args: argparse.Namespace, memcached: str, private: bool) -> int:
    """Serve until SIGTERM or SIGINT (Ctrl-C), then stop cleanly."""
    app = KeyValueApp(memcached, args.pool_size)
    server = WSGIServer((args.host, args.port), app, log=None, backlog=2048)
    try:
        server.start()
    except OSError as exc:
        print(f"wsgi_app: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    print(
        f"serving http://{args.host}:{server.server_port}/ with memcached at {memcached}"
        f"{' (private)' if private else ''} and a pool of {args.pool_size} clients; "
        f"Ctrl-C stops",
        flush=True,
    )
    server.serve_forever()
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
