"""A real memcached process for tests, on a free loopback port.

mirakuru starts the binary and waits until its port accepts connections;
port-for picks the port. Nothing here ever touches 11211.
"""

from __future__ import annotations

import getpass
import os
import shutil
from typing import Any

import port_for
from pymemcache.client.base import Client

from greenpool import _socket
from tests.process import HOST, LoopbackServer


def memcached_binary() -> str:
    path = shutil.which("memcached") or "/usr/bin/memcached"
    if not os.path.exists(path):
        raise RuntimeError("memcached is not installed: apt-get install memcached (make test does)")
    return path


class MemcachedServer(LoopbackServer):
    """One memcached process; stop() and start() again reuse the same port."""

    def __init__(self, *extra_args: str, port: int | None = None) -> None:
        port = port or port_for.select_random()
        command = [memcached_binary(), "-l", HOST, "-p", str(port), "-U", "0", "-t", "2"]
        if os.geteuid() == 0:
            command += ["-u", getpass.getuser()]
        super().__init__(command + list(extra_args), port)

    def stats(self) -> dict[str, Any]:
        """The server's own ``stats``, read over a fresh connection."""
        client = Client(self.address, socket_module=_socket, connect_timeout=2, timeout=2)
        try:
            return {k.decode(): v for k, v in client.stats().items()}
        finally:
            client.close()
