"""Settings of the example site: no database, no apps, one cache.

``$GREENPOOL_MEMCACHED`` is Django's LOCATION (``host:port``, several
separated by commas); ``$GREENPOOL_POOL_SIZE`` the pool's ``max_pool_size``;
``$GREENPOOL_DJANGO_BACKEND=stock`` selects Django's ``PyMemcacheCache``.
"""

import os

SECRET_KEY = "the example site keeps no secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "examples.django_site.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE: list[str] = []
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True

POOL_SIZE = int(os.environ.get("GREENPOOL_POOL_SIZE", "8"))
STOCK = os.environ.get("GREENPOOL_DJANGO_BACKEND") == "stock"

CACHES = {
    "default": {
        "BACKEND": (
            "django.core.cache.backends.memcached.PyMemcacheCache"
            if STOCK
            else "greenpool.django.MemcachedCache"
        ),
        "LOCATION": os.environ.get("GREENPOOL_MEMCACHED", "127.0.0.1:11211"),
        "KEY_PREFIX": "django_site",
        "OPTIONS": {} if STOCK else {"max_pool_size": POOL_SIZE, "pool_timeout": 10.0},
    }
}
