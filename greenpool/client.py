"""PooledClient: pymemcache's ``PooledClient`` API, each command on a reserved client.

Every command method is generated from :class:`greenpool.Client`'s own
(:func:`_command`): it reserves a client from a :class:`~greenpool.ClientPool`
for exactly one command, so an interrupted command costs its client and never
leaves a reply behind for another caller. One reservation per call, and no
other layer: this is the hot path. With *autobatch* (the default), the reads
go through the client's :class:`~greenpool.AutoBatcher` instead, and the
writes through a front client (``greenpool._front``) that hands them to it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, cast

from greenpool._checks import check_bool, check_key, check_seconds, check_size
from greenpool._front import PIPELINED, Front
from greenpool._leases import Leases
from greenpool._stampede_methods import PooledStampede
from greenpool.batching import DEFAULT_AUTOBATCH, DEFAULT_MAX_KEYS, AutoBatcher, BatchStats
from greenpool.connection import Client
from greenpool.errors import PoolError, PoolTimeout
from greenpool.factory import client_factory, client_settings
from greenpool.meta import MetaCommands
from greenpool.pool import DEFAULT_MAXSIZE, DEFAULT_TIMEOUT, ClientPool
from greenpool.stats import PoolStats

__all__ = ["PooledClient", "PooledClientStats", "check_pool_arguments"]

# ClientPool arguments that PooledClient sets from its own parameters.
_OWN_POOL_ARGUMENTS = {"factory": "server", "maxsize": "max_pool_size", "timeout": "pool_timeout"}


def check_pool_arguments(
    max_pool_size: Any,
    pool_timeout: Any,
    pool_idle_timeout: Any,
    lock_generator: Any,
    pool_options: Any,
) -> tuple[int, float, float, dict[str, Any]]:
    """Check PooledClient's (and HashClient's) pool arguments by name; return the
    size, the two timeouts and the further ClientPool arguments."""
    size = check_size("max_pool_size", DEFAULT_MAXSIZE if max_pool_size is None else max_pool_size)
    timeout = check_seconds("pool_timeout", pool_timeout)
    idle_timeout = check_seconds("pool_idle_timeout", pool_idle_timeout)
    if lock_generator is not None and not callable(lock_generator):
        raise TypeError(
            f"lock_generator must be None or a callable (and is not needed), "
            f"not {type(lock_generator).__name__}"
        )
    if pool_options is not None and not isinstance(pool_options, Mapping):
        raise TypeError(
            f"pool_options must be a mapping of ClientPool arguments, "
            f"not {type(pool_options).__name__}"
        )
    options = dict(pool_options or {})
    for taken, instead in _OWN_POOL_ARGUMENTS.items():
        if taken in options:
            raise TypeError(f"pool_options may not set {taken!r}; pass {instead} instead")
    return size, timeout, idle_timeout, options


def _command(method: Callable[..., Any]) -> Callable[..., Any]:
    """Return a PooledClient method running ``Client`` *method* on a reserved client."""

    @functools.wraps(method)
    def command(self: PooledClient, *args: Any, **kwargs: Any) -> Any:
        with self.pool.reserve() as client:
            return method(client, *args, **kwargs)

    return command


def _read_command(method: Callable[..., Any], miss: Callable[..., Any]) -> Callable[..., Any]:
    """Like :func:`_command`, but with *ignore_exc* any error returns ``miss(*args)``.

    These are the five commands pymemcache's ``PooledClient`` treats so: get,
    gets, get_many, gets_many and stats. A full pool (:class:`~greenpool.PoolTimeout`)
    counts as an error; using the pool from a wrong thread does not.
    """

    @functools.wraps(method)
    def command(self: PooledClient, *args: Any, **kwargs: Any) -> Any:
        try:
            with self.pool.reserve() as client:
                return method(client, *args, **kwargs)
        except Exception as exc:
            if not (self.ignore_exc and missable(exc)):
                raise
            return miss(*args, **kwargs)

    return command


def _batched_read(
    client: PooledClient, read: Callable[..., Any], miss: Callable[..., Any]
) -> Callable[..., Any]:
    """*read*, an :class:`~greenpool.AutoBatcher` method, with :func:`_read_command`'s
    *ignore_exc*: the instance attribute that replaces the method with autobatch."""
    if not client.ignore_exc:
        return read

    @functools.wraps(read)
    def command(*args: Any, **kwargs: Any) -> Any:
        try:
            return read(*args, **kwargs)
        except Exception as exc:
            if not missable(exc):
                raise
            return miss(*args, **kwargs)

    return command


def missable(exc: Exception) -> bool:
    """Whether *ignore_exc* turns *exc* into a miss: any error, a full pool
    included, but not a pool used wrongly (closed, another thread)."""
    return not isinstance(exc, PoolError) or isinstance(exc, PoolTimeout)


def _default(key: Any, default: Any = None) -> Any:
    return default


def _defaults(key: Any, default: Any = None, cas_default: Any = None) -> tuple[Any, Any]:
    return (default, cas_default)


def _nothing(*args: Any, **kwargs: Any) -> dict[Any, Any]:
    return {}


# The reads an AutoBatcher serves, and what each returns for a miss with ignore_exc.
_BATCHED_READS = (
    ("get", _default),
    ("gets", _defaults),
    ("get_many", _nothing),
    ("get_multi", _nothing),
    ("gets_many", _nothing),
)
#: A PooledClient's batching counters without a batcher: every one at 0.
_NO_BATCHES = cast(
    BatchStats, {**dict.fromkeys(BatchStats.__annotations__, 0), "keys_per_batch": 0.0}
)


class PooledClientStats(PoolStats, BatchStats):
    """What :meth:`PooledClient.pool_stats` returns: the pool's stats and the
    batcher's (zeros without autobatching); the docs document each."""


