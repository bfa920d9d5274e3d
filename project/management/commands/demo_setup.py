"""The demo site's logins: an admin, a validated device, and a curl walk-through.

Runs on every ``make run``. A site without users gets the demo admin and
device; their logins and the walk-through are printed and kept in
``var/demo-login.txt`` (readable by you only). On later runs the file is
written again for the address the site now runs at, with a new device token
if the one in it no longer works.
"""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken

from taskpool.authentication import DeviceJWTAuthentication
from taskpool.conf import pool_settings
from taskpool.models import DeviceUser, UserRole
from taskpool.tokens import DeviceToken

DEMO_ADMIN = "admin"
DEMO_DEVICE = "demo-pi"
#: The logins in a file this command wrote.
PASSWORD_RE = re.compile(rf"  user {DEMO_ADMIN}  password (?P<password>\S+)\n")
TOKEN_RE = re.compile(r"token \(valid [^)]*\):\n(?P<token>\S+)\n")

#: Addresses a server binds to (HOST=0.0.0.0) that are no place to ask it at.
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::"})


def site_url(url: str) -> str:
    """``url``, with a wildcard address put as a host the site answers.

    ``make run HOST=0.0.0.0`` serves on every address, but Django answers a
    request for ``Host: 0.0.0.0`` with a 400 (it is not in ``ALLOWED_HOSTS``):
    the logins and the walk-through name the first host ``ALLOWED_HOSTS``
    names (loopback by default) instead.
    """
    parts = urlsplit(url)
    if parts.hostname not in WILDCARD_HOSTS:
        return url
    named = [host for host in settings.ALLOWED_HOSTS if host != "*" and not host.startswith(".")]
    host = named[0] if named else "127.0.0.1"
    return urlunsplit(parts._replace(netloc=host if parts.port is None else f"{host}:{parts.port}"))


# One field of a JSON answer; otherwise what came instead, in a sentence (no traceback).
FIELD_HELPER = """\
field() {
  python3 -c '
import json, sys
text = sys.stdin.read()
try:
    print(json.loads(text)[sys.argv[1]])
except (ValueError, KeyError, TypeError):
    answer = " ".join(text.split())[:300]
    if not answer:
        sys.exit(f"No answer from {sys.argv[2]}: is the site running there? (make run)")
    sys.exit(f"Expected {sys.argv[1]} from {sys.argv[2]}, got: {answer}")
' "$1" "$2"
}"""


def walkthrough(url: str, password: str, device_token: str) -> str:
    """The copy-paste shell session that exercises the pool end to end."""
    login = shlex.quote(f'{{"username": "{DEMO_ADMIN}", "password": "{password}"}}')
    task = shlex.quote(
        f'{{"to": "device:{DEMO_DEVICE}", "title": "Say hello", "body": "echo hello"}}'
    )
    return f"""\
# 1. Log in as the admin (a user token, valid 30 minutes), and keep the device's token:
{FIELD_HELPER}
USER_TOKEN=$(curl -sS -X POST {url}/pool/auth/token \\
  -H 'Content-Type: application/json' -d {login} | field access {url})
DEVICE_TOKEN={device_token}

# 2. Post a task to the demo device:
TASK_ID=$(curl -sS -X POST {url}/pool/task -H "Authorization: Bearer $USER_TOKEN" \\
  -H 'Content-Type: application/json' -d {task} | field id {url})
echo "posted $TASK_ID"

# 3. As the device, see it pending:
curl -sS {url}/pool/pending -H "Authorization: Bearer $DEVICE_TOKEN"; echo

# 4. As the device, answer it:
curl -sS -X POST {url}/pool/response -H "Authorization: Bearer $DEVICE_TOKEN" \\
  -H 'Content-Type: application/json' \\
  -d '{{"parent_id": "'"$TASK_ID"'", "status": "done", "body": "hello"}}'; echo

# 5. Read today's log, as the admin:
curl -sS {url}/pool/log -H "Authorization: Bearer $USER_TOKEN"; echo
"""


def demo_logins(url: str, password: str, token: str) -> str:
    """What ``var/demo-login.txt`` holds."""
    days = pool_settings.DEVICE_TOKEN_LIFETIME.days
    return (
        f"Admin:  {url}/admin/  user {DEMO_ADMIN}  password {password}\n"
        f"Device: {DEMO_DEVICE} (validated), token (valid {days} days):\n{token}\n"
        f"API docs: {url}/pool/docs\n\n{walkthrough(url, password, token)}"
    )


def works(token: str) -> bool:
    """Whether ``token`` is a device token the pool takes now (not expired, not revoked)."""
    authentication = DeviceJWTAuthentication()
    try:
        authentication.get_user(authentication.get_validated_token(token.encode()))
    except (InvalidToken, AuthenticationFailed):
        return False
    return True


class Command(BaseCommand):
    help = (
        "Create the demo admin and device on a site without users, and print how to use them; "
        "on later runs, write var/demo-login.txt again for --url."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="Where the site runs.")

    def handle(self, *args: Any, url: str, **options: Any) -> None:
        url = site_url(url)
        notes = Path(settings.VAR_DIR) / "demo-login.txt"
        if get_user_model().objects.exists():
            if notes.exists():
                self._write_again(notes, url)
            return
        password = secrets.token_urlsafe(12)
        User = get_user_model()
        User.objects.create_superuser(DEMO_ADMIN, email="", password=password)
        UserRole.objects.update_or_create(
            user=User.objects.get(username=DEMO_ADMIN), defaults={"role": UserRole.ADMIN}
        )
        call_command(
            "taskpool_device", DEMO_DEVICE, kind="raspberry-pi", validate=True, stdout=_Null()
        )
        device = DeviceUser.objects.get(pk=DEMO_DEVICE)
        device.rotate_session()
        text = demo_logins(url, password, str(DeviceToken.for_device(device)))
        _write(notes, text)
        rule = "=" * 72
        self.stdout.write(f"{rule}\nFirst run: demo logins (also in {notes})\n{rule}\n{text}{rule}")

    def _write_again(self, notes: Path, url: str) -> None:
        """The file for ``url``, with the same logins and a device token that works."""
        text = notes.read_text()
        password, token = PASSWORD_RE.search(text), TOKEN_RE.search(text)
        if password is None or token is None:
            self.stdout.write(f"Demo logins (written for another address): {notes}")
            return
        device_token = token.group("token")
        if not works(device_token):
            device = DeviceUser.objects.filter(pk=DEMO_DEVICE).first()
            if device is not None:  # a token for the current session: others keep working
                device_token = str(DeviceToken.for_device(device))
        again = demo_logins(url, password.group("password"), device_token)
        if again != text:
            _write(notes, again)
        self.stdout.write(f"Demo logins and the curl walk-through for {url}: {notes}")


def _write(notes: Path, text: str) -> None:
    notes.touch(mode=0o600)
    notes.chmod(0o600)
    notes.write_text(text)


class _Null:
    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass
