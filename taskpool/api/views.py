"""The REST endpoints. Each view parses its input, asks the store, serialises."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import DatabaseError, connections, router
from django.http import Http404, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.generics import GenericAPIView
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings as drf_settings
from rest_framework.views import APIView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from taskpool import metrics
from taskpool.api import queries
from taskpool.api import serializers as api
from taskpool.api.cycles import release_after_rendering, represented, validated
from taskpool.api.errors import error_body, exception_handler
from taskpool.api.filters import DeviceFilter, FilterBackendWithoutCycles, filter_parameters
from taskpool.api.parsers import StrictJSONParser, refuse_body_of_unknown_length
from taskpool.api.renderers import JSONRenderer
from taskpool.api.throttles import LoginThrottle
from taskpool.authentication import (
    CookieSessionAuthentication,
    DeviceJWTAuthentication,
    UserJWTAuthentication,
)
from taskpool.conf import pool_settings
from taskpool.device_queries import record_last_seen
from taskpool.exceptions import InvalidCursor, NotAddressed
from taskpool.fleet import device_rows, validated_device_ids
from taskpool.messages import IDEMPOTENCY_KEY_RE
from taskpool.models import DeviceUser
from taskpool.permissions import HasRole, IsDevice, IsMasterOrAddressedDevice
from taskpool.principals import address_of, is_device
from taskpool.realtime.longpoll import REAUTHENTICATE_AFTER_SECONDS, wait_for_pending_in_thread
from taskpool.realtime.scope import as_seen_by_device, seen_by_device
from taskpool.stores import get_store
from taskpool.ticker import ticker
from taskpool.tokens import DeviceToken

ERROR_DESCRIPTIONS = {
    400: "Malformed body or parameter.",
    401: "Missing, invalid, expired or revoked token.",
    403: "Not allowed for this principal.",
    404: "No such task in the TASK_TTL horizon.",
    406: "An Accept header that rules out JSON.",
    409: "The task's state refuses it: already answered, cancelled, expired, held by another.",
    411: "A body sent without Content-Length (chunked), which is not read.",
    413: "The body or the message is over MAX_MESSAGE_BYTES.",
    415: "The body is not application/json.",
    422: "An Idempotency-Key reused for a different request.",
    503: "The store or a database cannot serve the request now (a failing disk, a data "
    "directory missing, a database that does not answer): retry after the seconds its "
    "Retry-After gives.",
    507: "The store has no room for the write (a full disk): retry after the seconds its "
    "Retry-After gives.",
}


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """The error answers of an endpoint: 400, 401, 403, 406 and 503, and ``codes``.

    Every endpoint reads the store or a database (the principal's user), so any
    may find one not answering.
    """
    return {
        code: OpenApiResponse(api.ErrorSerializer, description=ERROR_DESCRIPTIONS[code])
        for code in sorted({400, 401, 403, 406, 503, *codes})
    }


#: What every endpoint may answer with an error.
ERRORS = errors()
#: What an endpoint that stores a message may answer besides.
WRITE_ERRORS = errors(411, 413, 415, 507)

#: Sent with every 429, 503 and 507; ``PoolSchema`` adds it to every endpoint's.
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    OpenApiParameter.HEADER,
    response=[429, 503, 507],
    description="Seconds after which a retry may succeed.",
)


class StrictQueryMixin:
    """A DRF view whose query string is its ``query_serializer_class``'s; errors always JSON.

    A body must come with its length (``refuse_body_of_unknown_length``).

    The validated parameters are ``self.query``. An unknown parameter is a
    400 naming it, checked once the caller is known (a 401 or 403 first).
    """

    query_serializer_class: type[serializers.Serializer] = queries.NoQuerySerializer

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        self.query = validated(self.query_serializer_class, request.query_params)
        refuse_body_of_unknown_length(request)

    def get_exception_handler(self) -> Any:
        return exception_handler

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        try:
            return super().perform_content_negotiation(request, force)  # type: ignore[misc]
        except Http404:
            # DRF's answer to a ?format= no renderer has: a 404 with no words. It is a
            # bad parameter, refused as any other.
            name = drf_settings.URL_FORMAT_OVERRIDE
            if name in self.query_serializer_class().fields:
                # Each format once: the schema has two renderers each for YAML and JSON.
                formats = ", ".join(dict.fromkeys(r.format for r in self.get_renderers()))  # type: ignore[attr-defined]
                message = f"Must be one of: {formats}."
            else:
                message = "Unknown query parameter."
            raise serializers.ValidationError({name: [message]}) from None

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response) and (
            response.status_code >= 400 or request.method == "OPTIONS"
        ):
            # Errors, and OPTIONS's description of the endpoint, are JSON, also where the
            # endpoint answers in another format (the docs page's template renders no
            # description: it was a 500).
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)  # type: ignore[misc]


class PoolSchema(AutoSchema):
    """drf-spectacular's schema, describing an endpoint by its view's own docstring only.

    drf-spectacular falls back on the base classes' docstrings: a view without
    one would be described, in the published API reference, by what
    ``PoolAPIView`` is for in the code. Its summary says what it does.
    """

    def get_description(self) -> str:  # type: ignore[override]  # drf-spectacular's, not DRF's
        if not vars(type(self.view)).get("__doc__"):
            return ""
        return super().get_description()

    def get_override_parameters(self) -> list[Any]:
        """The view's own, and the ``Retry-After`` header of its 429, 503 and 507 answers."""
        return [*super().get_override_parameters(), RETRY_AFTER]


class PoolAPIView(StrictQueryMixin, APIView):
    """What every taskpool endpoint shares: authentication, strict JSON, one error shape."""

    # Device tokens first, so a device's bad token is a 401, and so that the
    # first class sends WWW-Authenticate (DRF answers 401 only then).
    authentication_classes = [
        DeviceJWTAuthentication,
        UserJWTAuthentication,
        CookieSessionAuthentication,
    ]
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]
    # The site's DEFAULT_THROTTLE_CLASSES are for its own API: the pool's endpoints
    # throttle only where they say so (the login, enrollment).
    throttle_classes: list[Any] = []
    schema = PoolSchema()

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        ticker.ensure_running()  # this process keeps time for jobs from its first request on
        super().initial(request, *args, **kwargs)

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        # A 201 stored a message from the caller, with its time: the pool itself says
        # when a device was last heard from, and its row need not be written too.
        if response.status_code < 400 and response.status_code != status.HTTP_201_CREATED:
            note_seen(request.user)
        count_request(request, response)
        if isinstance(response, Response):
            release_after_rendering(self, request, response)
        return response

    def valid(self, serializer_class: type[serializers.Serializer], data: Any) -> dict[str, Any]:
        return validated(serializer_class, data)


