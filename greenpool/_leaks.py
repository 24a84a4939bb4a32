"""Leak warnings: a reservation held longer than *leak_warning_after* is logged.

Each reservation gets a one-shot timer in the gevent hub, started when it is
lent and stopped when it comes back. If it fires, one warning goes to the
``greenpool`` logger with the stack that made the reservation. The stack is
taken at reserve time, which costs some microseconds: the option is off by
default. The callback runs in the hub, so it never raises.
"""

from __future__ import annotations

import logging
import os
import traceback
from typing import Any

from gevent import get_hub

log = logging.getLogger("greenpool")
_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep


class LeakWatch:
    """Starts and stops the leak timers of one pool, and counts its warnings.

    *seconds* is the pool's ``leak_warning_after``.
    """

    def __init__(self, pool_name: str, seconds: float) -> None:
        self.pool_name = pool_name
        self.seconds = seconds
        self.warnings = 0

    def watch(self, entry: Any) -> None:
        """Start *entry*'s timer, remembering where it is being reserved."""
        stack = [f for f in traceback.extract_stack() if not f.filename.startswith(_PACKAGE)]
        timer = get_hub().loop.timer(self.seconds)
        timer.start(self._warn, stack)
        entry.leak = timer

    @staticmethod
    def stop(entry: Any) -> None:
        entry.leak.close()
        entry.leak = None

    def _warn(self, stack: traceback.StackSummary) -> None:
        try:
            self.warnings += 1
            log.warning(
                "pool %r: a client has been reserved for over %ss and not returned; "
                "it was reserved at:\n%s",
                self.pool_name,
                self.seconds,
                "".join(traceback.format_list(stack)).rstrip(),
            )
        except Exception:  # pragma: no cover - logging itself failed; never raise in the hub
            pass
