"""``taskpool_role USERNAME admin|master|user [--password PW] [--email E]``."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model, password_validation
from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser
from django.db import transaction

from taskpool.management.base import PoolCommand
from taskpool.models import UserRole


class Command(PoolCommand):
    help = (
        "Create the user if needed and set their pool role. A password goes through the "
        "site's validators; a role is refused to a user another pool user is written as."
    )

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
        try:
            with transaction.atomic():  # a refusal leaves no half-made user behind
                created = self._set_role(username, role, options["password"], options["email"])
        except ValidationError as error:
            raise CommandError(" ".join(error.messages)) from error
        verb = "Created" if created else "Updated"
        self.stdout.write(f"{verb} user {username} with role {role}.")

    def _set_role(self, username: str, role: str, password: str | None, email: str | None) -> bool:
        User = get_user_model()
        field = User._meta.get_field(User.USERNAME_FIELD)
        # The model's own rules (length, characters), as createsuperuser applies them.
        field.clean(username, None)  # type: ignore[union-attr]
        user, created = User.objects.get_or_create(**{str(User.USERNAME_FIELD): username})  # type: ignore[arg-type]
        if email is not None:
            if User.get_email_field_name() == User.USERNAME_FIELD and email != username:
                # Setting it would change who logs in, under another name than the one given.
                raise ValidationError(
                    f"The email is the login on this site: give {email} as the user, "
                    "not as --email."
                )
            setattr(user, User.get_email_field_name(), email)
        if password:
            password_validation.validate_password(password, user)  # as createsuperuser does
            user.set_password(password)
        elif created:
            user.set_unusable_password()
        if role in UserRole.STAFF_ROLES:
            user.is_staff = True  # they send, follow and cancel tasks in the Django admin
        user.save()
        pool_role = UserRole.objects.filter(user=user).first() or UserRole(user=user)
        pool_role.role = role
        pool_role.full_clean()
        pool_role.save()
        return created
