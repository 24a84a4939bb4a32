"""examples/counter_server.py, run as a real subprocess against the test memcached.

The server is another process, so the test cannot wait on its events; where it
must see the death links' effect it asks ``STATS`` again, every 10 ms for at
most 10 seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gevent
import gevent.socket
import gevent.subprocess
import pytest

from tests.memcached import MemcachedServer

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "counter_server.py"
Key = Callable[[str], str]
Address = tuple[str, int]


@pytest.fixture
def counter_server(memcached: MemcachedServer) -> Iterator[Address]:
    """The example on a free port, with a pool of 8 clients; stopped at teardown."""
    command = [
        sys.executable,
        str(EXAMPLE),
        "--host=127.0.0.1",
        "--port=0",
        f"--memcached={memcached.host}:{memcached.port}",
        "--pool-size=8",
    ]
    process = gevent.subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        with gevent.Timeout(20):
            banner = process.stdout.readline().decode()
        assert banner.startswith("counter server on 127.0.0.1:"), banner
        yield ("127.0.0.1", int(banner.split(",")[0].rsplit(":", 1)[1]))
    finally:
        process.terminate()
        process.wait(timeout=10)
        process.stdout.close()


class _Connection:
    """One line-protocol connection to the counter server."""

    def __init__(self, address: Address) -> None:
        self.sock = gevent.socket.create_connection(address, timeout=10)
        self.lines = self.sock.makefile("rb")

    def ask(self, request: str) -> str:
        self.sock.sendall(request.encode() + b"\n")
        reply: bytes = self.lines.readline()
        assert reply.endswith(b"\r\n"), reply
        return reply[:-2].decode()

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def _stats_once_idle(address: Address) -> dict[str, Any]:
    """STATS, asked again until no client is in use (at most 10 seconds)."""
    deadline = time.monotonic() + 10
    while True:
        connection = _Connection(address)
        stats: dict[str, Any] = json.loads(connection.ask("STATS"))
        connection.close()
        if stats["in_use"] == 0 or time.monotonic() > deadline:
            return stats
        gevent.sleep(0.01)


def test_concurrent_connections_count_exactly_and_hand_every_client_back(
    counter_server: Address, key: Key
) -> None:
    """40 connections at once, 25 INCRs each, on a shared counter and on their own,
    through 8 clients: every value is handed out exactly once, each connection
    reserves once for its whole life, and all clients are back when they close."""
    shared = key("shared")
    replies: list[int] = []
    own_counts: dict[int, list[int]] = {}

    def client(n: int) -> None:
        connection = _Connection(counter_server)
        own_counts[n] = []
        for _ in range(25):
            replies.append(int(connection.ask(f"INCR {shared}")))
            own_counts[n].append(int(connection.ask(f"INCR {key(f'own{n}')}")))
        connection.close()

    jobs = [gevent.spawn(client, n) for n in range(40)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert all(job.dead for job in jobs)
    assert sorted(replies) == list(range(1, 1001))
    assert all(counts == list(range(1, 26)) for counts in own_counts.values())
    stats = _stats_once_idle(counter_server)
    assert (stats["in_use"], stats["mapped"], stats["discarded"]) == (0, 0, 0)
    assert stats["reserves"] == 40 and stats["created"] <= 8 == stats["maxsize"]


def test_bad_requests_get_an_error_line_and_the_connection_carries_on(
    counter_server: Address, key: Key
) -> None:
    """Unknown commands, missing or extra words, and names memcached cannot take are
    answered with ERROR; nothing is counted for them."""
    connection = _Connection(counter_server)
    bad = ["HELLO", "INCR", f"INCR {key('a')} {key('b')}", "INCR " + "n" * 251, "INCR a\x01b"]
    for request in bad:
        assert connection.ask(request).startswith("ERROR "), request
    assert connection.ask(f"incr {key('a')}") == "1"
    connection.close()
    assert _stats_once_idle(counter_server)["in_use"] == 0
