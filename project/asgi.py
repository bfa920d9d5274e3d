"""ASGI entry point: ``uvicorn project.asgi:application``.

``application`` serves taskpool's waiting endpoints (long-poll, stream) in
front of Django, so a waiting device holds no thread; ``django_application``
is Django alone, for comparison (see bench/realtime_load.py).
"""

import os

from django.core.asgi import get_asgi_application

from taskpool.asgi import serve_waiting

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

django_application = get_asgi_application()
application = serve_waiting(django_application, prefix="/pool/")
