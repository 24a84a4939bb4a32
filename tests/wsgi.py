"""The WSGI example as a real subprocess, and what the tests need to talk to it.

Never import ``examples.wsgi_app`` here: it monkey-patches the process it is
imported into. mirakuru starts the server and waits until its port accepts
connections; port-for picks the port. Its output goes to the test's own, so
pytest shows it when a test fails.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

import port_for
from geventhttpclient import HTTPClient
from mirakuru import TCPExecutor

from tests.memcached import MemcachedServer
from tests.process import HOST

REPO = Path(__file__).resolve().parent.parent
WSGI_APP = str(REPO / "examples" / "wsgi_app.py")
TIMEOUT = 10.0


class Reply(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class Server:
    """A server process on a free loopback port: the example itself, or gunicorn."""

    def __init__(self, command: list[str], port: int, env: dict[str, str] | None = None) -> None:
        self.port = port
        self._executor = TCPExecutor(
            command,
            host=HOST,
            port=port,
            timeout=30,
            cwd=str(REPO),
            envvars=env,
            stdin=subprocess.DEVNULL,
            stdout=None,
        )

    @classmethod
    def wsgi_app(cls, *args: str) -> Server:
        port = port_for.select_random()
        return cls([sys.executable, WSGI_APP, "--host", HOST, "--port", str(port), *args], port)

    @classmethod
    def gunicorn(cls, memcached: MemcachedServer | None, *args: str) -> Server:
        """gunicorn -k gevent serving the example, with $GREENPOOL_MEMCACHED set
        to *memcached*'s address (empty for ``None``)."""
        port = port_for.select_random()
        command = [sys.executable, "-m", "gunicorn", "-k", "gevent", "-b", f"{HOST}:{port}"]
        address = f"{memcached.host}:{memcached.port}" if memcached else ""
        env = {"GREENPOOL_MEMCACHED": address}
        return cls([*command, *args, "examples.wsgi_app:app"], port, env)

    @property
    def process(self) -> subprocess.Popen[str]:
        assert self._executor.process is not None, "the server was not started"
        return self._executor.process

    @property
    def pid(self) -> int:
        return self.process.pid

    def start(self) -> Server:
        self._executor.start()
        return self

    def stop(self) -> None:
        """SIGTERM, and SIGKILL after 30 s; the server must have exited with 0."""
        self._executor.stop(expected_returncode=0)

    def terminate(self, signum: int) -> int:
        """Signal the server's own process only, and return its exit status."""
        self.process.send_signal(signum)
        status = self.process.wait(timeout=30)
        self._executor.kill()  # forget the process, whatever its status
        return status

    def connect(self) -> HTTPClient:
        """A new HTTP client of one keep-alive connection; close it when done."""
        return HTTPClient(HOST, self.port, connection_timeout=TIMEOUT, network_timeout=TIMEOUT)

    def request(
        self, method: str, path: str, body: Any = b"", *, http: HTTPClient | None = None
    ) -> Reply:
        """Send one request, on *http* or a connection of its own."""
        client = http or self.connect()
        try:
            response = client.request(method, path, body=body)
            headers = {name.lower(): value for name, value in response.items()}
            return Reply(response.status_code, headers, response.read())
        finally:
            if http is None:
                client.close()

    def stats(self, *, http: HTTPClient | None = None) -> dict[str, Any]:
        reply = self.request("GET", "/_stats", http=http)
        assert reply.status == 200, reply
        result: dict[str, Any] = json.loads(reply.body)
        return result


def exited(pid: int, timeout: float) -> bool:
    """Whether process *pid* (any process, not only a child) exits within *timeout* seconds."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        readable, _, _ = select.select([fd], [], [], timeout)
        return bool(readable)
    finally:
        os.close(fd)


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is *pid*, by pid, with their command names."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # it exited meanwhile
            continue
        name, _, rest = stat.partition(" (")[2].rpartition(") ")
        if int(rest.split()[1]) == pid:
            found[int(entry.name)] = name
    return found
