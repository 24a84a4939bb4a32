"""The example site's views: each uses the cache for several commands per request."""

import os
from typing import Any

from django.core.cache import cache, caches
from django.http import JsonResponse


def visits(request: Any, name: str) -> JsonResponse:
    """Count a visit to *name*: ``add`` creates the counter, ``incr`` is atomic,
    so concurrent visits get distinct numbers."""
    key = f"visits:{name}"
    cache.add(key, 0, timeout=None)
    return JsonResponse({"name": name, "visits": cache.incr(key)})


def echo(request: Any, token: str) -> JsonResponse:
    """Store a pickled value under *token*, read it back, and answer with it."""
    cache.set(f"echo:{token}", {"token": token, "pid": os.getpid()}, timeout=60)
    stored = cache.get_many([f"echo:{token}", "echo:never-set"])
    return JsonResponse({"token": token, "stored": stored.get(f"echo:{token}")})


def stats(request: Any) -> JsonResponse:
    """This worker's pid, its cache backend, and (greenpool's) its pools' stats."""
    backend = caches["default"]
    pool_stats = getattr(backend, "pool_stats", None)  # greenpool's backend has it
    pools = {} if pool_stats is None else pool_stats()
    name = f"{type(backend).__module__}.{type(backend).__name__}"
    return JsonResponse({"pid": os.getpid(), "backend": name, "pools": pools})
