"""The WSGI example, served with three ways of reaching memcached.

::

    python -m benchmarks.wsgi_variants VARIANT --port PORT --memcached HOST:PORT

``greenpool`` is ``examples.wsgi_app.KeyValueApp`` itself, with its
``ClientPool(16)``; ``greenpool autobatching`` is the same app whose GETs go
through an :class:`~greenpool.AutoBatcher` over that pool, so the GETs of
concurrent requests go out together. The other two are the same class, request
handling and all, with only :meth:`KeyValueApp.pool` replaced: ``per-request`` opens a pymemcache
``Client`` for each request's ``with pool.reserve() as mc:`` block and closes
it after; ``pymemcache`` lends every block one shared, unbounded pymemcache
``PooledClient`` (bounded, it raises under this load). The process is
monkey-patched first, as the example patches the process that runs it; the
pymemcache clients get gevent sockets and greenpool's timeouts, as in
:mod:`benchmarks.gevent_side`.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any, cast

import gevent
from gevent.pywsgi import WSGIServer
from pymemcache.client.base import Client, PooledClient

from benchmarks.gevent_side import PYMEMCACHE_OPTIONS
from benchmarks.wsgi_load import VARIANTS
from examples.wsgi_app import BINARY, HTTPError, KeyValueApp, Reply, parse_address
from greenpool import AutoBatcher, ClientPool

HOST = "127.0.0.1"


class PerRequest:
    """``reserve()`` yields a new connection and closes it when the block ends."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address

    @contextlib.contextmanager
    def reserve(self) -> Iterator[Client]:
        client = Client(self.address, **PYMEMCACHE_OPTIONS)
        try:
            yield client
        finally:
            client.close()


class SharedPymemcache:
    """``reserve()`` yields one pymemcache ``PooledClient``: each command takes a
    connection from pymemcache's own pool."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.client = PooledClient(address, max_pool_size=None, **PYMEMCACHE_OPTIONS)

    def reserve(self) -> contextlib.nullcontext[PooledClient]:
        return contextlib.nullcontext(self.client)


class VariantApp(KeyValueApp):
    """The example's app with its pool replaced by *strategy*: only ``reserve()``
    is used on the GET, PUT and DELETE paths (``/_stats`` would need more)."""

    def __init__(self, memcached: str, strategy: Any) -> None:
        super().__init__(memcached)
        self.strategy = strategy

    def pool(self) -> ClientPool[Client]:
        return cast("ClientPool[Client]", self.strategy)


class Autobatching(KeyValueApp):
    """The example's app, its GETs sent through an AutoBatcher over its own pool
    (PUT and DELETE unchanged: writes are not batched)."""

    def __init__(self, memcached: str) -> None:
        super().__init__(memcached)
        self.batcher: AutoBatcher | None = None

    def get(self, key: bytes, environ: dict[str, Any]) -> Reply:
        pool = self.pool()
        if self.batcher is None or self.batcher.pool is not pool:
            self.batcher = AutoBatcher(pool)
        value = self.batcher.get(key)
        if value is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "no such key")
        return HTTPStatus.OK, BINARY, value


def make_app(variant: str, memcached: str) -> KeyValueApp:
    if variant == "greenpool":
        return KeyValueApp(memcached)
    if variant == "greenpool autobatching":
        return Autobatching(memcached)
    strategy = {"per-request": PerRequest, "pymemcache": SharedPymemcache}[variant]
    return VariantApp(memcached, strategy(parse_address(memcached)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variant", choices=VARIANTS)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--memcached", required=True, help="HOST:PORT")
    args = parser.parse_args(argv)
    app = make_app(args.variant, args.memcached)
    server = WSGIServer((HOST, args.port), app, log=None, backlog=2048)
    server.start()
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    server.serve_forever()
    app.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
