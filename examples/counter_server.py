"""A line-protocol counter server: the standard library's threads, made greenlets.

::

    INCR name   ->  the counter's new value, e.g. 42
    STATS       ->  the pool's stats, as one line of JSON
    otherwise   ->  ERROR and why

``socketserver.ThreadingTCPServer`` serves each connection from a thread, and
``monkey.patch_all()`` makes every thread a greenlet. A connection's first
``INCR`` takes a memcached client from a :class:`greenpool.GreenletMappedPool`,
and the connection keeps it for its whole life, every later ``INCR`` reusing it
at the cost of a dict lookup. When the connection ends, its thread ends, and
the pool's death link hands the client back. There is no ``relinquish()``
anywhere: ``STATS`` shows ``in_use`` back to 0 once the connections close.

Every open connection holds a client, so ``--pool-size`` is how many are served
at once; the others wait for one to come free (up to the pool's 5 seconds,
then ``ERROR busy``). A server with many idle connections would rather use
``pool.reserve()`` around each command. Run it with::

    python examples/counter_server.py --port 9000 --memcached 127.0.0.1:11211
    printf 'INCR visits\\nINCR visits\\nSTATS\\n' | nc -q 1 127.0.0.1 9000
"""

from gevent import monkey

monkey.patch_all()

import argparse
import contextlib
import json
import socketserver
from typing import Any

from pymemcache.exceptions import MemcacheError, MemcacheIllegalInputError

from greenpool import ClientPool, GreenletMappedPool, PoolError, client_factory

#: The longest request line, name included (memcached keys are at most 250 bytes).
MAX_LINE = 300
NAME_ERROR = b"ERROR a name is at most 250 bytes, without control characters"


class CounterServer(socketserver.ThreadingTCPServer):
    """Counts in memcached through one client per connection."""

    daemon_threads = True  # threads are not kept around for server_close() to join
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops connections arriving together

    def __init__(self, address: tuple[str, int], mapped: GreenletMappedPool[Any]) -> None:
        super().__init__(address, CounterHandler)
        self.mapped = mapped

    def answer(self, line: bytes) -> bytes:
        """The reply to one request line, without its line ending."""
        words = line.split()
        if len(words) == 2 and words[0].upper() == b"INCR":
            if any(byte < 0x20 or byte == 0x7F for byte in words[1]):
                return NAME_ERROR  # memcached takes some, but its protocol forbids them
            try:
                return str(self.incr(words[1])).encode()
            except MemcacheIllegalInputError:  # pymemcache's own check: too long
                return NAME_ERROR
            except PoolError as exc:
                return f"ERROR busy: {exc}".encode()
            except (OSError, MemcacheError) as exc:
                return f"ERROR memcached: {exc}".encode()
        if [word.upper() for word in words] == [b"STATS"]:
            return json.dumps(self.mapped.stats()).encode()
        return b"ERROR unknown command; send INCR <name> or STATS"

    def incr(self, name: bytes) -> int:
        """Add one to the counter *name*, creating it at 0 first if it is missing."""
        with self.mapped.reserve() as mc:
            count = mc.incr(name, 1)
            if count is None:  # a new counter: of connections racing, add() lets one win
                mc.add(name, b"0", noreply=False)
                count = mc.incr(name, 1)
        return int(count)


class CounterHandler(socketserver.StreamRequestHandler):
    """Answers one connection's lines until it closes; runs in its own (green) thread."""

    server: CounterServer

    def handle(self) -> None:
        while True:
            line = self.rfile.readline(MAX_LINE + 1)
            if not line:
                return  # the connection closed: the thread ends, and its client goes back
            if not line.endswith(b"\n"):
                self.wfile.write(b"ERROR line too long\r\n")
                return
            self.wfile.write(self.server.answer(line) + b"\r\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A line-protocol counter server on memcached.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on; 0 picks one")
    parser.add_argument("--memcached", default="127.0.0.1:11211", help="memcached's HOST:PORT")
    parser.add_argument("--pool-size", type=int, default=16, help="memcached clients at most")
    args = parser.parse_args(argv)
    try:
        pool = ClientPool(client_factory(args.memcached), args.pool_size, name="counters")
    except (TypeError, ValueError) as exc:
        parser.error(str(exc))
    with CounterServer((args.host, args.port), GreenletMappedPool(pool)) as server:
        host, port = server.socket.getsockname()[:2]
        print(f"counter server on {host}:{port}, memcached {args.memcached}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    pool.close()


if __name__ == "__main__":
    main()
