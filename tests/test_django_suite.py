"""Django's own PyMemcacheCacheTests pass with greenpool.django.MemcachedCache.

tests/django_suite.py runs them in a process of their own, against memcached
servers of their own (the tests flush them): once with LOCATION naming one
server, once naming two, both at once, since most of their time is spent in
Django's ``time.sleep`` calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.memcached import MemcachedServer
from tests.sdist import sdist_files
from tests.wsgi import REPO

# Django's memcached tests skip these three: memcached does its own eviction.
CULLING = {"test_cull", "test_cull_delete_when_store_empty", "test_zero_cull"}


class SuiteRun:
    """One run of tests/django_suite.py, started at once and awaited in :meth:`report`."""

    def __init__(self, servers: list[MemcachedServer], directory: Path) -> None:
        self.location = ",".join(f"{server.host}:{server.port}" for server in servers)
        self.report_path = directory / "report.json"
        command = [sys.executable, "-m", "tests.django_suite", "--location", self.location]
        self.process = subprocess.Popen(
            [*command, "--report", str(self.report_path), "--workdir", str(directory)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def report(self) -> dict[str, object]:
        output, _ = self.process.communicate(timeout=600)
        assert self.report_path.exists(), output
        report: dict[str, object] = json.loads(self.report_path.read_text())
        report["output"] = output
        return report


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, SuiteRun]]:
    sdist_files("Django", ["tests/cache"])  # fetched once, before the two runs read it
    servers = [MemcachedServer().start() for _ in range(3)]
    started: dict[str, SuiteRun] = {}
    try:
        started["one server"] = SuiteRun(servers[:1], tmp_path_factory.mktemp("one-server"))
        started["two servers"] = SuiteRun(servers[1:], tmp_path_factory.mktemp("two-servers"))
        yield started
    finally:
        for run in started.values():
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait(timeout=30)
        for server in servers:
            server.stop()


@pytest.mark.parametrize("location", ["one server", "two servers"])
def test_djangos_own_pymemcache_cache_tests_pass(runs: dict[str, SuiteRun], location: str) -> None:
    """Every test of Django's PyMemcacheCacheTests (those of the installed Django,
    from its sdist) passes with the backend substituted; only the three culling
    tests are skipped, as they are for Django's own memcached backends."""
    report = runs[location].report()
    assert report["failures"] == [] and report["errors"] == [], report["output"]
    skipped = {str(test).split()[0] for test in report["skipped"]}  # type: ignore[attr-defined]
    assert skipped == CULLING, report["output"]
    assert isinstance(report["ran"], int) and report["ran"] >= 50, report["output"]
    print(f"Django {report['django']}, {location}: {report['ran']} ran, {len(skipped)} skipped")
