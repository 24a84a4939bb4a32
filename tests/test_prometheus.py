"""Prometheus: a collector for everything that pools, any number on one registry.

These tests use prometheus_client's default registry, as an application does,
with several collectors at once, and read the exposition with prometheus_client's
strict OpenMetrics parser: one family per metric name, whatever the number of
collectors. Every collector is unregistered at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import gevent
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from greenpool import ClientPool, GreenletMappedPool, HashClient, PooledClient, client_factory
from greenpool.prometheus import PoolCollector
from tests.memcached import MemcachedServer

Key = Callable[[str], str]


@pytest.fixture
def collect() -> Iterator[Callable[..., PoolCollector]]:
    """Make collectors on the default registry; all unregistered at teardown."""
    made: list[PoolCollector] = []

    def make(source: Any, **options: Any) -> PoolCollector:
        made.append(PoolCollector(source, **options))
        return made[-1]

    yield make
    for collector in made:
        collector.unregister()


def _families(registry: CollectorRegistry = REGISTRY) -> dict[str, Any]:
    """The registry's families as a scrape in OpenMetrics reads them (the strict
    parser: a family named twice fails it)."""
    text = generate_latest(registry).decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def _value(name: str, **labels: str) -> Any:
    return REGISTRY.get_sample_value(name, labels)


def _name(server: MemcachedServer) -> str:
    return f"{server.host}:{server.port}"


def test_collectors_of_every_kind_share_the_default_registry(
    memcached: MemcachedServer, three_memcacheds: list[MemcachedServer], collect: Any, key: Key
) -> None:
    """A ClientPool, a GreenletMappedPool, a PooledClient and a HashClient (a
    server label per server), each its own collector on the default registry:
    every one registers, each family is exposed once, with a sample per pool."""
    pool = ClientPool(client_factory(memcached.address), 3, name="plain")
    mapped = GreenletMappedPool(ClientPool(client_factory(memcached.address), 2, name="mapped"))
    mc = PooledClient(memcached.address, max_pool_size=4, pool_options={"name": "pooled"})
    cluster = HashClient([s.address for s in three_memcacheds], max_pool_size=5)
    for source in (pool, mapped, mc):
        collect(source)
    collect(cluster, name="sessions")
    with pool.reserve() as client:
        client.version()
    with mapped.reserve() as client:
        client.version()
    mapped.relinquish()
    jobs = [gevent.spawn(mc.get, key(str(n))) for n in range(5)]
    gevent.joinall(jobs, timeout=10, raise_error=True)
    names = [key(f"c{n}") for n in range(30)]
    assert cluster.set_many(dict.fromkeys(names, "v"), noreply=False) == []
    assert cluster.get_many(names) == dict.fromkeys(names, b"v")

    assert _value("greenpool_clients_max", pool="plain") == 3
    assert _value("greenpool_reservations_total", pool="plain") == 1
    assert _value("greenpool_clients_max", pool="mapped") == 2
    assert _value("greenpool_clients", pool="mapped", state="idle") == 1
    assert _value("greenpool_batch_keys_asked_total", pool="pooled") == 5
    for server in three_memcacheds:
        labels = {"pool": "sessions", "server": _name(server)}
        assert _value("greenpool_clients_max", **labels) == 5
        assert _value("greenpool_reservations_total", **labels) >= 1
        assert _value("greenpool_batch_keys_asked_total", **labels) > 0
    families = _families()
    clients_max = families["greenpool_clients_max"]
    assert len(clients_max.samples) >= 6  # plain, mapped, pooled, three servers
    assert "greenpool_connect_errors" in families


def test_a_second_collector_of_the_same_pool_is_refused_by_name(
    memcached: MemcachedServer, collect: Any
) -> None:
    """Two collectors that would expose the same series: the second raises
    ValueError naming the pool, and the first keeps exposing it."""
    pool = ClientPool(client_factory(memcached.address), 2, name="twice")
    collect(pool)
    with pytest.raises(ValueError, match="'twice'"):
        collect(pool)
    assert _value("greenpool_clients_max", pool="twice") == 2
    collect(pool, name="twice-renamed")
    assert _value("greenpool_clients_max", pool="twice-renamed") == 2


def test_an_unregistered_collector_leaves_the_registry(
    memcached: MemcachedServer, collect: Any
) -> None:
    """unregister() takes its pool's series out of the scrape; the others stay."""
    first = ClientPool(client_factory(memcached.address), 2, name="first")
    second = ClientPool(client_factory(memcached.address), 2, name="second")
    leaving = PoolCollector(first)
    collect(second)
    assert _value("greenpool_clients_max", pool="first") == 2
    leaving.unregister()
    assert _value("greenpool_clients_max", pool="first") is None
    assert _value("greenpool_clients_max", pool="second") == 2
    _families()  # still one valid exposition


