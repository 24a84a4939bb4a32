"""Factories that build greenpool clients suited to a gevent pool, and check
their options before anything connects."""

from __future__ import annotations

import codecs
import functools
import math
from collections.abc import Callable
from typing import Any

import gevent.socket
import gevent.ssl
from pymemcache.client.base import Client as _PymemcacheClient
from pymemcache.client.base import normalize_server_spec

from greenpool import _socket
from greenpool._checks import check_bool
from greenpool.connection import Client

__all__ = [
    "CLIENT_DEFAULTS",
    "check_client_options",
    "client_factory",
    "client_settings",
    "cloner",
]

#: What :func:`client_factory` sets unless told otherwise. pymemcache's own
#: defaults wait forever on a silent server and leave Nagle's algorithm on.
CLIENT_DEFAULTS: dict[str, Any] = {
    "connect_timeout": 1.0,
    "timeout": 2.0,
    "no_delay": True,
    "socket_module": _socket,
}

# The settings pymemcache's Client keeps under the names its constructor takes.
_CLIENT_SETTINGS = (
    "serde",
    "connect_timeout",
    "timeout",
    "no_delay",
    "ignore_exc",
    "socket_module",
    "socket_keepalive",
    "key_prefix",
    "default_noreply",
    "allow_unicode_keys",
    "encoding",
    "tls_context",
)


def client_factory(server: Any, **client_options: Any) -> Callable[[], Client]:
    """Return a zero-argument callable that builds a :class:`greenpool.Client`.

    *server* is ``("host", port)``, ``"host:port"`` or a Unix socket path;
    *client_options* are pymemcache ``Client`` keyword arguments, over
    :data:`CLIENT_DEFAULTS`. The default socket module is gevent's, so the pool
    stays cooperative in a gevent program that is not monkey-patched, and it
    parses numeric addresses without gevent's resolver thread (see
    ``greenpool._socket``). Pass ``socket_module`` to choose another.

    The options are checked here, each error naming its option, and one client
    is built at once, so a misspelt option fails here with pymemcache's
    ``TypeError`` rather than at the first reservation. Nothing connects until
    a client's first command.

    A *tls_context* (an ``ssl.SSLContext``, the standard library's or gevent's)
    keeps its settings but makes gevent TLS sockets whenever the socket module
    is cooperative (see :class:`greenpool._socket.TLSContext`). Otherwise a
    standard library context in a process that is not monkey-patched would make
    blocking ``ssl.SSLSocket`` objects and stall every greenlet on each command.
    """
    _check_server(server)
    options = {**CLIENT_DEFAULTS, **client_options}
    _check_options(options)
    options["tls_context"] = _cooperative_tls(options.get("tls_context"), options["socket_module"])
    Client(server, **options)
    return functools.partial(Client, server, **options)


def check_client_options(client_options: dict[str, Any]) -> None:
    """Check *client_options* as :func:`client_factory` does, for a cluster that
    has no server yet: by name, then by building one client (which never connects)."""
    client_factory(_UNUSED_SERVER, **client_options)


#: The server of the client check_client_options builds; it never connects.
_UNUSED_SERVER = ("127.0.0.1", 11211)


def _check_server(server: Any) -> None:
    if not isinstance(server, (tuple, str)):
        raise TypeError(
            f"server must be a (host, port) tuple, 'host:port' or a Unix socket path, "
            f"not {type(server).__name__}"
        )
    try:
        spec = normalize_server_spec(server)
    except ValueError as exc:  # a port that is not a number
        raise ValueError(f"server {server!r}: the port must be a number") from exc
    if isinstance(spec, str):
        return  # a Unix socket path
    if len(spec) != 2 or not isinstance(spec[0], str) or not spec[0]:
        raise TypeError(f"server must be a (host, port) tuple with a host name, got {server!r}")
    port = spec[1]
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"server port must be an int, not {type(port).__name__}")
    if not 0 < port < 65536:
        raise ValueError(f"server port must be between 1 and 65535, got {port}")


_BOOLEAN_OPTIONS = ("no_delay", "ignore_exc", "default_noreply", "allow_unicode_keys")


def _check_options(options: dict[str, Any]) -> None:
    """Check what pymemcache takes unchecked and would fail on only when used."""
    for name in ("connect_timeout", "timeout"):
        value = options.get(name)
        if value is None:
            continue  # pymemcache's own meaning: wait without limit
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"{name} must be a number of seconds or None, not {type(value).__name__}"
            )
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    for name in _BOOLEAN_OPTIONS:
        if name in options:
            check_bool(name, options[name])
    encoding = options.get("encoding", "ascii")
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError):
        raise ValueError(f"encoding must name a codec, got {encoding!r}") from None
    serde = options.get("serde")
    if serde is not None and not (
        callable(getattr(serde, "serialize", None))
        and callable(getattr(serde, "deserialize", None))
    ):
        raise TypeError(
            f"serde must have serialize(key, value) and deserialize(key, value, flags) "
            f"methods, not {type(serde).__name__}"
        )
    module = options["socket_module"]
    if not (hasattr(module, "socket") and hasattr(module, "getaddrinfo")):
        raise TypeError("socket_module must be a socket module, such as gevent.socket")
    tls = options.get("tls_context")
    if tls is not None and not callable(getattr(tls, "wrap_socket", None)):
        raise TypeError(f"tls_context must be an ssl.SSLContext, not {type(tls).__name__}")


def _cooperative_tls(context: Any, socket_module: Any) -> Any:
    """Return a *tls_context* whose sockets are as cooperative as *socket_module*'s."""
    if context is None or isinstance(context, _socket.TLSContext):
        return context
    if socket_module is _socket:
        return _socket.TLSContext(context)
    made = getattr(context, "sslsocket_class", gevent.ssl.SSLSocket)
    if _is_cooperative(getattr(socket_module, "socket", None)) and not _is_cooperative(made):
        return _socket.TLSContext(context, gevent.ssl.SSLSocket)
    return context


def _is_cooperative(socket_class: Any) -> bool:
    return isinstance(socket_class, type) and issubclass(socket_class, gevent.socket.socket)


def client_settings(client: _PymemcacheClient) -> dict[str, Any]:
    """The constructor arguments that build a ``Client`` configured like *client*."""
    return {name: getattr(client, name) for name in _CLIENT_SETTINGS}


def cloner(client: object) -> Callable[[], Any]:
    """Return a callable that builds clients configured like *client*.

    pymemcache clients have no ``clone()``; an equivalent one is built from
    the settings a ``Client`` keeps, as a :class:`greenpool.Client` when
    *client* is pymemcache's own class (a subclass of it keeps its class).
    Objects that do have ``clone()`` (pylibmc's clients) are cloned.

    :raises TypeError: *client* is neither a pymemcache ``Client`` nor clonable.
    """
    if isinstance(client, _PymemcacheClient):
        client_class: Callable[..., Any] = type(client)
        if client_class is _PymemcacheClient:
            client_class = Client
        return functools.partial(client_class, client.server, **client_settings(client))
    clone = getattr(client, "clone", None)
    if callable(clone):
        return clone  # type: ignore[no-any-return]
    raise TypeError(
        f"client must be a pymemcache Client, an object with clone(), or None, "
        f"not {type(client).__name__}"
    )
