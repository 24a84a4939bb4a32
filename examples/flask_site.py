"""A minimal Flask app whose views use Flask-Caching, for ``gunicorn -k gevent``.

Its cache is ``greenpool.flask_caching.MemcachedCache``: every request greenlet
of a worker process shares one pool of at most ``$GREENPOOL_POOL_SIZE`` (8)
connections to the memcached at ``$GREENPOOL_MEMCACHED``. From the repository's
root, with the ``flask`` extra and gunicorn installed::

    GREENPOOL_MEMCACHED=127.0.0.1:11211 gunicorn -k gevent -w 2 examples.flask_site:app

``GREENPOOL_FLASK_BACKEND=stock`` serves the same views from Flask-Caching's
own ``MemcachedCache`` instead, for comparison (with python-memcached, whose
client is a ``threading.local``: under gevent, one per greenlet).

========================  ==================================================================
``GET /visits/<name>``    JSON ``{"name": ..., "visits": N}``: counts this visit (``inc``)
``GET /echo/<token>``     JSON ``{"token": ..., "stored": ...}``: stores a value and reads it back
``GET /square/<n>``       JSON ``{"n": n, "square": n * n}``, from a ``@cache.memoize()`` function
========================  ==================================================================
"""

import os

from flask import Flask, Response, jsonify
from flask_caching import Cache

STOCK = os.environ.get("GREENPOOL_FLASK_BACKEND") == "stock"

app = Flask(__name__)
app.config.update(
    CACHE_TYPE="MemcachedCache" if STOCK else "greenpool.flask_caching.MemcachedCache",
    CACHE_MEMCACHED_SERVERS=os.environ.get("GREENPOOL_MEMCACHED", "127.0.0.1:11211").split(","),
    CACHE_KEY_PREFIX="flask_site:",
    CACHE_OPTIONS={}
    if STOCK
    else {"max_pool_size": int(os.environ.get("GREENPOOL_POOL_SIZE", "8"))},
)
cache = Cache(app)


@app.get("/visits/<name>")
def visits(name: str) -> Response:
    """Count a visit to *name* (atomic with greenpool's backend, a get and a set
    with Flask-Caching's own)."""
    return jsonify(name=name, visits=cache.cache.inc(f"visits:{name}"))


@app.get("/echo/<token>")
def echo(token: str) -> Response:
    """Store a pickled value under *token*, read it back, and answer with it."""
    cache.set(f"echo:{token}", {"token": token, "pid": os.getpid()}, timeout=60)
    stored = cache.get_dict(f"echo:{token}", "echo:never-set")
    return jsonify(token=token, stored=stored[f"echo:{token}"])


@cache.memoize(timeout=60)
def square(n: int) -> int:
    """What the memoized function computes (once per *n* and minute)."""
    return n * n


@app.get("/square/<int:n>")
def squared(n: int) -> Response:
    """*n* and its square, computed once and then read from the cache."""
    return jsonify(n=n, square=square(n))
