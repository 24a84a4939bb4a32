"""A process generation counter, bumped in the child after every fork.

A pool remembers the generation it was last used in. When a reservation sees a
newer one, the process has forked since: the pool's clients hold sockets the
parent is still using, and reading from them in the child would interleave two
processes' replies on one connection. The pool then forgets them and starts
afresh. ``os.register_at_fork`` runs for ``os.fork``, ``gevent.fork``,
multiprocessing's fork start method and gunicorn's workers alike, and comparing
one integer is cheaper on the hot path than calling ``os.getpid``.
"""

from __future__ import annotations

import os

#: Incremented in the child after each fork.
epoch = 0


def _after_fork_in_child() -> None:
    global epoch
    epoch += 1


os.register_at_fork(after_in_child=_after_fork_in_child)
