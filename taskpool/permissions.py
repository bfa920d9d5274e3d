"""Who may call what: devices on device endpoints, users by role on the others."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from taskpool.principals import has_role, is_device


class IsDevice(BasePermission):
    """A validated device."""

    message = _("This endpoint is for devices.")

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if not is_device(user):
            self.message = _("This endpoint is for devices.")
            return False
        if not user.validated:
            self.message = _("This device has not been validated.")
            return False
        return True


class HasRole(BasePermission):
    """A user whose pool role is ``role`` or above. Use ``HasRole.at_least("master")``."""

    role = "admin"

    @classmethod
    def at_least(cls, role: str) -> type[HasRole]:
        return type(f"HasRole_{role}", (cls,), {"role": role})

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if is_device(user):
            self.message = _("This endpoint is for users, not devices.")
            return False
        if not has_role(user, self.role):
            self.message = _("This needs the %(role)s role.") % {"role": self.role}  # type: ignore[assignment]
            return False
        return True


class IsMasterOrDevice(BasePermission):
    """A master or admin, or a validated device: who may follow the event stream."""

    message = _("The stream is for devices, masters and admins.")

    def has_permission(self, request: Any, view: Any) -> bool:
        user = request.user
        if is_device(user):
            if not user.validated:
                self.message = _("This device has not been validated.")
                return False
            return True
        return has_role(user, "master")


class IsMasterOrAddressedDevice(IsMasterOrDevice):
    """A master or admin, or a validated device (the view checks the device is addressed)."""

    message = _("This needs the master role, or a device the task is addressed to.")


class CanReadMetrics(BasePermission):
    """A pool admin, or a scraper that showed ``METRICS_TOKEN``."""

    message = _("The metrics are for pool admins and the metrics token.")

    def has_permission(self, request: Any, view: Any) -> bool:
        from taskpool.authentication import MetricsToken

        return isinstance(request.auth, MetricsToken) or (
            not is_device(request.user) and has_role(request.user, "admin")
        )