def test_a_collector_on_a_registry_of_its_own(memcached: MemcachedServer) -> None:
    """registry= puts the collector on another registry, and nothing on the default."""
    registry = CollectorRegistry()
    pool = ClientPool(client_factory(memcached.address), 2, name="elsewhere")
    collector = PoolCollector(pool, registry=registry)
    try:
        assert registry.get_sample_value("greenpool_clients_max", {"pool": "elsewhere"}) == 2
        assert _value("greenpool_clients_max", pool="elsewhere") is None
        assert set(_families(registry)) >= {"greenpool_clients", "greenpool_reservations"}
    finally:
        collector.unregister()


@pytest.mark.parametrize("framework", ["django", "flask"])
def test_framework_backends_are_collected_per_server(
    three_memcacheds: list[MemcachedServer], collect: Any, key: Key, framework: str
) -> None:
    """A Django or Flask-Caching backend: its client's pools, a server label each,
    named by name= (the backend's class name by default)."""
    locations = [_name(server) for server in three_memcacheds]
    if framework == "django":
        from django.core.cache import CacheHandler

        handler = CacheHandler(
            {"default": {"BACKEND": "greenpool.django.MemcachedCache", "LOCATION": locations}}
        )
        backend: Any = handler["default"]
    else:
        pytest.importorskip("flask_caching")  # Flask-Caching 2.5 needs Python 3.11
        from greenpool.flask_caching import MemcachedCache

        backend = MemcachedCache(locations)
    collect(backend, name=framework)
    names = [key(str(n)) for n in range(30)]
    backend.set_many(dict.fromkeys(names, 1))
    asked = sum(
        _value("greenpool_batch_keys_asked_total", pool=framework, server=location) or 0
        for location in locations
    )
    found = backend.get_many(names) if framework == "django" else backend.get_many(*names)
    assert len(found) == len(names)
    assert all(_value("greenpool_clients_max", pool=framework, server=s) for s in locations)
    after = sum(
        _value("greenpool_batch_keys_asked_total", pool=framework, server=location)
        for location in locations
    )
    assert after - asked == len(names)
    _families()


def test_pool_collector_rejects_what_it_cannot_read() -> None:
    with pytest.raises(TypeError, match="PoolCollector needs a ClientPool"):
        PoolCollector(object())


def test_a_collector_on_no_registry_yields_its_own_metrics(memcached: MemcachedServer) -> None:
    """registry=None: on no registry; collect() yields its pool's metrics, and a
    registry it is then registered with reads them (a second such collector there
    would clash by name, as any two collectors of the same metrics do)."""
    pool = ClientPool(client_factory(memcached.address), 2, name="standalone")
    collector = PoolCollector(pool, registry=None)
    assert _value("greenpool_clients_max", pool="standalone") is None
    families = {family.name: family for family in collector.collect()}
    assert families["greenpool_clients_max"].samples[0].value == 2
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("greenpool_clients_max", {"pool": "standalone"}) == 2
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PoolCollector(pool, registry=None))
