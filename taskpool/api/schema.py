"""OpenAPI descriptions drf-spectacular cannot infer: the device token scheme."""

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class DeviceJWTScheme(SimpleJWTScheme):
    target_class = "taskpool.authentication.DeviceJWTAuthentication"
    name = "deviceJWT"

    def get_security_definition(self, auto_schema):
        definition = super().get_security_definition(auto_schema)
        definition["description"] = "A device token (taskpool_device ID --token)."
        return definition
