"""What DRF gives its views, for the plain async Django views of the real-time endpoints.

DRF has no async views. These helpers let a plain view authenticate with the
API's own classes (device tokens, user tokens, the admin's session cookie),
check a DRF permission, validate a query string with a serializer, and answer
errors in the API's one shape, so the real-time endpoints behave exactly like
the others.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from importlib import import_module
from typing import Any, TypeVar

import orjson
from asgiref.sync import sync_to_async
from django.apps import apps
from django.conf import settings
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.utils.functional import SimpleLazyObject
from rest_framework import serializers
from rest_framework.exceptions import (
    AuthenticationFailed,
    MethodNotAllowed,
    NotAuthenticated,
    PermissionDenied,
)
from rest_framework.permissions import BasePermission

from taskpool.api.cycles import drf_request, validated
from taskpool.api.errors import exception_handler
from taskpool.api.views import PoolAPIView, note_seen

Result = TypeVar("Result")


def authenticate(request: HttpRequest, permission: type[BasePermission] | None = None) -> Any:
    """The principal the request authenticates as, once it passes ``permission``.

    Raises DRF's ``NotAuthenticated``, ``AuthenticationFailed`` or
    ``PermissionDenied``. Touches the database: from async code, call it
    through ``in_django_thread``.
    """
    _attach_session_user(request)
    authenticators = [authenticator() for authenticator in PoolAPIView.authentication_classes]
    with drf_request(request, authenticators=authenticators) as asking:
        principal = asking.user
        if not getattr(principal, "is_authenticated", False):
            raise NotAuthenticated()
        if permission is not None:
            check = permission()
            if not check.has_permission(asking, None):  # type: ignore[arg-type]  # no view here
                raise PermissionDenied(getattr(check, "message", None))
    note_seen(principal)
    return principal


async def in_django_thread(function: Callable[..., Result], *args: Any) -> Result:
    """``function(*args)``, run where Django runs thread-sensitive code, for database work.

    That is the request's own thread under Django's handler, the one thread
    Django keeps for such code behind ``taskpool.asgi`` (so a waiting request
    holds no thread), and the caller's thread under WSGI.
    """
    return await sync_to_async(_call_then_close)(function, *args)


def _call_then_close(function: Callable[..., Result], *args: Any) -> Result:
    try:
        return function(*args)
    finally:
        # Behind taskpool.asgi no request signal closes this thread's connections.
        close_old_connections()


def as_asked_again(request: HttpRequest) -> HttpRequest:
    """``request`` with its session and user read afresh, as a new request with its cookies
    would find them: logged out, or given another role, since it was first read."""
    again = copy.copy(request)
    for attribute in ("session", "user", "auser", "_cached_user"):
        again.__dict__.pop(attribute, None)
    _attach_session_user(again)
    return again


def _attach_session_user(request: HttpRequest) -> None:
    """``request.session`` and ``request.user`` as Django's middleware sets them, if it did not run."""
    if hasattr(request, "user"):
        return
    if not (
        apps.is_installed("django.contrib.sessions") and apps.is_installed("django.contrib.auth")
    ):
        return
    from django.contrib import auth

    engine = import_module(settings.SESSION_ENGINE)
    request.session = engine.SessionStore(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
    request.user = SimpleLazyObject(lambda: auth.get_user(request))  # type: ignore[assignment]


def valid_query(
    serializer_class: type[serializers.Serializer], request: HttpRequest
) -> dict[str, Any]:
    """The request's query string, validated (``ValidationError`` otherwise)."""
    return validated(serializer_class, request.GET)


def error_response(error: Exception, *, allow: str = "GET") -> HttpResponse:
    """The API's JSON error for a DRF, Django or pool error; anything else is raised again.

    ``allow``: the methods the view takes, sent with a 405 as HTTP asks.
    """
    if isinstance(error, NotAuthenticated | AuthenticationFailed):
        first = PoolAPIView.authentication_classes[0]()
        error.auth_header = first.authenticate_header(None)  # type: ignore[arg-type,union-attr]
    response = exception_handler(error, {})
    if response is None:
        raise error
    answer = json_response(response.data, status=response.status_code)
    for header in ("WWW-Authenticate", "Retry-After"):
        if header in response:
            answer[header] = response[header]
    if isinstance(error, MethodNotAllowed):
        answer["Allow"] = allow
    return answer


def json_response(data: Any, *, status: int = 200) -> HttpResponse:
    """JSON as the API's renderer writes it."""
    return HttpResponse(orjson.dumps(data), status=status, content_type="application/json")
