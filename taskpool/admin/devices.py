"""Devices in the admin: the fleet at a glance, and the actions staff take on it.

The changelist shows each device's online badge, last seen, last heartbeat
and pending count from ``taskpool.fleet``, computed once per page (two store
calls for the whole page, not per row). Masters see devices; admins (or staff
with the *change* permission on devices) validate, invalidate, revoke tokens
and issue a new one, which is shown once and stored nowhere (see ``access``).
Devices that enrolled by themselves wait for approval: the *enrollment*
filter lists them (with how long each has waited), and the *approve* action
or the device page's button validates them, after which the device collects
its token once; the *refuse* action deletes the requests (the device may ask
again), as ``taskpool_device --forget-enrollments`` does for the ones that
waited too long.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext

from taskpool.admin.access import RoleOrModelPermissions, can_use_tasks, with_error_pages
from taskpool.admin.rows import message_rows
from taskpool.enrollment import awaiting_approval, unanswered_requests
from taskpool.fleet import DeviceStatus, device_statuses, presence
from taskpool.messages import is_device_id
from taskpool.models import DeviceUser, UserRole, revoke_tokens_of
from taskpool.stores import get_store
from taskpool.tokens import DeviceToken

RECENT_MESSAGES = 20


class OnlineFilter(admin.SimpleListFilter):
    """Online: heard from within ``ONLINE_WINDOW`` (by a message or an accepted request);
    offline: heard from once, not lately; never seen: not heard from at all. The same three
    as the dashboard's tiles, which link here."""

    title = gettext_lazy("online")
    parameter_name = "online"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("yes", gettext_lazy("Online")),
            ("no", gettext_lazy("Offline")),
            ("never", gettext_lazy("Never seen")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        value = self.value()
        if value not in ("yes", "no", "never"):
            return None
        found = presence(queryset.only("id", "last_seen"))
        chosen = [
            device_id
            for device_id, (seen, online) in found.items()
            if (value == "yes" and online)
            or (value == "no" and seen is not None and not online)
            or (value == "never" and seen is None)
        ]
        return queryset.filter(pk__in=chosen)


class EnrollmentFilter(admin.SimpleListFilter):
    """Where a device that enrolled by itself stands: waiting, approved, or joined."""

    title = gettext_lazy("enrollment")
    parameter_name = "enrollment"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("waiting", gettext_lazy("Waiting for approval")),
            ("approved", gettext_lazy("Approved, token not collected")),
            ("joined", gettext_lazy("Token collected")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet | None:
        enrolled = queryset.filter(enrolled_at__isnull=False)
        if self.value() == "waiting":
            return enrolled.filter(validated=False, token_collected_at__isnull=True)
        if self.value() == "approved":
            return enrolled.filter(validated=True, token_collected_at__isnull=True)
        if self.value() == "joined":
            return enrolled.filter(token_collected_at__isnull=False)
        return None


class FleetChangeList(ChangeList):
    """A changelist that asks the pool about the page's devices once, for all rows."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        statuses = device_statuses(self.result_list)
        for device in self.result_list:
            device.fleet_status = statuses[device.id]


@admin.register(DeviceUser)
class DeviceUserAdmin(RoleOrModelPermissions):
    view_role = UserRole.MASTER  # to address tasks
    manage_role = UserRole.ADMIN
    list_display = [
        "id",
        "kind",
        "validated",
        "online_badge",
        "last_seen_display",
        "last_heartbeat_display",
        "pending_count",
        "enrollment_display",
    ]
    list_filter = ["kind", "validated", OnlineFilter, EnrollmentFilter]
    search_fields = ["id", "kind"]
    # Last seen is in the page's Activity box, with the pool's messages counted in.
    fields = [
        "id",
        "kind",
        "validated",
        "created_at",
        "updated_at",
        "enrolled_at",
        "enrollment_address",
        "enrollment_meta",
        "token_collected_at",
    ]
    readonly_fields = [
        "created_at",
        "updated_at",
        "enrolled_at",
        "enrollment_address",
        "enrollment_meta",
        "token_collected_at",
    ]
    actions = ["approve", "refuse", "validate", "invalidate", "revoke_tokens"]

    class Media:
        css = {"all": ["taskpool/admin.css"]}

    def refusal(self, request: HttpRequest) -> str:
        return _(
            "Devices need the pool role master to see them and the pool role admin to "
            "manage them, or Django's permissions on devices."
        )

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return FleetChangeList

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = list(super().get_readonly_fields(request, obj))
        return ["id", *fields] if obj is not None else fields

    # Columns ---------------------------------------------------------------

    @admin.display(description=gettext_lazy("online"))
    def online_badge(self, device: DeviceUser) -> str:
        return online_badge(_status(device).online)

    @admin.display(description=gettext_lazy("last seen"))
    def last_seen_display(self, device: DeviceUser) -> str:
        return moment(_status(device).last_seen)

    @admin.display(description=gettext_lazy("last heartbeat"))
    def last_heartbeat_display(self, device: DeviceUser) -> str:
        return moment(_status(device).last_heartbeat_at)

    @admin.display(description=gettext_lazy("pending"))
    def pending_count(self, device: DeviceUser) -> int:
        return _status(device).pending

    @admin.display(description=gettext_lazy("enrollment"), ordering="enrolled_at")
    def enrollment_display(self, device: DeviceUser) -> str:
        if device.enrolled_at is None:
            return "-"
        if device.awaiting_approval:
            return format_html(
                '<span class="taskpool-badge taskpool-offline">{}</span> {} {}',
                _("waiting for approval"),
                _("asked"),
                moment(device.enrolled_at),
            )
        if device.token_collected_at is None:
            if not device.enrollment_secret_hash:  # staff issued a token, or it was forgotten
                return _("approved, enrollment ended: its token comes from staff")
            return _("approved, token not collected")
        if not device.validated:
            return _("token collected, invalidated")
        return _("token collected")

    # Actions ---------------------------------------------------------------

    @admin.action(
        description=gettext_lazy("Approve selected enrollment requests"), permissions=["change"]
    )
    def approve(self, request: HttpRequest, queryset: QuerySet) -> None:
        selected = list(queryset)  # before approving: a filtered list may then hold none
        waiting = [device for device in selected if device.awaiting_approval]
        with transaction.atomic():
            approved = approve_devices(waiting)
            self.log_changes(request, approved, _("Approved its enrollment request."))
        text = ngettext(
            "%(count)d enrollment request approved: the device collects its token at its next ask.",
            "%(count)d enrollment requests approved: the devices collect their tokens at their "
            "next ask.",
            len(approved),
        ) % {"count": len(approved)}
        self.message_user(
            request, text + _not_waiting(len(selected) - len(approved)), messages.SUCCESS
        )

    @admin.action(
        description=gettext_lazy("Refuse selected enrollment requests (they may ask again)"),
        permissions=["delete"],
    )
    def refuse(self, request: HttpRequest, queryset: QuerySet) -> None:
        """Delete the selected requests nobody validated, of devices that never used the pool.

        The id is free again: a device refused by mistake asks anew. A device staff
        made, or one that was validated or had a token, is left alone: *delete*
        removes those.
        """
        selected = list(queryset)
        with transaction.atomic():
            refused = list(
                unanswered_requests()
                .select_for_update()
                .filter(pk__in=[device.pk for device in selected])
            )
            self.log_deletions(request, refused)  # type: ignore[arg-type]  # a list will do
            DeviceUser.objects.filter(pk__in=[device.pk for device in refused]).delete()
        text = ngettext(
            "%(count)d enrollment request refused: the device may ask again.",
            "%(count)d enrollment requests refused: the devices may ask again.",
            len(refused),
        ) % {"count": len(refused)}
        self.message_user(
            request, text + _not_waiting(len(selected) - len(refused)), messages.SUCCESS
        )

    @admin.action(description=gettext_lazy("Validate selected devices"), permissions=["change"])
    def validate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_validated(request, queryset, True)

    @admin.action(description=gettext_lazy("Invalidate selected devices"), permissions=["change"])
    def invalidate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_validated(request, queryset, False)

    def _set_validated(self, request: HttpRequest, queryset: QuerySet, validated: bool) -> None:
        devices = list(queryset.exclude(validated=validated))
        with transaction.atomic():
            DeviceUser.objects.filter(pk__in=[device.pk for device in devices]).update(
                validated=validated, updated_at=timezone.now()
            )
            self.log_changes(request, devices, [{"changed": {"fields": ["validated"]}}])
        if validated:
            text = ngettext(
                "%(count)d device validated.", "%(count)d devices validated.", len(devices)
            )
        else:
            text = ngettext(
                "%(count)d device invalidated.", "%(count)d devices invalidated.", len(devices)
            )
        self.message_user(request, text % {"count": len(devices)}, messages.SUCCESS)

    @admin.action(
        description=gettext_lazy("Revoke the tokens of selected devices"), permissions=["change"]
    )
    def revoke_tokens(self, request: HttpRequest, queryset: QuerySet) -> None:
        devices = list(queryset)
        with transaction.atomic():
            revoke_tokens_of(DeviceUser.objects.filter(pk__in=[device.pk for device in devices]))
            self.log_changes(request, devices, _("Revoked every token."))
        text = ngettext(
            "Revoked the tokens of %(count)d device: their next request gets a 401.",
            "Revoked the tokens of %(count)d devices: their next request gets a 401.",
            len(devices),
        )
        self.message_user(request, text % {"count": len(devices)}, messages.SUCCESS)

    def log_changes(self, request: HttpRequest, devices: list[DeviceUser], message: Any) -> None:
        """``log_change`` for each device, in one insert (a few for thousands of devices)."""
        LogEntry.objects.log_actions(
            user_id=request.user.pk,  # type: ignore[arg-type]  # staff: logged in
            queryset=devices,
            action_flag=CHANGE,
            change_message=message,
        )

    # The change page: recent messages, and a new token ---------------------------

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> DeviceUser | None:
        # An id no device can have names none: PostgreSQL refuses to even look for one
        # holding a NUL character, which would be a 500 on every page of the device.
        if from_field is None and not is_device_id(object_id):
            return None
        return super().get_object(request, object_id, from_field)

    def get_urls(self) -> list[URLPattern]:
        opts = self.opts
        return [
            path(
                "<path:object_id>/approve/",
                with_error_pages(self.admin_site.admin_view(self.approve_view), self),
                name=f"{opts.app_label}_{opts.model_name}_approve",
            ),
            path(
                "<path:object_id>/token/",
                with_error_pages(self.admin_site.admin_view(self.token_view), self),
                name=f"{opts.app_label}_{opts.model_name}_token",
            ),
            *super().get_urls(),
        ]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        device = self.get_object(request, unquote(object_id))
        context = dict(extra_context or {})
        if device is not None:
            context.update(
                fleet_status=device_statuses([device])[device.id],
                can_issue_token=self.has_change_permission(request, device),
                can_approve=device.awaiting_approval
                and self.has_change_permission(request, device),
            )
            if can_use_tasks(request.user):  # the pool's messages: master role (see access)
                store = get_store()
                context.update(
                    recent_messages=message_rows(
                        store.device_messages(device.id, limit=RECENT_MESSAGES),
                        request.user,
                        current_app=self.admin_site.name,
                    ),
                    pending_tasks=message_rows(
                        store.pending_for(device.id, limit=RECENT_MESSAGES),
                        request.user,
                        current_app=self.admin_site.name,
                    ),
                )
        return super().change_view(request, object_id, form_url, context)

    def token_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: what issuing a token does. POST: issue it (older tokens stop working) and show it once.

        ``admin_view`` marks the response never to be cached.
        """
        device = self._device_to_change(
            request,
            object_id,
            _(
                "Issuing a token needs the pool role admin, or Django's change permission on devices."
            ),
        )
        # Shown by the page the POST redirects to, once: a reload (or Back and Forward) of
        # the page that showed it asks again, rather than issue another and end this one.
        shown_once = f"taskpool-token-{device.pk}"
        if request.method == "POST":
            device.revoke_tokens()
            request.session[shown_once] = str(DeviceToken.for_device(device))
            self.log_change(request, device, _("Issued a new token; every older one is revoked."))
            return HttpResponseRedirect(f"{request.path}?issued=1")
        token = request.session.pop(shown_once, None)
        title = _("A new token for %(id)s") % {"id": device.id}
        return self._device_page(
            request,
            device,
            "token.html",
            title,
            token=token,
            shown_before=token is None and "issued" in request.GET,
        )

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """GET: who asks to join and what it said. POST: approve it (it collects its token)."""
        device = self._device_to_change(
            request,
            object_id,
            _(
                "Approving a device needs the pool role admin, or Django's change "
                "permission on devices."
            ),
        )
        if request.method == "POST":
            if device.awaiting_approval and approve_devices([device]):
                self.log_change(request, device, _("Approved its enrollment request."))
                self.message_user(
                    request,
                    _("Device %(id)s is approved: it collects its token at its next ask.")
                    % {"id": device.id},
                    messages.SUCCESS,
                )
            else:
                self.message_user(
                    request,
                    _("Device %(id)s is not waiting for approval.") % {"id": device.id},
                    messages.WARNING,
                )
            return HttpResponseRedirect(self._change_url(device))
        title = _("Approve %(id)s?") % {"id": device.id}
        return self._device_page(request, device, "approve.html", title)

    def _device_to_change(self, request: HttpRequest, object_id: str, refusal: str) -> DeviceUser:
        """The device of an action page, if the user may change it (404 or 403 otherwise)."""
        device = self.get_object(request, unquote(object_id))
        if device is None:
            raise Http404(_("There is no device %(id)s.") % {"id": object_id})
        if not self.has_change_permission(request, device):
            raise PermissionDenied(refusal)
        return device

    def _change_url(self, device: DeviceUser) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change",
            args=[quote(device.pk)],
            current_app=self.admin_site.name,
        )

    def _device_page(
        self, request: HttpRequest, device: DeviceUser, template: str, title: str, **extra: Any
    ) -> TemplateResponse:
        """An action page of ``device`` in the admin's frame (``device_action.html``)."""
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "original": device,
            "device": device,
            "title": title,
            "change_url": self._change_url(device),
            **extra,
        }
        return TemplateResponse(request, f"admin/taskpool/deviceuser/{template}", context)


