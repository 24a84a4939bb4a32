"""The tests on every supported CPython: ``make matrix`` runs ``nox``.

Each session gets a virtualenv of its own with the package (editable) and the
``test`` dependency group. ``fast`` (the default) runs the tests where Python
versions differ: the pool, the client and its replies, interruptions, forks and
threads, batching and pipelining, the meta protocol, the framework backends,
and every doctest; ``full`` runs the whole suite (about 5 minutes a Python;
``make test`` runs it on the default Python).

nox finds ``python3.X`` on ``PATH``. pyenv installs each version under
``$PYENV_ROOT/versions/`` and puts only a shim for the selected ones on
``PATH``, so their ``bin`` directories are put on ``PATH`` here too. A version
found nowhere is skipped with a message, unless ``CI`` is set (nox's default):
then the run fails, naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

PYTHONS = ["3.10", "3.11", "3.12", "3.13"]

#: What differs between Python versions: the standard library's socket, ssl,
#: threading, fork and typing; gevent's and greenlet's builds; each framework's
#: support. About a minute a Python.
FAST = [
    "greenpool",
    "README.rst",
    "docs",
    "tests/test_pool.py",
    "tests/test_client.py",
    "tests/test_interruption.py",
    "tests/test_in_step.py",
    "tests/test_replies.py",
    "tests/test_keys.py",
    "tests/test_hostile_keys.py",
    "tests/test_dropin.py",
    "tests/test_waiters.py",
    "tests/test_batching.py",
    "tests/test_pipelining.py",
    "tests/test_meta.py",
    "tests/test_stampede.py",
    "tests/test_mapped.py",
    "tests/test_fork.py",
    "tests/test_threads.py",
    "tests/test_tls.py",
    "tests/test_monkey.py",
    "tests/test_docs.py",
    "tests/test_packaging.py",
    "tests/test_django.py",
    "tests/test_prometheus.py",
    "tests/test_extras.py",
]

#: Flask-Caching 2.5, the version tested, needs Python 3.11; conftest.py leaves
#: what uses it uncollected where it is missing.
FLASK = ["tests/test_flask_caching.py"]

nox.options.sessions = ["fast"]
nox.options.default_venv_backend = "venv"


def _pyenv_on_path() -> None:
    """Put each pyenv version's ``bin`` on PATH (after what is there), so that
    nox finds ``python3.X`` for the versions pyenv did not select."""
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    found = sorted(str(path.parent) for path in root.glob("versions/*/bin/python3.*[0-9]"))
    if found:
        paths = [*dict.fromkeys(found)]
        os.environ["PATH"] = os.pathsep.join([*paths, os.environ.get("PATH", "")])


_pyenv_on_path()


def _install(session: nox.Session) -> None:
    # pip 25.1 installs dependency groups; a new venv may bring an older one.
    session.install("--quiet", "--upgrade", "pip>=25.1")
    session.install("--quiet", "-e", ".", "--group", "test")


@nox.session(python=PYTHONS)
def fast(session: nox.Session) -> None:
    """The tests where Python versions differ."""
    _install(session)
    flask = FLASK if session.python != "3.10" else []
    session.run("pytest", "-q", *(session.posargs or [*FAST, *flask]))


@nox.session(python=PYTHONS)
def full(session: nox.Session) -> None:
    """The whole suite."""
    _install(session)
    session.run("pytest", "-q", *session.posargs)
