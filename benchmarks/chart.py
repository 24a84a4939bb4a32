"""The PNG chart: one panel per workload, a bar per contender."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], path: Path) -> None:
    """One panel per workload: ops/s per contender, its ratio and errors written on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    workloads = [w for w in results["workloads"] if w["rows"]]
    heights = [len(w["rows"]) for w in workloads]
    figure, axes = plt.subplots(
        len(workloads),
        1,
        figsize=(10, 0.36 * sum(heights) + 1.2 * len(workloads)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    for axis, workload in zip(axes[:, 0], workloads, strict=True):
        names = list(workload["rows"])
        rows = [workload["rows"][n] for n in names]
        values = [r["ops_per_s"] / 1000 for r in rows]
        limit = _axis_limit(values)
        axis.barh(names, [min(v, limit) for v in values], color=[_colour(n) for n in names])
        axis.invert_yaxis()
        axis.set_title(f"{workload['key']}: {workload['title']}", loc="left", fontsize=10)
        axis.set_xlim(0, limit)
        axis.tick_params(axis="y", labelsize=8)
        axis.tick_params(axis="x", labelsize=8)
        for y, (value, row) in enumerate(zip(values, rows, strict=True)):
            label = f" {value:,.1f}k" + ("" if row["ratio"] is None else f"  {row['ratio']:.2f}×")
            label += f"  {row['peak']:,} conns"
            if row["errors"]:
                label += f"  {row['errors']:,} errors"
            off_scale = value > limit
            axis.text(
                limit if off_scale else value,
                y,
                f"(off scale) {label} " if off_scale else label,
                va="center",
                ha="right" if off_scale else "left",
                fontsize=7.5,
                color="white" if off_scale else "firebrick" if row["errors"] else "black",
            )
    axes[-1, 0].set_xlabel("thousand operations per second (WSGI: requests per second)")
    figure.suptitle(
        "greenpool benchmarks: ops/s, median of alternating rounds; × is the ratio to "
        "pymemcache's PooledClient; conns: memcached's peak",
        fontsize=10,
        y=0.997,
    )
    figure.legend(
        handles=[Patch(color=_colour(n), label=what) for n, what in _FAMILIES],
        loc="upper center",
        bbox_to_anchor=(0.5, 0.988),
        ncol=len(_FAMILIES),
        fontsize=8,
        frameon=False,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _axis_limit(values: list[float]) -> float:
    """Room for the labels; a bar over 3 times the next one (emcache's
    autobatching) runs off the scale rather than flatten all the others."""
    ordered = sorted(values)
    if len(ordered) > 1 and ordered[-1] > 3 * ordered[-2]:
        return ordered[-2] * 2.2
    return max(ordered[-1] * 1.5, 1e-3) if ordered else 1.0


_FAMILIES = (
    ("ClientPool(16)", "greenpool"),
    ("pymemcache", "pymemcache without greenpool"),
    ("emcache", "emcache (asyncio)"),
)


def _colour(name: str) -> str:
    if "greenpool" in name or "Pool(" in name:
        return "#2e8b57"
    if name.startswith("emcache"):
        return "#e08a2e"
    return "#6b7b8c"
