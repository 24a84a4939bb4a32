"""The documentation tells the truth: every example runs, the site builds, and
its references match the code.

The ``>>>`` examples of README.rst and docs/ run as doctests (setup.cfg). The
``.. code-block:: python`` examples (a settings file, a WSGI application, a TLS
client) run here, each in a fresh interpreter against a real memcached, with
the address it names (``127.0.0.1:11211``) replaced by the test server's; then
a check fitting what the example defines uses it, so an example that runs but
does nothing fails too.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import greenpool
from tests.memcached import MemcachedServer
from tests.test_tls import ca, tls_memcached  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = [REPO / "README.rst", *sorted(DOCS.rglob("*.rst"))]
BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:    .*\n|\n)+)", re.MULTILINE)


def _blocks() -> list[Any]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in BLOCK.finditer(text):
            line = text[: match.start()].count("\n") + 1
            name = f"{page.relative_to(REPO)}:{line}"
            found.append(pytest.param(textwrap.dedent(match.group(1)), id=name))
    return found


# What each kind of example defines, and what the test does with it: (name, check).
CHECKS = [
    (
        "CACHES",  # Django settings
        "import django\nfrom django.conf import settings\n"
        "settings.configure(CACHES=CACHES)\ndjango.setup()\n"
        "from django.core.cache import caches\n"
        "caches['default'].set('docs-example', 'django')\n"
        "assert caches['default'].get('docs-example') == 'django'\n",
    ),
    (
        "application",  # a WSGI application
        "from wsgiref.util import setup_testing_defaults\n"
        "environ = {}\nsetup_testing_defaults(environ)\nstatus = []\n"
        "body = b''.join(application(environ, lambda s, h: status.append(s)))\n"
        "assert status == ['200 OK'] and body, (status, body)\n",
    ),
    (
        "cache",  # Flask-Caching
        "cache.set('docs-example', {'framework': 'flask'})\n"
        "assert cache.get('docs-example') == {'framework': 'flask'}\n",
    ),
    (
        "mc",  # a client
        "assert mc.set('docs-example', 'client', noreply=False)\n"
        "assert mc.get('docs-example') == b'client'\n",
    ),
    (
        "cluster",
        "assert cluster.set('docs-example', 'cluster', noreply=False)\n"
        "assert cluster.get('docs-example') == b'cluster'\n",
    ),
    (
        "monkey",  # where patching goes
        "assert monkey.is_module_patched('socket') and 'greenpool' in globals()\n",
    ),
]


@pytest.mark.parametrize("code", _blocks())
def test_every_python_example_runs_and_does_what_it_says(
    code: str,
    memcached: MemcachedServer,
    tls_memcached: MemcachedServer,  # noqa: F811
    ca: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    """Each python code block of README.rst and docs/ runs against a real
    memcached, without a warning, and what it defines works."""
    if "flask_caching" in code:
        pytest.importorskip("flask_caching")  # Flask-Caching 2.5 needs Python 3.11
    host, port = memcached.address
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    code = code.replace("127.0.0.1:11211", f"{host}:{port}")
    code = code.replace('"ca.pem"', repr(str(pem)))
    code = code.replace(
        '("memcached.internal", 11211)', f'("localhost", {tls_memcached.address[1]})'
    )
    names = set(re.findall(r"^(\w+)\s*=|^(?:from \w+ )?import (\w+)", code, re.MULTILINE))
    defined = {name for pair in names for name in pair if name}
    checks = [check for name, check in CHECKS if name in defined]
    assert checks, f"no check knows what this example defines: {sorted(defined)}"
    done = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", code + "\n" + checks[0]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr, done.stderr


def test_the_python_examples_are_found() -> None:
    """The extraction sees the examples the pages hold (a changed directive
    would otherwise test nothing)."""
    assert len(_blocks()) >= 6


def test_the_site_builds_without_a_warning_and_documents_every_public_name(
    tmp_path: Path,
) -> None:
    """``sphinx-build -W`` (what make docs runs) succeeds, and its inventory has
    every name of ``greenpool.__all__`` and of the integrations under its public
    path, with no private module's path."""
    pytest.importorskip("sphinx")
    pytest.importorskip("furo")
    from sphinx.util.inventory import InventoryFile

    out = tmp_path / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    done = subprocess.run(
        [*command, str(DOCS), str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    with open(out / "objects.inv", "rb") as stream:
        inventory = InventoryFile.load(stream, "", lambda base, uri: uri)
    anchors = {
        name: getattr(entry, "uri", None) or entry[2]
        for kind, objects in inventory.items()
        if kind.startswith("py:")
        for name, entry in objects.items()
    }
    public = {f"greenpool.{name}" for name in greenpool.__all__ if name != "__version__"}
    public |= {
        "greenpool.django.MemcachedCache",
        "greenpool.flask_caching.MemcachedCache",
        "greenpool.prometheus.PoolCollector",
        "greenpool.wsgi.RelinquishMiddleware",
        "greenpool.ClientPool.reserve",
        "greenpool.PooledClient.get_or_compute",
        "greenpool.HashClient.pool_stats",
    }
    assert sorted(public - set(anchors)) == []
    # documented at its public path, not at the module it is defined in (which
    # the inventory keeps only as an alias of the public one)
    assert [name for name in sorted(public) if not anchors[name].endswith(f"#{name}")] == []


def test_the_architecture_page_names_every_module() -> None:
    """A module added, split or renamed needs its place on the architecture page."""
    page = (DOCS / "architecture.rst").read_text()
    modules = sorted(
        path.relative_to(REPO).as_posix() for path in (REPO / "greenpool").glob("*.py")
    )
    assert [module for module in modules if f"``{module}``" not in page] == []


def _documented_defaults(marker: str) -> dict[str, str]:
    """The option table after ``.. options of <marker>`` on the configuration page:
    each option's documented default, as written."""
    page = (DOCS / "configuration.rst").read_text()
    table = page.split(f".. options of {marker}\n", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^``(\w+)``\s+(``[^`]*``|\S+)", table, re.MULTILINE)
    return {name: default.strip("`") for name, default in rows}


@pytest.mark.parametrize(
    ("marker", "function"),
    [
        ("greenpool.ClientPool", greenpool.ClientPool),
        ("greenpool.PooledClient", greenpool.PooledClient),
        ("greenpool.HashClient", greenpool.HashClient),
        ("greenpool.AutoBatcher", greenpool.AutoBatcher),
        ("greenpool.PooledClient.get_or_compute", None),
    ],
)
def test_the_configuration_reference_has_every_option_with_its_default(
    marker: str, function: Any
) -> None:
    """Every keyword option of the signature is in its table, with the default
    the code has, and the table names no option the code lacks."""
    if function is None:  # get_or_compute takes **options, checked here
        from greenpool._flights import check_options

        function = check_options
    parameters = inspect.signature(function).parameters.values()
    expected = {
        p.name: repr(p.default)
        for p in parameters
        if p.default is not inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD
    }
    assert _documented_defaults(marker) == expected


def test_the_client_defaults_table_matches_client_defaults() -> None:
    """The four defaults client_factory changes are the ones documented."""
    documented = _documented_defaults("greenpool.CLIENT_DEFAULTS")
    assert set(documented) == set(greenpool.CLIENT_DEFAULTS)
    for name, value in greenpool.CLIENT_DEFAULTS.items():
        if name != "socket_module":
            assert documented[name] == repr(value)
