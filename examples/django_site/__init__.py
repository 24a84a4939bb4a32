"""A minimal Django site whose views use the cache, for ``gunicorn -k gevent``.

Its cache is ``greenpool.django.MemcachedCache``: every request greenlet of a
worker process shares one pool of at most ``$GREENPOOL_POOL_SIZE`` (8)
connections to the memcached at ``$GREENPOOL_MEMCACHED``. From the repository's
root, with the ``django`` extra and gunicorn installed::

    GREENPOOL_MEMCACHED=127.0.0.1:11211 DJANGO_SETTINGS_MODULE=examples.django_site.settings \\
        gunicorn -k gevent -w 2 examples.django_site.wsgi:application

``GREENPOOL_DJANGO_BACKEND=stock`` serves the same views from Django's own
``PyMemcacheCache`` instead, for comparison (one connection per request).

========================  ==================================================================
``GET /visits/<name>``    JSON ``{"name": ..., "visits": N}``: counts this visit atomically
``GET /echo/<token>``     JSON ``{"token": ..., "stored": ...}``: stores a value and reads it back
``GET /_stats``           JSON: the worker's pid, its backend, and its pools' stats
========================  ==================================================================
"""
