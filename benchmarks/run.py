"""The orchestrator: memcached, the workers, alternating rounds, the numbers.

It never monkey-patches nor runs an event loop: contenders run in worker
processes (:mod:`benchmarks.workers`), and this process samples
memcached's own counters while they do.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import benchmarks
from benchmarks import herd, report, servers, wsgi_load
from benchmarks.plan import (
    ASYNCIO,
    BASE,
    COMPARED,
    FULL,
    NO_EXTRAS,
    PARTS,
    QUICK,
    WORKLOADS,
    Plan,
    Workload,
)
from benchmarks.workers import REPO, Reply, Worker, plain_python, tree_with_greenpool_of

RESULTS = Path(__file__).resolve().parent / "results"
QUICK_RESULTS = Path(__file__).resolve().parent.parent / "build" / "bench-quick"
BASELINE = "pymemcache PooledClient"
WSGI_BASELINE = "pymemcache"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=benchmarks.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="a ~1 minute smoke run")
    parser.add_argument("--rounds", type=int, help="alternating rounds (5 in a full run)")
    parser.add_argument("--seconds", type=float, help="window of each concurrency round")
    parser.add_argument("--scale", type=float, help="multiply greenlet counts (tests: 0.01)")
    parser.add_argument(
        "--only",
        type=lambda text: tuple(text.split(",")),
        help=f"comma-separated parts to run: {','.join(PARTS)} (default: all)",
    )
    parser.add_argument("--out", type=Path, help="where results go (a full run: results/)")
    parser.add_argument(
        "--no-docs",
        "--no-readme",
        dest="no_docs",
        action="store_true",
        help="leave the docs' benchmarks and stampede pages alone",
    )
    parser.add_argument(
        "--compare",
        type=Path,
        help="another checkout (another commit's greenpool): the batched rows of the "
        "get, mix, crowd, writes and cluster parts run on it too, in the same rounds, "
        "as installed without extras",
    )
    args = parser.parse_args(argv)
    if args.compare is not None and not (args.compare / "greenpool").is_dir():
        parser.error(f"--compare: {args.compare} holds no greenpool package")
    unknown = set(args.only or ()) - set(PARTS)
    if unknown:
        parser.error(f"--only: no part named {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = QUICK if args.quick else FULL
    overrides = {
        "rounds": args.rounds,
        "seconds": args.seconds,
        "scale": args.scale,
        "only": args.only,
        "compare": None if args.compare is None else str(args.compare.resolve()),
    }
    plan = replace(plan, **{k: v for k, v in overrides.items() if v is not None})
    if plan.scale != 1.0:
        plan = replace(
            plan,
            loops=min(plan.loops, 2_000),
            gets=min(plan.gets, 50),
            herd_seconds=min(plan.herd_seconds, 2.0),
        )
    full = replace(plan, compare=None) == FULL  # a full run, with or without a before
    out = args.out or (RESULTS if full else QUICK_RESULTS)
    started = time.monotonic()
    results = run(plan)
    results["wall_seconds"] = time.monotonic() - started
    results["load_at_end"] = round(os.getloadavg()[0], 2)
    report.write(results, out)
    print(report.markdown(results), flush=True)
    if full and not args.no_docs:
        report.update_docs(results)
    print(f"results in {out}/; {results['wall_seconds']:.0f} s in all", flush=True)
    return 0


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def run(plan: Plan) -> dict[str, Any]:
    """Run everything *plan* says; return the results :mod:`benchmarks.report` reads."""
    # Numeric loopback addresses need no resolver, and gevent's default one (a
    # thread pool) caps new connections at a few hundred a second under load:
    # that would flatter greenpool against the contenders that connect often.
    os.environ.setdefault("GEVENT_RESOLVER", "block")
    open_files = servers.raise_open_files()
    raised = min(servers.RAISED_CONNECTIONS, open_files - servers.SPARE_DESCRIPTORS)
    results: dict[str, Any] = {
        "plan": asdict(plan),
        "machine": report.machine(),
        "limits": {"open_files": open_files, "raised": raised},
    }
    with ExitStack() as stack:
        memcached = {
            "default": stack.enter_context(
                _stopped_after(servers.start(servers.DEFAULT_CONNECTIONS))
            ),
            "raised": stack.enter_context(_stopped_after(servers.start(raised))),
        }
        cluster = None
        if "cluster" in plan.only:
            cluster = stack.enter_context(
                _stopped_after(servers.start_cluster(servers.DEFAULT_CONNECTIONS))
            )
            memcached["cluster"] = cluster.servers[0]
        workers = _Workers(stack, None if plan.compare is None else Path(plan.compare))
        address = memcached["default"].address
        if "overhead" in plan.only:
            progress("overhead: reserve + release, mapped reserve, sequential gets")
            overhead = {
                "cmd": "overhead",
                "address": address,
                "loops": plan.loops,
                "repeats": 5,
                "gets": plan.gets,
                "greenlets": max(2, round(500 * plan.scale)),
                "rounds": 2 * plan.rounds,
            }
            results["overhead"] = workers.kind("gevent").call(overhead, timeout=300)
        results["workloads"] = [
            _workload(plan, workload, memcached[workload.server], workers, cluster)
            for workload in WORKLOADS
            if workload.key in plan.only
        ]
        if "wsgi" in plan.only:
            results["workloads"].append(_wsgi(plan, memcached["default"], workers.kind("gevent")))
        if "herd" in plan.only:
            results["herd"] = herd.run(memcached["default"], plan.herd_seconds, plan.scale)
        if plan.profile and "get" in plan.only:
            progress("profile: cProfile of the hot path")
            first = results["workloads"][0]
            request = {
                "cmd": "profile",
                "address": address,
                "loops": plan.loops,
                "top": 14,
                "greenlets": first["greenlets"],
                "ops": first["ops"],
                "prefix": first["key"] + "-",
                "seconds": plan.seconds,
            }
            results["profile"] = workers.kind("gevent").call(request, timeout=300)
    return results


class _Stoppable(Protocol):
    def stop(self) -> None: ...


S = TypeVar("S", bound=_Stoppable)


@contextmanager
def _stopped_after(server: S) -> Iterator[S]:
    """*server* (a memcached, or the cluster) for the block, stopped after it."""
    try:
        yield server
    finally:
        server.stop()


class _Workers:
    """Worker processes, each closed when *stack* ends: one of each kind for the
    preloads, the pool's own measures and the WSGI rounds, and one per
    contender, which runs that contender's rounds of every workload: no
    contender runs in a process another one warmed, or left garbage in. A
    contender named with NO_EXTRAS runs in a venv of a plain ``pip install``,
    and with BASE in such a venv on *compare*'s greenpool."""

    def __init__(self, stack: ExitStack, compare: Path | None) -> None:
        self._stack = stack
        self._compare = compare
        self._started: dict[str, Worker] = {}

    @property
    def compares(self) -> bool:
        """Whether ``--compare`` gave another checkout to run BASE rows on."""
        return self._compare is not None

    def kind(self, kind: str) -> Worker:
        return self._get(kind, lambda: Worker(kind))

    def contender(self, name: str) -> tuple[Worker, str]:
        """The worker that runs the row *name*, and the contender it runs there."""
        if name.endswith(NO_EXTRAS):
            return self._get(name, lambda: Worker("gevent", plain_python(REPO), name=name)), (
                name.removesuffix(NO_EXTRAS)
            )
        if name.endswith(BASE):
            source = self._compare
            assert source is not None

            def base() -> Worker:
                return Worker("gevent", plain_python(source), tree_with_greenpool_of(source), name)

            return self._get(name, base), name.removesuffix(BASE)
        kind = "asyncio" if name in ASYNCIO else "gevent"
        return self._get(name, lambda: Worker(kind, name=f"{kind}: {name}")), name

    def _get(self, name: str, make: Callable[[], Worker]) -> Worker:
        worker = self._started.get(name)
        if worker is None:
            worker = self._started[name] = make()
            self._stack.callback(worker.close)
        return worker


