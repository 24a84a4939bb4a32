"""HashClient: pymemcache's cluster client with a greenpool PooledClient per server.

pymemcache's ``HashClient`` keeps its failover state in dicts that one
greenlet reads, then writes after a command's socket I/O, while other greenlets
run in between: two greenlets retrying a failed server both remove it from
``_failed_clients`` after succeeding, and the second raises ``KeyError`` into the
application; two marking it dead both remove its node, and the second raises
``ValueError``. The methods below keep pymemcache's failover rules
(*retry_attempts*, *retry_timeout*, *dead_timeout*, *ignore_exc*) but change the
state only where nothing can run in between, and never assume a key is still
there.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Optional

from pymemcache.client.base import normalize_server_spec
from pymemcache.client.hash import HashClient as _PymemcacheHashClient
from pymemcache.exceptions import MemcacheError

from greenpool._checks import CheckedKeys, check_bool, check_size
from greenpool._stampede_methods import ClusterStampede
from greenpool.batching import DEFAULT_AUTOBATCH, DEFAULT_MAX_KEYS
from greenpool.client import PooledClient, check_pool_arguments
from greenpool.factory import CLIENT_DEFAULTS
from greenpool.ketama import TwemproxyKetama
from greenpool.pool import DEFAULT_MAXSIZE, DEFAULT_TIMEOUT
from greenpool.rendezvous import RendezvousHash

__all__ = ["HashClient"]

_monotonic = time.monotonic


class HashClient(ClusterStampede, _PymemcacheHashClient):  # type: ignore[misc]
    """pymemcache's ``HashClient``, each server served by a :class:`~greenpool.PooledClient`.

    Keys are spread over *servers* by *hasher*: by default
    :class:`~greenpool.RendezvousHash`, pymemcache's placement computed faster;
    :class:`~greenpool.LibmemcachedKetama` and :class:`~greenpool.TwemproxyKetama`
    place keys as pylibmc and twemproxy do. pymemcache's failover options
    (``ignore_exc``, ``retry_attempts``, ``retry_timeout``, ``dead_timeout``)
    keep their meaning, without its races between greenlets: a server that
    fails is retried after *retry_timeout* seconds, and its commands return
    their default (``None``, ``False``) meanwhile; after *retry_attempts*
    failures it leaves the ring, its keys going to the other servers, until
    *dead_timeout* seconds later. Each server gets its own pool of at most
    *max_pool_size* clients, whose callers wait up to *pool_timeout* seconds;
    *pool_idle_timeout*, *lock_generator*, *pool_options*, *autobatch* and
    *autobatch_max_keys* mean what they mean for :class:`~greenpool.PooledClient`:
    with *autobatch*, each server batches the gets sent to it; get_or_compute,
    invalidate and the meta commands go to the key's server. Client options default to
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
        hasher: Optional[Callable[[], Any]] = None,
        max_pool_size: int | None = DEFAULT_MAXSIZE,
        pool_timeout: float = DEFAULT_TIMEOUT,
        pool_idle_timeout: float = 0,
        lock_generator: Callable[[], Any] | None = None,
        use_pooling: bool = True,
        pool_options: Mapping[str, Any] | None = None,
        autobatch: bool = DEFAULT_AUTOBATCH,
        autobatch_max_keys: int = DEFAULT_MAX_KEYS,
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
        check_bool("autobatch", autobatch)
        check_size("autobatch_max_keys", autobatch_max_keys)
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
        self._next_revival = math.inf  # when the first dead server is due back
        super().__init__(
            servers,
            hasher=hasher or RendezvousHash,
            use_pooling=False,
            **{**CLIENT_DEFAULTS, **options},
        )
        if isinstance(self.hasher, TwemproxyKetama):
            self.hasher.key_prefix = self.key_prefix  # twemproxy hashes the key as sent
        self._checked = CheckedKeys(self.key_prefix, self.allow_unicode_keys)

    # -- the reads, without pymemcache's generic _run_cmd on their way -----------------

    def get(self, key: Any, default: Any = None, **kwargs: Any) -> Any:
        """pymemcache's ``HashClient.get``."""
        client = self._get_client(key)
        if client is None:
            return default
        return self._safely_run_func(client, client.get, default, key, default, **kwargs)

    def gets(self, key: Any, *args: Any, **kwargs: Any) -> Any:
        """pymemcache's ``HashClient.gets``."""
        client = self._get_client(key)
        if client is None:
            return None
        return self._safely_run_func(client, client.gets, None, key, *args, **kwargs)

    # -- placement -----------------------------------------------------------------

    def _get_client(self, key: Any) -> Any:
        self._checked(key)  # pymemcache's check, remembered: raises even with ignore_exc
        if self._dead_clients and _monotonic() >= self._next_revival:
            self._retry_dead()
        node = self.hasher.get_node(key)
        if node is None:  # no server left in the ring
            if self.ignore_exc:
                return None
            raise MemcacheError("All servers seem to be down right now")
        return self.clients[node]

    def _retry_dead(self) -> None:
        """Put back in the ring each dead server whose *dead_timeout* is over."""
        now = _monotonic()
        for server, dead_since in list(self._dead_clients.items()):
            if now - dead_since >= self.dead_timeout:
                del self._dead_clients[server]
                node = self._make_client_key(server)
                self.clients[node].close()  # its idle connections predate the outage
                self.hasher.add_node(node)
        self._next_revival = min(self._dead_clients.values(), default=math.inf) + self.dead_timeout

    def remove_server(self, server: Any, port: Optional[int] = None) -> None:
        """Take *server* out of the ring for *dead_timeout* seconds, as pymemcache's.

        Taking out a server that is already out does nothing.
        """
        if port is not None:
            if not isinstance(server, str):
                raise TypeError("Server must be a string when passing port.")
            server = (server, port)
        self._mark_dead(normalize_server_spec(server))

    def _mark_dead(self, server: Any) -> None:
        self._failed_clients.pop(server, None)
        if server in self._dead_clients:
            return
        now = _monotonic()
        self._dead_clients[server] = now
        self._next_revival = min(self._next_revival, now + self.dead_timeout)
        node = self._make_client_key(server)
        self.hasher.remove_node(node)  # it was in the ring: only the dead leave it
        self.clients[node].close()

    # -- failures --------------------------------------------------------------------

    def _mark_failed_server(self, server: Any) -> None:
        """Count a failed command on *server*; mark it dead when out of retries."""
        if server in self._dead_clients:
            return  # a command sent before it was marked dead: nothing new
        failed = self._failed_clients.get(server)
        if failed is None:
            self._failed_clients[server] = {"failed_time": _monotonic(), "attempts": 0}
            if self.retry_attempts <= 0:
                self._mark_dead(server)
        else:
            failed["attempts"] += 1
            failed["failed_time"] = _monotonic()

    def _may_send(self, server: Any) -> tuple[bool, Optional[dict[str, Any]]]:
        """Whether a command may go to *server* now, and the failure it retries."""
        failed = self._failed_clients.get(server)
        if failed is None:
            return True, None
        if failed["attempts"] >= self.retry_attempts:
            self._mark_dead(server)
            return False, None
        return _monotonic() - failed["failed_time"] > self.retry_timeout, failed

    def _succeeded(self, server: Any, retried: Optional[dict[str, Any]]) -> None:
        """A retry went through: forget the failure, unless another replaced it."""
        if retried is not None and self._failed_clients.get(server) is retried:
            del self._failed_clients[server]

    def _safely_run_func(
        self, client: Any, func: Callable[..., Any], default_val: Any, *args: Any, **kwargs: Any
    ) -> Any:
        server = client.server
        retried = None
        try:
            if self._failed_clients:  # else every server may be sent to, and none is retried
                may_send, retried = self._may_send(server)
                if not may_send:
                    return default_val
            result = func(*args, **kwargs)
        except OSError:
            self._mark_failed_server(server)
            if not self.ignore_exc:
                raise
            return default_val
        except Exception:
            if not self.ignore_exc:
                raise
            return default_val
        if retried is not None:
            self._succeeded(server, retried)
        return result

    def _safely_run_set_many(
        self, client: Any, values: dict[Any, Any], *args: Any, **kwargs: Any
    ) -> Any:
        server = client.server
        succeeded: list[Any] = []
        try:
            may_send, retried = self._may_send(server)
            if not may_send:
                return list(values)
            succeeded, failed, error = self._set_many(client, values, *args, **kwargs)
            if error is not None:
                raise error
        except OSError:
            self._mark_failed_server(server)
            if not self.ignore_exc:
                raise
            return list(set(values) - set(succeeded))
        except Exception:
            if not self.ignore_exc:
                raise
            return list(set(values) - set(succeeded))
        self._succeeded(server, retried)
        return failed
