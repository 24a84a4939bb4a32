"""The results as a Markdown report and as the tables of the docs' benchmarks and stampede pages."""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import chart, herd
from benchmarks.targets import (
    autobatching_targets,
    cluster_targets,
    pipelining_targets,
    targets,
)

DOCS = Path(__file__).resolve().parent.parent / "docs"
#: The page the overhead and workload tables and the chart go in, and the herd table's.
BENCHMARKS_PAGE = DOCS / "benchmarks.rst"
HERD_PAGE = DOCS / "stampede.rst"
BEGIN = ".. begin benchmark results (written by python -m benchmarks)"
END = ".. end benchmark results"
HERD_BEGIN = ".. begin herd results"
HERD_END = ".. end herd results"
CHART_IN_PAGE = "../benchmarks/results/chart.png"  # relative to docs/

Results = dict[str, Any]
COLUMNS = (
    "workload",
    "contender",
    "ops/s",
    "× pymemcache",
    "p50 ms",
    "p99 ms",
    "errors",
    "peak conns",
    "new conns",
    "refused",
    "CPU µs/op",
)


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as meminfo:
        memory_kib = int(meminfo.readline().split()[1])
    try:
        memcached = subprocess.run(
            ["memcached", "-V"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except OSError:
        memcached = "memcached ?"
    packages = ("greenpool", "gevent", "pymemcache", "emcache")
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(memory_kib / 2**20),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "memcached": memcached,
        "packages": {name: metadata.version(name) for name in packages},
        "load_at_start": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d"),
    }


def describe_machine(results: Results) -> str:
    m = results["machine"]
    packages = ", ".join(f"{name} {version}" for name, version in m["packages"].items())
    return (
        f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
        f"Python {m['python']}, {m['memcached']} (2 threads), {packages}; load average "
        f"{m['load_at_start'][0]} at the start and {results.get('load_at_end', '?')} at the "
        f"end (1 minute), {m['date']}"
    )


# -- numbers as table cells ------------------------------------------------------


def _cells(workload: Results, name: str, row: Results) -> list[str]:
    ratio = "—" if row["ratio"] is None else f"{row['ratio']:.2f}×"
    return [
        workload["key"],
        name,
        f"{row['ops_per_s']:,.0f}",
        ratio,
        f"{row['p50_ms']:.2f}",
        f"{row['p99_ms']:.1f}",
        f"{row['errors']:,}",
        f"{row['peak']:,}",
        f"{row['opened']:,.0f}",
        f"{row['refused']:,}",
        "—" if row["cpu_us"] is None else f"{row['cpu_us']:.0f}",
    ]


def table_rows(results: Results) -> list[list[str]]:
    return [
        _cells(workload, name, row)
        for workload in results["workloads"]
        for name, row in workload["rows"].items()
    ]


def overhead_rows(results: Results) -> list[list[str]]:
    o = results["overhead"]
    rows = [
        ["uncontended reserve + release, ClientPool", f"{o['reserve_release_us']:.2f} µs"],
        [
            "the same, its client connected (each lend polls the socket)",
            f"{o['reserve_release_connected_us']:.2f} µs",
        ],
        ["lend + take_back called directly, no Reservation object", f"{o['get_put_us']:.2f} µs"],
        ["pool.reserve() alone, no with-block", f"{o['reservation_us']:.2f} µs"],
        ["mapped reserve, client already held", f"{o['mapped_reserve_us']:.2f} µs"],
        ["pymemcache PooledClient's get_and_release", f"{o['pymemcache_pool_us']:.2f} µs"],
        ["an empty Python with-block (the floor)", f"{o['empty_with_us']:.2f} µs"],
    ]
    floor = o["contended_us"]["gevent.sleep(0) alone"]
    for name, us in o["contended_us"].items():
        extra = "" if us is floor else f" ({us - floor:+.2f})"
        rows.append([f"contended, 500 greenlets, 16 slots: {name}", f"{us:.2f} µs{extra}"])
    for name, us in o["sequential_us"].items():
        ratio = o["sequential_ratio"][name]
        rows.append([f"sequential get, one greenlet: {name}", f"{us:.1f} µs ({ratio:.2f}× raw)"])
    for name, us in o.get("sequential_set_us", {}).items():
        ratio = o["sequential_set_ratio"][name]
        rows.append([f"sequential set, one greenlet: {name}", f"{us:.1f} µs ({ratio:.2f}× raw)"])
    return rows


def markdown_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def rst_table(header: tuple[str, ...] | list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [list(header), *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([rule, line(list(header)), rule, *map(line, rows), rule])


def herd_section(results: Results) -> list[str]:
    part = results["herd"]
    return [
        "## Stampede protection (issue 22)",
        f"One hot key read by {part['processes']} processes × {part['greenlets']} greenlets "
        f"(think time 20–60 ms), whose compute takes {part['compute_s']} s, for "
        f"{part['seconds']:.0f} s a round. **expire**: ttl 4 s, nobody writes, get_or_compute "
        f"with recache_before=2. **invalidate**: ttl 1 h, one process invalidates the key every "
        f"second (naive: delete). Events are expiries, refreshes or invalidations; latencies "
        f"are of the reads begun after the first second (warm-up).",
        markdown_table(herd.COLUMNS, herd.rows(results)),
        "\n".join(
            f"- {'met' if ok else '**missed**'}: {text}" for ok, text in herd.targets(results)
        ),
    ]


# -- the report ------------------------------------------------------------------------


def markdown(results: Results) -> str:
    plan = results["plan"]
    parts = [
        "# greenpool benchmarks",
        f"Machine: {describe_machine(results)}. The whole run took "
        f"{results.get('wall_seconds', 0):.0f} s.",
        f"Each number is the median of {plan['rounds']} alternating rounds (each round "
        f"runs every contender once, starting with a different one). A concurrency round "
        f"runs its greenlets for a {plan['seconds']} s window (each stops after its "
        f"operations or when the window closes); a WSGI round runs wrk for "
        f"{plan['wsgi_seconds']} s. × pymemcache is the median of per-round ratios to "
        f"pymemcache's unbounded PooledClient (the WSGI rows: to the pymemcache variant). "
        f"p50/p99 are per operation (per request for WSGI), a greenpool reservation's wait "
        f"included. Errors and refused connections are summed over all rounds; peak "
        f"connections is memcached's curr_connections, sampled every 10 ms, highest round; "
        f"new conns is total_connections opened in a round (median). CPU µs/op is the "
        f"worker process's own CPU time (user + system) per completed operation: the "
        f"client side's cost apart from memcached's, though it too grows on a loaded machine.",
    ]
    if "overhead" in results:
        parts += [
            "## The pool alone",
            "µs per pass, the best of 5 (as timeit advises: other work on the machine only "
            "ever adds time). Nothing is sent to memcached except in the sequential rows, "
            "which are medians of alternating rounds. Contended rows: 500 greenlets share "
            "16 slots, each holding one across a gevent.sleep(0); (+n) is what each adds to "
            "the bare sleep(0).",
            markdown_table(["measure", "time"], overhead_rows(results)),
        ]
    if results["workloads"]:
        parts += [
            "## Throughput",
            "\n".join(f"- **{w['key']}**: {w['title']}" for w in results["workloads"]),
            markdown_table(COLUMNS, table_rows(results)),
        ]
    kinds = [
        f"- {w['key']} / {name}: " + "; ".join(f"{n:,} × `{what}`" for what, n in kinds.items())
        for w in results["workloads"]
        for name, row in w["rows"].items()
        if (kinds := row["error_kinds"])
    ]
    if kinds:
        parts += ["Errors, the three most common kinds:", "\n".join(kinds)]
    skipped = [w for w in results["workloads"] if w.get("skipped")]
    parts += [f"{w['title']}: skipped, {w['skipped']}." for w in skipped]
    ran = {w["key"] for w in results["workloads"]}
    if {"get", "crowd", "crowd-raised"} <= ran and "overhead" in results:
        parts += [
            "## Targets (issue 6)",
            "\n".join(
                f"- {'met' if ok else '**missed**'}: {text}" for ok, text in targets(results)
            ),
        ]
    if "cluster" in ran:
        parts += [
            "## Clusters (issues 14 and 20)",
            "Median of per-round ratios to a PooledClient(16) on one server, batched or not "
            "as the cluster, in the same worker (with extras, without, or on the compared "
            "checkout).",
            "\n".join(
                f"- {'met' if ok else '**missed**'}: {text}"
                for ok, text in cluster_targets(results)
            ),
        ]
    if "herd" in results:
        parts += herd_section(results)
    batching = autobatching_targets(results)
    if batching:
        parts += [
            "## Targets (issue 12: autobatching)",
            "\n".join(f"- {'met' if ok else '**missed**'}: {text}" for ok, text in batching),
        ]
    piped = pipelining_targets(results)
    if piped:
        parts += [
            "## Targets (issue 21: auto-pipelining)",
            "\n".join(f"- {'met' if ok else '**missed**'}: {text}" for ok, text in piped),
        ]
    return "\n\n".join(parts) + "\n"


def write(results: Results, out: Path) -> None:
    """results.json, results.md, chart.png and (when profiled) profile.txt into *out*."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (out / "results.md").write_text(markdown(results))
    if "profile" in results:
        profile = results["profile"]
        layers = ""
        if "overhead" in results:  # --only may have left it out
            rows = overhead_rows(results)[:6]
            layers = "Uncontended, one greenlet, nothing sent: µs per loop of each layer\n\n"
            layers += "\n".join(f"  {name}: {time}" for name, time in rows) + "\n\n"
        (out / "profile.txt").write_text(
            f"{layers}cProfile of an uncontended reserve + release loop, one greenlet, "
            f"nothing sent (its own overhead inflates every call):\n\n"
            f"{profile['uncontended'].rstrip()}\n\n"
            f"pyinstrument, one round of ClientPool(16) under contention "
            f"({profile['contended_ops']:,} gets while sampled):\n\n{profile['contended']}"
        )
    if any(w["rows"] for w in results["workloads"]):
        chart.draw(results, out / "chart.png")


def update_docs(
    results: Results, page: Path = BENCHMARKS_PAGE, herd_page: Path = HERD_PAGE
) -> None:
    """Rewrite the text between the benchmark markers of *page* (the docs'
    benchmarks page) with this run's tables, and the herd table of *herd_page*
    (the stampede page) when the run has one."""
    text = page.read_text()
    if BEGIN not in text or END not in text:
        raise RuntimeError(f"{page} has no '{BEGIN}' ... '{END}' markers")
    body = "\n\n".join(
        [
            f"Measured on {describe_machine(results)}; the whole run took "
            f"{results['wall_seconds']:.0f} s.",
            rst_table(["the pool alone", "time"], overhead_rows(results)),
            rst_table(COLUMNS, table_rows(results)),
            f".. image:: {CHART_IN_PAGE}\n   :alt: ops/s per contender and workload",
        ]
    )
    pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.DOTALL)
    page.write_text(pattern.sub(lambda _: f"{BEGIN}\n\n{body}\n\n{END}", text))
    if "herd" in results:
        herd_page.write_text(replace_herd_table(herd_page.read_text(), results))


def replace_herd_table(text: str, results: Results) -> str:
    """*text* (the stampede page) with the herd table of *results* between its herd markers."""
    if HERD_BEGIN not in text or HERD_END not in text:
        raise RuntimeError(f"the herd page has no '{HERD_BEGIN}' ... '{HERD_END}' markers")
    table = rst_table(herd.COLUMNS, herd.rows(results))
    pattern = re.compile(re.escape(HERD_BEGIN) + ".*?" + re.escape(HERD_END), re.DOTALL)
    return pattern.sub(lambda _: f"{HERD_BEGIN}\n\n{table}\n\n{HERD_END}", text)
