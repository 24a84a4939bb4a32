"""The benchmarks cannot rot: their quick mode runs end to end at a tiny scale."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks import herd, plan, report, wsgi_load
from tests.wsgi import REPO


def test_quick_mode_runs_every_part_at_a_tiny_scale(tmp_path: Path) -> None:
    """``python -m benchmarks --quick`` at 1/100 scale, one round of 0.1 s: every
    workload has a row for every contender, with no error where none can happen,
    the herd part a row for every strategy, and the report, chart and results are
    written where told, the docs' pages untouched."""
    pages = [REPO / "docs" / "benchmarks.rst", REPO / "docs" / "stampede.rst", REPO / "README.rst"]
    before = [page.read_text() for page in pages]
    command = [sys.executable, "-m", "benchmarks", "--quick", "--rounds", "1", "--seconds", "0.1"]
    command += ["--scale", "0.01", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr

    results = json.loads((tmp_path / "results.json").read_text())
    workloads = {w["key"]: w for w in results["workloads"]}
    assert list(workloads) == [*(w.key for w in plan.WORKLOADS), "wsgi"]
    for workload in plan.WORKLOADS:
        rows = workloads[workload.key]["rows"]
        assert list(rows) == list(workload.contenders)
        for name, row in rows.items():
            assert row["ops_per_s"] > 0, (workload.key, name)
            assert row["errors"] == 0, (workload.key, name, row["error_kinds"])
    wsgi = workloads["wsgi"]
    if not wsgi["skipped"]:  # wrk is installed by make bench, not by make test
        assert list(wsgi["rows"]) == list(wsgi_load.VARIANTS)
        assert all(row["errors"] == 0 for row in wsgi["rows"].values())
    assert results["overhead"]["reserve_release_us"] > 0
    rows = results["herd"]["rows"]
    assert [(r["mode"], r["strategy"]) for r in rows] == [
        (mode, strategy) for mode in herd.MODES for strategy in herd.STRATEGIES
    ]
    assert all(r["errors"] == 0 and r["reads"] > 0 for r in rows), rows
    assert all(r["most"] <= 1 for r in rows if r["strategy"] != "naive get/set")
    assert "| get | ClientPool(16) |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG")
    assert [page.read_text() for page in pages] == before


def test_a_full_run_rewrites_only_the_tables_between_the_markers(tmp_path: Path) -> None:
    """update_docs replaces the text between the markers of the benchmarks page
    (chart included, relative to docs/) and of the herd page, and nothing else."""
    results = json.loads((REPO / "benchmarks" / "results" / "results.json").read_text())
    page, herd_page = tmp_path / "benchmarks.rst", tmp_path / "stampede.rst"
    page.write_text(f"Before.\n\n{report.BEGIN}\n\nold\n\n{report.END}\n\nAfter.\n")
    herd_page.write_text(f"Top.\n\n{report.HERD_BEGIN}\n\nold\n\n{report.HERD_END}\n")
    results.setdefault("wall_seconds", 1.0)
    report.update_docs(results, page, herd_page)
    text = page.read_text()
    assert text.startswith(f"Before.\n\n{report.BEGIN}\n\nMeasured on ")
    assert text.endswith(f"{report.END}\n\nAfter.\n") and "\nold\n" not in text
    assert ".. image:: ../benchmarks/results/chart.png" in text
    assert (REPO / "docs" / "../benchmarks/results/chart.png").exists()
    herd_text = herd_page.read_text()
    assert ("\nold\n" not in herd_text) == ("herd" in results)


def test_a_full_run_of_one_part_writes_its_report_with_paths_relative_to_the_checkout(
    tmp_path: Path,
) -> None:
    """``python -m benchmarks --only get`` (a full plan, so with the profile but
    without the overhead part) writes results.md and profile.txt; profile.txt
    names files relative to the checkout, never by this machine's absolute paths."""
    command = [sys.executable, "-m", "benchmarks", "--only", "get", "--rounds", "1"]
    command += ["--seconds", "0.1", "--scale", "0.01", "--out", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| get | ClientPool(16) |" in (tmp_path / "results.md").read_text()
    profile = (tmp_path / "profile.txt").read_text()
    assert "greenpool/pool.py:" in profile
    for machine_path in {str(REPO), sys.prefix, sys.base_prefix}:
        assert machine_path not in profile
