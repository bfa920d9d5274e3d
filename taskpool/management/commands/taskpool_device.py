"""``taskpool_device ID [--kind K] [--validate|--invalidate] [--token]``, and
``taskpool_device --forget-enrollments AGE [--dry-run]``."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.template.defaultfilters import pluralize
from django.utils import timezone

from taskpool.enrollment import forget_enrollments, stale_enrollments
from taskpool.management.base import PoolCommand
from taskpool.messages import is_device_id
from taskpool.models import DeviceUser
from taskpool.tokens import DeviceToken

_AGE = re.compile(r"([1-9][0-9]*)([dhm])")
_AGE_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def age_argument(text: str) -> timedelta:
    """An age on the command line (``30d``, ``12h``, ``90m``); a bad one is a usage error."""
    found = _AGE.fullmatch(text)
    if found is None:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: a whole number of days, hours or minutes (30d, 12h, 90m)."
        )
    try:
        age = timedelta(**{_AGE_UNITS[found[2]]: int(found[1])})
        timezone.now() - age  # the cutoff, which must be a date
    except OverflowError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an age: it reaches back before the year 1."
        ) from None
    return age


class Command(PoolCommand):
    help = (
        "Create or update a device. A new device starts unvalidated unless --validate. "
        "--token revokes the device's older tokens and prints a new one as the last line. "
        "Without a device id, --forget-enrollments AGE deletes the enrollment requests that have "
        "waited longer than AGE (never validated, never given a token, nothing of them in the "
        "pool), and ends the enrollments approved longer than AGE ago whose token was never "
        "collected (the device stays; staff issue it a token). --dry-run says what it would do."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id", nargs="?", help="[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
        parser.add_argument("--kind", help="What the device is (raspberry-pi, phone, ...).")
        validation = parser.add_mutually_exclusive_group()
        validation.add_argument("--validate", action="store_true", help="Let it use the pool.")
        validation.add_argument("--invalidate", action="store_true", help="Refuse it (403).")
        parser.add_argument(
            "--token", action="store_true", help="Rotate its session and print a new token."
        )
        parser.add_argument(
            "--forget-enrollments",
            type=age_argument,
            metavar="AGE",
            help="Without a device id: forget the enrollment requests older than AGE "
            "(30d, 12h, 90m), and end the approved ones whose token was not collected.",
        )
        parser.add_argument(
            "--dry-run",
            action="store_true",
            help="With --forget-enrollments: say what it would do.",
        )

    def handle(self, *args: Any, device_id: str | None, **options: Any) -> None:
        age = options["forget_enrollments"]
        if age is not None:
            if (
                device_id is not None
                or options["kind"] is not None
                or any(options[name] for name in ("validate", "invalidate", "token"))
            ):
                raise CommandError(
                    "--forget-enrollments takes no device id, --kind, --validate, --invalidate "
                    "or --token."
                )
            self.forget(age, dry_run=options["dry_run"])
            return
        if options["dry_run"]:
            raise CommandError("--dry-run goes with --forget-enrollments.")
        if device_id is None:
            raise CommandError("Name a device, or give --forget-enrollments AGE.")
        self.change_device(device_id, **options)

    def change_device(self, device_id: str, **options: Any) -> None:
        if not is_device_id(device_id):
            raise CommandError(
                f"{device_id!r} is not a device id ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}})."
            )
        device = DeviceUser.objects.filter(pk=device_id).first()
        created = device is None
        if device is None:
            device = DeviceUser(pk=device_id)
        if options["kind"] is not None:
            device.kind = options["kind"]
        if options["validate"]:
            device.validated = True
        elif options["invalidate"]:
            device.validated = False
        try:
            device.full_clean()
        except ValidationError as error:
            raise CommandError("; ".join(error.messages)) from error
        device.save()
        state = "validated" if device.validated else "not validated"
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} device {device.id} (kind {device.kind or '-'}, {state}).")
        if device.enrolled_at is not None and device.token_collected_at is None:
            if device.validated:
                self.stdout.write("It asked to join: it collects its token at its next ask.")
            else:
                self.stdout.write("It asked to join and waits for approval (--validate).")
        if options["token"]:
            device.revoke_tokens()
            self.stdout.write(str(DeviceToken.for_device(device)))

    def forget(self, age: timedelta, *, dry_run: bool) -> None:
        """The enrollments older than ``age``, one line each, then what was done."""
        found = stale_enrollments(age)
        for device in found.waiting:
            self.stdout.write(
                f"forget  {device.id}: asked {_when(device.enrolled_at)} from "
                f"{device.enrollment_address or 'an unknown address'}, never validated"
            )
        for device, why in found.kept:
            self.stdout.write(f"keep    {device.id}: asked {_when(device.enrolled_at)}, but {why}")
        for device in found.approved:
            self.stdout.write(
                f"end     {device.id}: approved {_when(device.updated_at)}, its token never "
                "collected; staff issue it one"
            )
        waiting, approved, kept = len(found.waiting), len(found.approved), len(found.kept)
        if dry_run:
            self.stdout.write(
                f"Dry run: would forget {waiting} enrollment request{pluralize(waiting)}, keep "
                f"{kept} and end {approved} approved enrollment{pluralize(approved)}; nothing "
                "was done."
            )
            return
        forgotten, ended = forget_enrollments(found)
        self.stdout.write(
            f"Forgot {forgotten} enrollment request{pluralize(forgotten)}, kept {kept}; ended "
            f"{ended} approved enrollment{pluralize(ended)} whose token was never collected."
        )


def _when(moment: Any) -> str:
    """``2026-06-03 12:00 UTC (41 d ago)``."""
    days = (timezone.now() - moment).days
    return f"{moment.astimezone(UTC).strftime('%Y-%m-%d %H:%M')} UTC ({days} d ago)"
