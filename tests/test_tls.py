"""TLS: tls_context passes through, and its sockets are cooperative under gevent.

The server is a real memcached started with ``-Z``, its certificate made at
test time by trustme. pymemcache wraps its socket with ``tls_context.wrap_socket``;
a standard library context in a process that is not monkey-patched (like this
one) would make a blocking ``ssl.SSLSocket``, so greenpool makes gevent's.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from typing import Any

import gevent
import gevent.socket
import gevent.ssl
import pytest
import trustme
from gevent import Timeout
from pymemcache.client.base import Client

import greenpool
from greenpool import ClientPool, PooledClient, client_factory
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.test_interruption import catch_a_timeout_and_go_on

Key = Callable[[str], str]


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls_memcached(
    ca: trustme.CA, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MemcachedServer]:
    """A memcached that speaks only TLS, with a certificate for 127.0.0.1."""
    directory = tmp_path_factory.mktemp("tls")
    chain, key = directory / "chain.pem", directory / "key.pem"
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    certificate.private_key_and_cert_chain_pem.write_to_path(str(chain))
    certificate.private_key_pem.write_to_path(str(key))
    server = MemcachedServer("-Z", "-o", f"ssl_chain_cert={chain},ssl_key={key}").start()
    yield server
    server.stop()


@pytest.fixture
def tls_proxy(tls_memcached: MemcachedServer, proxy_to: Callable[..., FaultProxy]) -> FaultProxy:
    """A fault proxy in front of the TLS memcached (it forwards the encrypted bytes)."""
    return proxy_to(tls_memcached.address)


@pytest.fixture
def context(ca: trustme.CA) -> ssl.SSLContext:
    """What a pymemcache user passes: a standard library context trusting the test CA."""
    tls_context = ssl.create_default_context()
    ca.configure_trust(tls_context)
    return tls_context


def _gevent_context(ca: trustme.CA) -> ssl.SSLContext:
    tls_context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(tls_context)
    return tls_context


def test_a_pool_with_a_tls_factory_serves_over_cooperative_sockets(
    tls_memcached: MemcachedServer, context: ssl.SSLContext, key: Key
) -> None:
    """ClientPool + client_factory(tls_context=...): commands work and the socket is
    gevent's TLS socket."""
    pool = ClientPool(client_factory(tls_memcached.address, tls_context=context), 2)
    with pool.reserve() as mc:
        assert mc.set(key("a"), "secret") and mc.get(key("a")) == b"secret"
        assert isinstance(mc.sock, greenpool._socket.SSLSocket)
        assert isinstance(mc.sock, gevent.ssl.SSLSocket)
        assert mc.sock.version() is not None  # a TLS session, not plain TCP
    pool.close()


def test_a_plain_pymemcache_client_with_a_stdlib_context_stalls_the_hub(
    tls_proxy: FaultProxy, context: ssl.SSLContext
) -> None:
    """Control: the bug greenpool avoids. The stdlib SSLSocket blocks the whole
    thread, so not even the proxy (a greenlet here) can forward the handshake."""
    mc = Client(
        tls_proxy.address, socket_module=gevent.socket, tls_context=context,
        connect_timeout=0.3, timeout=0.3,
    )  # fmt: skip
    ticks = _Ticker()
    with pytest.raises(OSError):  # the handshake times out: nothing else could run
        mc.version()
    assert ticks.stop() == 0
    assert type(mc.sock) is not gevent.ssl.SSLSocket