def _rotated(names: tuple[str, ...], by: int) -> list[str]:
    """Each round starts with another contender, so none always runs first."""
    by %= len(names)
    return list(names[by:] + names[:by])


def _measured(
    addresses: list[tuple[str, int]], call: Callable[[Callable[[], None]], Reply]
) -> Reply:
    """Run *call* (given the sampling tick) and add what the memcacheds at
    *addresses* saw meanwhile, summed over them."""
    readers = [servers.StatsReader(address) for address in addresses]
    try:
        watches = [servers.ConnectionWatch(reader) for reader in readers]

        def tick() -> None:
            for watch in watches:
                watch.sample()

        reply = call(tick)
        seen = [watch.finish() for watch in watches]
        return {**reply, "connections": {name: sum(s[name] for s in seen) for name in seen[0]}}
    finally:
        for reader in readers:
            reader.close()


def _workload(
    plan: Plan,
    workload: Workload,
    memcached: servers.MemcachedServer,
    workers: _Workers,
    cluster: servers.Cluster | None = None,
) -> dict[str, Any]:
    greenlets = max(2, round(workload.greenlets * plan.scale))
    prefix = f"{workload.key}-"
    shape: dict[str, Any] = {
        "address": memcached.address,
        "greenlets": greenlets,
        "ops": workload.ops,
        "set_every": workload.set_every,
        "writes": workload.writes,
        "prefix": prefix,
        "seconds": plan.seconds,
    }
    watched = [memcached.address]
    if workload.server == "cluster" and cluster is not None:
        # Every key on every server: wherever a contender looks for it, it is there.
        watched = [server.address for server in cluster.servers]
        shape["cluster"] = {"servers": watched, "proxy": cluster.proxy.address}
    for address in watched:
        workers.kind("gevent").call({"cmd": "preload", **shape, "address": address}, timeout=60)
    contenders = workload.contenders
    if workers.compares:
        contenders += tuple(name + BASE for name in COMPARED.get(workload.key, ()))
    rounds: dict[str, list[Reply]] = {name: [] for name in contenders}
    for number in range(plan.rounds):
        for name in _rotated(contenders, number):
            worker, contender = workers.contender(name)
            request = {"cmd": "round", "contender": contender, **shape}

            def call(
                tick: Callable[[], None], worker: Worker = worker, request: Any = request
            ) -> Reply:
                return worker.call(request, timeout=plan.seconds + 120, tick=tick)

            started = time.monotonic()
            reply = _measured(watched, call)
            reply["wall_s"] = time.monotonic() - started
            rounds[name].append(reply)
            progress(_line(workload.key, number, name, reply))
    return {
        **asdict(workload),
        "greenlets": greenlets,
        "contenders": list(contenders),
        "rows": _summarize(rounds, BASELINE),
    }


