"""Enrollment: a device asks to join, staff validate it, the device collects its token once.

``request_enrollment`` records the request as a new, unvalidated
``DeviceUser`` and returns a secret that only the device knows (the database
keeps its SHA-256). ``collect_token`` hands the device its token after staff
validated it: in the admin, or with ``taskpool_device ID --validate``. An id
that is already registered cannot be enrolled again, so enrolling can never
take a device over.

Either answer may be lost on the way, and the device must not need staff to
start over then. A request with a request key (the ``Idempotency-Key``, at
least 32 characters, that the device keeps) gets a secret derived from it, so
asking again with the same key gets the same secret, as long as the token has
not been collected. A device whose token answer was lost asks again with its
secret within ``RECOLLECT_SECONDS`` of the first hand-out and gets a new
token; each hand-out revokes the ones before, so only the last one works.

Requests nobody acts on do not stay for good: ``stale_enrollments`` finds the
requests that have waited longer than an age the operator gives, and the
approved enrollments whose token was never collected since; ``forget_enrollments``
deletes the first (the id is free again: the device, or another, may ask anew)
and ends the second (the secret collects no token; the device stays, validated).
``taskpool_device --forget-enrollments AGE`` runs both, from cron.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone
from django.utils.crypto import salted_hmac

from taskpool.conf import pool_settings
from taskpool.exceptions import (
    DeviceExists,
    EnrollmentRefused,
    IdempotencyConflict,
    InvalidMessage,
    TokenCollected,
    UnknownDevice,
    WrongEnrollmentSecret,
)
from taskpool.messages import is_device_id, parse_address
from taskpool.models import DeviceUser, new_session
from taskpool.stores import get_store
from taskpool.tokens import DeviceToken

T = TypeVar("T")

#: Seconds a waiting device is asked to wait between two asks for its token.
POLL_SECONDS = 5
#: Seconds after the first hand-out during which the secret still gets a (new) token.
RECOLLECT_SECONDS = 600
#: The shortest request key: it stands for the device's secret, so it must be as hard to guess.
REQUEST_KEY_MIN_LENGTH = 32


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
    request_key: str | None = None,
) -> str:
    """Record a new unvalidated device asking to join; its enrollment secret.

    With ``request_key`` the secret is derived from it, and the same request
    asked again gets the same secret (``IdempotencyConflict`` for another
    request with the key) until the device collects its token.
    """
    if request_key is None:
        secret = secrets.token_urlsafe(32)
    else:
        if len(request_key) < REQUEST_KEY_MIN_LENGTH:
            raise InvalidMessage(
                f"An enrollment's Idempotency-Key must have at least {REQUEST_KEY_MIN_LENGTH} "
                "characters: it stands for the device's secret.",
                field="Idempotency-Key",
            )
        secret = salted_hmac(
            "taskpool.enrollment", f"{device_id}\n{request_key}", algorithm="sha256"
        ).hexdigest()
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
        if request_key is not None and _asked_before(device_id, secret, kind, meta or {}):
            return secret
        raise DeviceExists(
            f"Device {device_id} is already registered: it cannot be enrolled again.",
            field="device_id",
        ) from None
    return secret


def _asked_before(device_id: str, secret: str, kind: str, meta: dict[str, Any]) -> bool:
    """Whether ``device_id`` waits for its token from a request with this secret's key."""
    device = DeviceUser.objects.filter(pk=device_id).first()
    if (
        device is None
        or device.token_collected_at is not None
        or not device.enrollment_secret_hash
        or not hmac.compare_digest(device.enrollment_secret_hash, secret_hash(secret))
    ):
        return False
    if device.kind != kind or not same_json(device.enrollment_meta, meta):
        raise IdempotencyConflict(
            "This Idempotency-Key asked to enroll the device with another kind or meta."
        )
    return True


def same_json(kept: Any, sent: Any) -> bool:
    """Whether two JSON values are the same, numbers by their decimal value.

    PostgreSQL's jsonb keeps a number as a decimal and gives ``1e23`` back
    as the integer 100000000000000000000000, which Python does not take for
    the float it was sent as.
    """
    if isinstance(kept, bool) or isinstance(sent, bool):
        return kept is sent
    if isinstance(kept, int | float) and isinstance(sent, int | float):
        return Decimal(repr(kept)) == Decimal(repr(sent))
    if isinstance(kept, dict) and isinstance(sent, dict):
        return kept.keys() == sent.keys() and all(same_json(kept[k], sent[k]) for k in kept)
    if isinstance(kept, list) and isinstance(sent, list):
        return len(kept) == len(sent) and all(map(same_json, kept, sent))
    return type(kept) is type(sent) and kept == sent