@pytest.mark.parametrize(
    ("socket_module", "socket_class"),
    [(greenpool._socket, greenpool._socket.SSLSocket), (gevent.socket, gevent.ssl.SSLSocket)],
    ids=["default", "gevent.socket"],
)
def test_a_slow_tls_reply_lets_other_greenlets_run_and_can_be_timed_out(
    tls_proxy: FaultProxy, context: ssl.SSLContext, key: Key, socket_module: Any,
    socket_class: type,
) -> None:  # fmt: skip
    """With a stdlib context, whichever gevent socket module: other greenlets run
    while a reply is slow, and gevent.Timeout interrupts the wait on time."""
    pool = ClientPool(
        client_factory(tls_proxy.address, tls_context=context, socket_module=socket_module), 1
    )
    with pool.reserve() as mc:
        mc.set(key("a"), "1")
        assert type(mc.sock) is socket_class
    tls_proxy.reply_delay = 0.3
    ticks = _Ticker()
    started = time.monotonic()
    with pytest.raises(Timeout), Timeout(0.05), pool.reserve() as mc:
        mc.get(key("a"))
    assert time.monotonic() - started < 0.25
    assert ticks.stop() > 0
    tls_proxy.reply_delay = 0
    with pool.reserve() as mc:
        assert mc.get(key("a")) == b"1"
    assert pool.stats()["discarded"] == 1
    pool.close()


def test_a_timeout_caught_inside_the_block_never_yields_a_stale_tls_reply(
    tls_proxy: FaultProxy, context: ssl.SSLContext, key: Key
) -> None:
    """The cut closes a TLS connection too: the next command reads its own counter
    over a fresh connection."""
    pool = ClientPool(client_factory(tls_proxy.address, tls_context=context), 1)
    with pool.reserve() as mc:
        catch_a_timeout_and_go_on(mc, tls_proxy, key)
    pool.close()


def test_pooled_client_passes_tls_context_through(
    tls_memcached: MemcachedServer, context: ssl.SSLContext, key: Key
) -> None:
    """PooledClient(tls_context=...) under 50 concurrent greenlets, within its bound."""
    mc = PooledClient(
        tls_memcached.address, tls_context=context, max_pool_size=3, default_noreply=False
    )
    assert mc.tls_context is context

    def work(i: int) -> bool:
        mc.set(key(str(i)), str(i))
        return bool(mc.get(key(str(i))) == str(i).encode() and mc.incr(key("n"), 1))

    mc.set(key("n"), "0")
    jobs = [gevent.spawn(work, i) for i in range(50)]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    assert all(job.value for job in jobs)
    assert mc.get(key("n")) == b"50"
    assert mc.pool_stats()["created"] <= 3


@pytest.mark.parametrize(
    "socket_module", [greenpool._socket, gevent.socket], ids=["default", "gevent.socket"]
)
def test_a_gevent_context_works_too(
    tls_memcached: MemcachedServer, ca: trustme.CA, key: Key, socket_module: Any
) -> None:
    tls_context = _gevent_context(ca)
    mc = PooledClient(tls_memcached.address, tls_context=tls_context, socket_module=socket_module)
    assert mc.set(key("a"), "b") and mc.get(key("a")) == b"b"


def test_an_untrusted_certificate_fails_and_the_pool_stays_whole(
    tls_memcached: MemcachedServer, key: Key
) -> None:
    """Verification errors are pymemcache's (ssl errors are OSErrors), naming the
    server; no slot is lost, and each failed connect is counted, its client
    dropped as any client a connection error ends."""
    mc = PooledClient(
        tls_memcached.address, tls_context=ssl.create_default_context(), max_pool_size=1
    )
    for _ in range(3):
        with pytest.raises(ssl.SSLCertVerificationError) as raised:
            mc.get(key("a"))
        assert raised.value.reason == "CERTIFICATE_VERIFY_FAILED"
        assert f"{tls_memcached.host}:{tls_memcached.port}" in str(raised.value)
    stats = mc.pool_stats()
    assert (stats["in_use"], stats["size"], stats["waiting"]) == (0, 0, 0)
    assert stats["connect_errors"] == stats["connection_errors"] == stats["discarded_error"] == 3


class _Ticker:
    """Counts how often a greenlet got to run, every 10 ms, until stop()."""

    def __init__(self) -> None:
        self.ticks = 0
        self._job = gevent.spawn(self._run)

    def _run(self) -> None:
        for _ in range(1000):
            gevent.sleep(0.01)
            self.ticks += 1

    def stop(self) -> int:
        self._job.kill(timeout=5)
        return self.ticks
