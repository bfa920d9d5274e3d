"""The principals: devices (``DeviceUser``) and the roles of users (``UserRole``)."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.core.validators import RegexValidator
from django.db import models
from django.db.models.functions import MD5, Concat
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
    # Enrollment (``taskpool.enrollment``): a device that asked to join by itself.
    enrolled_at = models.DateTimeField(
        _("enrollment requested"), null=True, blank=True, editable=False
    )
    enrollment_secret_hash = models.CharField(
        _("enrollment secret (SHA-256)"), max_length=64, blank=True, default="", editable=False
    )
    enrollment_meta = models.JSONField(
        _("what it said when enrolling"), default=dict, blank=True, editable=False
    )
    enrollment_address = models.GenericIPAddressField(
        _("enrolled from"), null=True, blank=True, editable=False
    )
    token_collected_at = models.DateTimeField(
        _("token collected"), null=True, blank=True, editable=False
    )
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

    #: When the token the request authenticated with expires (epoch seconds), set by the
    #: device authentication for requests that wait; not stored.
    token_expires_at: float | None = None

    @property
    def address(self) -> str:
        return f"device:{self.id}"

    @property
    def awaiting_approval(self) -> bool:
        """An enrollment request staff have not validated yet: not a device that joined (its
        token collected) and that staff invalidated since, which they validate again."""
        return (
            self.enrolled_at is not None and not self.validated and self.token_collected_at is None
        )

    def rotate_session(self) -> None:
        """Revoke every token issued so far."""
        self.user_session = new_session()
        DeviceUser.objects.filter(pk=self.pk).update(user_session=self.user_session)

    def revoke_tokens(self) -> None:
        """Staff revoke every token, and end the device's enrollment: its secret, which could
        collect a new token for a while after the first, collects none after staff acted."""
        self.user_session = new_session()
        self.enrollment_secret_hash = ""
        DeviceUser.objects.filter(pk=self.pk).update(
            user_session=self.user_session, enrollment_secret_hash=""
        )


def revoke_tokens_of(devices: models.QuerySet[DeviceUser]) -> int:
    """``DeviceUser.revoke_tokens`` for many devices in one ``UPDATE``; how many it revoked.

    Each device gets a session of its own, new and as long as ``new_session()``'s: the hash
    of a new random value and its id, worked out by the database.
    """
    fresh = models.Value(new_session(), output_field=models.CharField())
    return devices.update(
        user_session=MD5(Concat(fresh, "pk", output_field=models.CharField())),
        enrollment_secret_hash="",
    )


class UserRole(models.Model):
    """What a Django user may do in the pool. Admin can do all a master can."""

    ADMIN, MASTER, USER = "admin", "master", "user"
    ROLE_CHOICES = [(ADMIN, _("admin")), (MASTER, _("master")), (USER, _("user"))]
    RANK = {USER: 1, MASTER: 2, ADMIN: 3}
    #: Roles whose pages are in the Django admin: giving one makes the user staff.
    STAFF_ROLES = (ADMIN, MASTER)

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="taskpool_role"
    )
    role = models.CharField(_("role"), max_length=16, choices=ROLE_CHOICES, default=USER)

    class Meta:
        verbose_name = _("pool role")
        verbose_name_plural = _("pool roles")
        # By the user (its primary key): a site's user model may have no username field.
        ordering = ["user"]

    def __str__(self) -> str:
        return f"{self.user}: {self.role}"

    def clean(self) -> None:
        """One pool identity per user: refuse a role to a user another pool user is written as.

        The user may be one not saved yet (the role given on the user's add page).
        """
        try:
            user = self.user
        except ObjectDoesNotExist:  # none chosen: the field's own check says so
            return
        other = identity_holder(user)
        if other is not None:
            raise ValidationError(
                _(
                    "%(user)s cannot have a pool role while %(other)s is user:%(identity)s "
                    "in the pool: give %(user)s an email of their own first."
                ),
                code="identity_taken",
                params={"user": user, "other": other, "identity": pool_identity(other)},
            )


def pool_identity(user: Any) -> str:
    """What follows ``user:`` in the pool's messages: the email, or else the username."""
    return getattr(user, user.get_email_field_name(), "") or user.get_username()


def identity_holder(user: Any) -> Any:
    """Another pool user (one with a role, or a superuser) written as ``user`` is, or ``None``.

    Emails are compared without case: ``Ops@example.com`` is the same mailbox.
    """
    user_model = get_user_model()
    identity = pool_identity(user)
    email = user_model.get_email_field_name()
    field_names = {field.name for field in user_model._meta.get_fields()}
    pool_users = models.Q(taskpool_role__isnull=False)
    if "is_superuser" in field_names:
        pool_users |= models.Q(is_superuser=True)
    written_so = models.Q(**{f"{user_model.USERNAME_FIELD}__iexact": identity})
    if email in field_names:
        written_so = models.Q(**{f"{email}__iexact": identity}) | (
            models.Q(**{email: ""}) & written_so
        )
    others = user_model._default_manager.filter(pool_users & written_so)
    if user.pk is not None:
        others = others.exclude(pk=user.pk)
    return others.first()


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


class Dashboard(AdminEntryPoint):
    """The fleet at a glance, the pool's front page in the admin (``taskpool.admin.dashboard``)."""

    class Meta(AdminEntryPoint.Meta):
        verbose_name = _("dashboard")
        verbose_name_plural = _("dashboard")
