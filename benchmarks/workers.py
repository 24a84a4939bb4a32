"""Worker processes, and what both kinds of worker measure the same way.

Each contender runs in a worker process of its kind, gevent or asyncio, so the
two event loops never mix and the orchestrator's sampling never competes with
them for the GIL. The orchestrator sends one JSON request a line on the
worker's stdin and reads one JSON reply a line from its stdout; between the
two it keeps sampling memcached (:meth:`Worker.call`'s *tick*).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import select
import subprocess
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BUILD = REPO / "build"

Request = dict[str, Any]
Reply = dict[str, Any]

#: memcached's own limit on simultaneous connections, and the raised one.
DEFAULT_CONNECTIONS = 1024
RAISED_CONNECTIONS = 8192


def raise_open_files() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the soft limit.

    Children inherit it: memcached needs one descriptor per connection, and a
    worker running 5,000 dedicated clients needs 5,000.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return RAISED_CONNECTIONS * 4 if soft == resource.RLIM_INFINITY else soft


def plain_python(source: Path) -> str:
    """The Python of a venv holding what ``pip install <source>`` installs, no
    extra: greenpool's own dependencies and nothing else. Made under ``build/``
    the first time (a few seconds), and again when *source*'s setup.cfg changes."""
    digest = hashlib.sha256((source / "setup.cfg").read_bytes()).hexdigest()[:12]
    venv = BUILD / f"bench-plain-{digest}"
    python = venv / "bin" / "python"
    if not (venv / "installed").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        install = [str(python), "-m", "pip", "install", "--quiet", str(source)]
        subprocess.run(install, check=True, stdout=subprocess.DEVNULL)
        (venv / "installed").touch()
    return str(python)


def tree_with_greenpool_of(source: Path) -> Path:
    """A directory from which ``python -m benchmarks.worker_process`` runs this
    checkout's benchmarks on *source*'s greenpool (another commit's checkout)."""
    tree = BUILD / f"bench-tree-{hashlib.sha256(str(source).encode()).hexdigest()[:12]}"
    tree.mkdir(parents=True, exist_ok=True)
    for name, target in (("benchmarks", REPO / "benchmarks"), ("greenpool", source / "greenpool")):
        link = tree / name
        if link.is_symlink() and link.resolve() != target.resolve():
            link.unlink()
        if not link.is_symlink():
            link.symlink_to(target)
    return tree


class WorkerFailed(Exception):
    """Raised when a worker answered with an error, died, or did not answer in time."""


class Worker:
    """A worker process of *kind* ``gevent`` or ``asyncio``
    (:mod:`benchmarks.worker_process`; it answers as :func:`serve` says), run by
    *python* from *cwd*, whose ``greenpool`` and ``benchmarks`` it imports."""

    def __init__(
        self, kind: str, python: str = sys.executable, cwd: Path = REPO, name: str = ""
    ) -> None:
        self.name = f"{name or kind} worker"
        self._process = subprocess.Popen(
            [python, "-m", "benchmarks.worker_process", kind],
            cwd=cwd,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buffer = b""

    def call(
        self, request: Request, timeout: float, tick: Callable[[], None] | None = None
    ) -> Reply:
        """Send *request*, call *tick* every 10 ms until the reply arrives, return it.

        :raises WorkerFailed: the worker reported an error, exited, or gave no
            reply within *timeout* seconds (then it is killed).
        """
        assert self._process.stdin is not None and self._process.stdout is not None
        self._process.stdin.write(json.dumps(request).encode() + b"\n")
        self._process.stdin.flush()
        fd = self._process.stdout.fileno()
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.close()
                raise WorkerFailed(f"{self.name} gave no reply within {timeout:.0f} s")
            readable, _, _ = select.select([fd], [], [], min(left, 0.01))
            if readable:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    raise WorkerFailed(f"{self.name} exited ({self._process.wait(5)})")
                self._buffer += chunk
            elif tick is not None:
                tick()
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: Reply = json.loads(line)
        if "failed" in reply:
            raise WorkerFailed(f"{self.name}: {reply['failed']}")
        return reply

    def close(self) -> None:
        """End the worker: EOF on its stdin, then SIGKILL if it lingers."""
        if self._process.stdin is not None and not self._process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):  # it died: wait() says so
                self._process.stdin.close()
        try:
            self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)


def serve(handlers: dict[str, Callable[[Request], Reply]]) -> None:
    """The worker's side: answer each request line on stdin until EOF.

    A request names its handler in ``"cmd"``; an exception becomes a reply with
    ``"failed"`` (the traceback), so the orchestrator stops with the reason.
    """
    for line in sys.stdin.buffer:
        request = json.loads(line)
        try:
            reply = handlers[request["cmd"]](request)
        except Exception:
            reply = {"failed": traceback.format_exc()}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def value_for(key: str) -> bytes:
    """The 100-byte value stored under *key*: a reply read for another key shows."""
    return (key.encode() * (100 // len(key) + 1))[:100]


class Tally:
    """One round's measurements: a latency per completed operation, errors by kind,
    and this process's CPU time from :meth:`start` to :meth:`reply`."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self._cpu = 0.0

    def start(self) -> float:
        """Mark the round's start; return ``time.perf_counter()``."""
        self._cpu = _cpu_seconds()
        return time.perf_counter()

    def finished(self, started: float, right: bool) -> None:
        """Count an operation begun at *started* (``time.perf_counter()``) that
        returned: its latency if it answered *right*, otherwise an error."""
        if right:
            self.latencies.append(time.perf_counter() - started)
        else:
            self.error("wrong value, or not stored")

    def error(self, exc: BaseException | str) -> None:
        what = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        self.errors[what[:90]] += 1

    def reply(self, seconds: float, **extra: Any) -> Reply:
        """The round's summary: ops/s over *seconds*, p50 and p99 in ms, errors, and
        this process's CPU µs per completed operation (its own cost, whatever
        memcached and the rest of the machine spend)."""
        latencies = sorted(self.latencies)
        done = len(latencies)

        def percentile(p: float) -> float:
            return latencies[min(done - 1, int(p * done))] * 1000.0 if done else 0.0

        cpu = _cpu_seconds() - self._cpu
        return {
            "ops": done,
            "seconds": seconds,
            "ops_per_s": done / seconds if seconds > 0 else 0.0,
            "cpu_us": cpu / done * 1e6 if done else 0.0,
            "p50_ms": percentile(0.50),
            "p99_ms": percentile(0.99),
            "errors": dict(self.errors.most_common()),
            **extra,
        }
