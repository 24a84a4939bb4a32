"""A process generation counter, bumped in the child after every fork.

A pool remembers the generation it was last used in. When a reservation sees a
newer one, the process has forked since: the pool's clients hold sockets the
parent is still using, and reading from them in the child would interleave two
processes' replies on one connection. The pool then forgets them and starts
afresh. ``os.register_at_fork`` runs for ``os.fork``, ``gevent.fork``,
multiprocessing's fork start method and gunicorn's workers alike.

The hook only raises each live pool's ``_attention`` flag, which the hot path
tests anyway (it is also raised by ``close()``): one attribute load per
reservation instead of a call to ``os.getpid``. The pool does the real work
on its next use, outside the fork hook.
"""

from __future__ import annotations

import os
import weakref
from typing import Any

#: Incremented in the child after each fork.
epoch = 0
#: Every live pool, to be flagged in the child after a fork.
pools: weakref.WeakSet[Any] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    global epoch
    epoch += 1
    for pool in list(pools):
        pool._attention = True


os.register_at_fork(after_in_child=_after_fork_in_child)
