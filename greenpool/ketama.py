"""Ketama placements of libmemcached (pylibmc) and twemproxy, for :class:`~greenpool.HashClient`.

A ketama continuum puts each server at many points of a circle of 2**32, at
hashes of names made from its address; a key belongs to the server of the first
point at or after the key's own hash. Pass one of these classes as
``HashClient(servers, hasher=...)`` and greenpool places keys where a
libmemcached client (pylibmc, PHP's memcached, libmemcached's own tools) or a
twemproxy pool over the same servers places them, so a fleet can be shared with
them or migrated from them without losing its cache.

Servers all weigh the same (pymemcache has no weights). Names are built from
the server as given, ``host:port``: the same host spelt another way (a name
instead of an address) places keys elsewhere, as it would in C.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any

from greenpool._hashes import fnv1a_64, md5_32, md5_points, one_at_a_time

__all__ = ["LibmemcachedKetama", "TwemproxyKetama"]

#: memcached's port, which libmemcached and twemproxy leave out of point names.
DEFAULT_PORT = 11211


def _host_and_port(node: Any) -> tuple[str, int]:
    """``"host:port"`` (HashClient's node names) as its parts; a Unix socket path as (path, 0)."""
    host, _, port = str(node).rpartition(":")
    if host and port.isdigit():
        return host, int(port)
    return str(node), 0


def _key_bytes(key: Any) -> bytes:
    """The key as pymemcache sends it: bytes as they are, text in UTF-8."""
    return key if isinstance(key, bytes) else str(key).encode("utf-8")


#: libmemcached's key hashes (``MEMCACHED_HASH_*``) that LibmemcachedKetama offers.
_LIBMEMCACHED_HASHES: dict[str, Callable[[bytes], int]] = {
    "default": one_at_a_time,
    "md5": md5_32,
}


class _Continuum:
    """The circle of points and the lookup both ketamas share.

    *nodes* lists the servers in the order they were added; ties between equal
    points go to the server added first, as libmemcached's sort does.
    """

    def __init__(self, key_hash: Callable[[bytes], int]) -> None:
        self._hash_key = key_hash
        self.nodes: list[Any] = []
        self._rank: dict[Any, int] = {}
        self._values: list[int] = []
        self._owners: list[Any] = []

    def _points(self, node: Any) -> Iterator[int]:
        raise NotImplementedError

    def add_node(self, node: Any) -> None:
        if node not in self.nodes:
            self.nodes.append(node)
            self._rank.setdefault(node, len(self._rank))
            self._build()

    def remove_node(self, node: Any) -> None:
        """Remove *node*; :class:`ValueError` if it is not there (as pymemcache's hashers)."""
        if node not in self.nodes:
            raise ValueError(f"No such node {node} to remove")
        self.nodes.remove(node)
        self._build()

    def get_node(self, key: Any) -> Any:
        """The node *key* belongs on, or ``None`` when there are no nodes."""
        if not self._values:
            return None
        at = bisect.bisect_left(self._values, self._hash_key(_key_bytes(key)))
        return self._owners[at if at < len(self._owners) else 0]

    def _build(self) -> None:
        points = sorted(
            (value, self._rank[node], node) for node in self.nodes for value in self._points(node)
        )
        self._values = [value for value, _, _ in points]
        self._owners = [node for _, _, node in points]


class LibmemcachedKetama(_Continuum):
    """libmemcached's consistent ketama distribution, as pylibmc sets it.

    The default is pylibmc's ``behaviors={"ketama": True}``: 100 points a
    server, named ``host:port-N`` (``host-N`` on port 11211), and points and
    keys hashed with libmemcached's default hash, one-at-a-time.
    ``hash="md5"`` is ``{"ketama": True, "hash": "md5"}``. ``weighted=True``
    is ``{"ketama_weighted": True}``, the original libketama: 160 points a
    server, four from each MD5 of ``host:port-N``, and keys hashed with MD5.
    Keys are hashed without pymemcache's *key_prefix*, as libmemcached hashes
    them without its namespace.

    >>> ring = LibmemcachedKetama()
    >>> for server in ("10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"):
    ...     ring.add_node(server)
    >>> ring.get_node("user:42")
    '10.0.0.2:11211'
    """

    def __init__(self, hash: str = "default", weighted: bool = False) -> None:
        if hash not in _LIBMEMCACHED_HASHES:
            raise ValueError(f"hash must be one of {sorted(_LIBMEMCACHED_HASHES)}, not {hash!r}")
        if not isinstance(weighted, bool):
            raise TypeError(f"weighted must be a bool, not {type(weighted).__name__}")
        super().__init__(md5_32 if weighted else _LIBMEMCACHED_HASHES[hash])
        self.weighted = weighted

    def _points(self, node: Any) -> Iterator[int]:
        host, port = _host_and_port(node)
        name = host if port == DEFAULT_PORT else f"{host}:{port}"
        if self.weighted:
            for index in range(40):
                yield from md5_points(f"{name}-{index}".encode())
        else:
            for index in range(100):
                yield self._hash_key(f"{name}-{index}".encode())


class TwemproxyKetama(_Continuum):
    """twemproxy's (nutcracker's) ``distribution: ketama`` with ``hash: fnv1a_64``.

    160 points a server, four from each MD5 of ``host:port-N`` (``host-N`` on
    port 11211), as nutcracker names servers listed as ``host:port:weight``
    without a name of their own. Keys are hashed with fnv1a_64 as they go over
    the wire, with *key_prefix* in front: :class:`~greenpool.HashClient` sets it
    to its own.

    >>> ring = TwemproxyKetama()
    >>> for server in ("10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"):
    ...     ring.add_node(server)
    >>> ring.get_node("user:42")
    '10.0.0.1:11211'
    """

    def __init__(self, key_prefix: bytes = b"") -> None:
        if not isinstance(key_prefix, bytes):
            raise TypeError(f"key_prefix must be bytes, not {type(key_prefix).__name__}")
        super().__init__(self._fnv1a_64_as_sent)
        self.key_prefix = key_prefix

    def _fnv1a_64_as_sent(self, key: bytes) -> int:
        return fnv1a_64(self.key_prefix + key)

    def _points(self, node: Any) -> Iterator[int]:
        host, port = _host_and_port(node)
        name = host if port == DEFAULT_PORT else f"{host}:{port}"
        for index in range(40):
            yield from md5_points(f"{name}-{index}".encode())
