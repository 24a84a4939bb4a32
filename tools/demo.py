"""make demo: the WSGI example, with its own memcached, under load from another process.

Starts ``examples/wsgi_app.py`` on a free loopback port (it starts and stops its
own memcached), runs ``examples/loadgen.py`` against it, and stops the server
whatever happened. Every wait is bounded: the server must listen within 30
seconds and the load must end within 90; the server gets SIGTERM, then SIGKILL
after 10 seconds. Exits with the load generator's status (1 on any error).
"""

import argparse
import subprocess
import sys
from pathlib import Path

import port_for
from mirakuru import TCPExecutor

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
HOST = "127.0.0.1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args(argv)
    port = port_for.select_random()
    server = TCPExecutor(
        [sys.executable, str(EXAMPLES / "wsgi_app.py"), "--host", HOST, "--port", str(port)],
        host=HOST,
        port=port,
        timeout=30,
        stdin=subprocess.DEVNULL,
        stdout=None,  # the server's own lines go to the terminal
    )
    server.start()
    try:
        load = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "loadgen.py"),
                f"http://{HOST}:{port}",
                f"--requests={args.requests}",
                f"--concurrency={args.concurrency}",
                "--timeout=60",
            ],
            stdin=subprocess.DEVNULL,
            timeout=90,
        )
    except subprocess.TimeoutExpired:
        print("demo: the load did not finish within 90 s", file=sys.stderr)
        return 1
    finally:
        server.stop(expected_returncode=0)
    return load.returncode


if __name__ == "__main__":
    sys.exit(main())
