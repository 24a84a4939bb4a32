"""Argument checks shared by every public constructor and method.

Each helper names the parameter in its message, so a caller sees at once which
argument was wrong. Booleans are rejected where a number is expected: ``True``
is an ``int`` in Python, but never a pool size or a number of seconds.
"""

from __future__ import annotations

import math
import re
from typing import Any

from pymemcache.exceptions import MemcacheIllegalInputError


def check_size(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return *value* if it is an ``int`` of at least *minimum*.

    :raises TypeError: *value* is not an ``int`` (or is a ``bool``).
    :raises ValueError: *value* is below *minimum*.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return value


def check_seconds(name: str, value: Any) -> float:
    """Return *value* as a float if it is a non-negative number of seconds.

    ``math.inf`` is accepted and means "no limit".

    :raises TypeError: *value* is not an ``int`` or ``float`` (or is a ``bool``).
    :raises ValueError: *value* is negative or NaN.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {type(value).__name__}")
    if math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """Return *value* if it is a ``bool``.

    :raises TypeError: it is not (``"no"`` and ``1`` are not booleans).
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, not {type(value).__name__}")
    return value


_INT32 = (-(2**31), 2**31 - 1)
#: What memcached accepts for each integer argument, by pymemcache's names for them.
MEMCACHED_RANGES = {
    "expire": _INT32,
    "delay": _INT32,
    "value": (0, 2**64 - 1),  # incr and decr
    "memlimit": (0, 2**31 - 1),
    "flags": (0, 2**32 - 1),
}


def check_memcached_integer(name: str, value: Any) -> None:
    """Check a command's integer argument against memcached's range for *name*.

    :raises MemcacheIllegalInputError: *value* is not an ``int`` (or is a
        ``bool``), or is out of range: memcached would reject the command line,
        and then run a storage command's data block as a command of its own.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise MemcacheIllegalInputError(f"{name} must be integer, got bad value: {value!r}")
    low, high = MEMCACHED_RANGES.get(name, (value, value))
    if not low <= value <= high:
        raise MemcacheIllegalInputError(
            f"{name} must be between {low} and {high} for memcached, got {value}"
        )


#: The longest key memcached takes, in bytes, prefix included.
MAX_KEY_LENGTH = 250
# The bytes memcached's text protocol cannot carry in a key: its tokenizer splits
# a command line at a space and ends it at a line end; the other control bytes
# and DEL are refused as well, as nothing legitimate puts them in a key.
_FORBIDDEN = re.compile(rb"[\x00-\x20\x7f]").search


def check_key(key: Any, allow_unicode_keys: bool, key_prefix: bytes = b"") -> bytes:
    """Return *key* as memcached will read it: encoded, after *key_prefix*.

    The rule is memcached's own: 1 to 250 bytes, none of them a space, a line
    end or another control byte (``\\x00`` to ``\\x20``, and DEL). A ``str`` key
    is ASCII, or UTF-8 with *allow_unicode_keys* (pymemcache's rule); a
    ``bytes`` key is taken as it is.

    :raises TypeError: *key* is neither ``str`` nor ``bytes``.
    :raises MemcacheIllegalInputError: naming the key, for any other key (with
        pymemcache's message where its own check refuses the key too): sent,
        memcached would split the command line and run the rest of it (and a
        storage command's data) as commands of their own.
    """
    if isinstance(key, str):
        try:
            raw = key.encode("utf8" if allow_unicode_keys else "ascii")
        except UnicodeEncodeError:
            raise MemcacheIllegalInputError(f"Non-ASCII key: {key!r}") from None
    elif isinstance(key, (bytes, bytearray)):
        raw = bytes(key)
    else:
        raise TypeError(f"key must be str or bytes, not {type(key).__name__}: {key!r}")
    wire = key_prefix + raw if key_prefix else raw
    if not 0 < len(wire) <= MAX_KEY_LENGTH or _FORBIDDEN(wire) is not None:
        raise MemcacheIllegalInputError(_why_not(wire))
    return wire


def _why_not(wire: bytes) -> str:
    """pymemcache's message where its check refuses the key too, else one like it."""
    if not wire:
        return f"Key is empty: {wire!r}"
    if len(wire) > MAX_KEY_LENGTH:
        return f"Key is too long: {wire!r}"
    if wire.split() != [wire]:
        return f"Key contains whitespace: {wire!r}"
    if b"\x00" in wire:
        return f"Key contains null: {wire!r}"
    return f"Key contains a control character: {wire!r}"


def check_key_prefix(prefix: Any, allow_unicode_keys: bool = False) -> bytes:
    """Return *key_prefix* as sent, if a key may follow it: ``bytes``, or ``str``
    encoded as keys are (ASCII, or UTF-8 with *allow_unicode_keys*).

    :raises TypeError: it is neither ``str`` nor ``bytes``.
    :raises MemcacheIllegalInputError: naming ``key_prefix``, if it is not ASCII
        (without *allow_unicode_keys*), holds a byte no key may hold (a space, a
        control byte, DEL), or leaves no room for a key within 250 bytes: every
        command would fail later.
    """
    if isinstance(prefix, str):
        try:
            encoded = prefix.encode("utf-8" if allow_unicode_keys else "ascii")
        except UnicodeEncodeError:
            raise MemcacheIllegalInputError(
                f"key_prefix {prefix!r} is not ASCII (pass allow_unicode_keys=True for UTF-8)"
            ) from None
    elif isinstance(prefix, bytes):
        encoded = prefix
    else:
        raise TypeError(f"key_prefix must be bytes or str, not {type(prefix).__name__}")
    if len(encoded) >= MAX_KEY_LENGTH:
        raise MemcacheIllegalInputError(
            f"key_prefix {encoded[:32]!r}... is {len(encoded)} bytes: memcached keys are "
            f"{MAX_KEY_LENGTH} at most, prefix included"
        )
    if _FORBIDDEN(encoded) is not None:
        raise MemcacheIllegalInputError(
            f"key_prefix {encoded!r} holds a space or control byte, which ends a memcached key"
        )
    return encoded


class CheckedKeys:
    """:func:`check_key` with *key_prefix* and *allow_unicode_keys*, remembered:
    ``checked(key)`` returns the key as sent, or raises
    ``MemcacheIllegalInputError``. The check is a pure function of a ``str`` or
    ``bytes`` key, so up to *most* of those are kept (forgotten all at once
    beyond)."""

    __slots__ = ("allow_unicode_keys", "key_prefix", "known", "most")

    def __init__(self, key_prefix: bytes, allow_unicode_keys: bool, most: int = 16384) -> None:
        self.key_prefix = key_prefix
        self.allow_unicode_keys = allow_unicode_keys
        self.most = most
        #: The keys checked so far, and each one as sent.
        self.known: dict[Any, bytes] = {}

    def __call__(self, key: Any) -> bytes:
        memo = key.__class__ is str or key.__class__ is bytes
        if memo:
            known = self.known.get(key)
            if known is not None:
                return known
        wire = check_key(key, self.allow_unicode_keys, self.key_prefix)
        if memo:
            if len(self.known) >= self.most:
                self.known.clear()
            self.known[key] = wire
        return wire
