"""The errors greenpool raises.

Every pool error derives from :class:`PoolError`, so one ``except`` clause
catches them all. Each message says what happened, names the pool, and names
the parameter involved.
"""

from __future__ import annotations

__all__ = ["PoolClosed", "PoolError", "PoolOverloaded", "PoolTimeout"]


class PoolError(Exception):
    """Raised when a pool cannot do what was asked; the base of the others."""


class PoolTimeout(PoolError):
    """Raised when no client became free within the reservation's *timeout*."""


class PoolClosed(PoolError):
    """Raised when a pool is used after :meth:`~greenpool.ClientPool.close`."""


class PoolOverloaded(PoolError):
    """Raised when *max_waiting* greenlets already wait, so this one may not."""
