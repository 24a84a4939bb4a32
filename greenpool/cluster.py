"""HashClient: pymemcache's cluster client with a greenpool PooledClient per server."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pymemcache.client.hash import HashClient as _PymemcacheHashClient

from greenpool.client import PooledClient, check_pool_arguments
from greenpool.factory import CLIENT_DEFAULTS
from greenpool.pool import DEFAULT_MAXSIZE, DEFAULT_TIMEOUT

__all__ = ["HashClient"]


class HashClient(_PymemcacheHashClient):  # type: ignore[misc]
    """pymemcache's ``HashClient``, each server served by a :class:`~greenpool.PooledClient`.

    Keys are spread over *servers* by pymemcache's hashing, with its failover
    options (``ignore_exc``, ``retry_attempts``, ``retry_timeout``,
    ``dead_timeout``) unchanged. Each server gets its own pool of at most
    *max_pool_size* clients, whose callers wait up to *pool_timeout* seconds;
    *pool_idle_timeout*, *lock_generator* and *pool_options* mean what they
    mean for :class:`~greenpool.PooledClient`. Client options default to
    :data:`~greenpool.CLIENT_DEFAULTS` rather than pymemcache's (which wait
    forever and, unpatched, block the hub). *use_pooling* is accepted for
    compatibility and ignored: every server is pooled.

    >>> cluster = HashClient([memcached_address], max_pool_size=4)
    >>> cluster.set("clustered", "yes")
    True
    >>> cluster.get("clustered")
    b'yes'
    """

    def __init__(
        self,
        servers: Iterable[Any],
        *,
        max_pool_size: int | None = DEFAULT_MAXSIZE,
        pool_timeout: float = DEFAULT_TIMEOUT,
        pool_idle_timeout: float = 0,
        lock_generator: Callable[[], Any] | None = None,
        use_pooling: bool = True,
        pool_options: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if isinstance(servers, (str, bytes)) or not isinstance(servers, Iterable):
            raise TypeError(
                f"servers must be a list of servers ((host, port) or 'host:port'), "
                f"not {type(servers).__name__}"
            )
        check_pool_arguments(
            max_pool_size, pool_timeout, pool_idle_timeout, lock_generator, pool_options
        )
        # pymemcache's add_server builds self.client_class(server, **default_kwargs)
        # when use_pooling is False: a partial carries the pool settings.
        self.client_class = functools.partial(
            PooledClient,
            max_pool_size=max_pool_size,
            pool_timeout=pool_timeout,
            pool_idle_timeout=pool_idle_timeout,
            lock_generator=lock_generator,
            pool_options=pool_options,
        )
        super().__init__(servers, use_pooling=False, **{**CLIENT_DEFAULTS, **options})
