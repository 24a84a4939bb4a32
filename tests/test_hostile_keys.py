"""Bad keys and command-shaped values, mixed into batches and noreply commands
under interruptions, behind delayed replies: the valid callers never notice.

200 greenlets share one PooledClient with its defaults (autobatching on)
through a proxy that delays replies at random. Each greenlet reads and writes
its own keys, with values that look like commands, and now and then asks for
or writes a key memcached cannot take (empty, blank, a line end, a control
byte, 251 bytes), with or without noreply, while Timeouts cut commands short.
Then: 0 values of another key, 0 protocol errors among the valid callers, the
cache never flushed, and no key written that nobody asked to write.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import gevent
from gevent import Timeout
from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheIllegalInputError

from greenpool import PooledClient
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.waiting import wait_until

Key = Callable[[str], str]
BAD = ["", " ", "\r\n", "\t", "a\x01b", "a b", "k" * 251, "x\r\nflush_all"]
EVIL = b"flush_all\r\nset evil 0 0 1\r\nX\r\nincr %s 1000"  # a value that reads as commands


def test_bad_keys_in_batches_and_noreply_commands_under_interruptions_harm_no_one(
    own_memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy], key: Key
) -> None:
    proxy = proxy_to(own_memcached.address)
    rng = random.Random(20261204)
    mc = PooledClient(proxy.address, max_pool_size=8, pool_timeout=30, default_noreply=False)
    greenlets, rounds = 200, 30
    for i in range(greenlets):
        mc.set(key(f"v{i}"), b"%d:0" % i)
        mc.set(key(f"c{i}"), str(i * 1_000_000))
    proxy.reply_delay = lambda: rng.choice((0, 0, 0, 0.001, 0.005))
    wrong: list[str] = []
    protocol_errors: list[BaseException] = []
    refused = 0

    def mine(i: int, got: Any) -> bool:
        return got is None or got.startswith(b"%d:" % i)

    def operation(i: int, n: int) -> None:
        nonlocal refused
        choice = rng.randrange(7)
        if choice == 0:
            got = mc.get(key(f"v{i}"))
            if not mine(i, got):
                wrong.append(f"{i} got {got!r:.40}")
        elif choice == 1:
            many = mc.get_many([key(f"v{i}"), key(f"w{i}")])
            if set(many) - {key(f"v{i}"), key(f"w{i}")} or not all(
                map(lambda v: mine(i, v), many.values())
            ):
                wrong.append(f"{i} got_many {many!r:.60}")
        elif choice == 2:
            mc.set(
                key(f"w{i}"), b"%d:" % i + EVIL % key(f"c{i}").encode(), noreply=rng.random() < 0.5
            )
        elif choice == 3:
            count = mc.incr(key(f"c{i}"), 1)
            if count is not None and not i * 1_000_000 < count < (i + 1) * 1_000_000:
                wrong.append(f"{i} counted {count}")
        else:  # a bad key, read (batched with the others) or written
            bad = rng.choice(BAD)
            try:
                if choice == 4:
                    mc.get(bad)
                elif choice == 5:
                    mc.get_many([key(f"v{i}"), bad])
                else:
                    mc.set(bad, EVIL % key(f"c{i}").encode(), noreply=True)
            except MemcacheIllegalInputError:
                refused += 1
            else:
                wrong.append(f"{i}: the bad key {bad!r} was taken")

    def work(i: int) -> None:
        for n in range(rounds):
            try:
                with Timeout(rng.choice((0.001, 0.005, 5.0))):
                    operation(i, n)
            except Timeout:
                pass
            except Exception as exc:
                protocol_errors.append(exc)

    flushes = own_memcached.stats()["cmd_flush"]
    jobs = [gevent.spawn(work, i) for i in range(greenlets)]
    gevent.joinall(jobs, timeout=120)
    assert all(job.dead for job in jobs)
    assert wrong == [] and protocol_errors == []
    assert refused > 500  # the bad keys really were tried
    plain = Client(own_memcached.address, connect_timeout=2, timeout=2)
    assert own_memcached.stats()["cmd_flush"] == flushes
    assert plain.get("evil") is None
    counters = plain.get_many([key(f"c{i}") for i in range(greenlets)])
    assert all(
        i * 1_000_000 <= int(counters[key(f"c{i}")]) < i * 1_000_000 + rounds + 1
        for i in range(greenlets)
    ), "a counter was incremented by a value run as a command"
    # a pipeline whose callers all timed out may still be reading its replies
    wait_until(lambda: mc.pool_stats()["in_use"] == 0, "the last pipelines ended")
    assert mc.pool_stats()["size"] <= 8
