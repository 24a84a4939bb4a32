"""A bounded soak: everything that goes wrong in production, at once, for ~12 s."""

from __future__ import annotations

import random
import time
from collections.abc import Callable

import gevent
from gevent import Timeout
from pymemcache.exceptions import MemcacheUnexpectedCloseError

from greenpool import ClientPool, PoolTimeout, client_factory
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy

Key = Callable[[str], str]
RUN_SECONDS = 12.0


def test_soak_with_kills_timeouts_a_restart_and_expiry(
    own_memcached: MemcachedServer, key: Key
) -> None:
    """Random kills and timeouts, a server restart, idle and lifetime expiry:
    0 wrong values, 0 protocol errors, in_use back to 0, size <= maxsize, and
    created - discarded == size."""
    rng = random.Random(7)
    proxy = FaultProxy(own_memcached.address).start()
    proxy.reply_delay = lambda: rng.choice((0, 0, 0, 0.001, 0.004))
    maxsize = 8
    pool = ClientPool(
        client_factory(proxy.address, connect_timeout=0.5),
        maxsize,
        timeout=5,
        max_idle=0.3,
        max_lifetime=1.0,
        check_after_idle=0.2,
    )
    wrong: list[str] = []
    protocol_errors: list[BaseException] = []
    outcomes = {"ok": 0, "timeout": 0, "connection": 0, "pool_timeout": 0}
    peak_size = 0
    quiet = False
    deadline = time.monotonic() + RUN_SECONDS

    def work(worker: int) -> None:
        nonlocal peak_size
        counter, base = key(f"c{worker}"), (worker + 1) * 1_000_000
        sent = 0
        abandoned = False
        for n in range(100_000):
            if time.monotonic() > deadline:
                return
            if quiet and worker >= 0:
                gevent.sleep(0.05)  # workers pause: the pool idles and shrinks
                continue
            try:
                limit = rng.choice((0.003, 0.02) + (2.0,) * 18)  # one in ten can cut in
                with Timeout(limit), pool.reserve() as mc:
                    peak_size = max(peak_size, pool.stats()["size"])
                    if sent == 0:
                        mc.set(counter, str(base), noreply=False)
                    sent += 1
                    count = mc.incr(counter, 1)
                    if count is not None and not base < count <= base + sent:
                        wrong.append(f"worker {worker}: counter {count}, base {base}")
                    value = f"{worker}:{n}"
                    mc.set(key(f"v{worker}"), value, noreply=False)
                    got = mc.get(key(f"v{worker}"))
                    if got is not None and not got.startswith(f"{worker}:".encode()):
                        wrong.append(f"worker {worker}: read {got!r}, another's value")
                    elif got not in (None, value.encode()) and not abandoned:
                        wrong.append(f"worker {worker}: read {got!r}, wrote {value!r}")
                outcomes["ok"] += 1
            except Timeout:
                # A write cut off here may still reach the server later, over the
                # abandoned connection, as on any network: from now on this
                # worker may read its own older value, but never anyone else's.
                abandoned = True
                outcomes["timeout"] += 1
            except PoolTimeout:
                outcomes["pool_timeout"] += 1
            except (OSError, MemcacheUnexpectedCloseError):
                abandoned = True
                outcomes["connection"] += 1
            except Exception as exc:
                protocol_errors.append(exc)
            gevent.sleep(rng.uniform(0, 0.01))

    workers = {i: gevent.spawn(work, i) for i in range(24)}
    trickle = gevent.spawn(work, -1)  # never killed, never paused: returns keep coming
    next_id = len(workers)
    restarted = False
    kills = 0
    while time.monotonic() < deadline:
        gevent.sleep(0.05)
        victim = rng.choice(list(workers))
        workers.pop(victim).kill(block=False)  # mid-command, holding or waiting
        kills += 1
        workers[next_id] = gevent.spawn(work, next_id)
        next_id += 1
        elapsed = RUN_SECONDS - (deadline - time.monotonic())
        quiet = 6.0 < elapsed < 9.0
        if not restarted and elapsed > 3.0:
            own_memcached.stop()
            gevent.sleep(0.2)
            own_memcached.start()
            restarted = True
    gevent.joinall([*workers.values(), trickle], timeout=15)
    proxy.stop()
    assert all(job.dead for job in workers.values()) and trickle.successful()

    stats = pool.stats()
    print(outcomes, stats)  # shown with -s: the soak's own numbers
    assert wrong == [] and protocol_errors == []
    assert stats["in_use"] == 0 and stats["waiting"] == 0
    assert peak_size <= maxsize and stats["size"] <= maxsize
    assert stats["created"] - stats["discarded"] == stats["size"]
    # every fault really happened
    assert kills > 100 and outcomes["timeout"] > 20 and outcomes["ok"] > 1000
    assert stats["discarded_interrupted"] > 20 and stats["connection_errors"] > 0
    assert stats["discarded_idle"] > 0 and stats["discarded_lifetime"] > 0
