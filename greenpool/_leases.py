"""How get_or_compute's meta requests reach memcached: in the loop iteration's pipeline.

Lease requests, stores, releases and invalidations go out through the client's
:class:`~greenpool.AutoBatcher`, as its gets and writes do: those of one loop
iteration in one write. :class:`Leases` gives get_or_compute the two calls it
needs:

- :meth:`Leases.ask`: a request and its reply. It never goes out alone on the
  caller's own reservation, so a caller's ``gevent.Timeout`` or kill can never
  cut it halfway: the server's answer is always read. A caller gone by the time
  its reply is in is answered by its *follow_up* instead: if that reply handed
  it a lease, the follow-up's request (the release) is sent, so a lease won by a
  greenlet that left is given back at once rather than held for ``lease_ttl``;
- :meth:`Leases.send`: a request nobody waits for; it never blocks, so a
  ``finally`` clause of a killed greenlet may send one.

Only servers that answered the meta probe get meta requests, so a proxy that
closes the connection on them never fails the other commands of a pipeline.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Optional

from greenpool.meta import MetaReply, MetaRequest

if TYPE_CHECKING:
    from greenpool.batching import AutoBatcher
    from greenpool.connection import Client

__all__ = ["FollowUp", "Leases"]

#: What to send when the caller of a request has left: given its reply.
FollowUp = Callable[[MetaReply], Optional[MetaRequest]]


class Leases:
    """Meta requests sent by *batcher*, read by *reader* (any greenpool Client:
    it only builds each command and its reply's reader)."""

    __slots__ = ("batcher", "reader")

    def __init__(self, batcher: AutoBatcher, reader: Client) -> None:
        self.batcher = batcher
        self.reader = reader

    def ask(self, request: MetaRequest, follow_up: Optional[FollowUp] = None) -> MetaReply:
        """Send *request* in the pipeline; return its reply, or raise its error. If
        the caller leaves first, ``follow_up(reply)`` says what to send instead."""

        def then(replies: list[MetaReply]) -> None:
            instead = None if follow_up is None else follow_up(replies[0])
            if instead is not None:
                self.send(instead)

        replies = self.batcher.run(*self.reader.meta_exchange([request]), follow_up=then)
        return replies[0]

    def send(self, request: MetaRequest) -> None:
        """Send *request* in the pipeline; nobody waits for its reply."""
        self.batcher.post(*self.reader.meta_exchange([request]))
