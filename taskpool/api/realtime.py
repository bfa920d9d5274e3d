"""The real-time endpoints, as async views: ``GET stream``, and the
long-poll ``GET pending?wait=S`` that ``taskpool.asgi`` serves without a thread.

Plain async Django views (DRF has no async views): they authenticate with the
API's own classes where Django runs database code (``taskpool.api.plain``),
read the store in worker threads, and hold no thread while they wait.
Django's ASGI handler still gives each open request a thread of its own;
``taskpool.asgi`` serves these views in front of Django, where no such thread
is made. Through Django itself, ``GET pending`` is the sync ``PendingView``
(with a blocking wait), so a plain poll never pays for an event loop under
WSGI; the stream works under WSGI (``runserver``) too, polling the pool from
the request's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIRequest
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponseBase, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import APIException, MethodNotAllowed, PermissionDenied

from taskpool import metrics
from taskpool.api import queries, views
from taskpool.api.admission import admissions
from taskpool.api.cycles import drf_request
from taskpool.api.plain import (
    as_asked_again,
    authenticate,
    error_response,
    in_django_thread,
    json_response,
    valid_query,
)
from taskpool.exceptions import InvalidCursor, PoolError
from taskpool.permissions import IsDevice, IsMasterOrDevice
from taskpool.principals import is_device
from taskpool.realtime import sse
from taskpool.realtime.longpoll import REAUTHENTICATE_AFTER_SECONDS, wait_for_pending
from taskpool.realtime.scope import Scope
from taskpool.realtime.stream import events, sync_events
from taskpool.stores import get_store
from taskpool.stores.base import BaseStore
from taskpool.ticker import ticker

_REFUSALS = (
    APIException,
    PoolError,
    DjangoPermissionDenied,
    SuspiciousOperation,
    # The database: one that does not answer is a 503, one not migrated a 500 naming the
    # migrate to run, and any other refusal a 500; all JSON.
    DatabaseError,
)


def served_by_event_loop(request: Any) -> bool:
    """Whether the request came through ASGI, where a streamed body must be an async iterator."""
    return isinstance(getattr(request, "_request", request), ASGIRequest)


async def long_poll(request: HttpRequest) -> HttpResponseBase:
    """The tasks pending for the device, as soon as there are any, or ``[]`` after ``wait`` seconds."""
    ticker.ensure_running()
    response = await _long_poll(request)
    metrics.count_request("pending", str(request.method), response.status_code)
    return response


async def _long_poll(request: HttpRequest) -> HttpResponseBase:
    try:
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowed(str(request.method))
        accepts_json(request)
        device = await in_django_thread(authenticate, request, IsDevice)
        query = valid_query(queries.PendingQuerySerializer, request)
        asked_at = time.monotonic()
        tasks = await wait_for_pending(
            get_store(), device.id, limit=query["limit"], seconds=query["wait"]
        )
        if tasks and (
            token_expired(device)
            or time.monotonic() - asked_at >= REAUTHENTICATE_AFTER_SECONDS
            and not await admissions().holds(device.id, device.user_session)
        ):
            # Its token expired or was revoked, or the device was invalidated, as it
            # waited: the refusal.
            await in_django_thread(authenticate, request, IsDevice)
    except _REFUSALS as error:
        return error_response(error, allow="GET, HEAD")
    return json_response(tasks)


def accepts_json(request: HttpRequest) -> None:
    """``NotAcceptable`` (406) where the request's ``Accept`` takes no JSON, as the plain poll
    (``PendingView``) answers it: the same request, through Django or not, gets one answer."""
    view = views.PendingView()
    # Http404: a ?format=, refused with the other parameters the endpoint does not take.
    with contextlib.suppress(Http404), drf_request(request) as asking:
        view.get_content_negotiator().select_renderer(asking, view.get_renderers())


async def stream(request: HttpRequest) -> HttpResponseBase:
    """Server-Sent Events: the caller's scope of the pool, replayed after a cursor, then live."""
    ticker.ensure_running()
    response = await _stream(request)
    metrics.count_request("stream", str(request.method), response.status_code)
    return response


