"""What a run measures: the workloads, their contenders, and how long each round runs."""

from __future__ import annotations

from dataclasses import dataclass, replace

from benchmarks import asyncio_side, gevent_side

GEVENT = tuple(gevent_side.CONTENDERS)
ASYNCIO = tuple(asyncio_side.CONTENDERS)
EVERYONE = GEVENT + ASYNCIO
#: At 5,000 greenlets the question is where the connections go: one pool size will do.
CROWD = (
    "ClientPool(16)",
    "GreenletMappedPool(16)",
    "greenpool.PooledClient(16)",
    "greenpool.PooledClient(16) autobatching",
    "greenpool.HashClient(16) autobatching",
    "pymemcache PooledClient",
    "dedicated Client",
    "Client per operation",
    "emcache(16)",
    "emcache(16) autobatching",
)


#: The writes workload: the pools, the batching clients and emcache's two ways.
WRITERS = (
    "ClientPool(16)",
    "greenpool.PooledClient(16)",
    "greenpool.PooledClient(16) autobatching",
    "greenpool.HashClient(16) autobatching",
    "pymemcache PooledClient",
    "emcache(16)",
    "emcache(16) autobatching",
)


#: A contender's name with this after it runs in a venv holding only what
#: ``pip install greenpool`` installs (no extras), and with this, in such a venv
#: of ``--compare``'s checkout, on its greenpool: the same contender, as installed.
NO_EXTRAS = " [no extras]"
BASE = " [base, no extras]"

#: One memcached against three: the single-server pools beside the cluster's two
#: ways, batched (the defaults) and not, and as installed without extras.
CLUSTER = (
    "greenpool.PooledClient(16)",
    "greenpool.PooledClient(16) autobatching",
    "pymemcache PooledClient",
    *gevent_side.CLUSTER_CONTENDERS,
    "greenpool.PooledClient(16) autobatching" + NO_EXTRAS,
    "greenpool.HashClient(16) autobatching, 3 servers" + NO_EXTRAS,
)
#: The rows of each workload that ``--compare`` runs on the other checkout too
#: (with BASE): a before and after in the same alternating rounds.
COMPARED: dict[str, tuple[str, ...]] = {
    "cluster": (
        "greenpool.PooledClient(16) autobatching",
        "greenpool.HashClient(16) autobatching, 3 servers",
    ),
    **{
        key: ("greenpool.PooledClient(16) autobatching",)
        for key in ("get", "mix", "crowd", "writes")
    },
}


@dataclass(frozen=True)
class Workload:
    """*greenlets* greenlets (asyncio tasks for emcache), each doing up to *ops*
    operations on a key of its own, every *set_every*-th one a set, against the
    memcached named *server*. With *writes*, each does *ops* / 2 sets of keys of
    its own, then deletes them, every command waiting for its reply."""

    key: str
    title: str
    greenlets: int
    ops: int
    set_every: int
    server: str
    contenders: tuple[str, ...]
    writes: bool = False


WORKLOADS = (
    Workload("get", "500 greenlets × 100 gets", 500, 100, 0, "default", EVERYONE),
    Workload("mix", "500 greenlets × 100 ops, 1 in 5 a set", 500, 100, 5, "default", EVERYONE),
    Workload("crowd", "5,000 greenlets × 20 ops, memcached -c 1024", 5000, 20, 5, "default", CROWD),
    Workload("crowd-raised", "5,000 greenlets × 20 ops, -c 8192", 5000, 20, 5, "raised", CROWD),
    Workload(
        "writes",
        "500 greenlets × 100 writes: 50 sets, then 50 deletes",
        500,
        100,
        0,
        "default",
        WRITERS,
        writes=True,
    ),
    Workload("cluster", "500 greenlets × 50 gets, 1 or 3 servers", 500, 50, 0, "cluster", CLUSTER),
)


PARTS = ("overhead", *(w.key for w in WORKLOADS), "wsgi", "herd")


@dataclass(frozen=True)
class Plan:
    """How much to run: *rounds* alternating rounds of every contender, each
    round's window *seconds* long; greenlet counts times *scale*; each herd
    round (one per workload and strategy) *herd_seconds* long."""

    rounds: int
    seconds: float
    wsgi_seconds: int
    wsgi_connections: int
    scale: float
    loops: int
    gets: int
    profile: bool
    herd_seconds: float = 8.0
    only: tuple[str, ...] = PARTS
    compare: str | None = None  # another checkout, whose greenpool runs the COMPARED rows


FULL = Plan(
    rounds=5,
    seconds=1.0,
    wsgi_seconds=2,
    wsgi_connections=200,
    scale=1.0,
    loops=200_000,
    gets=1_000,
    profile=True,
)
#: --quick: every part at full scale, in fewer and shorter rounds, without the profile.
QUICK = replace(
    FULL,
    rounds=2,
    seconds=0.4,
    wsgi_seconds=1,
    wsgi_connections=100,
    loops=50_000,
    gets=300,
    profile=False,
    herd_seconds=3.0,
)
