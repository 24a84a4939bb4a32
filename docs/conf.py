"""Sphinx configuration of greenpool's documentation site (make docs)."""

from __future__ import annotations

import greenpool

project = "greenpool"
author = "greenpool's authors"
copyright = "greenpool's authors"
release = version = greenpool.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]
exclude_patterns = ["_build"]

# Every cross-reference must resolve: a name that moved or was misspelt fails
# the build (make docs runs with -W). What other projects define is not linked
# (no intersphinx: the build needs no network).
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(gevent|pymemcache|django|flask|flask_caching|cachelib|prometheus_client|ssl|socket|_thread|greenlet|collections|typing|types|logging|contextvars|concurrent)(\..*)?",
    ),
    (r"py:.*", r"Memcache\w*(Error|Exception)"),
    # type variables and private helpers in signatures
    (r"py:.*", r"greenpool\.(pool|mapped|batching)\.[CT]"),
    (r"py:.*", r"greenpool\.(\w+\.)*_\w+(\.\w+)*"),
    (r"py:.*", r"greenpool\.mapped\.MappedReservation"),
    (
        r"py:.*",
        r"(Any|Callable|Iterable|Iterator|Mapping|Sequence|TypeVar|C|T|K|V|Self|TracebackType|BaseException|Exception|object|int|float|str|bytes|bool|None|dict|list|tuple|type)",
    ),
]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
# Members greenpool defines or inherits from its own mixins; what pymemcache,
# Django, Flask-Caching or prometheus_client define is theirs to document.
autodoc_default_options = {"members": True, "inherited-members": True}


def _skip_foreign(
    app: object, what: str, name: str, obj: object, skip: bool, options: object
) -> bool | None:
    """Leave out members defined outside greenpool (pymemcache's commands, Django's API...)."""
    if getattr(obj, "__objclass__", None) in (dict, object):  # a TypedDict's dict methods
        return True
    module = getattr(obj, "__module__", None)
    if isinstance(module, str) and not module.startswith("greenpool"):
        return True
    return None


def setup(app: object) -> None:
    app.connect("autodoc-skip-member", _skip_foreign)  # type: ignore[attr-defined]


html_theme = "furo"
html_title = f"greenpool {release}"
html_static_path: list[str] = []
