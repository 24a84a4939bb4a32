"""A server process of the tests' own, on a loopback port, stopped by its pid.

mirakuru starts the command and waits until the port accepts connections;
stop() ends the process it started. MemcachedServer and Nutcracker are these.
"""

from __future__ import annotations

from typing import TypeVar

from mirakuru import TCPExecutor

HOST = "127.0.0.1"
S = TypeVar("S", bound="LoopbackServer")


class LoopbackServer:
    """*command*, listening on HOST:*port*; stop() and start() again reuse the port."""

    def __init__(self, command: list[str], port: int) -> None:
        self.host = HOST
        self.port = port
        self._executor = TCPExecutor(command, host=HOST, port=port, timeout=10)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def start(self: S) -> S:
        self._executor.start()
        return self

    def stop(self) -> None:
        self._executor.stop()

    def running(self) -> bool:
        return bool(self._executor.running())
