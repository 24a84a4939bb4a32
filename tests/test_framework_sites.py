"""The example Django and Flask sites under ``gunicorn -k gevent``: right answers, few connections.

Each site runs as it is deployed, two gevent workers, against a memcached of
its own whose ``stats`` count the connections it accepted
(``total_connections``) and holds (``curr_connections``, sampled during the
load over one connection of the test's own). The same load runs against the
framework's stock backend as the control: Django's ``PyMemcacheCache``, and
Flask-Caching's ``MemcachedCache`` (through cachelib, with python-memcached).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any, NamedTuple

import gevent
import port_for
import pytest
from geventhttpclient import HTTPClient
from pymemcache.client.base import Client

from greenpool import _socket
from tests.memcached import HOST, MemcachedServer
from tests.wsgi import Server

WORKERS = 2
POOL_SIZE = 4
NAMES = 3
REQUESTS = 300  # all at once: half visits to NAMES counters, the rest echoes and squares


class Site(NamedTuple):
    app: str  # gunicorn's APP_MODULE
    backend_env: str  # the variable that selects the stock backend
    atomic_counts_when_stock: bool  # whether the stock backend counts visits atomically


SITES = {
    "django": Site("examples.django_site.wsgi:application", "GREENPOOL_DJANGO_BACKEND", True),
    "flask": Site("examples.flask_site:app", "GREENPOOL_FLASK_BACKEND", False),
}


def serve(site: Site, memcached: MemcachedServer, backend: str) -> Server:
    port = port_for.select_random()
    command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(WORKERS)]
    command += ["-b", f"{HOST}:{port}", "--graceful-timeout", "5", site.app]
    env = {
        "DJANGO_SETTINGS_MODULE": "examples.django_site.settings",
        "GREENPOOL_MEMCACHED": f"{memcached.host}:{memcached.port}",
        "GREENPOOL_POOL_SIZE": str(POOL_SIZE),
        site.backend_env: backend,
    }
    return Server(command, port, env)


def get(server: Server, path: str) -> tuple[int, Any]:
    """One request on a connection of its own: the status and the JSON body."""
    http = HTTPClient(HOST, server.port, connection_timeout=30, network_timeout=30)
    try:
        response = http.get(path)
        return response.status_code, json.loads(response.read())
    finally:
        http.close()


def paths(squares: bool) -> list[str]:
    """REQUESTS paths: every other one a visit, the others echoes (and squares)."""
    others = ["echo", "square"] if squares else ["echo"]
    return [
        f"/visits/name-{n % NAMES}" if n % 2 else f"/{others[n // 2 % len(others)]}/{n}"
        for n in range(REQUESTS)
    ]


def load(server: Server, sampler: Client, paths: list[str]) -> tuple[list[Any], int]:
    """Request every path at once; the answers, and the most connections memcached
    held meanwhile, as *sampler* saw them (its own not counted). The caller
    closes the sampler, after counting what is still open with it open."""
    peak = 0

    def sample() -> None:
        nonlocal peak
        for _ in range(60_000):  # at most a minute
            peak = max(peak, int(sampler.stats()[b"curr_connections"]) - 1)
            gevent.sleep(0.001)

    sampling = gevent.spawn(sample)
    try:
        greenlets = [gevent.spawn(get, server, path) for path in paths]
        gevent.joinall(greenlets, timeout=120, raise_error=True)
    finally:
        sampling.kill()
    assert all(greenlet.successful() for greenlet in greenlets)
    return [(path, *greenlet.value) for path, greenlet in zip(paths, greenlets, strict=True)], peak


def check_answers(answers: list[Any], atomic_counts: bool) -> int:
    """Every answer is a 200 with the right body: each echo its own token, each
    square its number's; with *atomic_counts*, each counter's visits are
    numbered 1 to N without a gap or a repeat. Returns the visits counted."""
    visits: dict[str, list[int]] = defaultdict(list)
    for path, status, body in answers:
        assert status == 200, (path, status, body)
        kind, _, name = path[1:].partition("/")
        if kind == "echo":
            assert body["token"] == name and body["stored"]["token"] == name, (path, body)
        elif kind == "square":
            assert body == {"n": int(name), "square": int(name) ** 2}, (path, body)
        else:
            assert body["name"] == name, (path, body)
            visits[name].append(body["visits"])
    assert len(visits) == NAMES
    if atomic_counts:
        for numbers in visits.values():
            assert sorted(numbers) == list(range(1, REQUESTS // 2 // NAMES + 1))
    return sum(max(numbers) for numbers in visits.values())


def check_django_stats(server: Server, backend: str, memcached: MemcachedServer) -> None:
    """The Django site's /_stats: a worker's backend and its pool, within its bound."""
    status, stats = get(server, "/_stats")
    assert status == 200 and isinstance(stats["pid"], int), stats
    if backend == "stock":
        assert stats["backend"].endswith(".PyMemcacheCache") and stats["pools"] == {}, stats
        return
    assert stats["backend"] == "greenpool.django.MemcachedCache", stats
    ((where, pool),) = stats["pools"].items()
    assert where == f"{memcached.host}:{memcached.port}", stats
    assert pool["maxsize"] == POOL_SIZE and 1 <= pool["created"] <= POOL_SIZE, pool


@pytest.mark.parametrize("backend", ["greenpool", "stock"])
@pytest.mark.parametrize("framework", ["django", "flask"])
def test_a_site_under_load_answers_right_on_bounded_connections(
    own_memcached: MemcachedServer, framework: str, backend: str
) -> None:
    """300 concurrent requests to two gevent workers all get right answers. With
    greenpool's backend memcached accepts at most max_pool_size connections per
    worker, kept open for the next requests; with Django's stock backend it
    accepts one per request, each closed when its request ends, and with
    Flask-Caching's one per request greenlet, closed when the greenlet ends."""
    site = SITES[framework]
    server = serve(site, own_memcached, backend).start()
    sampler = Client(own_memcached.address, socket_module=_socket, connect_timeout=5, timeout=5)
    try:
        before = int(own_memcached.stats()["total_connections"])
        answers, peak = load(server, sampler, paths(squares=framework == "flask"))
        after = own_memcached.stats()
        kept = int(after["curr_connections"]) - 2  # less the stats connection and the sampler
        if framework == "django":
            check_django_stats(server, backend, own_memcached)
    finally:
        sampler.close()
        server.stop()
    counted = check_answers(answers, backend == "greenpool" or site.atomic_counts_when_stock)
    accepted = int(after["total_connections"]) - before - 2  # less the sampler and stats
    print(f"\n{framework} {backend}: memcached accepted {accepted} connections, held at most")
    print(f"{peak} at once, {kept} still open after; {counted} of {REQUESTS // 2} visits counted")
    if backend == "greenpool":
        assert accepted <= WORKERS * POOL_SIZE and peak <= WORKERS * POOL_SIZE
        assert kept == accepted  # kept for the next requests
    else:
        assert accepted == REQUESTS
