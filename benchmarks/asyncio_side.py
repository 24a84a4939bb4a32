"""The asyncio worker: emcache, the reference a user might pick instead of gevent.

``python -m benchmarks.worker_process asyncio`` runs the same rounds as
:mod:`benchmarks.gevent_side` with asyncio tasks instead of greenlets, in a
process of its own so that the two event loops never mix. emcache keeps its own
pool of at most 16 connections (as ``ClientPool(16)``); with autobatching, the
gets issued in one loop iteration go out as one multi-key ``get``.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import emcache

from benchmarks.workers import Reply, Request, Tally, value_for

#: Whole-operation timeout, connection wait included: as generous as the gevent
#: side's POOL_TIMEOUT, so that a round measures throughput, not this setting.
TIMEOUT = 30.0
GRACE = 30.0

CONTENDERS: dict[str, dict[str, Any]] = {
    "emcache(16)": {"max_connections": 16, "autobatching": False},
    "emcache(16) autobatching": {"max_connections": 16, "autobatching": True},
}


async def _round(request: Request) -> Reply:
    """The asyncio twin of :func:`benchmarks.gevent_side.run_round`."""
    host, port = request["address"]
    client = await emcache.create_client(
        [emcache.MemcachedHostAddress(host, port)],
        timeout=TIMEOUT,
        connection_timeout=1.0,
        **CONTENDERS[request["contender"]],
    )
    ops, set_every, writes = request["ops"], request["set_every"], request.get("writes", False)
    half = ops // 2
    tally = Tally()
    clock = time.perf_counter
    go = asyncio.Event()
    deadline = math.inf

    async def work(key: bytes) -> None:
        expected = value_for(key.decode())
        await go.wait()
        for n in range(ops):
            if n and clock() >= deadline:
                return
            started = clock()
            try:
                if writes:  # each raises unless stored, or found and deleted
                    if n < half:
                        await client.set(b"%b:%d" % (key, n), expected)
                    else:
                        await client.delete(b"%b:%d" % (key, n - half))
                    right = True
                elif set_every and n % set_every == set_every - 1:
                    await client.set(key, expected)  # acknowledged; raises if not stored
                    right = True
                else:
                    item = await client.get(key)
                    right = item is not None and item.value == expected
            except Exception as exc:
                tally.error(exc)
                continue
            tally.finished(started, right)

    prefix = request["prefix"]
    tasks = [
        asyncio.create_task(work(f"{prefix}{n}".encode())) for n in range(request["greenlets"])
    ]
    await asyncio.sleep(0)  # every task is at the starting line
    started = tally.start()
    deadline = started + request["seconds"]
    go.set()
    _, unfinished = await asyncio.wait(tasks, timeout=request["seconds"] + GRACE)
    for task in unfinished:
        task.cancel()
        tally.error(f"task unfinished {GRACE:.0f} s after the window")
    seconds = clock() - started
    await client.close()
    return tally.reply(seconds)


def run_round(request: Request) -> Reply:
    return asyncio.run(_round(request))
