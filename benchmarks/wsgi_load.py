"""The WSGI end-to-end rounds: a variant of the example under wrk.

Each round starts the variant's server afresh (so the connections memcached
sees are that round's alone), checks that one GET answers the stored value,
runs wrk for a whole number of seconds with :file:`wrk_get.lua`, and stops
the server. Without wrk, the check still runs and the load is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import port_for

from benchmarks.workers import Reply, value_for
from tests.wsgi import Server

SCRIPT = Path(__file__).resolve().parent / "wrk_get.lua"
HOST = "127.0.0.1"
PREFIX = "wsgi-"
#: The example's own app with its ClientPool(16); the same with its GETs through
#: an AutoBatcher over that pool; a new pymemcache Client per request; one
#: unbounded pymemcache PooledClient (see benchmarks.wsgi_variants).
VARIANTS = ("greenpool", "greenpool autobatching", "per-request", "pymemcache")


def wrk() -> str | None:
    """The wrk binary, or None (``make bench`` installs Debian's when root)."""
    return shutil.which("wrk")


def run_round(
    variant: str,
    memcached: tuple[str, int],
    keys: int,
    seconds: int,
    connections: int,
    tick: Callable[[], None],
) -> Reply:
    """One round of *variant* under wrk: requests/s, p50 and p99, errors; *tick*
    is called every 10 ms while wrk runs."""
    port = port_for.select_random()
    command = [sys.executable, "-m", "benchmarks.wsgi_variants", variant, "--port", str(port)]
    server = Server([*command, "--memcached", f"{memcached[0]}:{memcached[1]}"], port).start()
    try:
        check(port)
        binary = wrk()
        if binary is None:
            return {"skipped": "wrk is not installed (make bench installs it when root)"}
        return load(binary, port, keys, seconds, connections, tick)
    finally:
        server.stop()


def check(port: int) -> None:
    """One GET must answer the value the benchmark stored."""
    key = f"{PREFIX}0"
    with urllib.request.urlopen(f"http://{HOST}:{port}/{key}", timeout=10) as response:
        body = response.read()
    if body != value_for(key):
        raise RuntimeError(f"GET /{key} answered {body[:40]!r}, not the stored value")


def load(
    binary: str, port: int, keys: int, seconds: int, connections: int, tick: Callable[[], None]
) -> Reply:
    command = [
        binary,
        "-t",
        "1",
        "-c",
        str(connections),
        "-d",
        f"{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        f"http://{HOST}:{port}/",
    ]
    env = {**os.environ, "BENCH_KEYS": str(keys), "BENCH_PREFIX": PREFIX}
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + seconds + 30
    try:
        while process.poll() is None and time.monotonic() < deadline:
            tick()
            time.sleep(0.01)
    finally:
        if process.poll() is None:
            process.kill()
        output = process.communicate(timeout=10)[0]
    line = next((x for x in output.splitlines() if x.startswith("{")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {output}")
    result: dict[str, Any] = json.loads(line)
    errors = {
        f"HTTP status not 2xx/3xx ({name})" if name == "status" else f"socket {name} errors": count
        for name in ("status", "connect", "read", "write", "timeout")
        if (count := result[name])
    }
    answered = result["requests"] - result["status"]
    duration = result["duration_us"] / 1e6
    return {
        "ops": answered,
        "seconds": duration,
        "ops_per_s": answered / duration,
        "p50_ms": result["p50_us"] / 1000.0,
        "p99_ms": result["p99_us"] / 1000.0,
        "errors": errors,
    }
