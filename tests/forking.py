"""Run a function in a forked child and get its JSON result back through a pipe.

The parent goes on working meanwhile (that is what the fork tests prove), then
calls :meth:`Child.result`. The child never returns into pytest: it leaves with
``os._exit`` whatever happens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import gevent
import gevent.os


class Child:
    def __init__(self, work: Callable[[], Any]) -> None:
        read_end, write_end = os.pipe()
        self._pid = gevent.os.fork()
        if self._pid == 0:
            status = 1
            try:
                os.close(read_end)
                os.write(write_end, json.dumps(work()).encode())
                status = 0
            finally:
                os._exit(status)
        os.close(write_end)
        self._read_end = read_end

    def result(self, timeout: float = 30) -> Any:
        """Wait for the child; return what *work* returned, or fail if it raised."""
        with gevent.Timeout(timeout):
            _, status = gevent.os.waitpid(self._pid, 0)
        try:
            report = os.read(self._read_end, 65536)
        finally:
            os.close(self._read_end)
        assert status == 0, f"the child failed (status {status}); see its stderr"
        return json.loads(report)
