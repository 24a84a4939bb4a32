"""get_or_compute without the meta protocol: an ``add`` lock with a TTL.

For a server that does not speak meta (memcached before 1.6.10, or a proxy:
twemproxy, mcrouter). The in-process flight is the same (one leader per process
and key); across processes the leader ``get``\\ s the key, and on a miss ``add``\\ s
a lock key with a TTL of *lease_ttl*: whoever adds it computes, stores the value
with ``set`` and deletes the lock; the others poll ``get`` with backoff until
the value is there or *wait* runs out. Weaker than leases: no early recache,
no stale values, a late ``set`` can overwrite a newer one, and a computer that
dies holds the lock until *lease_ttl* runs out (its process deletes it at once
if it can).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import gevent

from greenpool._flights import (
    FIRST_POLL,
    MAX_POLL,
    POLL_FACTOR,
    TIMED_OUT,
    OnCacheError,
    Options,
    Raw,
)

if TYPE_CHECKING:
    from greenpool.stampede import Stampede

__all__ = ["lock_key", "resolve"]

log = logging.getLogger("greenpool")
_monotonic = time.monotonic


def lock_key(wire: bytes) -> bytes:
    """The lock of the key sent as *wire*: the same in every process, 56 bytes
    whatever the key's length."""
    return b"greenpool-lease-" + hashlib.sha1(wire).hexdigest().encode()


class _AsIs:
    """A serde that stores bytes as they are: the value is serialized already."""

    @staticmethod
    def serialize(key: Any, value: bytes) -> tuple[bytes, int]:
        return value, 0


_AS_IS = _AsIs()


def resolve(
    stampede: Stampede, key: Any, wire: bytes, compute: Callable[[], Any], opts: Options,
    deadline: float, failed: OnCacheError,
) -> Any:  # fmt: skip
    """The leader's work without meta: a Raw value, or TIMED_OUT."""
    lock = lock_key(wire)
    delay = FIRST_POLL
    counts = stampede.counts
    while True:
        try:
            with stampede.pool.reserve() as client:
                found = client.fetch_raw([wire]).get(wire)
                locked = found is None and client.add(lock, b"1", opts.lease_ttl, noreply=False)
        except Exception as exc:
            if not failed(exc):
                raise
            return stampede.computed(wire, compute)
        if found is not None:
            return Raw(found[1], found[0])
        if locked:
            counts.lease_wins += 1
            return _compute_and_store(stampede, key, wire, compute, opts, lock, failed)
        left = deadline - _monotonic()
        if left <= 0:
            return TIMED_OUT
        if delay == FIRST_POLL:
            counts.waits += 1
        gevent.sleep(min(delay, left))
        delay = min(delay * POLL_FACTOR, MAX_POLL)
        counts.lease_polls += 1


def _compute_and_store(
    stampede: Stampede, key: Any, wire: bytes, compute: Callable[[], Any], opts: Options,
    lock: bytes, failed: OnCacheError,
) -> Raw:  # fmt: skip
    try:
        raw = stampede.computed(wire, compute)
    except BaseException:
        gevent.spawn_raw(_unlock, stampede, lock)  # never blocks: fit for a killed greenlet
        raise
    try:
        with stampede.pool.reserve() as client:
            serde, client.serde = client.serde, _AS_IS
            try:
                client.set(key, raw.data, opts.ttl, noreply=False, flags=raw.flags)
            finally:
                client.serde = serde
            client.delete(lock, noreply=False)
    except Exception as exc:
        if not failed(exc):
            raise
    return raw


def _unlock(stampede: Stampede, lock: bytes) -> None:
    try:
        with stampede.pool.reserve() as client:
            client.delete(lock, noreply=False)
    except Exception:
        log.debug("pool %r: deleting lock %r failed", stampede.pool.name, lock, exc_info=True)
