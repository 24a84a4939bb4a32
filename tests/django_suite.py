"""Run Django's own ``PyMemcacheCacheTests`` against ``greenpool.django.MemcachedCache``.

::

    python -m tests.django_suite --location HOST:PORT[,HOST:PORT] --report FILE --workdir DIR

It runs in a process of its own (Django's settings are configured once per
process) and writes what ran to FILE as JSON. The tests are Django's
``tests/cache/`` of the installed version, from its sdist (see tests/sdist.py),
with the backend substituted where Django's file reads the settings:
``PyMemcacheCache_params`` is the entry whose BACKEND is
``"django.core.cache.backends.memcached.PyMemcacheCache"``, so the copy run here
looks up ``"greenpool.django.MemcachedCache"`` instead. One attribute differs,
as it does for Django's ``PyLibMCCacheTests``: ``should_disconnect_on_close``
is false, because this backend's ``close()`` keeps its pooled connections.
"""

from __future__ import annotations

import argparse
import json
import sys
import unittest
from pathlib import Path
from typing import Any

import django
from django.test.runner import DiscoverRunner

from tests.sdist import sdist_files

STOCK = "django.core.cache.backends.memcached.PyMemcacheCache"
GREENPOOL = "greenpool.django.MemcachedCache"
SUITE = "cache.tests.PyMemcacheCacheTests"


def cache_app(directory: Path) -> Path:
    """Write Django's ``cache`` test app into *directory*, the backend substituted;
    return *directory*, for ``sys.path``. Each run writes its own copy."""
    source = sdist_files("Django", ["tests/cache"]) / "tests" / "cache"
    app = directory / "cache"
    app.mkdir(parents=True, exist_ok=True)
    for path in source.glob("*.py"):
        text = path.read_text()
        if path.name == "tests.py":
            assert text.count(f'"{STOCK}"') == 1, f"Django's {path} no longer names {STOCK} once"
            text = text.replace(f'"{STOCK}"', f'"{GREENPOOL}"')
        (app / path.name).write_text(text)
    return directory


class Runner(DiscoverRunner):
    """Django's test runner, keeping the unittest result for the report."""

    result: unittest.TestResult

    def suite_result(self, suite: Any, result: unittest.TestResult, **kwargs: Any) -> int:
        self.result = result
        return super().suite_result(suite, result, **kwargs)  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--location", required=True, help="Django's LOCATION")
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--workdir", required=True, type=Path, help="where to write the tests")
    args = parser.parse_args()
    sys.path.insert(0, str(cache_app(args.workdir)))
    # Imported here: pytest's doctest collection, which imports this module,
    # would otherwise ask the unconfigured settings for attributes, and fail.
    from django.conf import settings

    settings.configure(
        SECRET_KEY="greenpool-django-suite",
        INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "cache"],
        DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        DEFAULT_AUTO_FIELD="django.db.models.AutoField",
        CACHES={"default": {"BACKEND": GREENPOOL, "LOCATION": args.location}},
        USE_TZ=False,
    )
    django.setup()
    from cache import tests  # Django's, imported only once settings are configured

    tests.PyMemcacheCacheTests.should_disconnect_on_close = False
    runner = Runner(verbosity=2, interactive=False)
    runner.run_tests([SUITE])
    result = runner.result
    report = {
        "django": django.__version__,
        "ran": result.testsRun,
        "skipped": [str(test) for test, _ in result.skipped],
        "failures": [f"{test}\n{trace}" for test, trace in result.failures],
        "errors": [f"{test}\n{trace}" for test, trace in result.errors],
    }
    args.report.write_text(json.dumps(report, indent=2))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
