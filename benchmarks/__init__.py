"""greenpool side by side with the alternatives, as ratios from one run.

``make bench`` (or ``python -m benchmarks``) starts its own memcached processes
and runs, in alternating rounds: the pool's overhead; 500 and 5,000 greenlets
against greenpool's pools and clients (with and without autobatching),
pymemcache's PooledClient, dedicated clients, a connection per operation and
emcache (asyncio, in its own process, with and without autobatching); the
WSGI example under wrk with four ways of reaching memcached; and a hot key read
by 4 processes of 50 greenlets with and without get_or_compute (``herd``). It writes
``benchmarks/results/`` (results.md, chart.png, profile.txt, results.json)
and the tables of docs/benchmarks.rst and docs/stampede.rst. ``python -m
benchmarks --quick`` is a ~1 minute smoke run that writes to
``build/bench-quick/`` only.

Not part of the installed package: the wheel ships ``greenpool`` alone.
"""
