"""``POST enroll`` and ``GET enroll/<id>``: devices that join by themselves, without a token.

The rules (who may enroll, the secret, the token handed out once) are in
``taskpool.enrollment``; these views parse, call them and serialise.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from taskpool import enrollment
from taskpool.api import serializers as api
from taskpool.api.cycles import represented
from taskpool.api.throttles import EnrollmentThrottle
from taskpool.api.views import PoolAPIView, errors, idempotency_key

ENROLLMENT_KEY = OpenApiParameter(
    "Enrollment-Key",
    str,
    OpenApiParameter.HEADER,
    description="The site's enrollment key, where TASKPOOL['ENROLLMENT_KEY'] sets one.",
)
REQUEST_KEY = OpenApiParameter(
    "Idempotency-Key",
    str,
    OpenApiParameter.HEADER,
    description="At least 32 characters the device keeps: asked again with it (a lost answer), "
    "the same request gets the same enrollment_secret until the token is collected.",
)
ENROLLMENT_SECRET = OpenApiParameter(
    "Enrollment-Secret",
    str,
    OpenApiParameter.HEADER,
    required=True,
    description="The enrollment_secret that POST enroll answered.",
)
THROTTLED = OpenApiResponse(
    api.ErrorSerializer, description="Too many enrollment requests from this address."
)


class EnrollView(PoolAPIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = [EnrollmentThrottle]

    @extend_schema(
        summary="Ask to join the fleet: staff validate the device, then it collects its token",
        request=api.EnrollRequestSerializer,
        parameters=[ENROLLMENT_KEY, REQUEST_KEY],
        responses={
            202: api.EnrollmentSerializer,
            400: errors()[400],
            403: OpenApiResponse(
                api.ErrorSerializer, description="Enrollment is off, or a wrong Enrollment-Key."
            ),
            409: OpenApiResponse(
                api.ErrorSerializer, description="The device id is already registered."
            ),
            **errors(413, 415, 422),
            429: THROTTLED,
        },
        auth=[],
    )
    def post(self, request: Request) -> Response:
        enrollment.check_enrollment_key(request.headers.get("Enrollment-Key"))
        data = self.valid(api.EnrollRequestSerializer, request.data)
        secret = enrollment.request_enrollment(
            data["device_id"],
            kind=data["kind"],
            meta=data["meta"],
            address=request.META.get("REMOTE_ADDR") or None,
            request_key=idempotency_key(request),
        )
        answer = represented(
            api.EnrollmentSerializer, {"device_id": data["device_id"], "enrollment_secret": secret}
        )
        response = Response(answer, status=status.HTTP_202_ACCEPTED)
        response["Cache-Control"] = "no-store"  # the secret is as good as a token
        return response


class EnrollmentTokenView(PoolAPIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="The enrolled device's token: 202 while it waits for approval, then 200; "
        f"asked again within {enrollment.RECOLLECT_SECONDS // 60} minutes, a new token "
        "(the last one revoked), then 410",
        parameters=[ENROLLMENT_SECRET],
        responses={
            200: api.DeviceTokenSerializer,
            202: api.EnrollmentWaitingSerializer,
            400: errors()[400],
            406: errors()[406],
            503: errors()[503],
            403: OpenApiResponse(api.ErrorSerializer, description="Wrong Enrollment-Secret."),
            404: OpenApiResponse(api.ErrorSerializer, description="No such device."),
            410: OpenApiResponse(
                api.ErrorSerializer,
                description="The token was handed out more than "
                f"{enrollment.RECOLLECT_SECONDS // 60} minutes ago.",
            ),
        },
        auth=[],
    )
    def get(self, request: Request, device_id: str) -> Response:
        secret = request.headers.get("Enrollment-Secret")
        if not secret:
            raise serializers.ValidationError({"Enrollment-Secret": ["This header is required."]})
        collected = enrollment.collect_token(device_id, secret)
        if collected.waiting:
            waiting = {"device_id": device_id, "status": "waiting"}
            response = Response(
                represented(api.EnrollmentWaitingSerializer, waiting),
                status=status.HTTP_202_ACCEPTED,
            )
            response["Retry-After"] = str(enrollment.POLL_SECONDS)
        else:
            token = {"device_id": device_id, "token": collected.token}
            response = Response(represented(api.DeviceTokenSerializer, token))
        response["Cache-Control"] = "no-store"
        return response
