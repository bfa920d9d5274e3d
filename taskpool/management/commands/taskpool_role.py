"""``taskpool_role USERNAME admin|master|user [--password PW]`` (DESIGN 6)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser

from taskpool.models import UserRole


class Command(BaseCommand):
    help = "Create the user if needed and set their pool role."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("role", choices=[UserRole.ADMIN, UserRole.MASTER, UserRole.USER])
        parser.add_argument(
            "--password", help="Set this password (a new user without one cannot log in)."
        )
        parser.add_argument(
            "--email", help="Set the user's email (their address is then user:<email>)."
        )

    def handle(self, *args: Any, username: str, role: str, **options: Any) -> None:
        User = get_user_model()
        user, created = User.objects.get_or_create(**{str(User.USERNAME_FIELD): username})  # type: ignore[arg-type]
        if created and not options["password"]:
            user.set_unusable_password()
        if options["password"]:
            user.set_password(options["password"])
        if options["email"] is not None:
            user.email = options["email"]
        if role in (UserRole.ADMIN, UserRole.MASTER):
            user.is_staff = True  # they send, follow and cancel tasks in the Django admin
        user.save()
        UserRole.objects.update_or_create(user=user, defaults={"role": role})
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} user {username} with role {role}.")
