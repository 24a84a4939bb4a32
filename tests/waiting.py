"""Wait for a condition that has no Event to wait on: bounded, cooperative polling."""

from __future__ import annotations

import time
from collections.abc import Callable

import gevent


def wait_until(condition: Callable[[], object], what: str, timeout: float = 5.0) -> None:
    """Poll *condition* every millisecond, letting other greenlets run, until it
    holds; fail naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting until {what}")
        gevent.sleep(0.001)
