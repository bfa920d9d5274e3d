"""OpenAPI extensions (drf-spectacular) for what taskpool adds to DRF and simplejwt."""

from __future__ import annotations

from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme


class DeviceJWTScheme(SimpleJWTScheme):
    """Device tokens: a bearer JWT in ``Authorization``, as for users."""

    target_class = "taskpool.authentication.DeviceJWTAuthentication"
    name = "deviceJWTAuth"