@dataclass(frozen=True)
class Collected:
    """What ``collect_token`` found: a token (handed out now), or still waiting."""

    device_id: str
    token: str | None

    @property
    def waiting(self) -> bool:
        return self.token is None


def collect_token(device_id: str, secret: str) -> Collected:
    """The device's token once staff validated it, ``waiting`` before; a new token (revoking
    the last) when asked again within ``RECOLLECT_SECONDS``; ``TokenCollected`` after.

    The hand-out is one conditional UPDATE, so two asks at once cannot both win.
    """
    device = DeviceUser.objects.filter(pk=device_id).first() if is_device_id(device_id) else None
    if device is None:
        raise UnknownDevice(f"There is no device {device_id}.")
    if not device.enrollment_secret_hash and device.enrolled_at is not None:
        raise _ended(device_id)
    if not device.enrollment_secret_hash or not hmac.compare_digest(
        device.enrollment_secret_hash, secret_hash(secret)
    ):
        raise WrongEnrollmentSecret("Wrong Enrollment-Secret for this device.")
    hashed = device.enrollment_secret_hash
    if device.token_collected_at is not None:
        if timezone.now() - device.token_collected_at > timedelta(seconds=RECOLLECT_SECONDS):
            raise TokenCollected(f"The token of {device_id} was handed out already.")
        if not device.validated:
            return Collected(device_id, None)
        # The token handed out before, lost or not, stops working: unless staff ended the
        # enrollment meanwhile (revoked or issued a token), which the same UPDATE checks.
        session = new_session()
        if not DeviceUser.objects.filter(pk=device_id, enrollment_secret_hash=hashed).update(
            user_session=session
        ):
            raise _ended(device_id)
        device.user_session = session
        return Collected(device_id, str(DeviceToken.for_device(device)))
    if not device.validated:
        return Collected(device_id, None)
    handed_out = DeviceUser.objects.filter(
        pk=device_id, validated=True, token_collected_at__isnull=True, enrollment_secret_hash=hashed
    ).update(token_collected_at=timezone.now())
    device.refresh_from_db()
    if device.enrollment_secret_hash != hashed:  # staff ended the enrollment meanwhile
        raise _ended(device_id)
    if not handed_out:  # another ask won, or staff invalidated it meanwhile
        if device.token_collected_at is not None:
            # Another ask of the same secret handed it out a moment ago: this one is
            # asked again within the minutes allowed, and gets the token that counts.
            return collect_token(device_id, secret)
        return Collected(device_id, None)
    return Collected(device_id, str(DeviceToken.for_device(device)))


def _ended(device_id: str) -> WrongEnrollmentSecret:
    """What a device whose enrollment staff, or ``--forget-enrollments``, ended is told: its
    secret collects nothing now, whether it is right or not, and its token comes from staff."""
    return WrongEnrollmentSecret(
        f"The enrollment of {device_id} has ended (staff issued or revoked its token, or its "
        "approval was not collected in time): staff give it its token."
    )


@dataclass(frozen=True)
class StaleEnrollments:
    """What ``stale_enrollments`` found, before anything is changed."""

    #: Requests staff never validated, waiting since before the cutoff: to be forgotten.
    waiting: list[DeviceUser]
    #: Such requests kept all the same, each with why: the pool has something of them.
    kept: list[tuple[DeviceUser, str]]
    #: Approved before the cutoff, the token never collected: their secret to be ended.
    approved: list[DeviceUser]
    cutoff: datetime


def awaiting_approval() -> QuerySet[DeviceUser]:
    """The devices ``DeviceUser.awaiting_approval`` holds true of, as a query: what staff
    may approve, asked again in the statement that approves."""
    return DeviceUser.objects.filter(
        enrolled_at__isnull=False, validated=False, token_collected_at__isnull=True
    )


def unanswered_requests() -> QuerySet[DeviceUser]:
    """The enrollment requests staff have not answered, of devices that never used the pool.

    A device that asked to join, was never validated, never had a token
    (neither collected nor issued by staff, which ends the secret) and never
    made a request. A device staff created never asked (``enrolled_at`` is
    empty) and is never one.
    """
    return DeviceUser.objects.filter(
        enrolled_at__isnull=False,
        validated=False,
        token_collected_at__isnull=True,
        last_seen__isnull=True,
    ).exclude(enrollment_secret_hash="")


