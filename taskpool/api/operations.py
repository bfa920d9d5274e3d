"""For those who run the pool: ``GET health`` (anyone) and ``GET metrics`` (Prometheus)."""

from __future__ import annotations

from django.http import HttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response

from taskpool import metrics
from taskpool.api import queries
from taskpool.api import serializers as api
from taskpool.api.errors import RETRY_AFTER_SECONDS
from taskpool.api.views import ERRORS, PoolAPIView
from taskpool.authentication import (
    CookieSessionAuthentication,
    DeviceJWTAuthentication,
    MetricsTokenAuthentication,
    UserJWTAuthentication,
)
from taskpool.health import health_checks
from taskpool.permissions import CanReadMetrics


class HealthView(PoolAPIView):
    """200 when every check passes, else 503 naming each failing check; no authentication."""

    authentication_classes = []
    permission_classes = [AllowAny]
    query_serializer_class = queries.HealthQuerySerializer

    @extend_schema(
        summary="Whether this server can serve the pool (for load balancers and probes)",
        parameters=[queries.HealthQuerySerializer],
        responses={
            200: api.HealthSerializer,
            503: OpenApiResponse(
                api.HealthSerializer, description="A check fails: ask again after Retry-After."
            ),
            400: ERRORS[400],
            406: ERRORS[406],
        },
        auth=[],
    )
    def get(self, request: Request) -> Response:
        failing = [check for check in health_checks(ready=self.query["ready"]) if not check.ok]
        if not failing:
            response = Response({"status": "ok"})
        else:
            response = Response(
                {
                    "status": "unavailable",
                    "detail": f"{failing[0].name}: {failing[0].problem}",
                    "checks": {check.name: check.problem for check in failing},
                },
                status=status.HTTP_503_SERVICE_UNAVAILABLE,
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        response["Cache-Control"] = "no-store"
        return response


class MetricsView(PoolAPIView):
    """Prometheus's text format, for pool admins and for ``Bearer <METRICS_TOKEN>``."""

    # The metrics token first: it is no JWT, and the JWT classes would refuse it.
    authentication_classes = [
        MetricsTokenAuthentication,
        DeviceJWTAuthentication,
        UserJWTAuthentication,
        CookieSessionAuthentication,
    ]
    permission_classes = [CanReadMetrics]

    @extend_schema(
        summary="Prometheus metrics: requests, latencies, appends, pending tasks, devices, disk",
        responses={(200, "text/plain"): OpenApiResponse(str), **ERRORS},
    )
    def get(self, request: Request) -> HttpResponse:
        return HttpResponse(metrics.exposition(), content_type=metrics.CONTENT_TYPE_LATEST)
