"""Enrollment: a device asks to join, staff validate it, the device collects its token once.

``request_enrollment`` records the request as a new, unvalidated
``DeviceUser`` and returns a secret that only the device knows (the database
keeps its SHA-256). ``collect_token`` hands the device its token, exactly once,
after staff validated it: in the admin, or with ``taskpool_device ID --validate``.
An id that is already registered cannot be enrolled again, so enrolling can
never take a device over.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from taskpool.conf import pool_settings
from taskpool.exceptions import (
    DeviceExists,
    EnrollmentRefused,
    TokenCollected,
    UnknownDevice,
    WrongEnrollmentSecret,
)
from taskpool.models import DeviceUser
from taskpool.tokens import DeviceToken

#: Seconds a waiting device is asked to wait between two asks for its token.
POLL_SECONDS = 5


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def check_enrollment_key(sent: str | None) -> None:
    """Refuse an enrollment when enrollment is off, or the site's key is not the one sent."""
    if not pool_settings.ENROLLMENT:
        raise EnrollmentRefused("Enrollment is turned off on this server.")
    expected = pool_settings.ENROLLMENT_KEY
    if expected is None:
        return
    if sent is None or not hmac.compare_digest(sent.encode(), str(expected).encode()):
        raise EnrollmentRefused("Wrong or missing Enrollment-Key.")


def request_enrollment(
    device_id: str,
    *,
    kind: str = "",
    meta: dict[str, Any] | None = None,
    address: str | None = None,
) -> str:
    """Record a new unvalidated device asking to join; its enrollment secret (shown once)."""
    secret = secrets.token_urlsafe(32)
    try:
        with transaction.atomic():
            DeviceUser.objects.create(
                pk=device_id,
                kind=kind,
                validated=False,
                enrolled_at=timezone.now(),
                enrollment_secret_hash=secret_hash(secret),
                enrollment_meta=meta or {},
                enrollment_address=address,
            )
    except IntegrityError:
        raise DeviceExists(
            f"Device {device_id} is already registered: it cannot be enrolled again.",
            field="device_id",
        ) from None
    return secret


@dataclass(frozen=True)
class Collected:
    """What ``collect_token`` found: a token (the one time it is given), or still waiting."""

    device_id: str
    token: str | None

    @property
    def waiting(self) -> bool:
        return self.token is None


def collect_token(device_id: str, secret: str) -> Collected:
    """The device's token once staff validated it, ``waiting`` before; gone after the first time.

    The hand-out is one conditional UPDATE, so two asks at once cannot both win.
    """
    device = DeviceUser.objects.filter(pk=device_id).first()
    if device is None:
        raise UnknownDevice(f"There is no device {device_id}.")
    if not device.enrollment_secret_hash or not hmac.compare_digest(
        device.enrollment_secret_hash, secret_hash(secret)
    ):
        raise WrongEnrollmentSecret("Wrong Enrollment-Secret for this device.")
    if device.token_collected_at is not None:
        raise TokenCollected(f"The token of {device_id} was handed out already.")
    if not device.validated:
        return Collected(device_id, None)
    handed_out = DeviceUser.objects.filter(
        pk=device_id, validated=True, token_collected_at__isnull=True
    ).update(token_collected_at=timezone.now())
    device.refresh_from_db()
    if not handed_out:  # another ask won, or staff invalidated it meanwhile
        if device.token_collected_at is not None:
            raise TokenCollected(f"The token of {device_id} was handed out already.")
        return Collected(device_id, None)
    return Collected(device_id, str(DeviceToken.for_device(device)))
