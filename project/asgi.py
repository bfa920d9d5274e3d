"""ASGI entry point: ``uvicorn project.asgi:application``.

``application`` serves taskpool's requests in front of Django: the waiting
ones (long-poll, stream) in the event loop, so a waiting device holds no
thread, and the others on a fixed set of threads, as a WSGI server would;
the admin and the rest of the site go to Django's ASGI handler.
``django_application`` is Django alone, for comparison (see
bench/realtime_load.py).
"""

import os

from django.core.asgi import get_asgi_application

from taskpool.asgi import serve_pool

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django_application = get_asgi_application()
application = serve_pool(django_application, prefix="/pool/")
