"""Argument checks shared by every public constructor and method.

Each helper names the parameter in its message, so a caller sees at once which
argument was wrong. Booleans are rejected where a number is expected: ``True``
is an ``int`` in Python, but never a pool size or a number of seconds.
"""

from __future__ import annotations

import math
from typing import Any

from pymemcache.client.base import check_key_helper
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


class CheckedKeys:
    """pymemcache's key check (``check_key_helper``) with *key_prefix* and
    *allow_unicode_keys*, remembered: ``checked(key)`` returns the key as sent,
    or raises ``MemcacheIllegalInputError``. The check is a pure function of a
    ``str`` or ``bytes`` key, so up to *most* of those are kept (forgotten all at
    once beyond)."""

    __slots__ = ("_known", "allow_unicode_keys", "key_prefix", "most")

    def __init__(self, key_prefix: bytes, allow_unicode_keys: bool, most: int = 4096) -> None:
        self.key_prefix = key_prefix
        self.allow_unicode_keys = allow_unicode_keys
        self.most = most
        self._known: dict[Any, bytes] = {}

    def __call__(self, key: Any) -> bytes:
        memo = key.__class__ is str or key.__class__ is bytes
        if memo:
            known = self._known.get(key)
            if known is not None:
                return known
        wire: bytes = check_key_helper(key, self.allow_unicode_keys, self.key_prefix)
        if memo:
            if len(self._known) >= self.most:
                self._known.clear()
            self._known[key] = wire
        return wire
