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

# A server holds thousands of waiting requests, and each time Python's cyclic
# collector looks at its oldest generation it walks every object that has lived
# long: 300-450 ms on this kind of machine with 5,000 waiting requests a worker.
# With the default thresholds (700, 10, 10) that was every ten seconds or so
# under load; at 100 times less often, about every ten minutes at 5,000 devices,
# with some 100,000 objects of reference cycles waiting for it in between (a
# minute's worth, measured, was 8,000-12,000). What startup made never goes:
# freeze it, so that no look walks it. See docs/deployment.md.
gc.freeze()
gc.set_threshold(700, 10, 1000)
