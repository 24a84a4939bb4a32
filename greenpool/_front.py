"""The client a batching PooledClient builds its writes on; the batcher sends them in pipelines.

A :class:`Front` is a :class:`greenpool.Client` that never connects. Its
methods are pymemcache's own (``set``, ``set_many``, ``cas``, ``delete``,
``incr``, ``touch``...), so they check and build each command exactly as a
client does; where a client would send the command and read its reply
(``Client._exchange``), the front hands both to its
:class:`~greenpool.AutoBatcher`, which sends it in the loop iteration's pipeline
on a pooled client and returns what its reply's reader made of the reply.
Many greenlets use one front at once: its methods keep nothing between calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional, TypeVar

from greenpool.connection import Client
from greenpool.factory import client_settings

if TYPE_CHECKING:
    from greenpool.batching import AutoBatcher

__all__ = ["PIPELINED", "Front"]

T = TypeVar("T")

#: The commands a batching PooledClient sends in pipelines (its gets go in batches).
PIPELINED = (
    "set",
    "set_many",
    "set_multi",
    "add",
    "replace",
    "append",
    "prepend",
    "cas",
    "delete",
    "delete_many",
    "delete_multi",
    "incr",
    "decr",
    "touch",
)


class Front(Client):
    """A client configured like *prototype* whose commands go through *batcher*."""

    def __init__(self, batcher: AutoBatcher, prototype: Client) -> None:
        super().__init__(prototype.server, **client_settings(prototype))
        self.batcher = batcher

    def check_key(self, key: Any, key_prefix: bytes) -> bytes:
        """The key as sent: the batcher's checked-key memo, which has this
        client's prefix and rule (``Client.check_key`` for any other prefix)."""
        if key_prefix is self.key_prefix:
            return self.batcher.checked(key)
        return super().check_key(key, key_prefix)

    def _exchange(
        self,
        cmd: bytes,
        read: Callable[[Any], tuple[T, bytes]],
        ignored: Optional[T] = None,
        noreply: bool = False,
    ) -> T:
        return self.batcher.run(cmd, read, noreply)