async def _stream(request: HttpRequest) -> HttpResponseBase:
    try:
        if request.method != "GET":
            raise MethodNotAllowed(str(request.method))
        scope = await in_django_thread(stream_scope, request)
        query = valid_query(queries.StreamQuerySerializer, request)
        if query["all"]:
            wider = scope.asking_for_all()
            if wider is None:
                raise PermissionDenied("Only masters and admins may ask for all (all=1).")
            scope = wider
        store = get_store()
        # Fixed before answering: whatever is stored from now on is in the stream.
        start = await asyncio.to_thread(start_cursor, store, request, query.get("after"))
    except _REFUSALS as error:
        return error_response(error)
    admits = functools.partial(_still_admits, request, query["all"])
    if served_by_event_loop(request):
        content: Any = events(store, scope, start, admitted=_admission(request, admits))
    else:
        content = sync_events(store, scope, start, admitted=admits)
    response = StreamingHttpResponse(content, content_type=sse.MEDIA_TYPE)
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: pass each event on at once
    # A Content-Encoding of its own keeps the site's GZipMiddleware off the stream: its
    # compressor would hold the events back, never flushed between them.
    response["Content-Encoding"] = ""
    return response


def _admission(request: HttpRequest, admits: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    """How an event loop's stream asks whether its caller may still have it: a device
    through the loop's shared question (``admission``), then in full if that says no."""
    principal = request.user  # as authentication left it

    async def admitted() -> bool:
        if (
            is_device(principal)
            and not token_expired(principal)
            and await admissions().holds(principal.pk, principal.user_session)
        ):
            return True
        return await in_django_thread(admits)

    return admitted


def token_expired(principal: Any) -> bool:
    """Whether the device token a waiting request was admitted with has expired since: the
    shared question above asks of revocations only, which leave the token's time alone."""
    expires_at = getattr(principal, "token_expires_at", None)
    return isinstance(expires_at, int | float) and time.time() >= expires_at


def _still_admits(request: HttpRequest, wants_all: bool) -> bool:
    """Whether the stream's caller may still have it: its token, device, session and role,
    read again (a browser's stream ends once its user logs out or loses their role).

    A database that does not answer says nothing either way: the stream goes on.
    """
    try:
        scope = stream_scope(as_asked_again(request))
    except (APIException, DjangoPermissionDenied):
        return False
    except (OperationalError, InterfaceError):
        return True
    return not wants_all or scope.asking_for_all() is not None


def stream_scope(request: HttpRequest) -> Scope:
    """The caller's scope of the pool; 401 or 403 for those who get no stream.

    Refused callers are not noted as seen: a device not validated yet, or one
    invalidated, that keeps asking would otherwise show as online.
    """
    scope = Scope.of(authenticate(request, IsMasterOrDevice))
    assert scope is not None  # IsMasterOrDevice let only those with a scope in
    return scope


def start_cursor(store: BaseStore, request: HttpRequest, after: str | None) -> str | None:
    """Where a stream starts: after ``Last-Event-ID`` or ``?after=``, else at the pool's end."""
    header = request.headers.get("Last-Event-ID")
    cursor: str | None
    if header is not None:
        field = "Last-Event-ID"
        try:
            cursor = queries.checked_cursor_text(header)
        except InvalidCursor as error:
            raise InvalidCursor(error.message, field=field) from None
    else:
        field, cursor = "after", after
        if cursor is None:
            return store.end_cursor()
    try:
        store.check_cursor(cursor)
    except InvalidCursor as error:
        raise InvalidCursor(error.message, field=field) from None
    return cursor


# The OpenAPI schema -----------------------------------------------------------
# drf-spectacular documents a view through its ``cls``; this class only
# describes the stream view above and never serves a request.


class StreamSchema(views.PoolAPIView):
    @extend_schema(
        summary="Server-Sent Events: the caller's part of the pool, live",
        description=(
            "event: the message type; id: its cursor; data: the message. A device gets what "
            "changes its pending list, a master its tasks and their responses (every task and "
            "response with all=1), an admin everything. Last-Event-ID (or after) replays what "
            "came after that cursor, then goes live. A keep-alive comment every 15 s."
        ),
        parameters=[
            queries.StreamQuerySerializer,
            OpenApiParameter("Last-Event-ID", str, OpenApiParameter.HEADER),
        ],
        responses={(200, "text/event-stream"): OpenApiResponse(str), **views.ERRORS},
    )
    def get(self, request: Any) -> Any:  # pragma: no cover - documentation only
        raise NotImplementedError


def documented_as(view: Any, schema_class: type) -> Any:
    """``view`` (an async view), described in the OpenAPI schema by ``schema_class``.

    Exempt from Django's CSRF check, as DRF's views are: the view only reads,
    and answers any other method with the API's own 405, not Django's HTML
    403 page.
    """

    @csrf_exempt
    @functools.wraps(view)
    async def documented(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return await view(request, *args, **kwargs)

    documented.cls = schema_class  # type: ignore[attr-defined]
    documented.initkwargs = {}  # type: ignore[attr-defined]
    return documented
