"""The PNG chart: one panel per workload, a bar per contender."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw(results: dict[str, Any], path: Path) -> None:
    """One panel per workload: ops/s per contender, its ratio and errors written on it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
        axis.barh(names, values, color=[_colour(n) for n in names])
        axis.invert_yaxis()
        axis.set_title(f"{workload['key']}: {workload['title']}", loc="left", fontsize=10)
        axis.set_xlim(0, max(values) * 1.45 if values else 1)
        axis.tick_params(axis="y", labelsize=8)
        axis.tick_params(axis="x", labelsize=8)
        for y, (value, row) in enumerate(zip(values, rows, strict=True)):
            label = f" {value:,.1f}k" + ("" if row["ratio"] is None else f"  {row['ratio']:.2f}×")
            label += f"  {row['peak']:,} conns"
            if row["errors"]:
                label += f"  {row['errors']:,} errors"
            axis.text(
                value,
                y,
                label,
                va="center",
                fontsize=7.5,
                color="firebrick" if row["errors"] else "black",
            )
    axes[-1, 0].set_xlabel("thousand operations per second (WSGI: requests per second)")
    figure.suptitle(
        "greenpool benchmarks: median of alternating rounds; × is the ratio to pymemcache's "
        "PooledClient",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _colour(name: str) -> str:
    if "greenpool" in name or "Pool(" in name:
        return "#2e8b57"
    if name.startswith("emcache"):
        return "#e08a2e"
    return "#6b7b8c"
