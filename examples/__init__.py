"""greenpool's examples, importable so that ``gunicorn examples.wsgi_app:app`` finds them.

Importing :mod:`examples.wsgi_app` monkey-patches the process (it is a gevent
program); the tests only ever run it as a subprocess.
"""
