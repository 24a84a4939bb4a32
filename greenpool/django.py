"""A Django cache backend on greenpool: ``greenpool.django.MemcachedCache``.

Built as Django's own ``PyMemcacheCache`` is (``django.core.cache.backends.memcached``):
Django's ``BaseMemcachedCache`` owns the options, keys, timeouts and the cache
API, and this thin subclass supplies the client, a :class:`~greenpool.HashClient`
over greenpool pools. What differs is where that client lives. Django keeps
backends in an asgiref ``Local``, which is contextvars-based, and every gevent
greenlet has a context of its own, so under ``gunicorn -k gevent`` the stock
backend builds a client, and opens a connection, per request greenlet, then
disconnects it when the request ends. Here every backend object with the same
LOCATION and OPTIONS uses one client per process and OS thread, and ``close()``
keeps its pooled connections::

    CACHES = {
        "default": {
            "BACKEND": "greenpool.django.MemcachedCache",
            "LOCATION": "127.0.0.1:11211",  # or several: "a:11211,b:11211"
            "OPTIONS": {"max_pool_size": 16, "pool_timeout": 5.0},
        }
    }

Importing this module imports Django; ``import greenpool`` does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pymemcache
import pymemcache.exceptions
import pymemcache.serde
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.memcached import BaseMemcachedCache

from greenpool._shared import OneServerClient, SharedCluster
from greenpool.client import PooledClientStats
from greenpool.cluster import HashClient

__all__ = ["MemcachedCache"]

#: What PyMemcacheCache sets before the OPTIONS; this backend keeps it.
DJANGO_DEFAULTS: dict[str, Any] = {
    "allow_unicode_keys": True,
    "default_noreply": False,
    "serde": pymemcache.serde.pickle_serde,
}


class MemcachedCache(BaseMemcachedCache):  # type: ignore[misc]
    """Django's ``PyMemcacheCache`` on one greenpool client per process and thread.

    *server* is Django's LOCATION: ``"host:port"``, several separated by ``,``
    or ``;``, or a list. *params* are the rest of the cache's settings; its
    ``OPTIONS`` are those of Django's ``PyMemcacheCache``, with their meaning:
    pymemcache client options (``connect_timeout``, ``timeout``, ``no_delay``,
    ``serde``, ``tls_context``...), ``ignore_exc``, and for several servers the
    failover options ``retry_attempts``, ``retry_timeout`` and ``dead_timeout``;
    ``use_pooling`` is accepted and ignored, as every server is pooled.
    greenpool adds ``max_pool_size`` (clients per server and thread, 16 by
    default), ``pool_timeout`` (seconds a command waits for a free client, 5),
    ``pool_idle_timeout`` and ``pool_options`` (see :class:`~greenpool.PooledClient`).
    Client options default to greenpool's (``connect_timeout=1.0``,
    ``timeout=2.0``, a cooperative socket module), then Django's
    (``allow_unicode_keys``, ``default_noreply=False``, pickled values).

    The client is built, and the OPTIONS checked, when the backend is made;
    nothing connects until the first command. :meth:`get_or_set` computes a
    missing value once across processes (:meth:`HashClient.get_or_compute
    <greenpool.HashClient.get_or_compute>`).
    """

    _options: dict[str, Any]  # the client's keyword arguments
    _servers: list[str]

    def __init__(self, server: Any, params: Mapping[str, Any]) -> None:
        super().__init__(server, params, library=pymemcache, value_not_found_exception=KeyError)
        self._options = {**DJANGO_DEFAULTS, **self._options}
        self._class = OneServerClient if len(self._servers) == 1 else HashClient
        self._shared = SharedCluster(self.client_servers, self._options)
        self._cache  # noqa: B018 (build it now: bad OPTIONS fail here, not at a request)

    @property
    def _cache(self) -> HashClient:
        """This process's and thread's client for these servers and options."""
        return self._shared.client()

    def pool_stats(self) -> dict[str, PooledClientStats]:
        """Each server's pool stats, by ``"host:port"``: what
        :meth:`HashClient.pool_stats() <greenpool.HashClient.pool_stats>` says, over
        every thread's client of this process. It may be called from any thread."""
        return self._shared.pool_stats()

    def close(self, **kwargs: Any) -> None:
        """Keep the pooled connections (Django calls this when each request ends).

        Django's ``PyLibMCCache`` does the same, for the same reason: the client
        manages its connections. Disconnecting would cost every request a new
        connection and reset the failover state of several servers.
        """

    def get_or_set(
        self, key: Any, default: Any, timeout: Any = DEFAULT_TIMEOUT, version: Any = None
    ) -> Any:
        """Django's ``get_or_set``, with stampede protection: a missing value is
        computed (``default()``, or *default* itself if it is not callable) at most
        once at a time per key, across processes, by get_or_compute with its
        defaults (a lease of 30 s, waiters served within 2 s or given ``None``).
        Django's own calls ``default()`` in every caller that misses at once. A
        *timeout* of 0 (expire at once) computes and stores nothing, as Django's."""
        key = self.make_and_validate_key(key, version=version)
        compute = default if callable(default) else lambda: default
        seconds = self.get_backend_timeout(timeout)
        if seconds < 0:
            return compute()
        return self._cache.get_or_compute(key, compute, seconds)

    def invalidate(self, key: Any, stale_ttl: int | None = 30, version: Any = None) -> bool:
        """Mark *key*'s value stale (``md <key> I``): :meth:`get_or_set` serves it
        while one caller recomputes; see :meth:`HashClient.invalidate
        <greenpool.HashClient.invalidate>`."""
        key = self.make_and_validate_key(key, version=version)
        return self._cache.invalidate(key, stale_ttl)