def waiting_requests(cutoff: datetime) -> QuerySet[DeviceUser]:
    """The unanswered requests nothing has happened to since ``cutoff``: asked before it, and
    not changed by staff since (``updated_at``: an edit, an invalidation)."""
    return unanswered_requests().filter(enrolled_at__lt=cutoff, updated_at__lt=cutoff)


def uncollected_approvals(cutoff: datetime) -> QuerySet[DeviceUser]:
    """Validated devices whose enrollment secret could still collect a first token, approved
    (their last change, ``updated_at``) before ``cutoff``."""
    return DeviceUser.objects.filter(
        enrolled_at__isnull=False,
        updated_at__lt=cutoff,
        validated=True,
        token_collected_at__isnull=True,
    ).exclude(enrollment_secret_hash="")


def stale_enrollments(older_than: timedelta) -> StaleEnrollments:
    """The enrollments that have waited longer than ``older_than``; nothing is changed.

    A waiting request is kept when the pool has anything of the device: a
    message from it, or a task pending for it that names it (a master may
    address a device before staff approve it). A task to every device
    (``device:*``) names none. The pool is asked for many devices at once
    (``STATEMENT_IDS`` a call): with a ``device:*`` task open, something is
    pending for every request, and asking device by device took one to two
    minutes for 20,000 requests on PostgreSQL.
    """
    cutoff = timezone.now() - older_than
    candidates = list(waiting_requests(cutoff).order_by("enrolled_at", "id"))
    store = get_store()
    ids = [device.id for device in candidates]
    activity = store.device_activity(ids) if ids else {}
    unheard = [device_id for device_id in ids if not _heard_from(activity.get(device_id))]
    pending = store.pending_counts(unheard) if unheard else {}
    named = _named_by_pending_tasks(
        store, [(device_id, pending[device_id]) for device_id in unheard if pending[device_id]]
    )
    waiting, kept = [], []
    for device in candidates:
        if _heard_from(activity.get(device.id)):
            kept.append((device, "the pool has messages from it"))
        elif device.id in named:
            kept.append((device, "a task pending for it names it"))
        else:
            waiting.append(device)
    approved = list(uncollected_approvals(cutoff).order_by("updated_at", "id"))
    return StaleEnrollments(waiting, kept, approved, cutoff)


def _heard_from(activity: Any) -> bool:
    return activity is not None and bool(activity.last_message or activity.last_heartbeat)


def _named_by_pending_tasks(store: Any, requests: list[tuple[str, int]]) -> set[str]:
    """The devices of ``(device_id, pending count)`` that a task pending for them names."""
    named = set()
    for batch in _batches(requests):
        for (device_id, _), tasks in zip(batch, store.pending_for_many(batch), strict=True):
            for task in tasks:
                address = parse_address(task["to"])
                if not address.everyone and address.includes(device_id):
                    named.add(device_id)
                    break
    return named


def forget_enrollments(found: StaleEnrollments) -> tuple[int, int]:
    """Delete the waiting requests and end the approved enrollments of ``found``; how many
    of each.

    Each statement asks again what made the device stale, so one that staff
    approve, or that collects its token, meanwhile is left alone. The requests
    still waiting are locked before they are deleted: an approval racing the
    delete waits for it and then finds the request gone (and says so), rather
    than the delete removing a device approved after it looked. They go
    ``STATEMENT_IDS`` ids at a time: a backlog may hold more ids than one
    statement may (PostgreSQL takes 65,535 parameters).
    """
    forgotten = ended = 0
    for ids in _batches([device.pk for device in found.waiting]):
        with transaction.atomic():
            stale = waiting_requests(found.cutoff).filter(pk__in=ids)
            locked = list(stale.select_for_update().values_list("pk", flat=True))
            _, deleted = stale.filter(pk__in=locked).delete()
        forgotten += deleted.get(DeviceUser._meta.label, 0)
    for ids in _batches([device.pk for device in found.approved]):
        ended += (
            uncollected_approvals(found.cutoff)
            .filter(pk__in=ids)
            .update(enrollment_secret_hash="", updated_at=timezone.now())
        )
    return forgotten, ended


#: The most device ids one statement of ``forget_enrollments`` names.
STATEMENT_IDS = 1000


def _batches(items: list[T]) -> list[list[T]]:
    return [items[start : start + STATEMENT_IDS] for start in range(0, len(items), STATEMENT_IDS)]
