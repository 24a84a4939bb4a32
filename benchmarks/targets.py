"""Issue 21's targets: auto-pipelining against emcache's autobatching, and the pool's own costs.

Each target is what one run measured, met or not, with its numbers: medians of
alternating rounds, each contender in its own worker process.
"""

from __future__ import annotations

import statistics
from typing import Any

from benchmarks.plan import BASE

__all__ = ["pipelining_targets"]

Results = dict[str, Any]
OURS = "greenpool.PooledClient(16) autobatching"
EMCACHE = "emcache(16) autobatching"
#: Each workload's least ratio to emcache's autobatching (and a stretch, for get).
VERSUS_EMCACHE = {
    "get": (1.0, 1.3),
    "mix": (1.3, None),
    "crowd": (1.2, None),
    "writes": (1.2, None),
}


def _ratio(rows: Results, mine: str, theirs: str) -> float:
    pairs = zip(rows[mine]["rounds"], rows[theirs]["rounds"], strict=True)
    ratios = [a["ops_per_s"] / b["ops_per_s"] for a, b in pairs if b["ops_per_s"] > 0]
    return statistics.median(ratios) if ratios else 0.0


def pipelining_targets(results: Results) -> list[tuple[bool, str]]:
    """Issue 21's targets that this run measured."""
    found: list[tuple[bool, str]] = []
    workloads = {w["key"]: w for w in results.get("workloads", [])}
    for key, (least, stretch) in VERSUS_EMCACHE.items():
        rows = workloads.get(key, {}).get("rows", {})
        if OURS not in rows or EMCACHE not in rows:
            continue
        ratio = _ratio(rows, OURS, EMCACHE)
        row = rows[OURS]
        wanted = f"target ≥ {least}×" + (f", stretch ≥ {stretch}×" if stretch else "")
        found.append(
            (
                ratio >= least,
                f"{key}: {OURS} {ratio:.2f}× {EMCACHE} ({wanted}); {row['ops_per_s']:,.0f} "
                f"vs {rows[EMCACHE]['ops_per_s']:,.0f} ops/s, CPU {row['cpu_us']:.1f} vs "
                f"{rows[EMCACHE]['cpu_us']:.1f} µs/op",
            )
        )
        before = OURS + BASE
        if before in rows:
            found.append(
                (
                    True,
                    f"{key}: before (--compare's checkout, no extras) "
                    f"{rows[before]['ops_per_s']:,.0f} ops/s, "
                    f"{_ratio(rows, before, EMCACHE):.2f}× {EMCACHE}; after "
                    f"{_ratio(rows, OURS, before):.2f}× before",
                )
            )
        found.append(
            (
                row["peak"] <= 16 and row["errors"] == 0,
                f"{key}: {OURS}: peak {row['peak']} connections, {row['errors']} errors or "
                f"wrong values (target ≤ 16, 0)",
            )
        )
    get = workloads.get("get", {}).get("rows", {})
    if OURS in get:
        cpu = get[OURS]["cpu_us"]
        found.append((cpu <= 4.0, f"get: CPU per batched get {cpu:.1f} µs (target ≤ 4 µs)"))
    if "ClientPool(16)" in get and "pymemcache PooledClient" in get:
        ratio = _ratio(get, "ClientPool(16)", "pymemcache PooledClient")
        found.append(
            (
                ratio >= 1.05,
                f"get: ClientPool(16) unbatched {ratio:.2f}× pymemcache PooledClient "
                f"(target ≥ 1.05×); CPU {get['ClientPool(16)']['cpu_us']:.0f} vs "
                f"{get['pymemcache PooledClient']['cpu_us']:.0f} µs/op",
            )
        )
    overhead = results.get("overhead", {})
    contended = overhead.get("contended_us", {})
    if "ClientPool(16), default timeout" in contended:
        extra = contended["ClientPool(16), default timeout"] - contended["gevent.sleep(0) alone"]
        found.append(
            (
                extra <= 1.0,
                f"contended reservation, 500 greenlets, 16 slots: +{extra:.2f} µs over "
                f"gevent.sleep(0) (target ≤ +1.0 µs)",
            )
        )
    sets = overhead.get("sequential_set_rounds_us", {})
    if OURS in sets:
        pairs = zip(sets["greenpool.PooledClient(16)"], sets[OURS], strict=True)
        ratio = statistics.median(plain / piped for plain, piped in pairs)
        found.append(
            (
                ratio >= 0.95,
                f"sequential sets, one greenlet: {OURS} {ratio:.2f}× the speed of "
                f"greenpool.PooledClient(16) unbatched (target ≥ 0.95×)",
            )
        )
    return found
