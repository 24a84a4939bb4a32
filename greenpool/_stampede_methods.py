"""get_or_compute, invalidate and the meta commands of PooledClient and HashClient.

:class:`PooledStampede` gives a :class:`~greenpool.PooledClient` its
:class:`~greenpool.stampede.Stampede` (made on first use: one flight table,
its lease requests sent through the client's batcher, one meta probe per
pool, so per server);
:class:`ClusterStampede` sends each key's call to its server's PooledClient
with HashClient's failover rules. The "Stampede protection" page is the
user's guide.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from greenpool._flights import StampedeStats, check_options, check_stale_ttl, total
from greenpool.meta import MetaReply
from greenpool.stampede import Stampede

if TYPE_CHECKING:
    from greenpool._leases import Leases
    from greenpool.pool import ClientPool

__all__ = ["ClusterStampede", "PooledStampede"]


class PooledStampede:
    """The stampede-protected reads of a PooledClient (a mixin)."""

    if TYPE_CHECKING:
        pool: ClientPool[Any]
        serde: Any
        encoding: str

        def check_key(self, key: Any) -> bytes: ...
        def _cache_failed(self, exc: Exception) -> bool: ...
        def _leases(self) -> Leases: ...

    @functools.cached_property
    def stampede(self) -> Stampede:
        """This client's flights, lease requests and background recomputes."""
        return Stampede(self.pool, self.serde, self.encoding, self._leases())

    def get_or_compute(self, key: Any, compute: Callable[[], Any], ttl: int, **options: Any) -> Any:
        """``get_or_compute(key, compute, ttl, *, lease_ttl=30, recache_before=None,
        serve_stale=True, wait=2.0, default=None)``

        Return the value of *key*, computing it with ``compute()`` when it is
        missing, at most once at a time per key across every process that shares
        the server (memcached 1.6.10 or newer; the "Stampede protection" page).

        The value is stored with the client's serde for *ttl* seconds (0: no
        expiry), so a plain ``get`` reads it, and every caller gets what ``get``
        would return. In each process one caller asks memcached for a lease; the
        others wait for it and never touch a socket. The lease winner computes and
        stores; callers of other processes wait, polling once per process, up to
        *wait* seconds, then get *default* (they do not compute: when computing is
        slow, computing in every waiter is the herd this prevents). A lease not
        stored within *lease_ttl* seconds lapses, and another caller wins.

        With *recache_before* (at least 2), once fewer than that many seconds of
        *ttl* are left, one caller recomputes in the background (a greenlet this
        client owns: ``close()`` waits for it) while everyone gets the current
        value. After :meth:`invalidate`, with *serve_stale*, callers get the old
        value at once while one recomputes; without it they wait for the new one.

        compute's exception reaches its caller and every caller waiting for it in
        this process, and gives the lease back. A waiter's ``gevent.Timeout`` or
        kill withdraws only that waiter; the computing caller's makes another
        caller compute.

        :raises TypeError, ValueError: a bad or unknown argument, named, before
            anything is sent.
        :raises MemcacheIllegalInputError: a bad key.
        """
        checked = check_options(compute, ttl, **options)
        wire = self.check_key(key)
        return self.stampede.get_or_compute(key, wire, compute, checked, self._cache_failed)

    def invalidate(self, key: Any, stale_ttl: Optional[int] = 30) -> bool:
        """Mark *key*'s value stale for *stale_ttl* seconds (``md <key> I
        T<stale_ttl>``): get_or_compute serves it, with *serve_stale*, while one
        caller recomputes. ``None``, or a server without the meta protocol,
        deletes it instead. Return whether the key was there."""
        stale = check_stale_ttl(stale_ttl)
        return self.stampede.invalidate(key, self.check_key(key), stale)

    def stampede_stats(self) -> StampedeStats:
        """get_or_compute's counters (the "Stampede protection" page)."""
        return self.stampede.stats()


class ClusterStampede:
    """HashClient's stampede-protected reads and meta commands: each on the
    PooledClient of the key's server (a mixin)."""

    if TYPE_CHECKING:
        clients: dict[str, Any]
        ignore_exc: bool
        _failed_clients: dict[Any, Any]

        def _get_client(self, key: Any) -> Any: ...
        def _run_cmd(self, cmd: str, key: Any, default_val: Any, *args: Any) -> Any: ...
        def _may_send(self, server: Any) -> tuple[bool, Optional[dict[str, Any]]]: ...
        def _succeeded(self, server: Any, retried: Optional[dict[str, Any]]) -> None: ...
        def _mark_failed_server(
            self, server: Any, error: Optional[BaseException] = None
        ) -> None: ...

    def get_or_compute(self, key: Any, compute: Callable[[], Any], ttl: int, **options: Any) -> Any:
        """:meth:`PooledClient.get_or_compute <greenpool.PooledClient.get_or_compute>`
        on the key's server. Where HashClient's failover would answer a default
        (a server waiting out *retry_timeout*, or failing with *ignore_exc*), the
        value is computed, in one caller per process, and not stored."""
        checked = check_options(compute, ttl, **options)
        client = self._get_client(key)
        if client is None:  # ignore_exc, and no server left
            return compute()
        server = client.server
        may_send, retried = self._may_send(server) if self._failed_clients else (True, None)
        failures: list[Exception] = []

        def failed(exc: Exception) -> bool:
            failures.append(exc)
            if isinstance(exc, OSError):
                self._mark_failed_server(server, exc)
            return self.ignore_exc

        wire = client.check_key(key)
        value = client.stampede.get_or_compute(
            key, wire, compute, checked, failed, offline=not may_send
        )
        if may_send and not failures:
            self._succeeded(server, retried)
        return value

    def invalidate(self, key: Any, stale_ttl: Optional[int] = 30) -> bool:
        """:meth:`PooledClient.invalidate <greenpool.PooledClient.invalidate>` on the
        key's server (``False`` where failover answers a default)."""
        check_stale_ttl(stale_ttl)
        return bool(self._run_cmd("invalidate", key, False, stale_ttl))

    def stampede_stats(self) -> StampedeStats:
        """The get_or_compute counters of every server's client, summed."""
        made = [c.stampede.stats() for c in self.clients.values() if "stampede" in c.__dict__]
        return total(made)

    def meta_get(self, key: Any, *flags: str | bytes) -> Optional[MetaReply]:
        """``Client.meta_get`` on the key's server (``None`` where failover answers a default)."""
        return self._run_cmd("meta_get", key, None, *flags)  # type: ignore[no-any-return]

    def meta_set(self, key: Any, value: bytes, *flags: str | bytes) -> Optional[MetaReply]:
        """``Client.meta_set`` on the key's server."""
        return self._run_cmd("meta_set", key, None, value, *flags)  # type: ignore[no-any-return]

    def meta_delete(self, key: Any, *flags: str | bytes) -> Optional[MetaReply]:
        """``Client.meta_delete`` on the key's server."""
        return self._run_cmd("meta_delete", key, None, *flags)  # type: ignore[no-any-return]

    def meta_arithmetic(self, key: Any, *flags: str | bytes) -> Optional[MetaReply]:
        """``Client.meta_arithmetic`` on the key's server."""
        return self._run_cmd("meta_arithmetic", key, None, *flags)  # type: ignore[no-any-return]
