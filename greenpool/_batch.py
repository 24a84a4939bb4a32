"""The parts of an AutoBatcher's batch: its keys, its callers' waits, its chunks.

A pending batch maps each key, as sent, to a :class:`Key` listing its callers.
A single key's caller waits on a bare gevent ``Waiter`` (its key is in one
chunk, which wakes it once); a ``get_many`` caller waits on a :class:`Call`,
which counts its keys still unanswered across chunks. :func:`fetch` runs one
chunk's command on a reserved client, and :func:`answered` records its outcome
and says whom to wake.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Optional, Union

from gevent.hub import Waiter
from pymemcache.serde import LegacyWrappingSerde

from greenpool.connection import Client

#: What a key's *item* is while memcached has not returned it.
MISS: Any = object()


class Call:
    """A ``get_many`` caller's wait: how many of its keys are still unanswered."""

    __slots__ = ("done", "left", "waiter")

    def __init__(self, waiter: Waiter, left: int) -> None:
        self.waiter = waiter
        self.left = left
        self.done = False  # woken, or withdrawn by an interruption


Caller = Union[Call, Waiter]


class Key:
    """A key of the pending batch, asked for by one or more callers."""

    __slots__ = ("calls", "cas", "item", "key", "serde", "wire")

    def __init__(self, wire: bytes, key: Any, cas: bool, call: Caller) -> None:
        self.wire = wire  # the key as sent
        self.key = key  # the first caller's spelling: what a chunk's get_many is given
        self.cas = cas  # a gets asked for it: its chunk sends gets
        self.calls = [call]
        # MISS, or what the chunk's get_many returned for the key: a value, or
        # (value, cas) from gets; raw, as (bytes, flags), when serde is not None.
        self.item: Any = MISS
        self.serde: Any = None


class _Raw:
    """A serde that leaves values as memcached sent them, for each caller to decode."""

    @staticmethod
    def serialize(key: Any, value: Any) -> tuple[Any, int]:  # a get never calls it
        raise TypeError("an AutoBatcher's chunk only reads")

    @staticmethod
    def deserialize(key: Any, value: bytes, flags: int) -> tuple[bytes, int]:
        return value, flags


_RAW = _Raw()
# What pymemcache's default serde decodes with: the bytes as they are.
_IDENTITY = LegacyWrappingSerde._default_deserialize


def chunks(keys: list[Key], max_keys: int) -> Iterator[list[Key]]:
    """*keys* in as few chunks of at most *max_keys* as can be, of even sizes so
    that none lags behind the others."""
    size = math.ceil(len(keys) / math.ceil(len(keys) / max_keys))
    for start in range(0, len(keys), size):
        yield keys[start : start + size]


def fetch(client: Any, chunk: list[Key], cas: bool) -> None:
    """Get *chunk*'s keys from *client* in one command, and record in each key's
    entry what was found (``item``) and the serde to decode it with, if any.

    With pymemcache's default serde, which returns the bytes memcached sent and
    cannot fail, record the values as they come, and no serde. With any other,
    record them raw and the serde, so that each caller decodes its own: a value
    that fails to decode then fails its own callers only (as unbatched), and two
    callers of one key never share a mutable object. A greenpool Client sends
    the keys as they were checked and returns them undecoded (Client.fetch_raw).
    """
    serde = client.serde
    identity = getattr(serde.deserialize, "__func__", None) is _IDENTITY
    decoder = None if identity else serde
    if isinstance(client, Client):
        raw = client.fetch_raw([entry.wire for entry in chunk], cas)
        for entry in chunk:
            got = raw.get(entry.wire)
            if got is not None:
                flags, data, token = got
                value = data if identity else (data, flags)
                entry.item = (value, token) if cas else value
                entry.serde = decoder
        return
    get_many = client.gets_many if cas else client.get_many
    keys = [entry.key for entry in chunk]
    if identity:
        found = get_many(keys)
    else:
        client.serde = _RAW
        try:
            found = get_many(keys)
        finally:
            client.serde = serde
    for entry in chunk:
        entry.item = found.get(entry.key, MISS)
        entry.serde = decoder


def answered(entries: Iterable[Key], error: Optional[BaseException]) -> list[Waiter]:
    """*entries* are answered (their items recorded by :func:`fetch`), or failed
    with *error*: return the Waiters of the callers now answered, each once:
    every single key's caller, and each ``get_many`` caller whose last key this
    was or whose first error this is. A withdrawn ``get_many`` caller is left
    out; a withdrawn single key's Waiter keeps what it is woken with, harmlessly."""
    ready = []
    for entry in entries:
        for call in entry.calls:
            if call.__class__ is not Call:  # a single key's Waiter
                ready.append(call)
            elif not call.done:
                if error is None:
                    call.left -= 1
                    if call.left:
                        continue
                call.done = True
                ready.append(call.waiter)
    return ready


def collect(joined: list[tuple[Any, Key]], cas: bool) -> dict[Any, Any]:
    """A ``get_many`` (or, with *cas*, ``gets_many``) caller's result from its
    ``(key as the caller spelt it, entry)`` pairs, in pymemcache's order and shape."""
    found = {}
    for key, entry in joined:
        item = entry.item
        if item is MISS:
            continue
        value, token = item if entry.cas else (item, None)
        if entry.serde is not None:
            value = entry.serde.deserialize(key, *value)
        found[key] = (value, token) if cas else value
    return found
