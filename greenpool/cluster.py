"""HashClient: pymemcache's cluster client with a greenpool PooledClient per server.

pymemcache's ``HashClient`` spreads keys over servers and fails over between
them; greenpool's keeps its API and rules, gives each server a
:class:`~greenpool.PooledClient`, and adds what a cluster under gevent needs:

- placement costs a dict lookup: the server of each recent key is remembered
  (up to :data:`PLACEMENT_MEMO` keys), and forgotten at once whenever the ring
  changes, so a key never outlives the ring it was placed on;
- failover without pymemcache's races between greenlets, counted once per
  failed command and logged (:mod:`greenpool._failover`);
- every argument checked by name at construction, the key prefix included;
- :meth:`HashClient.pool_stats`, each server's pool and batcher counters.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from pymemcache.client.base import normalize_server_spec
from pymemcache.client.hash import HashClient as _PymemcacheHashClient
from pymemcache.exceptions import MemcacheError

from greenpool._checks import check_bool, check_key, check_key_prefix, check_seconds, check_size
from greenpool._failover import Failover, _monotonic
from greenpool._stampede_methods import ClusterStampede
from greenpool.batching import DEFAULT_AUTOBATCH, DEFAULT_MAX_KEYS
from greenpool.client import PooledClient, PooledClientStats, check_pool_arguments
from greenpool.factory import CLIENT_DEFAULTS, check_client_options
from greenpool.ketama import TwemproxyKetama
from greenpool.pool import DEFAULT_MAXSIZE, DEFAULT_TIMEOUT
from greenpool.rendezvous import RendezvousHash

__all__ = ["PLACEMENT_MEMO", "HashClient"]

#: How many keys' servers a HashClient remembers (all forgotten at once beyond).
PLACEMENT_MEMO = 8192
# What memcached's tokenizer ends a key at: controls (line ends, tab, NUL...), space, DEL.


class HashClient(ClusterStampede, Failover, _PymemcacheHashClient):  # type: ignore[misc]
    """pymemcache's ``HashClient``, each server served by a :class:`~greenpool.PooledClient`.

    Keys are spread over *servers* by *hasher*: by default
    :class:`~greenpool.RendezvousHash`, pymemcache's placement computed in C;
    :class:`~greenpool.LibmemcachedKetama` and :class:`~greenpool.TwemproxyKetama`
    place keys as pylibmc and twemproxy do. pymemcache's failover options
    (``ignore_exc``, ``retry_attempts``, ``retry_timeout``, ``dead_timeout``)
    keep their meaning, without its races between greenlets: a server that
    fails is retried after *retry_timeout* seconds, and its commands return
    their default (``None``, ``False``) meanwhile; after *retry_attempts*
    failed commands it leaves the ring, its keys going to the other servers,
    until *dead_timeout* seconds later. Both transitions are logged on the
    ``greenpool`` logger. A :class:`~greenpool.PoolError` other than a full
    pool (a cluster used from another thread, say) is raised whatever
    *ignore_exc* says. Each server gets its own pool of at most
    *max_pool_size* clients, whose callers wait up to *pool_timeout* seconds;
    *pool_idle_timeout*, *lock_generator*, *pool_options*, *autobatch* and
    *autobatch_max_keys* mean what they mean for :class:`~greenpool.PooledClient`:
    with *autobatch*, each server batches the gets and pipelines the writes
    sent to it; get_or_compute,
    invalidate and the meta commands go to the key's server. *key_prefix* may
    be ``str`` (ASCII, or UTF-8 with *allow_unicode_keys*) or ``bytes``. Client
    options default to :data:`~greenpool.CLIENT_DEFAULTS` rather than
    pymemcache's (which wait forever and, unpatched, block the hub).
    *use_pooling* is accepted for compatibility and ignored: every server is
    pooled. Change the ring with :meth:`add_server` and :meth:`remove_server`,
    not through *hasher*, whose placements the client remembers.

    >>> cluster = HashClient([memcached_address], max_pool_size=4)
    >>> cluster.set("clustered", "yes")
    True
    >>> cluster.get("clustered")
    b'yes'
    >>> list(cluster.pool_stats()) == [f"{memcached_address[0]}:{memcached_address[1]}"]
    True
    """

    def __init__(
        self,
        servers: Iterable[Any],
        *,
        hasher: Optional[Callable[[], Any]] = None,
        max_pool_size: int | None = DEFAULT_MAXSIZE,
        pool_timeout: float = DEFAULT_TIMEOUT,
        pool_idle_timeout: float = 0,
        lock_generator: Callable[[], Any] | None = None,
        use_pooling: bool = True,
        pool_options: Mapping[str, Any] | None = None,
        autobatch: bool = DEFAULT_AUTOBATCH,
        autobatch_max_keys: int = DEFAULT_MAX_KEYS,
        retry_attempts: int = 2,
        retry_timeout: float = 1,
        dead_timeout: float = 60,
        ignore_exc: bool = False,
        key_prefix: bytes | str = b"",
        allow_unicode_keys: bool = False,
        **options: Any,
    ) -> None:
        if isinstance(servers, (str, bytes)) or not isinstance(servers, Iterable):
            raise TypeError(
                f"servers must be a list of servers ((host, port) or 'host:port'), "
                f"not {type(servers).__name__}"
            )
        servers = list(servers)
        check_pool_arguments(
            max_pool_size, pool_timeout, pool_idle_timeout, lock_generator, pool_options
        )
        check_bool("autobatch", autobatch)
        check_size("autobatch_max_keys", autobatch_max_keys)
        check_size("retry_attempts", retry_attempts, minimum=0)
        failover = {
            "retry_attempts": retry_attempts,
            "retry_timeout": check_seconds("retry_timeout", retry_timeout),
            "dead_timeout": check_seconds("dead_timeout", dead_timeout),
            "ignore_exc": check_bool("ignore_exc", ignore_exc),
        }
        check_bool("use_pooling", use_pooling)
        if hasher is not None and not callable(hasher):
            raise TypeError(
                f"hasher must be a callable returning a hasher (a class such as "
                f"RendezvousHash), not {type(hasher).__name__}"
            )
        check_bool("allow_unicode_keys", allow_unicode_keys)
        key_prefix = check_key_prefix(key_prefix, allow_unicode_keys)
        options = {
            **CLIENT_DEFAULTS, **options,
            "key_prefix": key_prefix, "allow_unicode_keys": allow_unicode_keys,
        }  # fmt: skip
        if not servers:  # no PooledClient to check them: check them here
            check_client_options(options)
        # pymemcache's add_server builds self.client_class(server, **default_kwargs)
        # when use_pooling is False: a partial carries the pool settings.
        self.client_class = functools.partial(
            PooledClient,
            max_pool_size=max_pool_size,
            pool_timeout=pool_timeout,
            pool_idle_timeout=pool_idle_timeout,
            lock_generator=lock_generator,
            pool_options=pool_options,
            autobatch=autobatch,
            autobatch_max_keys=autobatch_max_keys,
        )
        self._next_revival = math.inf
        self._placed: dict[Any, PooledClient] = {}  # key -> its server's client, this ring
        super().__init__(
            servers, hasher=hasher or RendezvousHash, use_pooling=False, **failover, **options
        )
        if isinstance(self.hasher, TwemproxyKetama):
            self.hasher.key_prefix = self.key_prefix  # twemproxy hashes the key as sent

    def pool_stats(self) -> dict[str, PooledClientStats]:
        """Each server's :meth:`PooledClient.pool_stats() <greenpool.PooledClient.pool_stats>`,
        by ``"host:port"`` (or socket path): its pool's and batcher's counters.
        Servers marked dead are listed too. It may be called from any thread."""
        return {node: client.pool_stats() for node, client in list(self.clients.items())}

    # -- the reads, without pymemcache's generic _run_cmd on their way -----------------

    def get(self, key: Any, default: Any = None, **kwargs: Any) -> Any:
        """pymemcache's ``HashClient.get``."""
        if self._dead_clients and _monotonic() >= self._next_revival:
            self._retry_dead()
        client = self._placed.get(key) if key.__class__ is str else None
        if client is None:
            client = self._get_client(key)
            if client is None:
                return default
        if self._failed_clients or kwargs:
            return self._safely_run_func(client, client.get, default, key, default, **kwargs)
        try:  # the common case, inlined from _safely_run_func
            return client.get(key, default)
        except Exception as exc:
            if self._ignored(client.server, exc):
                return default
            raise

    def gets(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        """pymemcache's ``HashClient.gets``."""
        client = self._get_client(key)
        if client is None:
            return None
        return self._safely_run_func(client, client.gets, None, key, *args, **kwargs)

    # -- placement and the ring ------------------------------------------------------

    def _get_client(self, key: Any) -> Any:
        """The client of *key*'s server, or ``None`` (with *ignore_exc*) when the
        ring is empty; a bad key raises pymemcache's error, even with *ignore_exc*."""
        if self._dead_clients and _monotonic() >= self._next_revival:
            self._retry_dead()
        cls = key.__class__
        if cls is str or cls is bytes:
            client = self._placed.get(key)
            if client is not None:
                return client
        check_key(key, self.allow_unicode_keys, self.key_prefix)
        node = self.hasher.get_node(key)
        if node is None:  # no server left in the ring
            if self.ignore_exc:
                return None
            raise MemcacheError("All servers seem to be down right now")
        client = self.clients[node]
        if cls is str or cls is bytes:
            if len(self._placed) >= PLACEMENT_MEMO:
                self._placed.clear()
            self._placed[key] = client
        return client

    def _ring_changed(self) -> None:
        self._placed.clear()

    def add_server(self, server: Any, port: Optional[int] = None) -> None:
        """Add *server* to the ring, as pymemcache's."""
        super().add_server(server, port)
        self._ring_changed()

    def remove_server(self, server: Any, port: Optional[int] = None) -> None:
        """Take *server* out of the ring for *dead_timeout* seconds, as pymemcache's.

        Taking out a server that is already out does nothing; one that is not a
        server of this client raises :class:`ValueError` and changes nothing.
        """
        if port is not None:
            if not isinstance(server, str):
                raise TypeError("Server must be a string when passing port.")
            server = (server, port)
        server = normalize_server_spec(server)
        node = self._make_client_key(server)
        if node not in self.clients:
            raise ValueError(
                f"{node} is not a server of this HashClient (its servers: {sorted(self.clients)})"
            )
        self._mark_dead(server, "remove_server()")