def count_request(request: Any, response: Any) -> None:
    """One request in the metrics, under its URL's name (``pending``, ``task-detail`` ...)."""
    match = getattr(request, "resolver_match", None)
    endpoint = match.url_name if match is not None and match.url_name else "other"
    metrics.count_request(endpoint, request.method, response.status_code)


def note_seen(principal: Any) -> None:
    """Record a device's accepted request, at most once per ``LAST_SEEN_INTERVAL``.

    Not called for a request that stored a message from the device (a 201):
    the fleet's views take the later of this and the device's last message.
    """
    if not is_device(principal):
        return
    now = timezone.now()
    if principal.last_seen is None or now - principal.last_seen >= pool_settings.LAST_SEEN_INTERVAL:
        try:
            record_last_seen(principal.pk, now)
        except DatabaseError as error:
            if connections[router.db_for_write(type(principal))].in_atomic_block:
                raise  # the site's transaction is marked for rollback: not ours to hide
            # A figure for the fleet's pages, never a reason to refuse what the request
            # got (a read-only or failing database refuses the write; the next one tries).
            logging.getLogger("taskpool").warning(
                "last_seen of %s not written: %s", principal.pk, error
            )
            return
        principal.last_seen = now


def device_id(request: Request) -> str:
    """The calling device's id (once ``IsDevice`` or a device check let it in)."""
    return str(request.user.pk)


def idempotency_key(request: Request) -> str | None:
    """The ``Idempotency-Key`` header: 1 to 128 visible ASCII characters but a comma, or absent.

    WSGI and ASGI servers hand a header sent twice to Django as one, its values
    joined with a comma: ``a`` and ``b`` would be the one key ``a,b``. Which key
    the client meant is not for the server to guess (as for a query parameter
    given twice), and a key with a comma cannot be told from two.
    """
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    if "," in key:
        raise serializers.ValidationError(
            {
                "Idempotency-Key": [
                    "Given more than once, or holds a comma (how a repeated header arrives): "
                    "send one key, without commas."
                ]
            }
        )
    if not IDEMPOTENCY_KEY_RE.fullmatch(key):
        raise serializers.ValidationError(
            {"Idempotency-Key": ["Must be 1 to 128 visible ASCII characters."]}
        )
    return key


def created_or_replayed(created: bool) -> int:
    return status.HTTP_201_CREATED if created else status.HTTP_200_OK


IDEMPOTENCY_PARAMETER = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="1 to 128 visible ASCII characters but a comma, sent once. A retry with the "
    "same key returns the first stored message (200).",
)


