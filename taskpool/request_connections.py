"""Database connections of requests that Django's ASGI handler served: closed at their end.

Django's ASGI handler runs each request's synchronous code in a thread of
its own, which ends with the request. With ``CONN_MAX_AGE`` set, the
connection that thread opened is kept as a persistent connection for a
thread that never serves again, and stays open on the database until the
garbage collector finds it: a few dozen admin pages can hold as many
connections, and a busy site meets PostgreSQL's ``max_connections``. Closed
when the request finishes, they are not. (The pool's own requests under
``serve_pool`` run on threads that are kept, and keep their connections.)
"""

from __future__ import annotations

from typing import Any

from django.core.handlers.asgi import ASGIHandler
from django.db import connections


def close_after_asgi_request(sender: Any, **kwargs: Any) -> None:
    """``request_finished``: close this thread's connections if Django's ASGI handler served
    the request (its thread serves no other)."""
    if isinstance(sender, type) and issubclass(sender, ASGIHandler):
        connections.close_all()
