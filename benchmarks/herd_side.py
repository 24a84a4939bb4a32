"""A herd worker: one process's greenlets reading one hot key (the ``herd`` part).

``python -m benchmarks.worker_process gevent`` answers ``herd`` requests with
:func:`run`: *greenlets* greenlets, from the wall-clock time *start_at* for
*seconds*, each reading the key, thinking 20 to 60 ms, and reading again. A
read is one of:

- ``naive``: ``get``, and on a miss compute and ``set`` (what pymemcache users
  and Django's ``get_or_set`` do);
- ``get_or_compute``: greenpool's, with *recache_before* in the expire mode;
  through nutcracker it falls back to its ``add`` lock.

compute() sleeps *compute_s* (a database, say) and its start times are
reported. With *invalidator*, one more greenlet invalidates the key every
*every* seconds (``invalidate``; ``delete`` for naive) once warm-up is over.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import gevent

from benchmarks.workers import Reply, Request
from greenpool import PooledClient

#: Seconds a round may run past its window before its greenlets are killed.
GRACE = 15.0


def _reader(request: Request, mc: PooledClient, compute: Callable[[], bytes]) -> Callable[[], Any]:
    key, ttl = request["key"], request["ttl"]
    if request["strategy"] == "naive":

        def naive() -> Any:
            value = mc.get(key)
            if value is None:
                value = compute()
                mc.set(key, value, ttl, noreply=False)
            return value

        return naive
    recache = request["recache_before"]

    def protected() -> Any:
        return mc.get_or_compute(key, compute, ttl, recache_before=recache, wait=2.0)

    return protected


def run(request: Request) -> Reply:
    """One process's part of a herd round (see the module docstring)."""
    mc = PooledClient(tuple(request["address"]), max_pool_size=16)
    computes: list[float] = []
    compute_s = request["compute_s"]

    def compute() -> bytes:
        computes.append(time.time())
        gevent.sleep(compute_s)
        return b"x" * 100

    read = _reader(request, mc, compute)
    start, seconds, warmup = request["start_at"], request["seconds"], request["warmup"]
    end = start + seconds
    latencies: list[float] = []  # of reads begun after warm-up
    errors: dict[str, int] = {}
    rng = random.Random(request["seed"])

    def greenlet() -> None:
        while time.time() < end:
            began = time.time()
            clock = time.perf_counter()
            try:
                value = read()
            except Exception as exc:
                what = f"{type(exc).__name__}: {exc}"[:90]
                errors[what] = errors.get(what, 0) + 1
            else:
                if value != b"x" * 100:
                    what = "no value (a default, or a wrong one)"
                    errors[what] = errors.get(what, 0) + 1
                elif began >= start + warmup:
                    latencies.append(time.perf_counter() - clock)
            gevent.sleep(rng.uniform(0.020, 0.060))

    invalidations: list[float] = []

    def invalidator() -> None:
        gevent.sleep(max(0.0, start + warmup - time.time()))
        while time.time() < end - request["every"] / 2:
            invalidations.append(time.time())
            if request["strategy"] == "naive":
                mc.delete(request["key"], noreply=False)
            else:
                mc.invalidate(request["key"])
            gevent.sleep(request["every"])

    gevent.sleep(max(0.0, start - time.time()))
    jobs = [gevent.spawn(greenlet) for _ in range(request["greenlets"])]
    if request["invalidator"]:
        jobs.append(gevent.spawn(invalidator))
    gevent.joinall(jobs, timeout=seconds + GRACE)
    gevent.killall(jobs)
    mc.close()
    return {
        "computes": computes,
        "invalidations": invalidations,
        "latencies": latencies,
        "errors": errors,
        "stats": dict(mc.stampede_stats()),
        "meta": mc.stampede.meta,
    }
