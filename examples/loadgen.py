"""Load for the WSGI example: many requests from many concurrent greenlet HTTP clients.

::

    python examples/loadgen.py http://127.0.0.1:8000 [--requests 10000] [--concurrency 500]

Each client is a greenlet with its own geventhttpclient connection. It PUTs
values under three keys of its own in turn and GETs each back, so half the
requests are PUTs (201 for a new key, 204 after) and half GETs, and every
answer is checked: a wrong status or a wrong value counts as an error, and so
does an exception. Then it prints requests/s, p50 and p99 latency, the errors,
and the server's ``/_stats``: how many memcached clients its pool created for
the requests it served, and how many connections memcached saw. It exits 1 if
there was any error.

It runs in a process of its own, so its CPU time is not the server's.
"""

import argparse
import json
import os
import statistics
import sys
import time
from collections import Counter
from typing import Any

import gevent
from geventhttpclient import HTTPClient
from geventhttpclient.url import URL

KEYS_PER_CLIENT = 3


class Load:
    """The shared tally of every client's requests."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.run = f"{os.getpid()}-{time.monotonic_ns()}"


def client(load: Load, url: URL, number: int, requests: int, timeout: float) -> None:
    """One HTTP client: alternate PUT and GET on its own keys, *requests* in all."""
    http = HTTPClient(url.host, url.port, connection_timeout=timeout, network_timeout=timeout)
    stored: dict[str, bytes] = {}
    try:
        for n in range(requests):
            key = f"/loadgen-{load.run}-{number}-{n // 2 % KEYS_PER_CLIENT}"
            if n % 2 == 0:
                value = f"value {n} of client {number}".encode()
                expected = (204 if key in stored else 201), b""
                stored[key] = value
                answer = timed(load, http, "PUT", key, value)
            else:
                expected = 200, stored[key]
                answer = timed(load, http, "GET", key, b"")
            if answer != expected:
                load.errors[f"{answer[0]} instead of {expected[0]}, or a wrong body"] += 1
    finally:
        http.close()


def timed(load: Load, http: HTTPClient, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    started = time.perf_counter()
    try:
        response = http.request(method, path, body=body)
        answer = response.status_code, response.read()
    except Exception as exc:
        load.errors[f"{type(exc).__name__}: {exc}"] += 1
        return 0, b""
    load.latencies.append(time.perf_counter() - started)
    return answer


def stats(url: URL, timeout: float) -> dict[str, Any]:
    http = HTTPClient(url.host, url.port, connection_timeout=timeout, network_timeout=timeout)
    try:
        response = http.get("/_stats")
        body = response.read()
        if response.status_code != 200:
            raise RuntimeError(f"/_stats answered {response.status_code}: {body!r}")
        result: dict[str, Any] = json.loads(body)
        return result
    finally:
        http.close()


def report(
    load: Load, requests: int, concurrency: int, seconds: float, server: dict[str, Any]
) -> None:
    answered = len(load.latencies)
    cuts = statistics.quantiles(load.latencies, n=100) if answered > 1 else [0.0] * 99
    pool, memcached = server["pool"], server["memcached"]
    errors = sum(load.errors.values())
    lines = [
        f"{requests} requests (half PUT, half GET) from {concurrency} concurrent clients "
        f"in {seconds:.1f} s",
        f"  requests/s   {answered / seconds:.0f}",
        f"  latency      p50 {cuts[49] * 1000:.1f} ms, p99 {cuts[98] * 1000:.1f} ms",
        f"  errors       {errors}",
        *(f"               {count} x {what}" for what, count in load.errors.most_common(5)),
        f"  pool         {pool['created']} memcached clients created for {pool['reserves']} "
        f"requests served",
        f"               (maxsize {pool['maxsize']}; {pool['discarded']} discarded, "
        f"{pool['waits']} waited for a client, {pool['timeouts']} timed out)",
        f"  memcached    saw {memcached.get('total_connections')} connections since it started, "
        f"{memcached.get('curr_connections')} open now",
    ]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="load the WSGI example and report")
    parser.add_argument("url", help="the example's base URL, e.g. http://127.0.0.1:8000")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for the whole load")
    args = parser.parse_args(argv)
    url = URL(args.url)
    load = Load()
    share, extra = divmod(args.requests, args.concurrency)
    started = time.perf_counter()
    clients = [
        gevent.spawn(client, load, url, number, share + (number < extra), args.timeout)
        for number in range(args.concurrency)
    ]
    gevent.joinall(clients, timeout=args.timeout)
    seconds = time.perf_counter() - started
    unfinished = sum(not g.dead for g in clients)
    gevent.killall(clients, timeout=5)
    if unfinished:
        load.errors[f"client not finished within {args.timeout} s"] += unfinished
    load.errors.update(
        f"{type(g.exception).__name__}: {g.exception}" for g in clients if g.exception
    )
    report(load, args.requests, args.concurrency, seconds, stats(url, args.timeout))
    return 1 if load.errors else 0


if __name__ == "__main__":
    sys.exit(main())
