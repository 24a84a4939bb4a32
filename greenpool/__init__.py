"""greenpool: pools of pymemcache clients that are correct under gevent.

Interrupted commands (``gevent.Timeout``, kills) never leave a half-read reply
for the next user, waiters are served fairly and cooperatively, and forked
children never share their parent's connections. ``GreenletMappedPool`` lends
each greenlet one client for its life and takes it back when the greenlet ends.
"""

from greenpool.errors import PoolClosed, PoolError, PoolTimeout
from greenpool.factory import client_factory
from greenpool.mapped import GreenletMappedPool, MappedStats
from greenpool.pool import DEFAULT_MAXSIZE, DEFAULT_TIMEOUT, ClientPool, PoolStats, Reservation

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MAXSIZE",
    "DEFAULT_TIMEOUT",
    "ClientPool",
    "GreenletMappedPool",
    "MappedStats",
    "PoolClosed",
    "PoolError",
    "PoolStats",
    "PoolTimeout",
    "Reservation",
    "__version__",
    "client_factory",
]
