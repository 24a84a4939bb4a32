"""memcached for the benchmarks: its processes, its own connection counters, descriptors.

The orchestrating process never imports gevent or asyncio: it reads memcached's
``stats`` over one plain blocking socket, opened before a round and kept open,
so the watcher itself is one steady connection and never a new one.
"""

from __future__ import annotations

import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.workers import DEFAULT_CONNECTIONS, RAISED_CONNECTIONS, raise_open_files
from tests.memcached import MemcachedServer
from tests.nutcracker import Nutcracker

__all__ = [
    "DEFAULT_CONNECTIONS",
    "RAISED_CONNECTIONS",
    "Cluster",
    "ConnectionWatch",
    "MemcachedServer",
    "StatsReader",
    "raise_open_files",
    "start",
    "start_cluster",
]

#: Descriptors memcached keeps for itself beyond its connection limit.
SPARE_DESCRIPTORS = 64


def start(connections: int) -> MemcachedServer:
    """Start a memcached allowing *connections* clients (``-c``), with a listen
    backlog to match (``-b``, which the kernel caps at somaxconn)."""
    backlog = min(connections, 4096)
    return MemcachedServer("-c", str(connections), "-b", str(backlog)).start()


@dataclass
class Cluster:
    """Three memcacheds and a nutcracker (ketama, fnv1a_64) in front of them."""

    servers: list[MemcachedServer]
    proxy: Nutcracker
    directory: tempfile.TemporaryDirectory[str]

    def stop(self) -> None:
        self.proxy.stop()
        for server in self.servers:
            server.stop()
        self.directory.cleanup()


def start_cluster(connections: int) -> Cluster:
    """Start three memcacheds as :func:`start` does, and nutcracker in front of them."""
    servers = [start(connections) for _ in range(3)]
    directory = tempfile.TemporaryDirectory(prefix="bench-nutcracker-")
    addresses = [server.address for server in servers]
    proxy = Nutcracker(addresses, Path(directory.name)).start()
    return Cluster(servers, proxy, directory)


class StatsReader:
    """One blocking connection that reads memcached's ``stats`` counters."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self._sock = socket.create_connection(address, timeout=timeout)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""

    def read(self) -> dict[str, int]:
        """memcached's numeric ``stats``, by name."""
        self._sock.sendall(b"stats\r\n")
        while not self._buffer.endswith(b"END\r\n"):
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionError("memcached closed the stats connection")
            self._buffer += chunk
        lines, self._buffer = self._buffer.decode().splitlines(), b""
        stats = {}
        for line in lines:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
                stats[parts[1]] = int(parts[2])
        return stats

    def close(self) -> None:
        self._sock.close()


@dataclass
class ConnectionWatch:
    """What memcached saw of one round's connections, from its own counters.

    ``peak`` is the most ``curr_connections`` sampled above the idle baseline
    (sampled, so a lower bound), ``total`` the new connections it accepted
    (``total_connections``), ``rejected`` those it refused at its ``-c`` limit
    with "ERROR Too many open connections" (``rejected_connections``).
    """

    reader: StatsReader
    before: dict[str, int] = field(default_factory=dict)
    peak_curr: int = 0

    def __post_init__(self) -> None:
        self.before = self.reader.read()
        self.peak_curr = self.before["curr_connections"]

    def sample(self) -> None:
        self.peak_curr = max(self.peak_curr, self.reader.read()["curr_connections"])

    def finish(self, settle: float = 3.0) -> dict[str, int]:
        """Read the counters once the round's connections are closed (at most
        *settle* seconds later), and return the round's numbers."""
        baseline = self.before["curr_connections"]
        deadline = time.monotonic() + settle
        after = self.reader.read()
        while after["curr_connections"] > baseline and time.monotonic() < deadline:
            time.sleep(0.01)
            after = self.reader.read()
        return {
            "peak": self.peak_curr - baseline,
            "total": after["total_connections"] - self.before["total_connections"],
            "rejected": after["rejected_connections"] - self.before["rejected_connections"],
            "left_open": after["curr_connections"] - baseline,
        }
