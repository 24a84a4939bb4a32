"""The WSGI example's HTTP interface, end to end: a subprocess over the session memcached."""

from __future__ import annotations

import re
import resource
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import gevent
import pytest
from pymemcache.client.base import Client

from greenpool import _socket
from tests.memcached import MemcachedServer
from tests.wsgi import Server

Key = Callable[[str], str]
POOL_SIZE = 8
#: memcached's counters of commands that read or change data; "stats" counts in none.
COMMAND_COUNTERS = re.compile(r"cmd_.*|.*_(hits|misses)|total_items|curr_items")


@pytest.fixture(scope="module")
def server(memcached: MemcachedServer) -> Iterator[Server]:
    # 2,000 connections at once need 2,000 descriptors here and as many in the
    # server, which inherits this limit; a common default soft limit is 1,024.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < 8192:
        wanted = 8192 if hard == resource.RLIM_INFINITY else min(8192, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    address = f"{memcached.host}:{memcached.port}"
    started = Server.wsgi_app("--memcached", address, "--pool-size", str(POOL_SIZE)).start()
    yield started
    started.stop()


@pytest.fixture
def direct(memcached: MemcachedServer) -> Iterator[Client]:
    """A client of our own to the same memcached, to check what the example did."""
    client = Client(memcached.address, socket_module=_socket, connect_timeout=2, timeout=2)
    yield client
    client.close()


@pytest.fixture
def untouched(memcached: MemcachedServer, direct: Client, key: Key) -> Iterator[Callable[[], None]]:
    """Store a sentinel; the callable it gives asserts memcached received no command
    since, and the sentinel is as stored."""
    direct.set(key("sentinel"), b"still here", noreply=False)

    def counters() -> dict[str, Any]:
        return {k: v for k, v in memcached.stats().items() if COMMAND_COUNTERS.fullmatch(k)}

    before = counters()

    def check() -> None:
        assert counters() == before  # nothing was sent, flush_all least of all
        assert direct.get(key("sentinel")) == b"still here"

    yield check


def path(name: str) -> str:
    return "/" + quote(name, safe="")


def test_put_get_delete_round_trip(server: Server, direct: Client, key: Key) -> None:
    """PUT answers 201 for a new key and 204 for an existing one; GET returns the
    last value stored (as memcached holds it); DELETE answers 204, then 404."""
    k = path(key("round-trip"))
    assert server.request("PUT", k, b"first").status == 201
    assert server.request("PUT", k, b"second").status == 204
    reply = server.request("GET", k)
    assert (reply.status, reply.body) == (200, b"second")
    assert reply.headers["content-type"] == "application/octet-stream"
    assert direct.get(key("round-trip")) == b"second"
    assert server.request("DELETE", k).status == 204
    assert server.request("DELETE", k).status == 404
    assert server.request("GET", k).status == 404
    assert direct.get(key("round-trip")) is None


@pytest.mark.parametrize(
    "value", [bytes(range(256)) + b"\r\nEND\r\n", b""], ids=["every-byte", "empty"]
)
def test_values_are_stored_byte_for_byte(server: Server, key: Key, value: bytes) -> None:
    """Any bytes, CR LF and an empty body included, come back exactly as PUT."""
    k = path(key("bytes"))
    assert server.request("PUT", k, value).status == 201
    reply = server.request("GET", k)
    assert (reply.status, reply.body) == (200, value)


def test_a_chunked_put_is_stored(server: Server, key: Key) -> None:
    """A body sent with Transfer-Encoding: chunked (no Content-Length) is stored whole."""
    k = path(key("chunked"))
    assert server.request("PUT", k, iter([b"in ", b"three ", b"chunks"])).status == 201
    assert server.request("GET", k).body == b"in three chunks"


def test_non_ascii_keys_are_their_utf8_bytes(server: Server, direct: Client, key: Key) -> None:
    """/caf%C3%A9 names the memcached key b'caf\\xc3\\xa9', 250 bytes being the limit."""
    name = key("café")
    assert server.request("PUT", path(name), b"au lait").status == 201
    assert direct.get(name.encode()) == b"au lait"
    longest = key("") + "é" * ((250 - len(key(""))) // 2)
    assert server.request("PUT", path(longest), b"fits").status == 201


def test_head_is_a_get_without_the_body(server: Server, key: Key) -> None:
    """HEAD answers as GET would, with no body (the connection stays usable)."""
    k = path(key("head"))
    server.request("PUT", k, b"12345")
    http = server.connect()
    try:
        head = server.request("HEAD", k, http=http)
        assert (head.status, head.body, head.headers["content-length"]) == (200, b"", "5")
        assert server.request("GET", k, http=http).body == b"12345"
    finally:
        http.close()


@pytest.mark.parametrize("method", ["POST", "PATCH", "OPTIONS", "TRACE"])
def test_other_methods_get_405_with_allow(
    server: Server, key: Key, method: str, untouched: Callable[[], None]
) -> None:
    """Methods other than GET, HEAD, PUT and DELETE get 405 and an Allow header,
    and /_stats allows only GET and HEAD; nothing reaches memcached."""
    reply = server.request(method, path(key("any")), b"value")
    assert (reply.status, reply.headers["allow"]) == (405, "GET, HEAD, PUT, DELETE")
    for stats_method in ("PUT", "DELETE", method):
        reply = server.request(stats_method, "/_stats", b"{}")
        assert (reply.status, reply.headers["allow"]) == (405, "GET, HEAD")
    untouched()


def test_stats_are_this_process_pool(server: Server, memcached: MemcachedServer) -> None:
    """GET /_stats is JSON: the serving process, its pool's stats with nothing left
    in use, and the memcached it talks to with its connection counters."""
    stats = server.stats()
    assert stats["pid"] == server.pid
    assert stats["pool"]["name"] == f"wsgi_app-{server.pid}"
    assert stats["pool"]["maxsize"] == POOL_SIZE
    assert stats["pool"]["in_use"] == 0
    assert stats["memcached"]["address"] == f"{memcached.host}:{memcached.port}"
    assert stats["memcached"]["total_connections"] >= stats["memcached"]["curr_connections"] > 0


BAD_KEYS = {
    "space": "/a%20b",
    "crlf-flush_all": "/a%0d%0aflush_all",
    "lf-flush_all": "/a%0aflush_all",
    "nul": "/a%00b",
    "tab": "/a%09b",
    "control-01": "/a%01b",
    "del": "/a%7fb",
    "c1-next-line": "/a%c2%85b",
    "unicode-line-separator": "/a%e2%80%a8b",
    "not-utf8": "/a%ffb",
    "251-bytes": "/" + "k" * 251,
    "126-two-byte-chars": "/" + "%C3%A9" * 126,
    "empty": "/",
}


@pytest.mark.parametrize("bad", BAD_KEYS.values(), ids=BAD_KEYS.keys())
def test_bad_keys_get_400_and_never_reach_memcached(
    server: Server, bad: str, untouched: Callable[[], None]
) -> None:
    """A key memcached cannot take gets a 400 with the reason, for every method;
    memcached receives no command at all (its counters, cmd_flush among them, stay
    the same) and the sentinel keeps its value."""
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        reply = server.request(method, bad, b"value")
        assert reply.status == 400, (method, reply)
        if method != "HEAD":
            assert reply.body.startswith((b"key ", b"missing key")), reply.body
    untouched()


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_value_over_item_size_max_gets_413_and_is_never_sent(
    server: Server, key: Key, untouched: Callable[[], None], chunked: bool
) -> None:
    """A body longer than memcached's item_size_max (1 MiB here) gets 413 before any
    command is sent, even aimed at the sentinel's own key, which keeps its value."""
    too_big = b"x" * (1024 * 1024 + 1)
    body: Any = iter([too_big[:1000], too_big[1000:]]) if chunked else too_big
    reply = server.request("PUT", path(key("sentinel")), body)
    assert reply.status == 413
    assert b"1048576" in reply.body
    untouched()


def test_a_value_too_large_only_with_its_header_gets_413_and_keeps_the_stored_one(
    server: Server, direct: Client, key: Key
) -> None:
    """A body under item_size_max that memcached refuses with its item header gets
    413, and the value stored under that key survives: the example sends add, which
    memcached refuses harmlessly, where a refused set would delete it."""
    direct.set(key("kept"), b"old value", noreply=False)
    reply = server.request("PUT", path(key("kept")), b"x" * (1024 * 1024 - 10))
    assert reply.status == 413
    assert direct.get(key("kept")) == b"old value"
    assert server.request("PUT", path(key("kept")), b"new value").status == 204  # still served


BAD_TTLS = ["ttl=abc", "ttl=-1", "ttl=0", "ttl=1.5", "ttl=2592001", "ttl=", "ttl", "ttl=+5"]
BAD_TTLS += ["ttl=5&ttl=6", "ttl=99999999", "tll=5"]


@pytest.mark.parametrize("query", BAD_TTLS)
def test_a_bad_ttl_gets_400_and_stores_nothing(
    server: Server, key: Key, untouched: Callable[[], None], query: str
) -> None:
    """ttl must be whole seconds from 1 to 30 days, given once, and nothing else
    may be in the query; otherwise 400 and nothing is sent to memcached."""
    reply = server.request("PUT", f"{path(key('sentinel'))}?{query}", b"new value")
    assert reply.status == 400, reply
    untouched()


def test_ttl_becomes_memcached_expiry(server: Server, direct: Client, key: Key) -> None:
    """?ttl=N makes memcached expire the value in N seconds; without it, never
    (memcached's meta get reports the seconds left, -1 for none)."""
    server.request("PUT", path(key("ttl")) + "?ttl=1000", b"v")
    assert direct.raw_command(f"mg {key('ttl')} t") in (b"HD t1000", b"HD t999")
    server.request("PUT", path(key("ttl")), b"v")
    assert direct.raw_command(f"mg {key('ttl')} t") == b"HD t-1"


def test_2000_concurrent_requests_are_all_answered_correctly(server: Server, key: Key) -> None:
    """2,000 clients at once, each on its own connection, PUT a key of their own
    (201) and GET it back (their own value). The pool of 8 served them all, never
    holding more than 8 clients nor timing out, and has none left in use."""
    clients = 2000
    before = server.stats()["pool"]
    answers: list[tuple[int, int, bytes]] = []

    def put_then_get(n: int) -> None:
        http = server.connect()
        try:
            k, value = path(key(f"many-{n}")), f"value {n}".encode()
            put = server.request("PUT", k, value, http=http)
            get = server.request("GET", k, http=http)
            answers.append((put.status, get.status, get.body))
        finally:
            http.close()

    greenlets = [gevent.spawn(put_then_get, n) for n in range(clients)]
    gevent.joinall(greenlets, timeout=60, raise_error=True)
    assert sorted(answers) == sorted((201, 200, f"value {n}".encode()) for n in range(clients))
    after = server.stats()["pool"]
    assert after["size"] <= POOL_SIZE and after["in_use"] == after["waiting"] == 0
    assert after["timeouts"] == before["timeouts"] and after["waits"] > before["waits"]


@pytest.mark.parametrize(
    "target", ["xtarget-key", "http://t/target-key", "*"], ids=["no-slash", "absolute", "asterisk"]
)
def test_a_request_target_that_is_not_origin_form_gets_400(
    server: Server, direct: Client, memcached: MemcachedServer, target: str
) -> None:
    """``GET xtarget-key`` used to read the key ``target-key`` (the first character
    dropped unchecked), and ``GET http://t/k`` the key ``ttp://t/k``."""
    direct.set("target-key", b"not yours", noreply=False)
    gets = memcached.stats()["cmd_get"]
    with gevent.socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 400"), reply[:200]
    assert b"not yours" not in reply
    assert memcached.stats()["cmd_get"] == gets