def _not_waiting(skipped: int) -> str:
    """What an enrollment action says of the selected devices it left alone."""
    if not skipped:
        return ""
    return " " + ngettext(
        "%(count)d selected device was not waiting for approval.",
        "%(count)d selected devices were not waiting for approval.",
        skipped,
    ) % {"count": skipped}


def approve_devices(devices: list[DeviceUser]) -> list[DeviceUser]:
    """Validate those of ``devices`` still waiting for approval, and return them; each
    collects its token at its next ask.

    The page read the devices a moment before: since then ``--forget-enrollments`` or
    another admin may have deleted a request, or someone validated it. One conditional
    UPDATE decides, holding what it changed until the end of the transaction, and the
    rows it stamped are what is reported: a request gone meanwhile is never said to be
    approved.
    """
    approved_at = timezone.now()
    ids = [device.pk for device in devices]
    with transaction.atomic():
        awaiting_approval().filter(pk__in=ids).update(validated=True, updated_at=approved_at)
        approved = set(
            DeviceUser.objects.filter(
                pk__in=ids, validated=True, updated_at=approved_at
            ).values_list("pk", flat=True)
        )
    return [device for device in devices if device.pk in approved]


def _status(device: DeviceUser) -> DeviceStatus:
    status = getattr(device, "fleet_status", None)
    if status is None:  # a row rendered outside FleetChangeList
        status = device_statuses([device])[device.id]
        device.fleet_status = status  # type: ignore[attr-defined]
    return status


def online_badge(online: bool) -> str:
    if online:
        return format_html('<span class="taskpool-badge taskpool-online">{}</span>', _("online"))
    return format_html('<span class="taskpool-badge taskpool-offline">{}</span>', _("offline"))


def moment(when: datetime | None) -> str:
    """``4 min ago``, with the exact UTC time on hover."""
    if when is None:
        return "-"
    exact = when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', when.isoformat(), exact, ago(when)
    )


def ago(when: datetime) -> str:
    """How long ago, in its largest unit: ``just now``, ``4 min ago``, ``2 h ago``, ``3 d ago``."""
    seconds = int((timezone.now() - when).total_seconds())
    if seconds < 60:
        return _("just now") if seconds > -60 else when.astimezone(UTC).strftime("%H:%M:%S")
    for size, unit in ((86400, _("d")), (3600, _("h")), (60, _("min"))):
        if seconds >= size:
            return _("%(count)d %(unit)s ago") % {"count": seconds // size, "unit": unit}
    return ""  # not reached
