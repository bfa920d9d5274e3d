"""Which device has which status, as the task list shows it, with links to the devices.

A row groups a task's executions by status. Where a task has one status,
every device it addresses has it, and the list says so without asking the
store; otherwise the store counts the executions in each status and names the
first few devices of each (``task_status_counts``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib import admin
from django.contrib.admin.utils import quote
from django.http import HttpRequest
from django.urls import reverse

from taskpool.exceptions import InvalidMessage
from taskpool.executions import StatusCount
from taskpool.messages import Message, parse_address
from taskpool.models import DeviceUser
from taskpool.stores.base import TaskSummary

#: Devices named per status in a row; the rest are counted.
SHOWN_PER_STATUS = 5


@dataclass(frozen=True, slots=True)
class DeviceLink:
    """A device id, and its admin page when it is registered and the viewer may open it."""

    id: str
    url: str | None


@dataclass(frozen=True, slots=True)
class StatusGroup:
    """One execution status of a task and the devices in it (the first few)."""

    status: str
    devices: list[DeviceLink]
    #: How many more devices have this status than are named.
    more: int = 0
    #: Every device the task is for (``device:*`` with a single status).
    everyone: bool = False


class DeviceLinks:
    """Links the devices named on one page to their admin pages, with one query."""

    def __init__(self, site: admin.AdminSite, request: HttpRequest, ids: Iterable[str]) -> None:
        self._current_app = site.name
        device_admin = site._registry.get(DeviceUser)
        may_open = device_admin is not None and device_admin.has_view_permission(request)
        wanted = set(ids) if may_open else set()
        self._registered = set(
            DeviceUser.objects.filter(pk__in=wanted).values_list("pk", flat=True)
        )

    def __call__(self, device_id: str) -> DeviceLink:
        if device_id not in self._registered:
            return DeviceLink(device_id, None)
        return DeviceLink(
            device_id,
            reverse(
                "admin:taskpool_deviceuser_change",
                args=[quote(device_id)],
                current_app=self._current_app,
            ),
        )

    def groups(self, groups: list[StatusGroup]) -> list[StatusGroup]:
        """``groups`` with their devices linked."""
        return [
            StatusGroup(
                group.status, [self(d.id) for d in group.devices], group.more, group.everyone
            )
            for group in groups
        ]


def addressed_ids(task: Message) -> list[str]:
    """The device ids a task names (none for ``device:*``)."""
    try:
        return list(parse_address(task["to"]).device_ids)
    except InvalidMessage:
        return []


def status_groups(summary: TaskSummary, counts: list[StatusCount] | None) -> list[StatusGroup]:
    """A task's statuses, each with its first devices (not linked yet), by status name.

    ``counts`` (``BaseStore.task_status_counts``) may be ``None`` where the task has one
    status (or none).
    """
    if counts is None:  # one status: every addressed device has it
        if not summary.statuses:
            return []
        (status,) = summary.statuses
        ids = addressed_ids(summary.task)
        if not ids:
            return [StatusGroup(status, [], everyone=True)]
        counts = [StatusCount(status, len(ids), ids)]
    groups = []
    for status, count, devices in counts:
        shown = [DeviceLink(device_id, None) for device_id in devices[:SHOWN_PER_STATUS]]
        groups.append(StatusGroup(status, shown, more=count - len(shown)))
    return groups
