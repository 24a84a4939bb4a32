"""Rendezvous hashing that places keys exactly as pymemcache's ``RendezvousHash``.

pymemcache scores each node by MurmurHash3 (32 bits, seed 0) of
``f"{node}-{key}"`` and picks the highest, in pure Python: about 5 µs a hash,
so 15 µs a key over three servers. greenpool computes the same hash in C with
`mmh3 <https://pypi.org/project/mmh3/>`_, one of its dependencies, some hundred
times faster. Placement is the same, so greenpool and plain pymemcache clients
sharing servers agree on where every key lives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Optional

import mmh3

__all__ = ["RendezvousHash", "murmur3_32"]

_mmh3_hash = mmh3.hash


def murmur3_32(data: str, seed: int = 0) -> int:
    """pymemcache's ``murmur3_32(data, seed)``, through mmh3.

    pymemcache hashes the low byte of each character (``ord(c) & 0xFF``), which is
    the character's own byte for ASCII, and what mmh3 hashes after encoding.
    """
    if data.isascii():
        return _mmh3_hash(data, seed, False)  # type: ignore[no-any-return]
    low_bytes = bytes(ord(char) & 0xFF for char in data)
    return _mmh3_hash(low_bytes, seed, False)  # type: ignore[no-any-return]


class RendezvousHash:
    """pymemcache's ``RendezvousHash`` (highest random weight), with a faster hash.

    The same constructor, attributes (*nodes*, *seed*) and methods, and the same
    node for every key: each node scores ``hash_function(f"{node}-{key}", seed)``
    and the highest wins, ties going to the greater name. *hash_function*
    defaults to ``murmur3_32``.

    >>> ring = RendezvousHash(["10.0.0.1:11211", "10.0.0.2:11211"])
    >>> ring.get_node("user:42")
    '10.0.0.1:11211'
    """

    def __init__(
        self,
        nodes: Optional[Iterable[Any]] = None,
        seed: int = 0,
        hash_function: Optional[Callable[[str, int], int]] = None,
    ) -> None:
        self.nodes: list[Any] = list(nodes) if nodes is not None else []
        self.seed = seed
        self._hash = hash_function or murmur3_32

    def hash_function(self, data: str) -> int:
        """The score of *data* (pymemcache's attribute of the same name)."""
        return self._hash(data, self.seed)

    def add_node(self, node: Any) -> None:
        if node not in self.nodes:
            self.nodes.append(node)

    def remove_node(self, node: Any) -> None:
        """Remove *node*; :class:`ValueError` if it is not there, as pymemcache's."""
        if node not in self.nodes:
            raise ValueError(f"No such node {node} to remove")
        self.nodes.remove(node)

    def get_node(self, key: Any) -> Any:
        """The node *key* belongs on, or ``None`` when there are no nodes."""
        if len(self.nodes) == 1:  # the highest of one score: no need to compute it
            return self.nodes[0]
        score, seed = self._hash, self.seed
        high_score = -1
        winner = None
        for node in self.nodes:
            node_score = score(f"{node}-{key}", seed)
            if node_score > high_score:
                high_score, winner = node_score, node
            elif node_score == high_score:
                winner = max(str(node), str(winner))
        return winner
