"""A real twemproxy (Debian's ``nutcracker``) in front of test memcacheds.

Each proxy gets a YAML configuration written into a directory of its own, a
free loopback port to listen on and another for its stats (which it would
otherwise open on 0.0.0.0:22222). mirakuru starts the binary in the foreground,
waits until the listening port accepts connections, and stops it by its pid.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import port_for

from tests.process import HOST, LoopbackServer


def nutcracker_binary() -> str:
    path = shutil.which("nutcracker") or "/usr/sbin/nutcracker"
    if not os.path.exists(path):
        raise RuntimeError("nutcracker is missing: apt-get install nutcracker (make test does)")
    return path


def _yaml_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a double-quoted YAML string


def config_yaml(pool: str, settings: dict[str, Any], servers: list[str]) -> str:
    """One server pool as nutcracker's YAML: *settings* are its keys
    (``listen``, ``hash``, ``timeout``...), *servers* its ``servers`` entries."""
    lines = [f"{pool}:"]
    lines += [f"  {name}: {_yaml_scalar(value)}" for name, value in settings.items()]
    lines.append("  servers:")
    lines += [f"    - {_yaml_scalar(server)}" for server in servers]
    return "\n".join(lines) + "\n"


class Nutcracker(LoopbackServer):
    """One nutcracker process serving one memcached pool on a free loopback port.

    *backends* are ``(host, port)`` addresses, each with weight 1 and no name,
    so nutcracker places keys by ``host:port`` as libmemcached does.
    *settings* override the pool's defaults here: ketama with fnv1a_64 (also
    nutcracker's own defaults), and ``auto_eject_hosts: false``.
    """

    def __init__(self, backends: list[tuple[str, int]], directory: Path, **settings: Any) -> None:
        self.port = port_for.select_random()
        self.stats_port = port_for.select_random(exclude_ports=[self.port])
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        pool_settings = {
            "listen": f"{HOST}:{self.port}",
            "hash": "fnv1a_64",
            "distribution": "ketama",
            "auto_eject_hosts": False,
            **settings,
        }
        servers = [f"{host}:{port}:1" for host, port in backends]
        self.config = directory / "nutcracker.yml"
        self.config.write_text(config_yaml("cluster", pool_settings, servers))
        command = [
            nutcracker_binary(),
            "-c", str(self.config),
            "-s", str(self.stats_port),
            "-a", HOST,
            "-p", str(directory / "nutcracker.pid"),
            "-o", str(directory / "nutcracker.log"),
        ]  # fmt: skip
        super().__init__(command, self.port)

    def stats(self) -> dict[str, Any]:
        """nutcracker's stats: JSON it writes to whoever connects to its stats port."""
        with socket.create_connection((HOST, self.stats_port), timeout=5) as conn:
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return json.loads(b"".join(chunks))  # type: ignore[no-any-return]

    def log(self) -> str:
        return (self.directory / "nutcracker.log").read_text(errors="replace")
