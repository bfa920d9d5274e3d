"""An ASGI front for taskpool: a waiting request holds no thread, a short one makes none.

Django's ASGI handler runs each request inside a ``ThreadSensitiveContext``,
which gives it a thread of its own for as long as it is open, idle while an
async view awaits: 1,000 waiting devices would be 1,000 threads. Wrap the
site's application to serve ``GET pending?wait=…`` (and its ``HEAD``) and ``GET stream``
from here instead, with the same views (``taskpool.api.realtime``), the same
authentication and the same store, and pass every other request to Django::

    # asgi.py
    from django.core.asgi import get_asgi_application
    from taskpool.asgi import serve_waiting

    application = serve_waiting(get_asgi_application())

Database work (authentication) runs on the one thread Django keeps for
thread-sensitive code; the store is read in the event loop's worker threads.

Django's middleware does not run for these two requests. What of it matters
before the view is done here: the ``Host`` header is checked against
``ALLOWED_HOSTS`` as Django checks it (a 400, logged to
``django.security.DisallowedHost``), and the views read the session cookie
themselves. The real-time docs (docs/realtime.md) list what else the site's
middleware would have done.

``serve_pool`` does that and also serves the pool's other requests (a
heartbeat, an answer, a task posted) the way a WSGI server would: Django's
handler with the site's whole middleware loaded for synchronous code, on a
fixed set of threads that keep their database connections. Django's ASGI
handler makes a thread for every request and moves between it and the event
loop once per middleware that is not async-capable; on a 2-core machine that
is most of what a device's request costs. Every other request (the admin,
the site's own pages) goes to ``app`` as before::

    application = serve_pool(get_asgi_application())
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from typing import Any
from urllib.parse import parse_qsl

from asgiref.sync import sync_to_async
from django.http import HttpResponseBase

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

logger = logging.getLogger("django.request")


class WaitingEndpoints:
    """Serves taskpool's long-poll and stream itself, the pool's other requests on
    ``threaded`` if given; every other request goes to ``app``.

    ``prefix`` is where ``taskpool.urls`` is included (``/pool/``); by
    default it is found with ``reverse()`` at the first request.
    """

    def __init__(
        self, app: ASGIApp, prefix: str | None = None, threaded: ThreadedRequests | None = None
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.threaded = threaded
        self._paths: tuple[str, str] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        view = self._view_for(scope)
        if view is not None:
            await self._serve(view, scope, receive, send)
        elif self.threaded is not None and self._in_pool(scope):
            await self.threaded(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _in_pool(self, scope: Scope) -> bool:
        pending_path, _stream_path = self._paths or self._find_paths()
        return _app_path(scope).startswith(pending_path.removesuffix("pending"))

    def _view_for(self, scope: Scope) -> Callable[[Any], Awaitable[HttpResponseBase]] | None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            return None
        pending_path, stream_path = self._paths or self._find_paths()
        path = _app_path(scope)
        from taskpool.api import realtime  # needs the apps loaded: not at import time

        if path == stream_path and method == "GET":
            return realtime.stream
        # A HEAD waits as its GET would: on a thread of ``threaded``, a few would hold them all.
        if path == pending_path and any(
            name == "wait" for name, _ in parse_qsl(scope["query_string"].decode("latin-1"), True)
        ):
            return realtime.long_poll
        return None

    def _find_paths(self) -> tuple[str, str]:
        if self.prefix is not None:
            paths = (f"{self.prefix}pending", f"{self.prefix}stream")
        else:
            from django.urls import reverse

            paths = (reverse("taskpool:pending"), reverse("taskpool:stream"))
        self._paths = paths
        return paths

    async def _serve(
        self,
        view: Callable[[Any], Awaitable[HttpResponseBase]],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        from django.core.handlers.asgi import ASGIRequest

        from taskpool.api.cycles import release_request

        request = ASGIRequest(scope, io.BytesIO())
        refusal = await _disallowed_host(request)
        if refusal is not None:
            await _send_response(refusal, send)
            return
        answering = asyncio.ensure_future(self._answer(view, request, send))
        leaving = asyncio.ensure_future(_disconnect(receive))
        try:
            await asyncio.wait({answering, leaving}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # A client that left cancels the view: its waiter is released in ``finally``.
            for task in (answering, leaving):
                task.cancel()
            await asyncio.gather(answering, leaving, return_exceptions=True)
            release_request(request)

    async def _answer(
        self, view: Callable[[Any], Awaitable[HttpResponseBase]], request: Any, send: Send
    ) -> None:
        try:
            response = await view(request)
        except Exception:
            logger.exception("Internal Server Error: %s", request.path)
            from taskpool.api.plain import json_response

            response = json_response({"detail": "Internal server error."}, status=500)
        await _send_response(response, send)


class ThreadedRequests:
    """Django's handler as a WSGI server runs it, on ``threads`` threads of its own.

    The request's body is read in the event loop, then one thread runs the
    site's middleware and the view and renders the answer, which the event
    loop sends: one move between threads a request. The threads are kept,
    and so are their database connections (``CONN_MAX_AGE``), which Django
    closes at the request's end as it does under WSGI. Streamed answers are
    sent by the event loop as they are under Django's ASGI handler.
    """

    def __init__(self, threads: int) -> None:
        from django.core.handlers.base import BaseHandler

        self.handler = BaseHandler()
        self.handler.load_middleware(is_async=False)
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="taskpool")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client left before it had sent its request
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self.executor, self._respond, scope, body)
        try:
            # A streamed body is an async iterator under ASGI (see taskpool.admin.downloads).
            await _send_response(response, send)
        finally:
            if response.streaming:
                await loop.run_in_executor(self.executor, response.close)  # request_finished

    def _respond(self, scope: Scope, body: bytes) -> HttpResponseBase:
        from django.core import signals
        from django.core.handlers.asgi import ASGIRequest
        from django.urls import set_script_prefix

        from taskpool.api.cycles import release_request

        set_script_prefix(scope.get("root_path", "") or "/")
        signals.request_started.send(sender=self.__class__, scope=scope)
        request = ASGIRequest(scope, io.BytesIO(body))
        response = self.handler.get_response(request)
        response._handler_class = self.__class__  # type: ignore[attr-defined]  # as Django does
        if not response.streaming:  # rendered by the handler already
            response.close()  # request_finished, in the thread whose connections it closes
            release_request(request)
        return response


async def _read_body(receive: Receive) -> bytes | None:
    """The request's body, or None if the client disconnected first.

    Past ``DATA_UPLOAD_MAX_MEMORY_SIZE`` the rest is read and dropped: what
    is kept is still too long, so Django refuses it as it would.
    """
    from django.conf import settings

    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        part = message.get("body", b"")
        if limit is None or size <= limit:
            parts.append(part)
            size += len(part)
        if not message.get("more_body", False):
            return b"".join(parts)


def _app_path(scope: Scope) -> str:
    path: str = scope["path"]
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path


async def _disallowed_host(request: Any) -> HttpResponseBase | None:
    """Django's answer to a ``Host`` not in ``ALLOWED_HOSTS`` (as ``CommonMiddleware`` gives it)."""
    from django.core.exceptions import DisallowedHost
    from django.core.handlers.exception import response_for_exception

    try:
        request.get_host()
    except DisallowedHost as error:
        return await sync_to_async(response_for_exception, thread_sensitive=False)(request, error)
    return None


