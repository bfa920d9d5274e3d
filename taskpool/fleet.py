"""The fleet at a glance: when each device was last heard from, whether it is online,
and how much work waits for it. Shared by ``GET /pool/devices`` and the admin; and
which device ids a task may name.

A device is *seen* when it sends a message (the pool knows) or makes an
accepted request (``DeviceUser.last_seen``, written at most every
``LAST_SEEN_INTERVAL``); it is *online* when seen within ``ONLINE_WINDOW``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from taskpool.conf import pool_settings
from taskpool.exceptions import InvalidMessage
from taskpool.messages import Address, format_timestamp
from taskpool.models import DeviceUser
from taskpool.stores import get_store
from taskpool.stores.base import DeviceActivity


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """One device's activity and pending count, as the devices list shows it."""

    device: DeviceUser
    last_seen: datetime | None
    #: The ``ts`` of its last heartbeat, as the pool has it.
    last_heartbeat: str | None
    online: bool
    pending: int

    @property
    def last_heartbeat_at(self) -> datetime | None:
        return _moment(self.last_heartbeat)

    def as_row(self) -> dict[str, Any]:
        """The row of ``GET /pool/devices``."""
        device = self.device
        return {
            "id": device.id,
            "kind": device.kind,
            "validated": device.validated,
            "last_seen": format_timestamp(self.last_seen.timestamp()) if self.last_seen else None,
            "last_heartbeat": self.last_heartbeat,
            "online": self.online,
            "pending": self.pending,
        }


def device_statuses(devices: Iterable[DeviceUser]) -> dict[str, DeviceStatus]:
    """Each device's status by id, with one call per kind of fact to the store."""
    devices = list(devices)
    store = get_store()
    ids = [device.id for device in devices]
    pending = store.pending_counts(ids)
    activity = store.device_activity(ids)
    now = _store_now()
    statuses = {}
    for device in devices:
        heard = activity[device.id]
        last_seen = _last_seen(device, heard)
        statuses[device.id] = DeviceStatus(
            device=device,
            last_seen=last_seen,
            last_heartbeat=heard.last_heartbeat,
            online=_is_online(last_seen, now),
            pending=pending[device.id],
        )
    return statuses


def device_rows(devices: Iterable[DeviceUser]) -> list[dict[str, Any]]:
    """The devices list of ``GET /pool/devices``, in the order given."""
    return [status.as_row() for status in device_statuses(devices).values()]


def validated_device_ids() -> list[str]:
    """The devices a ``device:*`` task counts as addressed to, in id order."""
    return list(
        DeviceUser.objects.filter(validated=True).order_by("id").values_list("id", flat=True)
    )


def check_registered(address: Address) -> None:
    """Refuse a task to device ids that are not registered, naming them.

    Such a task would sit pending for its whole life on no device's page.
    ``device:*`` names no id; ``ALLOW_UNREGISTERED_DEVICES`` lets a site
    address devices before they are registered. The API and the admin's
    send form both ask this (through the task serializer).
    """
    if address.everyone or pool_settings.ALLOW_UNREGISTERED_DEVICES:
        return
    known = set(DeviceUser.objects.filter(pk__in=address.device_ids).values_list("pk", flat=True))
    unknown = [device_id for device_id in address.device_ids if device_id not in known]
    if len(unknown) == 1:
        raise InvalidMessage(f"No device {unknown[0]} is registered.", field="to")
    if unknown:
        raise InvalidMessage(f"No devices {', '.join(unknown)} are registered.", field="to")


def online_device_ids(devices: Iterable[DeviceUser]) -> set[str]:
    """The ids of the devices that are online now (pending counts are not needed)."""
    return {device_id for device_id, (_seen, online) in presence(devices).items() if online}


def presence(devices: Iterable[DeviceUser]) -> dict[str, tuple[datetime | None, bool]]:
    """Each device's last seen time and whether it is online, by id (no pending counts)."""
    devices = list(devices)
    activity = get_store().device_activity([device.id for device in devices])
    now = _store_now()
    found = {}
    for device in devices:
        last_seen = _last_seen(device, activity[device.id])
        found[device.id] = (last_seen, _is_online(last_seen, now))
    return found


def _last_seen(device: DeviceUser, heard: DeviceActivity) -> datetime | None:
    seen = [moment for moment in (device.last_seen, _moment(heard.last_message)) if moment]
    return max(seen) if seen else None


def _is_online(last_seen: datetime | None, now: datetime) -> bool:
    return last_seen is not None and now - last_seen <= pool_settings.ONLINE_WINDOW


def _store_now() -> datetime:
    return datetime.fromtimestamp(get_store().now(), UTC)


def _moment(ts: str | None) -> datetime | None:
    if ts is None:
        return None
    try:
        return datetime.fromisoformat(ts)
    except ValueError:
        return None