class PooledClient(PooledStampede):
    """A drop-in for pymemcache's ``PooledClient`` that waits instead of failing.

    Each command reserves one client from a :class:`~greenpool.ClientPool` of
    at most *max_pool_size* (16 by default; ``None`` means the default too).
    When all are busy the call waits cooperatively, in arrival order, up to
    *pool_timeout* seconds (5 by default), then raises
    :class:`~greenpool.PoolTimeout`. A command interrupted by ``gevent.Timeout``
    or a kill closes its client, so the next caller never reads its reply.

    *client_options* are pymemcache ``Client`` arguments (``serde``,
    ``connect_timeout``, ``timeout``, ``key_prefix``, ``tls_context``...),
    over :data:`~greenpool.CLIENT_DEFAULTS`: finite timeouts and greenpool's
    cooperative socket module unless you pass ``socket_module``.
    *ignore_exc* makes get, gets, get_many, gets_many and stats return a miss
    on any error, as pymemcache's ``PooledClient`` does (a full pool included).
    *pool_idle_timeout* (seconds, 0 for never) closes clients idle longer than
    that, as pymemcache's does: it is the pool's ``max_idle``. *lock_generator*
    is accepted and not
    needed: the pool belongs to one gevent hub and takes no lock.
    *pool_options* are more :class:`~greenpool.ClientPool` keyword arguments,
    such as ``name``. *autobatch* sends get, gets, get_many and gets_many
    through an :class:`~greenpool.AutoBatcher` (``self.batcher``): the gets
    of concurrent greenlets go out together, in commands of at most
    *autobatch_max_keys* keys; and it pipelines their writes (set, set_many,
    add, replace, append, prepend, cas, delete, delete_many, incr, decr,
    touch) in the same writes, at most *autobatch_max_keys* commands to one.
    :meth:`get_or_compute` computes a missing value once across processes
    (memcached's meta protocol), and the ``meta_*`` methods are
    :class:`greenpool.Client`'s.

    >>> mc = PooledClient(memcached_address, max_pool_size=4)
    >>> mc.set("pooled", "yes")
    True
    >>> mc.get("pooled")
    b'yes'
    >>> mc.pool_stats()["in_use"]
    0
    """

    # pymemcache's PooledClient exposes its settings; these are the clients'.
    server: Any
    serde: Any
    connect_timeout: float | None
    timeout: float | None
    no_delay: bool
    socket_module: Any
    socket_keepalive: Any
    key_prefix: bytes
    default_noreply: bool
    allow_unicode_keys: bool
    encoding: str
    tls_context: Any

    def __init__(
        self,
        server: Any,
        *,
        max_pool_size: int | None = DEFAULT_MAXSIZE,
        pool_timeout: float = DEFAULT_TIMEOUT,
        pool_idle_timeout: float = 0,
        lock_generator: Callable[[], Any] | None = None,
        ignore_exc: bool = False,
        pool_options: Mapping[str, Any] | None = None,
        autobatch: bool = DEFAULT_AUTOBATCH,
        autobatch_max_keys: int = DEFAULT_MAX_KEYS,
        **client_options: Any,
    ) -> None:
        self.max_pool_size, self.pool_timeout, self.pool_idle_timeout, options = (
            check_pool_arguments(
                max_pool_size, pool_timeout, pool_idle_timeout, lock_generator, pool_options
            )
        )
        check_bool("ignore_exc", ignore_exc)
        check_bool("autobatch", autobatch)
        check_size("autobatch_max_keys", autobatch_max_keys)
        # Clients never ignore errors themselves: the pool must see them to
        # discard broken clients. The read commands apply ignore_exc after.
        factory = client_factory(server, **client_options, ignore_exc=False)
        prototype = factory()  # connects on first command, so never
        self.__dict__.update(client_settings(prototype))
        self.server = prototype.server
        self.ignore_exc = ignore_exc
        self.tls_context = client_options.get("tls_context")
        options.setdefault("name", f"PooledClient({self.server!r})")
        if self.pool_idle_timeout and "max_idle" not in options:
            options["max_idle"] = self.pool_idle_timeout
        self.pool: ClientPool[Client] = ClientPool(
            factory, self.max_pool_size, timeout=self.pool_timeout, **options
        )
        self._prototype = prototype
        self._max_keys = autobatch_max_keys
        self.batcher: AutoBatcher | None = None
        if autobatch:
            self.batcher = self._new_batcher()
            # Instance attributes over the class's methods: no layer in between.
            for name, miss in _BATCHED_READS:
                setattr(self, name, _batched_read(self, getattr(self.batcher, name), miss))
            front = Front(self.batcher, prototype)
            for name in PIPELINED:
                setattr(self, name, getattr(front, name))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.server!r} pool={self.pool!r}>"

    def _new_batcher(self) -> AutoBatcher:
        return AutoBatcher(
            self.pool,
            max_keys=self._max_keys,
            key_prefix=self.key_prefix,
            allow_unicode_keys=self.allow_unicode_keys,
        )

    def _leases(self) -> Leases:
        """What get_or_compute sends its meta requests through: this client's
        batcher, or without autobatching one of its own (lease requests are never
        sent alone: see greenpool._leases)."""
        batcher = self.batcher or self._new_batcher()
        return Leases(batcher, Front(batcher, self._prototype))

    def pool_stats(self) -> PooledClientStats:
        """Return the pool's gauges and counters and the batcher's counters
        (``stats()`` is memcached's)."""
        batching = _NO_BATCHES if self.batcher is None else self.batcher.stats()
        return PooledClientStats(**self.pool.stats(), **batching)

    def check_key(self, key: Any) -> bytes:
        """Check *key* and return it encoded, with the key prefix (as pymemcache does)."""
        return check_key(key, self.allow_unicode_keys, self.key_prefix)

    def close(self) -> None:
        """Close the connections of idle clients; later commands reconnect.

        As pymemcache's ``PooledClient.close`` (which Django calls after every
        request), the client stays usable. Unlike it, a command in flight in
        another greenlet is not cut off: its client comes back connected.
        get_or_compute's background recomputes are waited for first.
        """
        if "stampede" in self.__dict__:
            self.stampede.join()
        self.pool.disconnect_idle()

    def _cache_failed(self, exc: Exception) -> bool:
        """Whether get_or_compute goes on without the cache after *exc*: with
        *ignore_exc*, for the errors it turns into misses."""
        return self.ignore_exc and missable(exc)

    disconnect_all = close

    set = _command(Client.set)
    set_many = set_multi = _command(Client.set_many)
    add = _command(Client.add)
    replace = _command(Client.replace)
    append = _command(Client.append)
    prepend = _command(Client.prepend)
    cas = _command(Client.cas)
    get = _read_command(Client.get, _default)
    get_many = get_multi = _read_command(Client.get_many, _nothing)
    gets = _read_command(Client.gets, _defaults)
    gets_many = _read_command(Client.gets_many, _nothing)
    delete = _command(Client.delete)
    delete_many = delete_multi = _command(Client.delete_many)
    incr = _command(Client.incr)
    decr = _command(Client.decr)
    touch = _command(Client.touch)
    stats = _read_command(Client.stats, _nothing)
    cache_memlimit = _command(Client.cache_memlimit)
    version = _command(Client.version)
    raw_command = _command(Client.raw_command)
    flush_all = _command(Client.flush_all)
    quit = _command(Client.quit)
    shutdown = _command(Client.shutdown)
    meta_batch = _command(MetaCommands.meta_batch)
    meta_get = _command(MetaCommands.meta_get)
    meta_set = _command(MetaCommands.meta_set)
    meta_delete = _command(MetaCommands.meta_delete)
    meta_arithmetic = _command(MetaCommands.meta_arithmetic)
    meta_noop = _command(MetaCommands.meta_noop)

    # pymemcache's own, written in terms of get, set and delete above.
    __getitem__ = Client.__getitem__
    __setitem__ = Client.__setitem__
    __delitem__ = Client.__delitem__
