"""examples/django_site under ``gunicorn -k gevent``: every answer right, connections bounded.

The site runs as it is deployed, two gevent workers, against a memcached of
its own whose ``stats`` count the connections it accepted
(``total_connections``) and holds (``curr_connections``, sampled during the
load over one connection of the test's own). The same load runs against
Django's stock ``PyMemcacheCache`` as the control.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from typing import Any

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
REQUESTS = 300  # all at once: half visits (NAMES counters), half echoes


def django_site(memcached: MemcachedServer, backend: str) -> Server:
    port = port_for.select_random()
    command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-w", str(WORKERS)]
    command += ["-b", f"{HOST}:{port}", "--graceful-timeout", "5"]
    env = {
        "DJANGO_SETTINGS_MODULE": "examples.django_site.settings",
        "GREENPOOL_MEMCACHED": f"{memcached.host}:{memcached.port}",
        "GREENPOOL_POOL_SIZE": str(POOL_SIZE),
        "GREENPOOL_DJANGO_BACKEND": backend,
    }
    return Server([*command, "examples.django_site.wsgi:application"], port, env)


def get(server: Server, path: str) -> tuple[int, Any]:
    """One request on a connection of its own: the status and the JSON body."""
    http = HTTPClient(HOST, server.port, connection_timeout=30, network_timeout=30)
    try:
        response = http.get(path)
        return response.status_code, json.loads(response.read())
    finally:
        http.close()


def load(server: Server, memcached: MemcachedServer) -> tuple[list[tuple[str, int, Any]], int]:
    """REQUESTS concurrent requests; their paths and answers, and the most
    connections memcached held meanwhile (the sampler's own not counted)."""
    paths = [f"/visits/name-{n % NAMES}" if n % 2 else f"/echo/token-{n}" for n in range(REQUESTS)]
    sampler = Client(memcached.address, socket_module=_socket, connect_timeout=5, timeout=5)
    peak = 0

    def sample() -> None:
        nonlocal peak
        for _ in range(60_000):  # at most 60 s
            peak = max(peak, int(sampler.stats()[b"curr_connections"]) - 1)
            gevent.sleep(0.001)

    sampling = gevent.spawn(sample)
    try:
        greenlets = [gevent.spawn(get, server, path) for path in paths]
        gevent.joinall(greenlets, timeout=120, raise_error=True)
    finally:
        sampling.kill()
        sampler.close()
    assert all(greenlet.successful() for greenlet in greenlets)
    return [(path, *g.value) for path, g in zip(paths, greenlets, strict=True)], peak


def check_answers(answers: list[tuple[str, int, Any]]) -> set[int]:
    """Every answer is a 200 with the right body: each echo its own token, and
    each counter's visits numbered 1 to N without a gap or a repeat. Returns the
    workers' pids."""
    visits: dict[str, list[int]] = defaultdict(list)
    pids = set()
    for path, status, body in answers:
        assert status == 200, (path, status, body)
        kind, _, name = path[1:].partition("/")
        if kind == "echo":
            assert body["token"] == name and body["stored"]["token"] == name, (path, body)
            pids.add(body["stored"]["pid"])
        else:
            assert body["name"] == name, (path, body)
            visits[name].append(body["visits"])
    assert len(visits) == NAMES
    for numbers in visits.values():
        assert sorted(numbers) == list(range(1, REQUESTS // 2 // NAMES + 1))
    return pids


@pytest.mark.parametrize("backend", ["greenpool", "stock"])
def test_the_django_site_under_load_answers_right_on_bounded_connections(
    own_memcached: MemcachedServer, backend: str
) -> None:
    """300 concurrent requests to two gevent workers all get right answers. With
    greenpool's backend memcached accepts at most max_pool_size connections per
    worker, kept open for the next requests; with Django's stock PyMemcacheCache
    it accepts one per request, each closed when its request ends."""
    server = django_site(own_memcached, backend).start()
    try:
        before = int(own_memcached.stats()["total_connections"])
        answers, peak = load(server, own_memcached)
        after = own_memcached.stats()
        pids = check_answers(answers)
        kept = int(after["curr_connections"]) - 1  # less the stats connection itself
    finally:
        server.stop()
    accepted = int(after["total_connections"]) - before - 2  # less the sampler and stats
    print(f"\n{backend}: {len(pids)} workers answered; memcached accepted {accepted}")
    print(f"connections, held at most {peak} at once, {kept} still open after the load")
    if backend == "greenpool":
        assert accepted <= WORKERS * POOL_SIZE and peak <= WORKERS * POOL_SIZE
        assert kept == accepted  # kept for the next requests
    else:
        assert accepted == REQUESTS and kept == 0
