"""The parts of an AutoBatcher's batch: its keys, its callers' waits, its chunks.

A pending batch maps each key, as sent, to a :class:`Key` listing its callers.
A single key's caller waits on a bare gevent ``Waiter`` (its key is in one
chunk, which wakes it once); a ``get_many`` caller waits on a :class:`Call`,
which counts its keys still unanswered across chunks. :func:`exchange` is one
chunk's command, :func:`record` puts what it found in its keys' entries
(:func:`fetch` does both on a reserved client), and :func:`wake` wakes its
callers, each with its outcome. :class:`Splitting` says when a chunk goes key by key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, Optional, Union

from gevent.hub import Waiter
from pymemcache.serde import LegacyWrappingSerde

from greenpool._reply import Exchange, Value
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

    __slots__ = ("calls", "cas", "error", "item", "key", "serde", "wire")

    def __init__(self, wire: bytes, key: Any, cas: bool, call: Caller) -> None:
        self.wire = wire  # the key as sent
        self.key = key  # the first caller's spelling: what a chunk's get_many is given
        self.cas = cas  # a gets asked for it: its chunk sends gets
        self.calls = [call]
        # MISS, or what the chunk's get_many returned for the key: a value, or
        # (value, cas) from gets; raw, as (bytes, flags), when serde is not None.
        self.item: Any = MISS
        self.serde: Any = None
        self.error: Optional[BaseException] = None  # this key's own, asked for alone


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


def exchange(client: Client, chunk: list[Key], cas: bool, each: bool) -> Exchange[Any]:
    """The command that gets *chunk*'s keys on a greenpool *client*, and its reply's
    reader: one multi-key get (``Client.fetch_raw_op``), or with *each* a get per
    key, all in one write (``Client.fetch_each_op``). :func:`record` takes its result."""
    wires = [entry.wire for entry in chunk]
    return client.fetch_each_op(wires, cas) if each else client.fetch_raw_op(wires, cas)


def record(client: Client, chunk: list[Key], cas: bool, each: bool, got: Any) -> None:
    """Record in each key's entry what :func:`exchange`'s command found (``item``)
    and the serde to decode it with, if any; with *each*, each key's own error.

    With pymemcache's default serde, which returns the bytes memcached sent and
    cannot fail, record the values as they come, and no serde. With any other,
    record them raw and the serde, so that each caller decodes its own: a value
    that fails to decode then fails its own callers only (as unbatched), and two
    callers of one key never share a mutable object.
    """
    serde = client.serde
    identity = getattr(serde.deserialize, "__func__", None) is _IDENTITY
    decoder = None if identity else serde
    if each:
        for entry, outcome in zip(chunk, got, strict=True):
            if outcome.__class__ is tuple:
                _record(entry, outcome, cas, identity, decoder)
            elif outcome is not None:
                entry.error = outcome
        return
    if identity and not cas:  # the common case: the bytes as memcached sent them
        for entry in chunk:
            found = got.get(entry.wire)
            if found is not None:
                entry.item = found[1]
        return
    for entry in chunk:
        found = got.get(entry.wire)
        if found is not None:
            _record(entry, found, cas, identity, decoder)


def _record(entry: Key, found: Value, cas: bool, identity: bool, decoder: Any) -> None:
    flags, data, token = found
    value = data if identity else (data, flags)
    entry.item = (value, token) if cas else value
    entry.serde = decoder


def fetch(client: Any, chunk: list[Key], cas: bool, each: bool = False) -> None:
    """Get *chunk*'s keys from *client* in one command (see :func:`exchange`), and
    :func:`record` what was found. A client that is not greenpool's gets them
    with ``get_many`` (or ``gets_many``), raw when a serde decodes."""
    if isinstance(client, Client):
        record(client, chunk, cas, each, client._exchange(*exchange(client, chunk, cas, each)))
        return
    serde = client.serde
    identity = getattr(serde.deserialize, "__func__", None) is _IDENTITY
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
        entry.serde = None if identity else serde


class Splitting:
    """Whether a batch's chunks of several keys go out key by key (``each``).

    A proxy answers a multi-key get with one ``SERVER_ERROR`` when the backend
    of any of its keys is down (twemproxy then closes the connection), though
    the other keys' backends would answer. After a chunk failed so, chunks go
    key by key for *seconds* (1, doubling while it happens again, at most 30);
    then one chunk, the probe, tries a multi-key get again, and its success
    ends it.
    """

    __slots__ = ("probing", "seconds", "until")

    FIRST = 1.0
    LONGEST = 30.0

    def __init__(self) -> None:
        self.seconds = 0.0  # 0: multi-key gets
        self.until = 0.0
        self.probing = False

    def each(self, now: float) -> Optional[bool]:
        """Whether a chunk goes key by key (``True``), or tries a multi-key get:
        ``False`` normally, ``None`` as the probe (report with :meth:`probed`)."""
        if not self.seconds:
            return False
        if self.probing or now < self.until:
            return True
        self.probing = True
        return None

    def failed(self, now: float) -> None:
        """A multi-key get failed whole: go key by key for a while."""
        self.probing = False
        self.seconds = min(max(self.FIRST, 2 * self.seconds), self.LONGEST)
        self.until = now + self.seconds

    def probed(self) -> None:
        """The probe's multi-key get went through (or failed otherwise): back to
        multi-key gets."""
        self.probing = False
        self.seconds = 0.0


def wake(entries: Iterable[Key], error: Optional[BaseException]) -> None:
    """*entries* are answered (their items recorded by :func:`record`), or failed
    with their own error or else *error*: wake each of their callers once, with
    what it raises (``None``: nothing): every single key's caller, and each
    ``get_many`` caller whose last key this was or whose first error this is. A
    withdrawn ``get_many`` caller is left out; a withdrawn single key's Waiter
    keeps what it is woken with, harmlessly. Runs in the hub: each caller runs
    until it waits again, then the next is woken."""
    for entry in entries:
        failed = entry.error or error
        for call in entry.calls:
            if call.__class__ is not Call:  # a single key's Waiter
                call.switch(failed)  # type: ignore[union-attr]
            elif not call.done:
                if failed is None:
                    call.left -= 1
                    if call.left:
                        continue
                call.done = True
                call.waiter.switch(failed)  # type: ignore[union-attr]


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
