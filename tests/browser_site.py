"""The demo site, really served, for the admin's browser tests.

``python -m tests.browser_site SEED_FILE`` (run with the demo's settings and
``TASKPOOL_VAR_DIR`` set) migrates a fresh SQLite database and creates the
people and devices the tests log in as, writing their names and device
tokens to ``SEED_FILE``. ``serve`` starts uvicorn on a free loopback port in
a subprocess and waits until the admin's login page answers.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "browser-test-password"
#: username -> (pool role or None, Django permissions)
PEOPLE = {
    "boss": ("admin", ["taskpool.*", "auth.view_user", "auth.change_user"]),
    "master": ("master", ["taskpool.view_deviceuser"]),
    "staff": (None, ["taskpool.view_deviceuser"]),
    "opsadmin": ("admin", []),  # the pool role alone: no superuser, no model permissions
}
#: device id -> validated
DEVICES = {
    "pi-1": True,
    "pi-2": True,
    "new-1": False,
    "token-1": True,
    "cancel-1": True,
    "quiet-1": True,  # never heard from
    "far-1": True,  # never heard from, found by the pool admin
}


@dataclass(frozen=True)
class Site:
    url: str
    var_dir: Path
    device_tokens: dict[str, str]
    server: subprocess.Popen | None = None
    #: Each person's access token, from one real login as the site starts: logins are
    #: throttled per address, and a fuzzer's guesses at them would use the allowance up.
    user_tokens: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=10)

    def user_token(self, username: str) -> str:
        return self.user_tokens[username]

    def log_in(self, username: str) -> str:
        with self.client() as client:
            answer = client.post(
                "/pool/auth/token", json={"username": username, "password": PASSWORD}
            )
            answer.raise_for_status()
            return answer.json()["access"]


def site_environment(var_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "TASKPOOL_VAR_DIR": str(var_dir),
        "DJANGO_SECRET_KEY": "browser-tests-only-not-a-secret-0123456789",
        "DJANGO_DEBUG": "0",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serve(var_dir: Path, *, port: int | None = None, seeded: bool = False) -> Iterator[Site]:
    """Seed a fresh site in ``var_dir`` and serve it with uvicorn until the block ends.

    ``seeded``: the site in ``var_dir`` was seeded by an earlier ``serve`` (a restart,
    on the same ``port``): its database and pool are served as they are.
    """
    environment = site_environment(var_dir)
    seed_file = var_dir / "seed.json"
    if not seeded:
        subprocess.run(
            [sys.executable, "-m", "tests.browser_site", str(seed_file)],
            cwd=ROOT,
            env=environment,
            check=True,
            capture_output=True,
            timeout=120,
        )
    port = port or free_port()
    log = open(var_dir / "server.log", "ab")  # noqa: SIM115 - closed below
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "project.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
        ],
        cwd=ROOT,
        env=environment,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(server, url, var_dir / "server.log")
        site = Site(url, var_dir, json.loads(seed_file.read_text())["tokens"], server)
        site.user_tokens.update({username: site.log_in(username) for username in PEOPLE})
        yield site
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_until_up(server: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"The site did not start:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/admin/login/", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)  # polling for the port to open, not an assertion
    raise RuntimeError(f"The site did not answer within 60 s:\n{log.read_text()}")


def seed(seed_file: Path) -> None:
    """Migrate, create the people and devices, and write the devices' tokens."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.core.management import call_command

    from taskpool.models import DeviceUser, UserRole
    from taskpool.tokens import DeviceToken

    call_command("migrate", verbosity=0)
    user_model = get_user_model()
    for username, (role, permissions) in PEOPLE.items():
        user = user_model.objects.create_user(
            username, email=f"{username}@example.com", password=PASSWORD, is_staff=True
        )
        for name in permissions:
            app_label, codename = name.split(".")
            granted = Permission.objects.filter(content_type__app_label=app_label)
            if codename != "*":
                granted = granted.filter(codename=codename)
            user.user_permissions.add(*granted)
        if role:
            UserRole.objects.create(user=user, role=role)
    tokens = {}
    for device_id, validated in DEVICES.items():
        device = DeviceUser.objects.create(id=device_id, kind="raspberry-pi", validated=validated)
        tokens[device_id] = str(DeviceToken.for_device(device))
    seed_file.write_text(json.dumps({"tokens": tokens}))


if __name__ == "__main__":
    seed(Path(sys.argv[1]))
