"""Run a call in another OS thread, bounded, and get back what it raised."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


def in_another_thread(call: Callable[[], Any]) -> BaseException | None:
    """Run *call* in a new OS thread; return what it raised, or None. Fails if
    the thread has not ended within 10 seconds."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    return errors[0] if errors else None
