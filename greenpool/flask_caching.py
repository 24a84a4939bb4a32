"""A Flask-Caching backend on greenpool: ``greenpool.flask_caching.MemcachedCache``.

Flask-Caching's memcached backends reach memcached through cachelib, which
supports pylibmc, python-memcached and libmc: none of them cooperative, and
pymemcache not at all. This backend is Flask-Caching's ``MemcachedCache``
with cachelib's code for every cache method (pickled values, ``has``,
``add``, ``get_dict``, ``delete_many``...), on a :class:`~greenpool.HashClient`
over greenpool pools, one per process and OS thread::

    app.config.update(
        CACHE_TYPE="greenpool.flask_caching.MemcachedCache",
        CACHE_MEMCACHED_SERVERS=["127.0.0.1:11211"],  # or several
        CACHE_OPTIONS={"max_pool_size": 16, "pool_timeout": 5.0},
    )
    cache = flask_caching.Cache(app)

Importing this module imports Flask-Caching and Flask; ``import greenpool``
does not.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pymemcache.serde
from cachelib import BaseCache as CachelibBaseCache
from flask import Flask
from flask_caching.backends.base import BaseCache
from flask_caching.backends.memcache import MemcachedCache as FlaskMemcachedCache
from pymemcache.exceptions import MemcacheClientError

from greenpool._shared import SharedCluster
from greenpool.client import PooledClientStats
from greenpool.cluster import HashClient

__all__ = ["MemcachedCache"]

#: The client settings that give cachelib's semantics on pymemcache: any
#: picklable value, str keys (UTF-8 on the wire), and replies to every store.
FLASK_DEFAULTS: dict[str, Any] = {
    "allow_unicode_keys": True,
    "default_noreply": False,
    "serde": pymemcache.serde.pickle_serde,
}
#: memcached reads an expiry above 30 days as a Unix time.
MAX_RELATIVE_EXPIRY = 30 * 24 * 3600
#: How often inc/dec try to store, each failure meaning another writer succeeded.
CAS_ATTEMPTS = 100


class MemcachedCache(FlaskMemcachedCache):
    """Flask-Caching's memcached backend on one greenpool client per process and thread.

    *servers* are ``"host:port"`` strings (``CACHE_MEMCACHED_SERVERS``; a
    single string may list several separated by ``,`` or ``;``; ``None`` means
    ``127.0.0.1:11211``), *key_prefix* (``CACHE_KEY_PREFIX``) is put before
    every key, *default_timeout* (``CACHE_DEFAULT_TIMEOUT``) is in seconds, 0
    meaning never, and *ignore_delete_many_errors* (``CACHE_IGNORE_ERRORS``)
    keeps ``delete_many`` from raising. cachelib's *pool_size* and
    *pool_blocking* set greenpool's *max_pool_size* and, when false,
    ``pool_timeout=0``; *check_connection* asks every server for its version at
    once. The other keyword arguments (``CACHE_OPTIONS``) are those of
    :class:`~greenpool.HashClient`: ``max_pool_size`` (16), ``pool_timeout``
    (5 seconds), pymemcache client options and, for several servers, its
    failover options.

    As cachelib's, values are pickled (str, bytes and int are stored as they
    are), ``get`` of a key memcached cannot take is a miss, and timeouts over
    30 days expire at that absolute time. ``inc`` and ``dec`` add to the value
    or to 0 and reset the key's timeout to the default, as cachelib's do, but
    atomically: ``inc`` with memcached's ``incr`` where the value is a
    non-negative integer (a string of digits too, as memcached sees it) and the
    sum stays below 2**64 (where memcached's ``incr`` wraps to 0), else
    both with ``gets`` then ``cas``, tried up to 100 times while other writers
    get there first (then ``None``, as cachelib's when its ``set`` fails).

    :meth:`get_or_compute` computes a missing value once across processes.
    Flask-Caching's ``cached`` and ``memoize`` decorators cannot use it: they
    call ``get``, the function, then ``set`` in Flask-Caching's own code, which
    a backend does not see as one operation.
    """

    def __init__(
        self,
        servers: Any = None,
        default_timeout: int = 300,
        key_prefix: str | None = None,
        pool_size: int | None = None,
        pool_blocking: bool = True,
        ignore_delete_many_errors: bool = False,
        check_connection: bool = False,
        memcache_client_lib: str | None = None,
        **options: Any,
    ) -> None:
        BaseCache.__init__(self, default_timeout, ignore_delete_many_errors)
        if memcache_client_lib is not None:
            raise ValueError(
                f"memcache_client_lib must be None: greenpool's backend uses pymemcache, "
                f"not {memcache_client_lib!r}"
            )
        if pool_size is not None:
            if "max_pool_size" in options:
                raise TypeError("pass pool_size or max_pool_size, not both")
            options["max_pool_size"] = pool_size
        if not pool_blocking:
            options.setdefault("pool_timeout", 0)
        self.key_prefix = key_prefix
        self.check_connection = check_connection
        self.servers = _server_list(servers)
        self.options = {**FLASK_DEFAULTS, **options}
        self._shared = SharedCluster(self.servers, self.options)
        client = self.client  # built now: bad options fail here, not at a request
        if check_connection:
            try:
                for pooled in client.clients.values():
                    pooled.version()
            except Exception as err:
                raise RuntimeError(f"could not connect to memcached server(s): {err}") from err

    @classmethod
    def factory(
        cls, app: Flask, config: dict[str, Any], args: list[Any], kwargs: dict[str, Any]
    ) -> MemcachedCache:
        """Build the backend from Flask's config, as Flask-Caching's own does."""
        args.append(config["CACHE_MEMCACHED_SERVERS"])
        kwargs.update(key_prefix=config["CACHE_KEY_PREFIX"])
        return cls(*args, **kwargs)

    @property
    def client(self) -> HashClient:
        """This process's and thread's client for these servers and options."""
        return self._shared.client()

    def pool_stats(self) -> dict[str, PooledClientStats]:
        """Each server's pool stats, by ``"host:port"``: what
        :meth:`HashClient.pool_stats() <greenpool.HashClient.pool_stats>` says, over
        every thread's client of this process. It may be called from any thread."""
        return self._shared.pool_stats()

    @contextlib.contextmanager
    def _client_context(self) -> Iterator[HashClient]:  # cachelib's methods use this
        yield self.client

    def _normalize_timeout(self, timeout: Any) -> int:
        """Seconds from now up to 30 days, a Unix time beyond (as memcached reads them)."""
        seconds = CachelibBaseCache._normalize_timeout(self, timeout)
        return seconds + int(time.time()) if seconds > MAX_RELATIVE_EXPIRY else seconds

    def get_or_compute(
        self, key: str, compute: Callable[[], Any], timeout: Any = None, **options: Any
    ) -> Any:
        """The value of *key*, computed by ``compute()`` at most once at a time per
        key across processes: :meth:`HashClient.get_or_compute
        <greenpool.HashClient.get_or_compute>` with this backend's key prefix and
        *timeout* (seconds, ``None`` for the default, 0 for never); *options* are
        its keyword arguments (``recache_before``, ``wait``...)."""
        return self.client.get_or_compute(
            self._normalize_key(key), compute, self._normalize_timeout(timeout), **options
        )

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Add *delta* to the value of *key* (or to 0), atomically; the new value.

        memcached's ``incr``, or ``add`` when the key is missing, then ``incr``
        again if another greenlet added it first: each try but the last is lost
        only to a concurrent delete, never to a concurrent increment. Past
        2**64 - 1, where memcached's ``incr`` wraps to 0, the sum is cachelib's
        (a Python int): the wrapped ``incr`` is undone and the value stored with
        ``cas``; readers may see the wrapped value for that moment."""
        if delta >= 0:
            normalized = self._normalize_key(key)
            timeout = self._normalize_timeout(None)
            client = self.client
            for _ in range(CAS_ATTEMPTS):
                try:
                    new: int | None = client.incr(normalized, delta)
                except MemcacheClientError:  # not a number memcached can add to: see _add
                    break
                if new is not None and new < delta:  # memcached wrapped past 2**64 - 1:
                    client.incr(normalized, 2**64 - delta)  # undo it, modulo 2**64
                    break  # and add in Python, as cachelib does
                if new is not None:
                    client.touch(normalized, timeout)  # as cachelib's set
                    return new
                if client.add(normalized, delta, timeout):
                    return delta
        return self._add(key, delta)

    def dec(self, key: str, delta: int = 1) -> int | None:
        """Subtract *delta* from the value of *key* (or from 0), atomically; the new value."""
        return self._add(key, -delta)

    def _add(self, key: str, delta: int) -> int | None:
        """cachelib's arithmetic, ``(value or 0) + delta``, stored with ``cas`` (or
        ``add`` for a new key) so that no concurrent change is lost."""
        normalized = self._normalize_key(key)
        timeout = self._normalize_timeout(None)
        client = self.client
        for _ in range(CAS_ATTEMPTS):
            value, token = client.gets(normalized) or (None, None)
            new: int = (value or 0) + delta
            if token is None:
                stored = client.add(normalized, new, timeout)
            else:
                stored = client.cas(normalized, new, token, timeout)
            if stored:
                return new
        return None


def _server_list(servers: Any) -> list[Any]:
    if servers is None:
        return ["127.0.0.1:11211"]
    if isinstance(servers, str):
        return re.split("[;,]", servers)
    if isinstance(servers, (list, tuple)):
        return list(servers)
    raise TypeError(
        f"servers (CACHE_MEMCACHED_SERVERS) must be None, a 'host:port' string or a "
        f"list of them, not {type(servers).__name__}"
    )
