"""libmemcached itself, through ctypes: where it puts a key among servers.

pylibmc is libmemcached with Python around it; building it needs a compiler and
the development headers, so the tests call the library Debian ships
(``libmemcached11``) directly, with the behaviours pylibmc sets, and ask
``memcached_generate_hash`` which server a key goes to. Nothing connects.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Iterable

# enum memcached_behavior_t and memcached_hash_t (libmemcached-1.0/types/)
BEHAVIOR_HASH = 2
BEHAVIOR_KETAMA = 3
BEHAVIOR_KETAMA_WEIGHTED = 16
HASH_MD5 = 1

#: pylibmc's behaviours as libmemcached calls, in the order that matters: the
#: key hash first, since only a distribution change rebuilds the continuum.
PYLIBMC_BEHAVIORS: dict[str, list[tuple[int, int]]] = {
    '{"ketama": True}': [(BEHAVIOR_KETAMA, 1)],
    '{"ketama": True, "hash": "md5"}': [(BEHAVIOR_HASH, HASH_MD5), (BEHAVIOR_KETAMA, 1)],
    '{"ketama_weighted": True}': [(BEHAVIOR_KETAMA_WEIGHTED, 1)],
}


def _library() -> ctypes.CDLL:
    path = ctypes.util.find_library("memcached") or "libmemcached.so.11"
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise RuntimeError(
            "libmemcached is missing: apt-get install libmemcached11 (make test does)"
        ) from exc
    lib.memcached_create.restype = ctypes.c_void_p
    lib.memcached_create.argtypes = [ctypes.c_void_p]
    lib.memcached_free.argtypes = [ctypes.c_void_p]
    lib.memcached_server_add.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint16]
    lib.memcached_behavior_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64]
    lib.memcached_generate_hash.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    lib.memcached_generate_hash.restype = ctypes.c_uint32
    return lib


class Libmemcached:
    """A libmemcached handle over *servers*, with *behaviors* set as pylibmc would."""

    def __init__(self, servers: Iterable[tuple[str, int]], behaviors: list[tuple[int, int]]):
        self._lib = _library()
        self._handle = self._lib.memcached_create(None)
        self.servers = list(servers)
        for host, port in self.servers:
            if self._lib.memcached_server_add(self._handle, host.encode(), port) != 0:
                raise RuntimeError(f"libmemcached refused server {host}:{port}")
        for behavior, value in behaviors:
            if self._lib.memcached_behavior_set(self._handle, behavior, value) != 0:
                raise RuntimeError(f"libmemcached refused behaviour {behavior}={value}")

    def server_for(self, key: bytes) -> tuple[str, int]:
        """The server libmemcached sends *key* to."""
        return self.servers[self._lib.memcached_generate_hash(self._handle, key, len(key))]

    def close(self) -> None:
        self._lib.memcached_free(self._handle)
