"""The framework backends are optional: ``import greenpool`` never imports a framework.

Each check runs in a fresh interpreter, whose ``sys.modules`` holds only what
its own imports brought in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.wsgi import REPO

FRAMEWORKS = {"django", "asgiref", "flask", "flask_caching", "cachelib", "werkzeug"}


def imported_by(statement: str) -> dict[str, str | None]:
    """The top-level packages among FRAMEWORKS that *statement* imports, with
    each one's file, in a fresh Python started from the repository's root."""
    code = (
        f"import sys; {statement}; import json; "
        f"print(json.dumps({{m: getattr(sys.modules[m], '__file__', None) "
        f"for m in sys.modules if m in {sorted(FRAMEWORKS)!r}}}))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    found: dict[str, str | None] = json.loads(result.stdout)
    return found


def test_import_greenpool_imports_no_framework() -> None:
    """``import greenpool`` (every public name) loads neither Django nor Flask,
    Flask-Caching, cachelib, Werkzeug or asgiref."""
    assert imported_by("import greenpool; from greenpool import *") == {}


@pytest.mark.parametrize(
    ("module", "framework"),
    [("greenpool.django", "django"), ("greenpool.flask_caching", "flask_caching")],
)
def test_a_backend_module_imports_the_real_framework_not_itself(
    module: str, framework: str
) -> None:
    """greenpool/django.py and greenpool/flask_caching.py bear their framework's
    name, yet their absolute imports reach the installed framework."""
    pytest.importorskip(framework)
    found = imported_by(f"import {module}; import {framework}")
    path = found[framework]
    assert path is not None
    assert Path(path).parent.name == framework and "site-packages" in Path(path).parts
