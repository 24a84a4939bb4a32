"""Fork safety: a child never uses a connection its parent opened."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import gevent

from greenpool import ClientPool, client_factory
from tests.forking import Child
from tests.memcached import MemcachedServer

Key = Callable[[str], str]


def _local_ports(pool: ClientPool[Any], n: int) -> set[int]:
    """Reserve n clients at once and return their sockets' local ports."""
    ports = set()
    reservations = [pool.reserve() for _ in range(n)]
    clients = [r.__enter__() for r in reservations]
    for mc in clients:
        mc.version()
        ports.add(mc.sock.getsockname()[1])
    for r in reversed(reservations):
        r.__exit__(None, None, None)
    return ports


def _count_to(pool: ClientPool[Any], counter: str, n: int) -> bool:
    """incr a counter n times through the pool; every reply must be the next number."""
    jobs = []
    results: list[int] = []

    def incr(count: int) -> None:
        for _ in range(count):
            with pool.reserve() as mc:
                results.append(mc.incr(counter, 1))

    jobs = [gevent.spawn(incr, n // 4) for _ in range(4)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    return sorted(results) == list(range(1, n + 1))


def test_parent_and_child_never_share_a_connection_and_both_keep_working(
    memcached: MemcachedServer, key: Key
) -> None:
    """After a fork the child builds its own clients; parent and child then run
    side by side, each reading exactly its own replies (a shared socket would
    mix them up or break)."""
    pool = ClientPool(client_factory(memcached.address), 4)
    parent_ports = _local_ports(pool, 4)
    with pool.reserve() as mc:
        mc.set(key("parent"), "0", noreply=False)
        mc.set(key("child"), "0", noreply=False)

    def in_the_child() -> dict[str, Any]:
        child_ports = _local_ports(pool, 4)
        return {
            "shared_ports": sorted(child_ports & parent_ports),
            "size": pool.stats()["size"],
            "counted": _count_to(pool, key("child"), 400),
        }

    child = Child(in_the_child)
    assert _count_to(pool, key("parent"), 400)  # meanwhile the child counts too
    assert _local_ports(pool, 4) == parent_ports  # the parent kept its own connections
    assert child.result() == {"shared_ports": [], "size": 4, "counted": True}


_PLAIN_FORK = """
import json, os, sys, time
from greenpool import ClientPool, client_factory
host, port = sys.argv[1], int(sys.argv[2])
pool = ClientPool(client_factory((host, port), connect_timeout=1.0), 2)
with pool.reserve() as mc:  # the parent connects: gevent's resolver thread starts
    mc.set("plain-fork", "1", noreply=False)
read_end, write_end = os.pipe()
pid = os.fork()  # not gevent.fork, and nothing is monkey-patched
if pid == 0:
    started = time.monotonic()
    try:
        with pool.reserve() as mc:
            outcome = repr(mc.get("plain-fork"))
    except Exception as exc:
        outcome = type(exc).__name__
    os.write(write_end, json.dumps([outcome, time.monotonic() - started]).encode())
    os._exit(0)
os.waitpid(pid, 0)
print(os.read(read_end, 1000).decode())
"""


def _first_command_in_a_plain_fork_child(host: str, port: int) -> tuple[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _PLAIN_FORK, host, str(port)],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    outcome, seconds = json.loads(done.stdout)
    return outcome, seconds


def test_after_a_plain_fork_a_numeric_address_works_at_once(memcached: MemcachedServer) -> None:
    """gevent's thread-pool resolver does not survive os.fork() in a process that
    is not monkey-patched; a numeric address needs no resolver."""
    outcome, seconds = _first_command_in_a_plain_fork_child(*memcached.address)
    assert outcome == "b'1'" and seconds < 1.0


def test_after_a_plain_fork_a_host_name_works_or_fails_within_connect_timeout(
    memcached: MemcachedServer,
) -> None:
    outcome, seconds = _first_command_in_a_plain_fork_child("localhost", memcached.port)
    assert outcome in ("b'1'", "TimeoutError") and seconds < 1.0 + 0.5
