"""Factories that build pymemcache clients suited to a gevent pool."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import gevent.socket
import gevent.ssl
from pymemcache.client.base import Client

from greenpool import _socket

__all__ = ["CLIENT_DEFAULTS", "client_factory", "client_settings", "cloner"]

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
    """Return a zero-argument callable that builds a pymemcache ``Client``.

    *server* is ``("host", port)``, ``"host:port"`` or a Unix socket path;
    *client_options* are pymemcache ``Client`` keyword arguments, over
    :data:`CLIENT_DEFAULTS`. The default socket module is gevent's, so the pool
    stays cooperative in a gevent program that is not monkey-patched, and its
    sockets close themselves when a command is interrupted (see
    ``greenpool._socket``). Pass ``socket_module`` to choose another.

    One client is built at once, so a misspelt option fails here with pymemcache's
    ``TypeError`` rather than at the first reservation. Nothing connects until
    a client's first command.

    A *tls_context* (an ``ssl.SSLContext``, the standard library's or gevent's)
    keeps its settings but makes gevent TLS sockets whenever the socket module
    is cooperative (see :class:`greenpool._socket.TLSContext`): guarded ones
    with the default socket module. Otherwise a standard library context in a
    process that is not monkey-patched would make blocking ``ssl.SSLSocket``
    objects and stall every greenlet on each command.
    """
    options = {**CLIENT_DEFAULTS, **client_options}
    options["tls_context"] = _cooperative_tls(options.get("tls_context"), options["socket_module"])
    Client(server, **options)
    return functools.partial(Client, server, **options)


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


def client_settings(client: Client) -> dict[str, Any]:
    """The constructor arguments that build a ``Client`` configured like *client*."""
    return {name: getattr(client, name) for name in _CLIENT_SETTINGS}


def cloner(client: object) -> Callable[[], Any]:
    """Return a callable that builds clients configured like *client*.

    pymemcache clients have no ``clone()``; an equivalent one is built from
    the settings a ``Client`` keeps. Objects that do have ``clone()`` (pylibmc's
    clients) are cloned.

    :raises TypeError: *client* is neither a pymemcache ``Client`` nor clonable.
    """
    if isinstance(client, Client):
        client_class: Callable[..., Any] = type(client)
        return functools.partial(client_class, client.server, **client_settings(client))
    clone = getattr(client, "clone", None)
    if callable(clone):
        return clone  # type: ignore[no-any-return]
    raise TypeError(
        f"client must be a pymemcache Client, an object with clone(), or None, "
        f"not {type(client).__name__}"
    )
