"""The WSGI example as it is run: alone with its private memcached, under gunicorn, in make demo."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from geventhttpclient import HTTPClient

from tests.memcached import MemcachedServer
from tests.wsgi import REPO, WSGI_APP, Server, children, exited


def private_memcached(server: Server) -> tuple[int, str]:
    """The pid and address of the one memcached the example started."""
    (pid, name), *others = children(server.pid).items()
    assert (name, others) == ("memcached", [])
    return pid, server.stats()["memcached"]["address"]


def test_alone_it_starts_and_stops_its_own_memcached() -> None:
    """Without --memcached the example serves from a memcached it started as its
    child, and on SIGTERM it stops that memcached before exiting with 0."""
    server = Server.wsgi_app().start()
    try:
        pid, address = private_memcached(server)
        assert server.request("PUT", "/alone", b"here").status == 201
        assert server.request("GET", "/alone").body == b"here"
        assert server.terminate(signal.SIGTERM) == 0
        assert exited(pid, timeout=0)  # already gone when the example was
    finally:
        server.stop()
    host, _, port = address.rpartition(":")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=5)


def test_a_killed_example_takes_its_memcached_with_it() -> None:
    """Even when the example is killed outright (SIGKILL, no cleanup), its private
    memcached does not outlive it: Linux sends it SIGTERM."""
    server = Server.wsgi_app().start()
    try:
        pid, _ = private_memcached(server)
        assert server.terminate(signal.SIGKILL) == -signal.SIGKILL
        assert exited(pid, timeout=10)  # memcached checks its stop flag once a second
    finally:
        server.stop()


def test_with_no_memcached_installed_nor_given_it_says_what_to_do(tmp_path: Path) -> None:
    """No memcached on PATH and no --memcached: one line on stderr saying what to
    install or pass, and a nonzero exit, without listening."""
    result = subprocess.run(
        [sys.executable, WSGI_APP, "--port", "1"],
        env={"PATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "apt-get install memcached" in result.stderr and "--memcached HOST:PORT" in result.stderr


def test_memcached_down_is_a_503_and_service_resumes_when_it_is_back(
    own_memcached: MemcachedServer,
) -> None:
    """While memcached is stopped, requests get 503 with the reason (never a hang
    nor a stale answer); once it is back, the same pool serves again."""
    server = Server.wsgi_app("--memcached", f"{own_memcached.host}:{own_memcached.port}").start()
    try:
        assert server.request("PUT", "/down", b"v").status == 201
        own_memcached.stop()
        for method in ("GET", "PUT", "DELETE"):
            reply = server.request(method, "/down", b"v")
            assert reply.status == 503 and reply.body.startswith(b"memcached failed"), reply
        own_memcached.start()
        assert server.request("GET", "/down").status == 404  # a new, empty memcached
        assert server.request("PUT", "/down", b"v").status == 201
    finally:
        server.stop()


def worker_connections(server: Server, workers: int) -> dict[int, HTTPClient]:
    """One open connection to each of *workers* worker processes, by worker pid.

    Which worker accepts a connection is the kernel's choice, so open
    connections, all held at once, until every worker has one (at most 200).
    """
    found: dict[int, HTTPClient] = {}
    held: list[HTTPClient] = []
    try:
        for _ in range(200):
            http = server.connect()
            held.append(http)
            pid = server.stats(http=http)["pid"]
            if pid not in found:
                found[pid] = held.pop()
                if len(found) == workers:
                    break
    finally:
        for http in held:
            http.close()
    assert len(found) == workers, f"reached {len(found)} of {workers} workers"
    return found


@pytest.mark.parametrize("preload", [False, True], ids=["", "preload"])
def test_under_gunicorn_each_worker_builds_its_own_pool(
    memcached: MemcachedServer, preload: bool
) -> None:
    """Under gunicorn -k gevent -w 2 (with --preload too, where the app is imported
    before the fork), each worker answers from a pool it made itself, and what one
    worker stores the other reads."""
    args = ["-w", "2", "--graceful-timeout", "5", *(["--preload"] if preload else [])]
    server = Server.gunicorn(memcached, *args).start()
    try:
        (a, to_a), (b, to_b) = worker_connections(server, 2).items()
        for pid, http in ((a, to_a), (b, to_b)):
            stats: dict[str, Any] = server.stats(http=http)
            assert pid != server.pid and stats["pool"]["name"] == f"wsgi_app-{pid}"
        key = f"/gunicorn-{preload}"
        assert server.request("PUT", key, b"from a", http=to_a).status == 201
        assert server.request("GET", key, http=to_b).body == b"from a"
        assert server.request("DELETE", key, http=to_b).status == 204
        assert server.request("GET", key, http=to_a).status == 404
        to_a.close()
        to_b.close()
    finally:
        server.stop()


def test_under_gunicorn_without_an_address_requests_say_what_to_set() -> None:
    """With $GREENPOOL_MEMCACHED empty, gunicorn still serves, and every request
    gets a 500 naming the variable to set."""
    server = Server.gunicorn(None, "-w", "1", "--graceful-timeout", "5").start()
    try:
        for method, path in (("GET", "/key"), ("PUT", "/key"), ("GET", "/_stats")):
            reply = server.request(method, path, b"v")
            assert (reply.status, reply.body) == (500, b"set GREENPOOL_MEMCACHED=HOST:PORT\n")
    finally:
        server.stop()


def test_the_demo_runs_clean_at_a_small_scale() -> None:
    """tools/demo.py (make demo, with fewer requests) starts the example with its
    own memcached, loads it, prints every number it promises, and exits 0."""
    result = subprocess.run(
        [sys.executable, "tools/demo.py", "--requests", "600", "--concurrency", "60"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for line in ("requests/s +[0-9]+", "latency +p50 [0-9.]+ ms, p99 [0-9.]+ ms", "errors +0"):
        assert re.search(f"^  {line}$", result.stdout, re.MULTILINE), result.stdout
    assert re.search("[0-9]+ memcached clients created for 60[0-9] requests", result.stdout)
    assert re.search("memcached +saw [0-9]+ connections", result.stdout)