async def _disconnect(receive: Receive) -> None:
    """Return when the client has gone."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_response(response: HttpResponseBase, send: Send) -> None:
    if not response.streaming and not response.has_header("Content-Length"):
        response["Content-Length"] = str(len(response.content))  # type: ignore[attr-defined]
    headers = [
        (name.encode("latin-1"), value.encode("latin-1")) for name, value in response.items()
    ]
    headers += [
        (b"Set-Cookie", cookie.output(header="").encode("latin-1").strip())
        for cookie in response.cookies.values()
    ]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if response.streaming:
        async with aclosing(aiter(response)) as parts:  # type: ignore[arg-type,var-annotated]
            async for part in parts:
                await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    else:
        await send({"type": "http.response.body", "body": response.content})  # type: ignore[attr-defined]


def serve_waiting(app: ASGIApp, prefix: str | None = None) -> WaitingEndpoints:
    """``app`` with taskpool's waiting endpoints served in front of it (see the module docstring)."""
    return WaitingEndpoints(app, prefix)


def serve_pool(app: ASGIApp, prefix: str | None = None, threads: int = 8) -> WaitingEndpoints:
    """``app`` with every taskpool request served in front of it: the waiting ones in the
    event loop, the others on ``threads`` threads (see the module docstring)."""
    return WaitingEndpoints(app, prefix, ThreadedRequests(threads))
