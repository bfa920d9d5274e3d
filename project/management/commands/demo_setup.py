"""First run of the demo site: an admin, a validated device, and a curl walk-through.

Runs on every ``make run``; only a site without users gets the demo logins.
They are printed and kept in ``var/demo-login.txt`` (readable by you only).
"""

from __future__ import annotations

import secrets
import shlex
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from taskpool.models import DeviceUser, UserRole
from taskpool.tokens import DeviceToken

DEMO_ADMIN = "admin"
DEMO_DEVICE = "demo-pi"
JSON_FIELD = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"{}\"])'"


def walkthrough(url: str, password: str, device_token: str) -> str:
    """The copy-paste shell session that exercises the pool end to end."""
    login = shlex.quote(f'{{"username": "{DEMO_ADMIN}", "password": "{password}"}}')
    task = shlex.quote(
        f'{{"to": "device:{DEMO_DEVICE}", "title": "Say hello", "body": "echo hello"}}'
    )
    return f"""\
# 1. Log in as the admin (a user token, valid 30 minutes), and keep the device's token:
USER_TOKEN=$(curl -s -X POST {url}/pool/auth/token \\
  -H 'Content-Type: application/json' -d {login} | {JSON_FIELD.format("access")})
DEVICE_TOKEN={device_token}

# 2. Post a task to the demo device:
TASK_ID=$(curl -s -X POST {url}/pool/task -H "Authorization: Bearer $USER_TOKEN" \\
  -H 'Content-Type: application/json' -d {task} | {JSON_FIELD.format("id")})
echo "posted $TASK_ID"

# 3. As the device, see it pending:
curl -s {url}/pool/pending -H "Authorization: Bearer $DEVICE_TOKEN"; echo

# 4. As the device, answer it:
curl -s -X POST {url}/pool/response -H "Authorization: Bearer $DEVICE_TOKEN" \\
  -H 'Content-Type: application/json' \\
  -d '{{"parent_id": "'"$TASK_ID"'", "status": "done", "body": "hello"}}'; echo

# 5. Read today's log, as the admin:
curl -s {url}/pool/log -H "Authorization: Bearer $USER_TOKEN"; echo
"""


class Command(BaseCommand):
    help = "Create the demo admin and device on a site without users, and print how to use them."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Where the site runs.")

    def handle(self, *args: Any, url: str, **options: Any) -> None:
        notes = Path(settings.VAR_DIR) / "demo-login.txt"
        User = get_user_model()
        if User.objects.exists():
            if notes.exists():
                self.stdout.write(f"Demo logins and the curl walk-through: {notes}")
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(DEMO_ADMIN, email="", password=password)
        UserRole.objects.update_or_create(
            user=User.objects.get(username=DEMO_ADMIN), defaults={"role": UserRole.ADMIN}
        )
        call_command(
            "taskpool_device", DEMO_DEVICE, kind="raspberry-pi", validate=True, stdout=_Null()
        )
        device = DeviceUser.objects.get(pk=DEMO_DEVICE)
        device.rotate_session()
        token = str(DeviceToken.for_device(device))
        text = (
            f"Admin:  {url}/admin/  user {DEMO_ADMIN}  password {password}\n"
            f"Device: {DEMO_DEVICE} (validated), token (valid 30 days):\n{token}\n"
            f"API docs: {url}/pool/docs\n\n{walkthrough(url, password, token)}"
        )
        notes.write_text(text)
        notes.chmod(0o600)
        rule = "=" * 72
        self.stdout.write(f"{rule}\nFirst run: demo logins (also in {notes})\n{rule}\n{text}{rule}")


class _Null:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass
