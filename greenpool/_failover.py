"""HashClient's failover: pymemcache's rules, without its races, counted and logged.

pymemcache's ``HashClient`` keeps its failover state in dicts that one greenlet
reads, then writes after a command's socket I/O, while other greenlets run in
between: two greenlets retrying a failed server both remove it from
``_failed_clients`` after succeeding, and the second raises ``KeyError`` into
the application; two marking it dead both remove its node, and the second
raises ``ValueError``. :class:`Failover` keeps pymemcache's rules
(*retry_attempts*, *retry_timeout*, *dead_timeout*, *ignore_exc*) but changes
the state only where nothing can run in between, and never assumes a key is
still there. Beyond pymemcache's:

- a failure is counted once per failed command, not once per caller: every
  caller of one autobatched get is woken with the very same exception, and
  nine callers must not eject a healthy server for one slow command;
- a server marked dead logs a WARNING on the ``greenpool`` logger (the server,
  the error, for how long) and one back in the ring an INFO, once per
  transition;
- a :class:`~greenpool.PoolError` other than a full pool (a pool used from
  another thread, a closed one) is a mistake of the program, never a miss,
  whatever *ignore_exc* says: as for :class:`~greenpool.PooledClient`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Optional

from greenpool.client import missable

__all__ = ["Failover"]

log = logging.getLogger("greenpool")
_monotonic = time.monotonic
# Set on an exception once a failure was counted for it: one command, one failure.
_COUNTED = "_greenpool_failure_counted"


class Failover:
    """The failover half of :class:`~greenpool.HashClient`: what happens when a
    command to a server fails, and when a dead server comes back.

    It works on pymemcache's ``HashClient`` state: ``_failed_clients`` (server ->
    ``{"failed_time", "attempts", "error"}``), ``_dead_clients`` (server -> when
    it was marked dead), ``clients`` and ``hasher``; :meth:`_ring_changed` is told
    of every change of the ring.
    """

    # pymemcache's HashClient sets these.
    clients: dict[str, Any]
    hasher: Any
    ignore_exc: bool
    retry_attempts: int
    retry_timeout: float
    dead_timeout: float
    _failed_clients: dict[Any, dict[str, Any]]
    _dead_clients: dict[Any, float]
    _next_revival: float  # when the first dead server is due back
    _make_client_key: Callable[[Any], str]

    def _ring_changed(self) -> None:
        """A server left the ring or came back."""

    def _retry_dead(self) -> None:
        """Put back in the ring each dead server whose *dead_timeout* is over."""
        now = _monotonic()
        for server, dead_since in list(self._dead_clients.items()):
            if now - dead_since >= self.dead_timeout:
                del self._dead_clients[server]
                node = self._make_client_key(server)
                self.clients[node].close()  # its idle connections predate the outage
                self.hasher.add_node(node)
                self._ring_changed()
                log.info("memcached %s back in the ring after %s s out", node, self.dead_timeout)
        self._next_revival = min(self._dead_clients.values(), default=math.inf) + self.dead_timeout

    def _mark_dead(self, server: Any, why: str) -> None:
        """Take *server* out of the ring for *dead_timeout* seconds, because of *why*;
        one already out stays as it is."""
        self._failed_clients.pop(server, None)
        if server in self._dead_clients:
            return
        now = _monotonic()
        self._dead_clients[server] = now
        self._next_revival = min(self._next_revival, now + self.dead_timeout)
        node = self._make_client_key(server)
        self.hasher.remove_node(node)  # it was in the ring: only the dead leave it
        self._ring_changed()
        self.clients[node].close()
        log.warning(
            "memcached %s marked dead for %s s (its keys go to the other servers) after %s",
            node, self.dead_timeout, why,
        )  # fmt: skip

    def _mark_failed_server(self, server: Any, error: Optional[BaseException] = None) -> None:
        """Count a failed command on *server*, once for its *error* whatever the
        number of callers it reached; mark the server dead when out of retries."""
        if error is not None:
            if getattr(error, _COUNTED, False):
                return  # another caller of the same command counted it
            setattr(error, _COUNTED, True)
        if server in self._dead_clients:
            return  # a command sent before it was marked dead: nothing new
        why = "an error" if error is None else f"{type(error).__name__}: {error}"
        failed = self._failed_clients.get(server)
        if failed is None:
            now = _monotonic()
            self._failed_clients[server] = {"failed_time": now, "attempts": 0, "error": why}
            if self.retry_attempts <= 0:
                self._mark_dead(server, why)
        else:
            failed["attempts"] += 1
            failed["failed_time"] = _monotonic()
            failed["error"] = why

    def _may_send(self, server: Any) -> tuple[bool, Optional[dict[str, Any]]]:
        """Whether a command may go to *server* now, and the failure it retries."""
        failed = self._failed_clients.get(server)
        if failed is None:
            return True, None
        if failed["attempts"] >= self.retry_attempts:
            attempts = failed["attempts"] + 1
            self._mark_dead(server, f"{attempts} failed commands, the last {failed['error']}")
            return False, None
        return _monotonic() - failed["failed_time"] > self.retry_timeout, failed

    def _succeeded(self, server: Any, retried: Optional[dict[str, Any]]) -> None:
        """A retry went through: forget the failure, unless another replaced it."""
        if retried is not None and self._failed_clients.get(server) is retried:
            del self._failed_clients[server]

    def _ignored(self, server: Any, error: Exception) -> bool:
        """*error* ended a command to *server*: count it if the server failed, and
        say whether the command returns its default (*ignore_exc*) or raises."""
        if isinstance(error, OSError):
            self._mark_failed_server(server, error)
        return self.ignore_exc and missable(error)

    def _safely_run_func(
        self, client: Any, func: Callable[..., Any], default_val: Any, *args: Any, **kwargs: Any
    ) -> Any:
        server = client.server
        retried = None
        try:
            if self._failed_clients:  # else every server may be sent to, and none is retried
                may_send, retried = self._may_send(server)
                if not may_send:
                    return default_val
            result = func(*args, **kwargs)
        except Exception as exc:
            if self._ignored(server, exc):
                return default_val
            raise
        if retried is not None:
            self._succeeded(server, retried)
        return result

    def _set_many(
        self, client: Any, values: dict[Any, Any], *args: Any, **kwargs: Any
    ) -> tuple[list[Any], list[Any], Optional[Exception]]:
        """pymemcache's: the keys stored, those not, and the error if any; unlike
        pymemcache's, the error is returned with *ignore_exc* too, so that
        :meth:`_safely_run_set_many` counts it and decides."""
        try:
            failed = client.set_many(values, *args, **kwargs)
        except Exception as exc:
            return [], list(values), exc
        return [key for key in values if key not in failed], failed, None

    def _safely_run_set_many(
        self, client: Any, values: dict[Any, Any], *args: Any, **kwargs: Any
    ) -> Any:
        server = client.server
        succeeded: list[Any] = []
        try:
            may_send, retried = self._may_send(server)
            if not may_send:
                return list(values)
            succeeded, failed, error = self._set_many(client, values, *args, **kwargs)
            if error is not None:
                raise error
        except Exception as exc:
            if self._ignored(server, exc):
                return list(set(values) - set(succeeded))
            raise
        self._succeeded(server, retried)
        return failed
