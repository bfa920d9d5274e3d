"""The OpenAPI schema and its docs page, and what drf-spectacular cannot infer: the device
and metrics token schemes."""

from typing import Any

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from taskpool.api import queries
from taskpool.api.serializers import ErrorSerializer
from taskpool.api.views import ERROR_DESCRIPTIONS, StrictQueryMixin


class UserJWTScheme(OpenApiAuthenticationExtension):
    """A user's access token, in ``Authorization: Bearer`` whatever the site's SIMPLE_JWT."""

    target_class = "taskpool.authentication.UserJWTAuthentication"
    name = "jwtAuth"
    description = "A user's access token (POST /pool/auth/token)."

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": self.description,
        }


class DeviceJWTScheme(UserJWTScheme):
    target_class = "taskpool.authentication.DeviceJWTAuthentication"
    name = "deviceJWT"
    description = "A device token (taskpool_device ID --token)."


class CookieSessionScheme(SessionScheme):
    target_class = "taskpool.authentication.CookieSessionAuthentication"


class MetricsTokenScheme(OpenApiAuthenticationExtension):
    target_class = "taskpool.authentication.MetricsTokenAuthentication"
    name = "metricsToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "TASKPOOL['METRICS_TOKEN']: reads the metrics and nothing else.",
        }


class SchemaView(StrictQueryMixin, SpectacularAPIView):
    """The OpenAPI schema, refusing query parameters it does not read, like every endpoint."""

    authentication_classes = []  # public: it reads no credentials
    throttle_classes: list[Any] = []  # as every endpoint of the pool, not the site's
    query_serializer_class = queries.SchemaQuerySerializer

    @extend_schema(
        summary="This schema (YAML, or JSON with format=json)",
        parameters=[queries.SchemaQuerySerializer],
        responses={
            200: OpenApiTypes.OBJECT,
            400: OpenApiResponse(ErrorSerializer, description=ERROR_DESCRIPTIONS[400]),
        },
    )
    def get(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        return super().get(request, *args, **kwargs)


class DocsView(StrictQueryMixin, SpectacularSwaggerView):
    """The docs page, refusing query parameters it does not read, like every endpoint."""

    authentication_classes = []  # public: it reads no credentials
    throttle_classes: list[Any] = []  # as every endpoint of the pool, not the site's
    query_serializer_class = queries.DocsQuerySerializer