class PendingView(PoolAPIView):
    """A poll answers at once; with ``wait``, it is held until a task comes or the time passes.

    This view holds a waiting request in its own thread. A site wrapped with
    ``taskpool.asgi.serve_pool`` (or ``serve_waiting``) answers ``wait``
    requests in front of Django instead, without a thread each.
    """

    permission_classes = [IsDevice]
    query_serializer_class = queries.PendingQuerySerializer

    @extend_schema(
        summary="Tasks pending for the calling device, oldest first; with wait, a long-poll",
        parameters=[queries.PendingQuerySerializer],
        responses={200: api.MessageSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        store = get_store()
        if "wait" not in self.query:
            return Response(store.pending_for(device_id(request), limit=self.query["limit"]))
        asked_at = time.monotonic()
        tasks = wait_for_pending_in_thread(
            store, device_id(request), limit=self.query["limit"], seconds=self.query["wait"]
        )
        if tasks and time.monotonic() - asked_at >= REAUTHENTICATE_AFTER_SECONDS:
            # Its token may have been revoked, or the device invalidated, as it waited.
            self.check_permissions(
                Request(request._request, authenticators=self.get_authenticators())
            )
        return Response(tasks)


class ResponseView(PoolAPIView):
    permission_classes = [IsDevice]

    @extend_schema(
        summary="Answer a task: progress, done, failed or rejected",
        request=api.ResponseRequestSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: api.MessageSerializer,
            200: api.MessageSerializer,
            **WRITE_ERRORS,
            **errors(404, 409, 422),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.valid(api.ResponseRequestSerializer, request.data)
        posted = get_store().post_response(
            device_id=device_id(request), idempotency_key=idempotency_key(request), **data
        )
        return Response(posted.message, status=created_or_replayed(posted.created))


class HeartbeatView(PoolAPIView):
    permission_classes = [IsDevice]

    @extend_schema(
        summary="Tell the backend the device is alive",
        request=api.HeartbeatRequestSerializer,
        responses={201: api.MessageSerializer, **WRITE_ERRORS},
    )
    def post(self, request: Request) -> Response:
        data = self.valid(api.HeartbeatRequestSerializer, request.data)
        message = get_store().post_heartbeat(device_id=device_id(request), **data)
        return Response(message, status=status.HTTP_201_CREATED)


class TaskView(PoolAPIView):
    permission_classes = [HasRole.at_least("master")]

    @extend_schema(
        summary="Post a task to one device, a list, or all of them",
        request=api.TaskRequestSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: api.MessageSerializer,
            200: api.MessageSerializer,
            **WRITE_ERRORS,
            **errors(422),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.valid(api.TaskRequestSerializer, request.data)
        posted = get_store().post_task(
            sender=address_of(request.user), idempotency_key=idempotency_key(request), **data
        )
        return Response(posted.message, status=created_or_replayed(posted.created))


class DevicesView(PoolAPIView, GenericAPIView):
    """Each registered device, or those of a kind, validated or not."""

    permission_classes = [HasRole.at_least("admin")]
    queryset = DeviceUser.objects.all()
    filter_backends = [FilterBackendWithoutCycles]
    filterset_class = DeviceFilter
    query_serializer_class = filter_parameters(DeviceFilter)
    pagination_class = None

    @extend_schema(
        summary="Registered devices with their activity and pending count",
        responses={200: api.DeviceRowSerializer(many=True), **ERRORS},
    )
    def get(self, request: Request) -> Response:
        devices = list(self.filter_queryset(self.get_queryset()))
        return Response(device_rows(devices))


class TaskDetailView(PoolAPIView):
    permission_classes = [IsMasterOrAddressedDevice]

    @extend_schema(
        summary="A task, its responses in pool order, and one execution per addressed device",
        responses={200: api.TaskDetailSerializer, **errors(404)},
    )
    def get(self, request: Request, task_id: str) -> Response:
        store = get_store()
        detail = store.task_detail(task_id)
        if not is_device(request.user):
            registered = validated_device_ids() if detail.state.audience.everyone else []
            responses = detail.responses
            executions = detail.executions(registered, store.now())
        else:
            # A device reads its own part of the task: not what the others answered, nor
            # which devices the fleet has.
            me = device_id(request)
            if not detail.state.audience.includes(me):
                raise NotAddressed(f"Task {task_id} is not addressed to device {me}.")
            any_one = detail.task["meta"].get("mode") == "any"
            responses = [
                as_seen_by_device(r, me) for r in detail.responses if seen_by_device(r, me, any_one)
            ]
            executions = [detail.state.execution(me, store.now())]
        return Response(
            {
                "task": detail.task,
                "responses": responses,
                "executions": executions,
                "claimed_by": detail.state.claimer,
            }
        )


class TaskListView(PoolAPIView):
    permission_classes = [HasRole.at_least("master")]
    query_serializer_class = queries.TaskListQuerySerializer

    @extend_schema(
        summary="Recent tasks, newest first, filtered and paged",
        operation_id="tasks_list",
        parameters=[queries.TaskListQuerySerializer],
        responses={200: api.TaskPageSerializer, **ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = self.query
        try:
            page = get_store().recent_tasks(
                queries.task_query(query),
                before=query.get("before"),
                limit=query["limit"],
                registered_devices=validated_device_ids(),
            )
        except InvalidCursor as error:
            raise InvalidCursor(error.message, field="before") from None
        return Response(
            {
                "results": [
                    {"task": summary.task, "statuses": sorted(summary.statuses)}
                    for summary in page.results
                ],
                "next_cursor": page.next_cursor,
                "has_more": page.has_more,
            }
        )


class CancelView(PoolAPIView):
    permission_classes = [HasRole.at_least("master")]

    @extend_schema(
        summary="Cancel a task on every device",
        request=api.CancelRequestSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: api.MessageSerializer,
            200: api.MessageSerializer,
            **WRITE_ERRORS,
            **errors(404, 409, 422),
        },
    )
    def post(self, request: Request, task_id: str) -> Response:
        data = self.valid(api.CancelRequestSerializer, request.data)
        posted = get_store().cancel(
            sender=address_of(request.user),
            task_id=task_id,
            idempotency_key=idempotency_key(request),
            **data,
        )
        return Response(posted.message, status=created_or_replayed(posted.created))


class ClaimView(PoolAPIView):
    permission_classes = [IsDevice]

    @extend_schema(
        summary="Claim the named, or the oldest claimable, any-one task",
        request=api.ClaimRequestSerializer,
        parameters=[IDEMPOTENCY_PARAMETER],
        responses={
            201: api.ClaimSerializer,
            200: api.ClaimSerializer,
            204: OpenApiResponse(description="Nothing to claim."),
            **WRITE_ERRORS,
            **errors(404, 409, 422),
        },
    )
    def post(self, request: Request) -> Response:
        data = self.valid(api.ClaimRequestSerializer, request.data)
        claim = get_store().claim(
            device_id=device_id(request), idempotency_key=idempotency_key(request), **data
        )
        if claim is None:
            return Response(status=status.HTTP_204_NO_CONTENT)
        return Response(
            {"task": claim.task, "claim": claim.claim}, status=created_or_replayed(claim.created)
        )


class DeviceTokenView(PoolAPIView):
    """The calling device's token, renewed: the same device and session, a new lifetime.

    The token the request is made with keeps working until it expires; rotating the
    device's session (``taskpool_device --token``, the admin) ends both, and a token
    that no longer works cannot be renewed.
    """

    permission_classes = [IsDevice]

    @extend_schema(
        summary="A new token for the calling device, living DEVICE_TOKEN_LIFETIME",
        request=api.DeviceTokenRenewalRequestSerializer,
        responses={200: api.RenewedDeviceTokenSerializer, **errors(411, 413, 415)},
    )
    def post(self, request: Request) -> Response:
        self.valid(api.DeviceTokenRenewalRequestSerializer, request.data)
        device = request.user
        assert is_device(device)  # IsDevice let it in
        token = DeviceToken.for_device(device)
        renewed = represented(
            api.RenewedDeviceTokenSerializer, {"token": str(token), "expires_at": token.expires_at}
        )
        response = Response(renewed)
        response["Cache-Control"] = "no-store"
        return response


class TokenObtainView(StrictQueryMixin, TokenObtainPairView):
    """User login: a simplejwt access and refresh pair."""

    serializer_class = api.LoginSerializer
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]
    throttle_classes = [LoginThrottle]
    schema = PoolSchema()

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"  # it carries tokens
        count_request(request, response)
        return response

    @extend_schema(
        summary="Log in: an access and a refresh token",
        request=api.LoginSerializer,
        responses={
            200: api.TokenPairSerializer,
            **errors(413, 415),
            429: OpenApiResponse(
                api.ErrorSerializer, description="Too many logins from this address."
            ),
        },
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)


class TokenRefreshPairView(StrictQueryMixin, TokenRefreshView):
    """A new access token for a refresh token."""

    serializer_class = api.RefreshSerializer
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]
    throttle_classes: list[Any] = []  # as PoolAPIView
    schema = PoolSchema()

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        response = super().finalize_response(request, response, *args, **kwargs)
        response["Cache-Control"] = "no-store"  # it carries tokens
        count_request(request, response)
        return response

    @extend_schema(
        summary="A new access token for a refresh token",
        request=api.RefreshSerializer,
        responses={200: api.AccessTokenSerializer, **errors(413, 415)},
    )
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().post(request, *args, **kwargs)


@csrf_exempt  # a wrong POST is a 404 like any other, not CSRF's HTML 403
def not_found(request: Any, *args: Any, **kwargs: Any) -> JsonResponse:
    """A clean JSON 404 for any other path under the pool's prefix."""
    response = JsonResponse(error_body("Not found."), status=404)
    count_request(request, response)
    return response
