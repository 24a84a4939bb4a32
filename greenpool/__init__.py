"""greenpool: pools of pymemcache clients that are correct under gevent.

Interrupted commands (``gevent.Timeout``, kills) never leave a half-read reply
for the next user, waiters are served fairly and cooperatively, and forked
children never share their parent's connections. ``ClientPool`` lends clients
for a ``with`` block; ``GreenletMappedPool`` lends each greenlet one client for
its life and takes it back when the greenlet ends; ``PooledClient`` and
``HashClient`` are drop-ins for pymemcache's, running each command on a client
lent for it, and add ``get_or_compute``: a missing value computed once across
processes, with memcached's meta protocol (``MetaRequest``, ``MetaReply``);
``AutoBatcher`` sends the gets of concurrent greenlets as one multi-key get,
and their other commands in the same write;
``RendezvousHash``, ``LibmemcachedKetama`` and ``TwemproxyKetama`` place a
cluster's keys as pymemcache, pylibmc and twemproxy do.
``greenpool.django`` and ``greenpool.flask_caching`` hold cache backends for
Django and Flask-Caching; they are not imported here, and need the ``django``
and ``flask`` extras.
"""

import logging

from greenpool._flights import StampedeStats
from greenpool.batching import DEFAULT_AUTOBATCH, DEFAULT_MAX_KEYS, AutoBatcher, BatchStats
from greenpool.client import PooledClient, PooledClientStats
from greenpool.cluster import HashClient
from greenpool.connection import Client
from greenpool.errors import PoolClosed, PoolError, PoolOverloaded, PoolTimeout
from greenpool.factory import CLIENT_DEFAULTS, client_factory
from greenpool.ketama import LibmemcachedKetama, TwemproxyKetama
from greenpool.mapped import GreenletMappedPool, MappedStats
from greenpool.meta import MetaReply, MetaRequest
from greenpool.pool import DEFAULT_MAXSIZE, DEFAULT_TIMEOUT, ClientPool, Reservation
from greenpool.rendezvous import RendezvousHash
from greenpool.stats import PoolStats

__version__ = "0.1.0"

# Quiet unless the application configures logging (the logging HOWTO's advice
# for libraries): without it, Python's last-resort handler prints warnings.
logging.getLogger("greenpool").addHandler(logging.NullHandler())

__all__ = [
    "CLIENT_DEFAULTS",
    "DEFAULT_AUTOBATCH",
    "DEFAULT_MAXSIZE",
    "DEFAULT_MAX_KEYS",
    "DEFAULT_TIMEOUT",
    "AutoBatcher",
    "BatchStats",
    "Client",
    "ClientPool",
    "GreenletMappedPool",
    "HashClient",
    "LibmemcachedKetama",
    "MappedStats",
    "MetaReply",
    "MetaRequest",
    "PoolClosed",
    "PoolError",
    "PoolOverloaded",
    "PoolStats",
    "PoolTimeout",
    "PooledClient",
    "PooledClientStats",
    "RendezvousHash",
    "Reservation",
    "StampedeStats",
    "TwemproxyKetama",
    "__version__",
    "client_factory",
]
