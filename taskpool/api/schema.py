"""The OpenAPI schema and its docs page, and what drf-spectacular cannot infer: the device
and metrics token schemes."""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from taskpool.api import queries
from taskpool.api.views import StrictQueryMixin


class DeviceJWTScheme(SimpleJWTScheme):
    target_class = "taskpool.authentication.DeviceJWTAuthentication"
    name = "deviceJWT"

    def get_security_definition(self, auto_schema):
        definition = super().get_security_definition(auto_schema)
        definition["description"] = "A device token (taskpool_device ID --token)."
        return definition


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

    query_serializer_class = queries.SchemaQuerySerializer


class DocsView(StrictQueryMixin, SpectacularSwaggerView):
    """The docs page, refusing query parameters it does not read, like every endpoint."""

    query_serializer_class = queries.DocsQuerySerializer
