"""Operating options: idle and lifetime limits, liveness checks, restart recovery,
leak warnings, load shedding and resizing, each against a real memcached."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import gevent
import pytest
from gevent.event import Event
from pymemcache.client.base import Client

from greenpool import ClientPool, PoolOverloaded, PoolTimeout, client_factory
from tests.memcached import MemcachedServer
from tests.proxy import FaultProxy
from tests.waiting import wait_until

MakePool = Callable[..., ClientPool[Any]]
Key = Callable[[str], str]


def _use(pool: ClientPool[Any]) -> Any:
    with pool.reserve() as mc:
        mc.version()
        return mc


def test_max_idle_replaces_a_client_idle_too_long(make_pool: MakePool) -> None:
    """A client idle longer than max_idle is closed instead of reused."""
    pool = make_pool(2, max_idle=0.1)
    first = _use(pool)
    assert _use(pool) is first  # not idle long enough yet
    gevent.sleep(0.2)  # the behaviour under test is time passing, not synchronisation
    second = _use(pool)
    assert second is not first and first.sock is None
    stats = pool.stats()
    assert (stats["discarded_idle"], stats["created"], stats["size"]) == (1, 2, 1)


def test_max_idle_shrinks_toward_demand_but_not_below_use(make_pool: MakePool) -> None:
    """After a burst, steady use of one client closes the idle rest, one per return."""
    pool = make_pool(4, max_idle=0.1)
    reservations = [pool.reserve() for _ in range(4)]
    clients = [r.__enter__() for r in reservations]
    for r in reversed(reservations):
        r.__exit__(None, None, None)
    assert pool.stats()["size"] == 4
    gevent.sleep(0.15)
    for _ in range(6):
        with pool.reserve() as mc, pool.reserve() as other:  # demand is two
            mc.version()
            other.version()
            gevent.sleep(0.03)
    stats = pool.stats()
    assert stats["size"] == 2 and stats["discarded_idle"] >= 2
    assert sum(c.sock is None for c in clients) >= 2


def test_max_lifetime_closes_a_client_on_return_not_in_use(make_pool: MakePool) -> None:
    """A client past its lifetime keeps working inside its block and is closed after."""
    pool = make_pool(1, max_lifetime=0.1)
    with pool.reserve() as mc:
        mc.version()
        gevent.sleep(0.15)
        assert mc.version()  # still open: lifetimes never cut a reservation short
    assert mc.sock is None
    assert pool.stats()["discarded_lifetime"] == 1 and pool.stats()["size"] == 0
    assert _use(pool) is not mc


def test_lifetimes_are_jittered_so_clients_do_not_expire_together(make_pool: MakePool) -> None:
    pool = make_pool(20, max_lifetime=100)
    reservations = [pool.reserve() for _ in range(20)]
    for r in reservations:
        r.__enter__()
    deadlines = {round(r._entry.expires, 6) for r in reservations}
    spread = max(deadlines) - min(deadlines)
    for r in reservations:
        r.__exit__(None, None, None)
    assert len(deadlines) == 20 and 0 < spread <= 5.0  # within 5% of 100 s


def test_check_after_idle_replaces_a_hung_idle_client_without_an_error(
    make_pool: MakePool, proxy: FaultProxy, key: Key
) -> None:
    """An idle client whose server stopped answering fails its check and is
    replaced: the caller never sees the error."""
    pool = make_pool(
        1, address=proxy.address, check_after_idle=0.05, client_options={"timeout": 0.2}
    )
    with pool.reserve() as mc:
        mc.set(key("a"), "1", noreply=False)  # connected through the proxy now
    gevent.sleep(0.1)  # idle past check_after_idle: the behaviour under test is time
    hung = iter([1.0])  # the check's reply comes after the client's timeout
    proxy.reply_delay = lambda: next(hung, 0.0)
    with pool.reserve() as mc:
        assert mc.get(key("a")) == b"1"
    assert pool.stats()["discarded_check_failed"] == 1


def test_a_dead_idle_connection_is_found_without_a_round_trip_and_reconnected(
    make_pool: MakePool, proxy: FaultProxy, key: Key
) -> None:
    """A connection the server side closed while idle is readable: the pool sees
    it before lending the client, which reconnects, and the caller sees no error."""
    pool = make_pool(1, address=proxy.address)
    with pool.reserve() as mc:
        mc.set(key("a"), "1", noreply=False)
    proxy.cut()
    with pool.reserve() as mc:
        assert mc.get(key("a")) == b"1"
    stats = pool.stats()
    assert (stats["reconnects"], stats["discarded"], stats["connection_errors"]) == (1, 0, 0)


def test_a_plain_client_fails_on_the_dead_connection(proxy: FaultProxy, key: Key) -> None:
    """The control for the test above: the fault is real."""
    mc = Client(proxy.address, socket_module=gevent.socket, default_noreply=False)
    mc.set(key("a"), "1")
    proxy.cut()
    with pytest.raises(Exception):  # noqa: B017 - any connection error
        mc.get(key("a"))


def test_a_custom_check_runs_only_after_the_idle_threshold(make_pool: MakePool) -> None:
    checked: list[Any] = []
    pool = make_pool(1, check=checked.append, check_after_idle=0.1)
    first = _use(pool)
    _use(pool)
    assert checked == []
    gevent.sleep(0.15)
    _use(pool)
    assert checked == [first]


def test_a_server_restart_costs_no_failed_operation_to_idle_clients(
    own_memcached: MemcachedServer, key: Key
) -> None:
    """After a restart every idle connection is readable (closed by the server):
    each is reconnected before it is lent, and no operation fails."""
    pool = ClientPool(client_factory(own_memcached.address), 8)
    reservations = [pool.reserve() for _ in range(8)]
    for r in reservations:
        r.__enter__().version()  # 8 connected clients
    for r in reversed(reservations):
        r.__exit__(None, None, None)
    own_memcached.stop()
    own_memcached.start()
    reservations = [pool.reserve() for _ in range(8)]  # every client at once
    for r in reservations:
        assert r.__enter__().set(key("b"), "2", noreply=False)
    for r in reversed(reservations):
        r.__exit__(None, None, None)
    stats = pool.stats()
    assert (stats["connection_errors"], stats["reconnects"], stats["size"]) == (0, 8, 8)


def test_a_server_restart_under_load(own_memcached: MemcachedServer, key: Key) -> None:
    """Restart under load: failures are fast, service is back within 1 s of the
    server, at most one failure per greenlet once it is back, no wrong value."""
    pool = ClientPool(client_factory(own_memcached.address, connect_timeout=0.5), 8, timeout=5)
    greenlets = 24
    stop = Event()
    back = Event()
    wrong: list[str] = []
    slow_failures: list[float] = []
    failures_after_back = [0] * greenlets
    first_success_after_back: list[float] = []

    def work(i: int) -> None:
        n = 0
        while not stop.is_set() and n < 5000:
            n += 1
            started = gevent.get_hub().loop.now()
            try:
                with pool.reserve() as mc:
                    mc.set(key(f"k{i}"), f"{i}:{n}", noreply=False)
                    got = mc.get(key(f"k{i}"))
                if got is not None and got != f"{i}:{n}".encode():
                    wrong.append(f"{i} read {got!r}")
                if back.is_set() and not first_success_after_back:
                    first_success_after_back.append(gevent.get_hub().loop.now())
            except Exception:
                gevent.get_hub().loop.update_now()
                if gevent.get_hub().loop.now() - started > 1.0:
                    slow_failures.append(gevent.get_hub().loop.now() - started)
                if back.is_set():
                    failures_after_back[i] += 1
            gevent.sleep(0.002)

    jobs = [gevent.spawn(work, i) for i in range(greenlets)]
    gevent.sleep(0.3)
    own_memcached.stop()
    gevent.sleep(0.3)  # an outage under load
    own_memcached.start()
    gevent.get_hub().loop.update_now()
    back_at = gevent.get_hub().loop.now()
    back.set()
    gevent.sleep(1.0)
    stop.set()
    gevent.joinall(jobs, timeout=10)
    assert all(job.dead for job in jobs)
    assert wrong == [] and slow_failures == []
    assert first_success_after_back and first_success_after_back[0] - back_at < 1.0
    assert max(failures_after_back) <= 1
    assert pool.stats()["in_use"] == 0


def test_leak_warning_names_the_reserving_stack_once(
    make_pool: MakePool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(1, leak_warning_after=0.05)
    with caplog.at_level(logging.WARNING, logger="greenpool"):
        with pool.reserve():
            pass  # quick: no warning
        with pool.reserve() as mc:
            mc.version()
            gevent.sleep(0.2)
    warnings = [r for r in caplog.records if r.name == "greenpool"]
    assert len(warnings) == 1 and pool.stats()["leak_warnings"] == 1
    message = warnings[0].getMessage()
    assert "reserved for over 0.05s" in message
    assert "test_leak_warning_names_the_reserving_stack_once" in message
    assert "greenpool/pool.py" not in message


def test_greenpool_logs_nothing_unless_the_application_configures_logging(
    memcached: MemcachedServer,
) -> None:
    """A leak warning in a program that never configured logging prints nothing;
    the same program with logging.basicConfig() prints it."""
    script = (
        "import logging, sys, gevent\n"
        "from greenpool import ClientPool, client_factory\n"
        "if sys.argv[1] == 'configured': logging.basicConfig()\n"
        f"pool = ClientPool(client_factory({memcached.address!r}), 1, leak_warning_after=0.01)\n"
        "with pool.reserve():\n"
        "    gevent.sleep(0.1)\n"
        "assert pool.stats()['leak_warnings'] == 1\n"
    )
    outputs = {}
    for mode in ("quiet", "configured"):
        done = subprocess.run(
            [sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        outputs[mode] = done.stderr
    assert outputs["quiet"] == ""
    assert "reserved for over 0.01s" in outputs["configured"]


def test_max_waiting_sheds_load_at_once(make_pool: MakePool) -> None:
    """With max_waiting greenlets queued, the next reserve fails fast with PoolOverloaded."""
    pool = make_pool(1, max_waiting=2, name="shed")
    with pool.reserve():
        waiters = [gevent.spawn(lambda: pool.reserve(timeout=5).__enter__()) for _ in range(2)]
        wait_until(lambda: pool.stats()["waiting"] == 2, "two waiters have queued")
        with pytest.raises(PoolOverloaded, match="'shed' already has max_waiting=2"):
            pool.reserve().__enter__()
    gevent.joinall(waiters, timeout=5)
    assert pool.stats()["overloaded"] == 1


def test_resize_up_wakes_waiters_and_down_lets_clients_finish(make_pool: MakePool) -> None:
    pool = make_pool(1)
    served = Event()
    held = pool.reserve()
    held.__enter__()

    def waiter() -> None:
        with pool.reserve(timeout=5):
            served.set()

    job = gevent.spawn(waiter)
    wait_until(lambda: pool.stats()["waiting"] == 1, "the waiter has queued")
    pool.resize(3)
    assert served.wait(2) and job.join(2) is None
    assert pool.stats()["maxsize"] == 3
    reservations = [pool.reserve() for _ in range(2)]
    clients = [r.__enter__() for r in reservations]  # 3 in use now
    assert all(c.version() for c in clients)
    pool.resize(1)
    assert clients[0].sock is not None  # in use: untouched
    for r in reservations:
        r.__exit__(None, None, None)
    held.__exit__(None, None, None)
    stats = pool.stats()
    assert (stats["size"], stats["in_use"], stats["maxsize"]) == (1, 0, 1)
    assert stats["discarded_resized"] == 2
    with pool.reserve(), pytest.raises(PoolTimeout), pool.reserve(block=False):
        pass


@pytest.mark.parametrize(
    ("option", "value", "error", "message"),
    [
        ("max_idle", -1, ValueError, "max_idle must be a non-negative"),
        ("max_idle", "10", TypeError, "max_idle must be a number of seconds, not str"),
        ("max_lifetime", -0.1, ValueError, "max_lifetime must be a non-negative"),
        ("max_lifetime", [], TypeError, "max_lifetime must be a number"),
        ("check_after_idle", -5, ValueError, "check_after_idle must be a non-negative"),
        ("check_after_idle", True, TypeError, "check_after_idle must be a number"),
        ("check", "version", TypeError, "check must be a callable taking a client, not str"),
        ("leak_warning_after", -1, ValueError, "leak_warning_after must be a non-negative"),
        ("leak_warning_after", "1", TypeError, "leak_warning_after must be a number"),
        ("max_waiting", -1, ValueError, "max_waiting must be at least 0"),
        ("max_waiting", 1.5, TypeError, "max_waiting must be an int, not float"),
    ],
)
def test_bad_option_values_name_the_option(
    option: str, value: Any, error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        ClientPool(lambda: None, 2, **{option: value})


@pytest.mark.parametrize("value", [0, -2, "3"])
def test_bad_resize_names_maxsize(make_pool: MakePool, value: Any) -> None:
    pool = make_pool(2)
    with pytest.raises((TypeError, ValueError), match="maxsize must be"):
        pool.resize(value)
    assert pool.maxsize == 2


def test_the_prometheus_collector_exposes_the_stats_with_units(
    make_pool: MakePool, proxy: FaultProxy
) -> None:
    """Read through prometheus_client's own registry, as a scrape would."""
    from prometheus_client import CollectorRegistry

    from greenpool.prometheus import PoolCollector

    pool = make_pool(3, name="web", address=proxy.address)
    registry = CollectorRegistry()
    PoolCollector(pool, registry=registry)
    with pool.reserve() as mc:
        mc.version()
        proxy.reply_delay = 0.05
        with pytest.raises(gevent.Timeout), gevent.Timeout(0.01), pool.reserve() as other:
            other.version()  # cut off mid-command: the client is discarded

        def sample(name: str, **labels: str) -> Any:
            return registry.get_sample_value(name, {"pool": "web", **labels})

        assert sample("greenpool_clients", state="in_use") == 1
        assert sample("greenpool_clients", state="idle") == 0
    assert sample("greenpool_clients", state="idle") == 1
    assert sample("greenpool_clients_max") == 3 and sample("greenpool_waiting") == 0
    assert sample("greenpool_clients_created_total") == 2
    assert sample("greenpool_clients_discarded_total", reason="interrupted") == 1
    assert sample("greenpool_clients_discarded_total", reason="idle") == 0
    assert sample("greenpool_reservations_total") == 2
    assert sample("greenpool_usage_seconds_total") >= 0.01
