"""Fixtures for every test and doctest: one real memcached for the session."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator

import pytest

from tests.memcached import MemcachedServer

# Flask-Caching 2.5, the version the backend is tested with, needs Python 3.11:
# on 3.10 (noxfile.py) the backend and what uses it are not collected.
collect_ignore: list[str] = []
if importlib.util.find_spec("flask_caching") is None:
    collect_ignore += [
        "greenpool/flask_caching.py",
        "tests/test_flask_caching.py",
        "tests/test_stampede_servers.py",
        "docs/start/flask.rst",
    ]


@pytest.fixture(scope="session")
def memcached() -> Iterator[MemcachedServer]:
    """One memcached for the whole session; tests use their own keys."""
    server = MemcachedServer().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _doctest_memcached(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Give doctests the session memcached, as $MEMCACHED (README.rst reads it)
    and as ``memcached_address``."""
    if not isinstance(request.node, pytest.DoctestItem):
        return
    import greenpool

    address = request.getfixturevalue("memcached").address
    monkeypatch.setenv("MEMCACHED", f"{address[0]}:{address[1]}")
    request.getfixturevalue("doctest_namespace").update(
        memcached_address=address,
        client_factory=greenpool.client_factory,
        ClientPool=greenpool.ClientPool,
        greenpool=greenpool,
    )
