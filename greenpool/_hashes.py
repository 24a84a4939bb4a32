"""The 32-bit key hashes of libmemcached and twemproxy, bit for bit.

Both C libraries read keys as ``const char *``: on x86 and most ABIs ``char`` is
signed, so a byte of 0x80 or more is sign-extended before it is mixed in. The
functions here do the same, so non-ASCII keys land where the C clients put them.
"""

from __future__ import annotations

import hashlib

__all__ = ["fnv1a_64", "md5_32", "md5_points", "one_at_a_time"]

_MASK = 0xFFFFFFFF


def _signed_char(byte: int) -> int:
    """A byte as C's ``(uint32_t)(signed char)``."""
    return byte | 0xFFFFFF00 if byte & 0x80 else byte


def one_at_a_time(key: bytes) -> int:
    """Bob Jenkins' one-at-a-time hash: libmemcached's ``MEMCACHED_HASH_DEFAULT``."""
    value = 0
    for byte in key:
        value = (value + _signed_char(byte)) & _MASK
        value = (value + (value << 10)) & _MASK
        value ^= value >> 6
    value = (value + (value << 3)) & _MASK
    value ^= value >> 11
    return (value + (value << 15)) & _MASK


def fnv1a_64(key: bytes) -> int:
    """twemproxy's ``fnv1a_64``: FNV-1a with the 64-bit constants, in 32 bits."""
    value = 0x84222325  # FNV_64_INIT (0xcbf29ce484222325) cut to 32 bits
    for byte in key:
        value = ((value ^ _signed_char(byte)) * 0x1B3) & _MASK  # FNV_64_PRIME, cut too
    return value


def md5_points(key: bytes) -> tuple[int, int, int, int]:
    """The four little-endian 32-bit words of *key*'s MD5: libketama's four points."""
    digest = hashlib.md5(key, usedforsecurity=False).digest()
    return (
        int.from_bytes(digest[0:4], "little"),
        int.from_bytes(digest[4:8], "little"),
        int.from_bytes(digest[8:12], "little"),
        int.from_bytes(digest[12:16], "little"),
    )


def md5_32(key: bytes) -> int:
    """libmemcached's ``MEMCACHED_HASH_MD5``: the first word of :func:`md5_points`."""
    return int.from_bytes(hashlib.md5(key, usedforsecurity=False).digest()[:4], "little")
