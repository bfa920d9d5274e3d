"""``taskpool_device ID [--kind K] [--validate|--invalidate] [--token]``."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from taskpool.management.base import PoolCommand
from taskpool.messages import is_device_id
from taskpool.models import DeviceUser
from taskpool.tokens import DeviceToken


class Command(PoolCommand):
    help = (
        "Create or update a device. A new device starts unvalidated unless --validate. "
        "--token revokes the device's older tokens and prints a new one as the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("device_id", help="[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
        parser.add_argument("--kind", help="What the device is (raspberry-pi, phone, ...).")
        validation = parser.add_mutually_exclusive_group()
        validation.add_argument("--validate", action="store_true", help="Let it use the pool.")
        validation.add_argument("--invalidate", action="store_true", help="Refuse it (403).")
        parser.add_argument(
            "--token", action="store_true", help="Rotate its session and print a new token."
        )

    def handle(self, *args: Any, device_id: str, **options: Any) -> None:
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
