"""Where monkey-patching goes (docs/threads.rst): first, or gevent warns.

Each order runs in a fresh interpreter, with every warning shown: patching
before ``import greenpool`` warns of nothing; patching after it warns that
``ssl`` was imported first (pymemcache imports it), which the page quotes.
"""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-W", "always", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_patching_before_import_greenpool_warns_of_nothing() -> None:
    """monkey.patch_all() then import greenpool: no warning at all, and a pool works."""
    stderr = _run(
        "from gevent import monkey; monkey.patch_all()\n"
        "import greenpool\n"
        "greenpool.ClientPool(greenpool.client_factory('127.0.0.1:1'), maxsize=1).close()\n"
    )
    assert stderr == ""


def test_patching_after_import_greenpool_warns_that_ssl_came_first() -> None:
    """import greenpool then monkey.patch_all(): gevent's MonkeyPatchWarning about
    ssl, naming pymemcache, as the docs say (so patch first)."""
    stderr = _run("import greenpool\nfrom gevent import monkey; monkey.patch_all()\n")
    assert "MonkeyPatchWarning: Monkey-patching ssl after ssl has already been imported" in stderr
    assert "pymemcache.client.base" in stderr
