"""ASGI entry point: ``uvicorn project.asgi:application``.

``application`` serves taskpool's requests in front of Django: the waiting
ones (long-poll, stream) in the event loop, so a waiting device holds no
thread, and the others on a fixed set of threads, as a WSGI server would;
the admin and the rest of the site go to Django's ASGI handler.
``django_application`` is Django alone, for comparison (see
bench/realtime_load.py).
"""

import gc
import os

from django.core.asgi import get_asgi_application

from taskpool.asgi import serve_pool

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django_application = get_asgi_application()
application = serve_pool(django_application, prefix="/pool/")

# A server holds thousands of waiting requests, and Python's cyclic collector
# walks every object that has lived long each time it looks at the oldest
# generation: a pause of a few hundred milliseconds on this kind of machine.
# What startup made never goes: freeze it. And look at the oldest generation
# ten times less often (700, 10, 10 by default). See docs/deployment.md.
gc.freeze()
gc.set_threshold(700, 10, 100)
