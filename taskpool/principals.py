"""Who is asking: a device, or a user with a role, and how each is written in a message."""

from __future__ import annotations

from typing import Any, TypeGuard

from taskpool.models import DeviceUser, UserRole


def is_device(principal: Any) -> TypeGuard[DeviceUser]:
    return isinstance(principal, DeviceUser)


#: Where ``role_of`` keeps a user's role on the user object.
_ROLE = "_taskpool_role"


def role_of(user: Any) -> str | None:
    """A user's pool role: superusers are admins; users without a role have none."""
    if is_device(user) or not getattr(user, "is_authenticated", False):
        return None
    if user.is_superuser:
        return UserRole.ADMIN
    # Looked up once a user object, and kept on it as a string: through ``user.taskpool_role``
    # the user and its role would point at each other, a cycle left by every request.
    if _ROLE not in user.__dict__:
        user.__dict__[_ROLE] = (
            UserRole.objects.filter(user_id=user.pk).values_list("role", flat=True).first()
        )
    return user.__dict__[_ROLE]


def has_role(user: Any, role: str) -> bool:
    """Whether ``user``'s role is ``role`` or above (admin > master > user)."""
    own = role_of(user)
    return own is not None and UserRole.RANK[own] >= UserRole.RANK[role]


def address_of(principal: Any) -> str:
    """``device:<id>``, or ``user:<email>`` (``user:<username>`` without an email)."""
    if is_device(principal):
        return principal.address
    return f"user:{principal.email or principal.get_username()}"
