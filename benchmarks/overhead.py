"""The pool alone, in the gevent worker: its overhead per reservation, and a profile.

The numbers here need no concurrency: one greenlet reserving and releasing
(nothing sent), one greenlet doing gets in a row through each layer against a
raw client, and where the time of a reservation goes.
"""

from __future__ import annotations

import cProfile
import functools
import io
import math
import os
import pstats
import statistics
import sysconfig
import time
from collections.abc import Callable
from typing import Any

import gevent
import gevent.lock
from pymemcache.client.base import Client
from pymemcache.client.base import PooledClient as PymemcachePooledClient

import greenpool
from benchmarks.gevent_side import PYMEMCACHE_OPTIONS, run_round
from benchmarks.workers import REPO, Reply, Request, value_for
from greenpool import ClientPool, GreenletMappedPool, client_factory


class _Nothing:
    """The cheapest Python context manager: the floor under any reserve()."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


def _per_loop(body: Callable[[int], None], loops: int) -> float:
    started = time.perf_counter()
    body(loops)
    return (time.perf_counter() - started) / loops * 1e6


def overhead(request: Request) -> Reply:
    """Microseconds per uncontended loop of each layer of a reservation (nothing
    sent), the best of *repeats*; then one greenlet's sequential gets through each
    way against a raw client."""
    address = tuple(request["address"])
    loops, repeats = request["loops"], request["repeats"]
    factory = client_factory(address)
    pool: ClientPool[Client] = ClientPool(factory, 16)
    connected: ClientPool[Client] = ClientPool(factory, 16)
    with connected.reserve() as client:
        client.version()  # its idle client is connected: each lend polls its socket
    mapped = GreenletMappedPool(ClientPool(factory, 16))
    pymemcache = PymemcachePooledClient(address, max_pool_size=None, **PYMEMCACHE_OPTIONS)
    nothing = _Nothing()

    def reserve_release(n: int) -> None:
        for _ in range(n):
            with pool.reserve():
                pass

    def reserve_release_connected(n: int) -> None:
        for _ in range(n):
            with connected.reserve():
                pass

    def get_put(n: int) -> None:  # the pool's own data path, without the Reservation
        lend, take_back = pool.lend, pool.take_back
        for _ in range(n):
            take_back(lend())

    def reservation(n: int) -> None:  # building the context manager only
        for _ in range(n):
            pool.reserve()

    def mapped_again(n: int) -> None:
        with mapped.reserve():  # the greenlet holds its client from here on
            for _ in range(n):
                with mapped.reserve():
                    pass

    def pymemcache_pool(n: int) -> None:  # what pymemcache's PooledClient does per command
        for _ in range(n):
            with pymemcache.client_pool.get_and_release(destroy_on_fail=True):
                pass

    def empty_with(n: int) -> None:
        for _ in range(n):
            with nothing:
                pass

    bodies = {
        "reserve_release_us": reserve_release,
        "reserve_release_connected_us": reserve_release_connected,
        "get_put_us": get_put,
        "reservation_us": reservation,
        "mapped_reserve_us": mapped_again,
        "pymemcache_pool_us": pymemcache_pool,
        "empty_with_us": empty_with,
    }
    micro = {
        name: min(_per_loop(body, loops) for _ in range(repeats)) for name, body in bodies.items()
    }
    mapped.relinquish()
    connected.close()
    sequential = _sequential(address, pool, request["gets"], request["rounds"])
    pool.close()
    pymemcache.close()
    contended = _contended(factory, request["greenlets"], loops, repeats)
    return {**micro, **sequential, "contended_us": contended}


def _contended(
    factory: Callable[[], Client], greenlets: int, loops: int, repeats: int
) -> dict[str, float]:
    """µs per pass when *greenlets* greenlets share 16 slots, each holding its slot
    across one ``gevent.sleep(0)`` (nothing sent): what waiting costs, apart from
    the network. The best of *repeats*, *loops* passes in all."""
    pool: ClientPool[Client] = ClientPool(factory, 16)
    endless: ClientPool[Client] = ClientPool(factory, 16, timeout=math.inf)
    semaphore = gevent.lock.Semaphore(16)
    each = max(1, loops // greenlets // 10)

    def bare() -> None:
        gevent.sleep(0)

    def twice() -> None:
        # The floor of a fair wait: a greenlet that must queue behind others
        # switches to the hub and is switched back, one more trip than sleep(0).
        gevent.sleep(0)
        gevent.sleep(0)

    def reserved() -> None:
        with pool.reserve():
            gevent.sleep(0)

    def reserved_endless() -> None:
        with endless.reserve():
            gevent.sleep(0)

    def semaphored() -> None:
        with semaphore:
            gevent.sleep(0)

    def per_pass(body: Callable[[], None]) -> float:
        def work() -> None:
            for _ in range(each):
                body()

        started = time.perf_counter()
        gevent.joinall([gevent.spawn(work) for _ in range(greenlets)], timeout=60)
        return (time.perf_counter() - started) / (greenlets * each) * 1e6

    bodies = {
        "gevent.sleep(0) alone": bare,
        "gevent.sleep(0) twice, the floor of a fair wait": twice,
        "ClientPool(16), default timeout": reserved,
        "ClientPool(16), timeout=math.inf": reserved_endless,
        "gevent Semaphore(16)": semaphored,
    }
    result = {name: min(per_pass(b) for _ in range(repeats)) for name, b in bodies.items()}
    pool.close()
    endless.close()
    return result


def _sequential(
    address: tuple[str, int], pool: ClientPool[Client], gets: int, rounds: int
) -> dict[str, Any]:
    """One greenlet, *gets* gets in a row through each way, alternating *rounds*
    times; µs per get (median) and each way's median per-round ratio to raw. The
    same for acknowledged sets through the raw client and PooledClient."""
    key = "bench-sequential"
    raw = client_factory(address)()
    raw.set(key, value_for(key), noreply=False)
    ours = greenpool.PooledClient(address, max_pool_size=16, autobatch=False)
    batching = greenpool.PooledClient(address, max_pool_size=16, autobatch=True)
    theirs = PymemcachePooledClient(address, max_pool_size=None, **PYMEMCACHE_OPTIONS)

    def through_pool(k: str) -> Any:
        with pool.reserve() as mc:
            return mc.get(k)

    ways: dict[str, Callable[[str], Any]] = {
        "raw Client": raw.get,
        "ClientPool(16)": through_pool,
        "greenpool.PooledClient(16)": ours.get,
        "greenpool.PooledClient(16) autobatching": batching.get,
        "pymemcache PooledClient": theirs.get,
    }
    value = value_for(key)
    sets: dict[str, Callable[[str], Any]] = {
        name: functools.partial(client.set, value=value, noreply=False)
        for name, client in (
            ("raw Client", raw),
            ("greenpool.PooledClient(16)", ours),
            ("greenpool.PooledClient(16) autobatching", batching),
        )
    }
    times = _alternating(ways, key, gets, rounds)
    set_times = _alternating(sets, key, gets, rounds)
    for client in (raw, ours, batching, theirs):
        client.close()
    return {
        "sequential_us": {name: statistics.median(each) for name, each in times.items()},
        "sequential_rounds_us": times,
        "sequential_ratio": _ratios(times),
        "sequential_set_us": {name: statistics.median(each) for name, each in set_times.items()},
        "sequential_set_rounds_us": set_times,
        "sequential_set_ratio": _ratios(set_times),
    }


def _alternating(
    ways: dict[str, Callable[[str], Any]], key: str, calls: int, rounds: int
) -> dict[str, list[float]]:
    """µs per call of *key* through each of *ways*, *calls* in a row, a list per
    way of its *rounds* rounds, the ways alternating."""
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, call in ways.items():
            started = time.perf_counter()
            for _ in range(calls):
                call(key)
            times[name].append((time.perf_counter() - started) / calls * 1e6)
    return times


def _ratios(times: dict[str, list[float]]) -> dict[str, float]:
    """Each way's median per-round ratio to the raw client's time."""
    return {
        name: statistics.median(t / r for t, r in zip(each, times["raw Client"], strict=True))
        for name, each in times.items()
    }


def profile(request: Request) -> Reply:
    """Where a reservation's time goes. Uncontended: cProfile of the reserve/release
    loop (the layer by layer timings are :func:`overhead`'s). Contended:
    pyinstrument, a sampling profiler, which greenlet switches do not confuse as
    they do cProfile's per-call timers, over one round of ClientPool(16)."""
    from pyinstrument import Profiler

    pool: ClientPool[Client] = ClientPool(client_factory(tuple(request["address"])), 16)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(request["loops"]):
        with pool.reserve():
            pass
    profiler.disable()
    pool.close()
    sampler = Profiler(interval=0.0002)
    sampler.start()
    summary = run_round({**request, "contender": "ClientPool(16)", "set_every": 0})
    sampler.stop()
    contended = sampler.output_text(unicode=True, color=False, show_all=False)
    return {
        "uncontended": _top(profiler, request["top"]),
        "contended": contended[contended.find("\n", contended.find("Profile at")) + 1 :],
        "contended_ops": summary["ops"],
    }


def _top(profiler: cProfile.Profile, count: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(count)
    text = out.getvalue()
    return _relative(text[text.find("   ncalls") :] if "   ncalls" in text else text)


def _relative(text: str) -> str:
    """*text* with the files cProfile names by absolute path named as pyinstrument
    does: relative to the checkout, to site-packages, or to the standard library
    (the longest that applies), so profile.txt holds nothing of this machine's."""
    paths = sysconfig.get_paths()
    roots = {str(REPO), *(paths[name] for name in ("purelib", "platlib", "stdlib", "platstdlib"))}
    for root in sorted(roots, key=len, reverse=True):
        text = text.replace(root.rstrip(os.sep) + os.sep, "")
    return text
