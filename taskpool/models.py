"""The principals: devices (``DeviceUser``) and the roles of users (``UserRole``) (DESIGN 5)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from taskpool.messages import DEVICE_ID_RE


def new_session() -> str:
    return uuid.uuid4().hex


class DeviceUser(models.Model):
    """A device of the fleet. It authenticates with a device token (see ``tokens``).

    A token is valid only while its ``sid`` claim equals ``user_session``, so
    rotating the session revokes every token issued before.
    """

    id = models.CharField(
        _("device id"),
        primary_key=True,
        max_length=64,
        validators=[RegexValidator(f"^{DEVICE_ID_RE.pattern}$", _("Not a valid device id."))],
    )
    kind = models.CharField(_("kind"), max_length=64, blank=True, default="")
    validated = models.BooleanField(
        _("validated"), default=False, help_text=_("Only validated devices may use the pool.")
    )
    user_session = models.CharField(_("token session"), max_length=64, default=new_session)
    last_seen = models.DateTimeField(_("last request"), null=True, blank=True, editable=False)
    created_at = models.DateTimeField(_("created"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated"), auto_now=True)

    # What DRF and Django expect of ``request.user``.
    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    class Meta:
        verbose_name = _("device")
        verbose_name_plural = _("devices")
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id

    @property
    def address(self) -> str:
        return f"device:{self.id}"

    def rotate_session(self) -> None:
        """Revoke every token issued so far."""
        self.user_session = new_session()
        DeviceUser.objects.filter(pk=self.pk).update(user_session=self.user_session)


class UserRole(models.Model):
    """What a Django user may do in the pool. Admin can do all a master can."""

    ADMIN, MASTER, USER = "admin", "master", "user"
    ROLE_CHOICES = [(ADMIN, _("admin")), (MASTER, _("master")), (USER, _("user"))]
    RANK = {USER: 1, MASTER: 2, ADMIN: 3}

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="taskpool_role"
    )
    role = models.CharField(_("role"), max_length=16, choices=ROLE_CHOICES, default=USER)

    class Meta:
        verbose_name = _("pool role")
        verbose_name_plural = _("pool roles")
        ordering = ["user__username"]

    def __str__(self) -> str:
        return f"{self.user}: {self.role}"


class _NoRows(models.Manager):
    """Admin entry points have no table: every query is empty and never reaches the database."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().none()


class AdminEntryPoint(models.Model):
    """A model without a table that gives a family of pool pages its place in the admin.

    The pages read and write the pool through the store; the model only gives
    them an entry on the admin index, URL names and breadcrumbs.
    """

    objects = _NoRows()

    class Meta:
        abstract = True
        managed = False
        default_permissions = ()
        base_manager_name = "objects"

    def __str__(self) -> str:
        return str(self._meta.verbose_name)


class DayFile(AdminEntryPoint):
    """The day files in the admin (``taskpool.admin.day_files``)."""

    class Meta(AdminEntryPoint.Meta):
        verbose_name = _("day file")
        verbose_name_plural = _("day files")


class Task(AdminEntryPoint):
    """Tasks in the admin: threads, sending, cancelling (``taskpool.admin.tasks``)."""

    class Meta(AdminEntryPoint.Meta):
        verbose_name = _("task")
        verbose_name_plural = _("tasks")