def _wsgi(plan: Plan, memcached: servers.MemcachedServer, gevent_worker: Worker) -> dict[str, Any]:
    keys = max(2, round(500 * plan.scale))
    preload = {
        "cmd": "preload",
        "address": memcached.address,
        "greenlets": keys,
        "prefix": wsgi_load.PREFIX,
    }
    gevent_worker.call(preload, timeout=60)
    variants = wsgi_load.VARIANTS
    rounds: dict[str, list[Reply]] = {name: [] for name in variants}
    skipped = None
    for number in range(plan.rounds):
        for name in _rotated(variants, number):

            def call(tick: Callable[[], None], name: str = name) -> Reply:
                return wsgi_load.run_round(
                    name, memcached.address, keys, plan.wsgi_seconds, plan.wsgi_connections, tick
                )

            reply = _measured([memcached.address], call)
            skipped = reply.get("skipped", skipped)
            if not skipped:
                rounds[name].append(reply)
                progress(_line("wsgi", number, name, reply))
        if skipped:
            progress(f"wsgi: {skipped}; each variant answered one GET")
            break
    title = f"WSGI example under wrk, {plan.wsgi_connections} connections"
    return {
        "key": "wsgi",
        "title": title,
        "contenders": list(variants),
        "skipped": skipped,
        "rows": {} if skipped else _summarize(rounds, WSGI_BASELINE),
    }


def _line(workload: str, number: int, name: str, reply: Reply) -> str:
    errors = sum(reply["errors"].values())
    conns = reply["connections"]
    return (
        f"{workload:>12} round {number + 1}  {name:<26} {reply['ops_per_s']:>9.0f} ops/s"
        f"  p50 {reply['p50_ms']:7.2f} ms  p99 {reply['p99_ms']:8.2f} ms  errors {errors:>6}"
        f"  conns peak {conns['peak']:>5} new {conns['total']:>6} refused {conns['rejected']:>5}"
        f"  ({reply['seconds']:.2f} s, {reply.get('wall_s', 0):.2f} s wall)"
    )


def _summarize(rounds: dict[str, list[Reply]], baseline: str) -> dict[str, dict[str, Any]]:
    """Per contender: medians over rounds (ops/s, p50, p99, connections opened),
    the median of its per-round ratio to *baseline*, and every round's errors,
    refused connections and the highest peak, so that nothing rare is hidden."""
    rows = {}
    for name, replies in rounds.items():
        errors: Counter[str] = Counter()
        for reply in replies:
            errors.update(reply["errors"])
        ratios = [
            mine["ops_per_s"] / theirs["ops_per_s"]
            for mine, theirs in zip(replies, rounds[baseline], strict=True)
            if theirs["ops_per_s"] > 0
        ]
        rows[name] = {
            "ops_per_s": statistics.median(r["ops_per_s"] for r in replies),
            "ratio": statistics.median(ratios) if ratios else None,
            "p50_ms": statistics.median(r["p50_ms"] for r in replies),
            "p99_ms": statistics.median(r["p99_ms"] for r in replies),
            "errors": sum(errors.values()),
            "error_kinds": dict(errors.most_common(3)),
            "peak": max(r["connections"]["peak"] for r in replies),
            "opened": statistics.median(r["connections"]["total"] for r in replies),
            "refused": sum(r["connections"]["rejected"] for r in replies),
            "cpu_us": statistics.median(r["cpu_us"] for r in replies)
            if "cpu_us" in replies[0]
            else None,
            "rounds": replies,
        }
    return rows
