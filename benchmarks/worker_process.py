"""``python -m benchmarks.worker_process gevent|asyncio``: one worker process.

The gevent worker runs greenpool and pymemcache (:mod:`benchmarks.gevent_side`,
:mod:`benchmarks.overhead`, :mod:`benchmarks.herd_side`), the asyncio worker runs emcache
(:mod:`benchmarks.asyncio_side`); both answer requests as
:func:`benchmarks.workers.serve` says, and raise their descriptor limit first:
5,000 dedicated clients need 5,000 descriptors. A gevent worker imports only
greenpool's own dependencies, so that it may run in a venv without extras.
"""

from __future__ import annotations

import sys

from benchmarks.workers import raise_open_files, serve


def main(kind: str) -> None:
    raise_open_files()
    if kind == "gevent":
        from benchmarks import gevent_side, herd_side, overhead

        serve(
            {
                "preload": gevent_side.preload,
                "round": gevent_side.run_round,
                "overhead": overhead.overhead,
                "profile": overhead.profile,
                "herd": herd_side.run,
            }
        )
    elif kind == "asyncio":
        from benchmarks import asyncio_side

        serve({"round": asyncio_side.run_round})
    else:
        raise SystemExit(f"usage: python -m benchmarks.worker_process gevent|asyncio, not {kind!r}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "")
