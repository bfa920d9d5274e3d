"""Real servers for the live tests: uvicorn processes on free ports over one pool and database.

``LivePool`` migrates a fresh SQLite file, creates principals with a real
subprocess, and starts uvicorn processes (``project.asgi:application``) on
ports the kernel picks. ``read_events`` parses a Server-Sent Events stream.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent

# Run in the server's settings: prints the principals' credentials as JSON.
PROVISION = """
import json
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken
from taskpool.models import DeviceUser, UserRole
from taskpool.tokens import DeviceToken

credentials = {"devices": {}, "users": {}}
for device_id in DEVICES:
    device = DeviceUser.objects.create(pk=device_id, validated=device_id != "unvalidated")
    credentials["devices"][device_id] = str(DeviceToken.for_device(device))
for username, role, staff in USERS:
    user = get_user_model().objects.create_user(username, password="pw-" + username)
    user.is_staff = staff
    user.save()
    if role:
        UserRole.objects.create(user=user, role=role)
    credentials["users"][username] = str(AccessToken.for_user(user))
print(json.dumps(credentials))
"""

DEVICES = [
    *(f"pi-{n}" for n in range(1, 12)),
    "unvalidated",
    *(f"revoked-{n}" for n in range(1, 5)),
]
USERS = [
    ("ops", "master", False),
    ("ops2", "master", False),
    ("boss", "admin", True),
    ("viewer", "user", False),
]


@dataclass
class LivePool:
    """A pool directory, a database, principals, and the servers over them."""

    directory: Path
    #: More environment for the servers and commands (settings the tests' server reads).
    extra_environment: dict[str, str] = field(default_factory=dict)
    servers: list[str] = field(default_factory=list)
    devices: dict[str, str] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    _processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.directory / "pool"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.server_settings",
            "TASKPOOL_TEST_SERVER_DB": str(self.directory / "db.sqlite3"),
            "TASKPOOL_TEST_SERVER_DATA_DIR": str(self.data_dir),
            "PYTHONPATH": str(ROOT),
            **self.extra_environment,
        }

    def django(self, *arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "django", *arguments],
            cwd=ROOT,
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    def provision(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.django("migrate", "--noinput", "-v", "0")
        script = f"DEVICES = {DEVICES!r}\nUSERS = {USERS!r}\n{PROVISION}"
        credentials = json.loads(self.django("shell", "-c", script).strip().splitlines()[-1])
        self.devices, self.users = credentials["devices"], credentials["users"]

    def start_server(self, app: str = "project.asgi:application", *, port: int = 0) -> str:
        url, process = start_uvicorn(app, self.environment(), port=port)
        self._processes.append(process)
        self.servers.append(url)
        return url

    def stop(self) -> None:
        for process in self._processes:
            process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def bearer(self, name: str) -> dict[str, str]:
        token = self.devices.get(name) or self.users[name]
        return {"Authorization": f"Bearer {token}"}


def start_uvicorn(
    app: str, environment: dict[str, str], *, workers: int = 1, port: int = 0
) -> tuple[str, subprocess.Popen]:
    """A uvicorn process serving ``app`` on a free port, and its URL once it listens.

    Port 0 lets the kernel pick the port; uvicorn logs the one it got. (Not
    ``--fd``: uvicorn takes such a socket for a Unix one and leaves Nagle's
    algorithm on, which adds 40 ms to every answer.) With ``workers`` above 1,
    uvicorn's supervisor and that many worker processes, on a port picked
    here: the supervisor would log port 0 rather than the one it got. A
    ``port`` given is used as it is (a server restarted where clients know it).
    """
    if workers > 1 and not port:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            app,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-access-log",
            "--log-level",
            "info",
            "--timeout-graceful-shutdown",
            "2",
            *(["--workers", str(workers)] if workers > 1 else []),
        ],
        cwd=ROOT,
        env=environment,
        stderr=subprocess.PIPE,
        text=True,
    )
    started: queue.Queue[str] = queue.Queue()

    def read_log() -> None:  # and keep reading, so the pipe never fills
        url, serving = None, 0
        for line in process.stderr:
            found = re.search(r"Uvicorn running on (http://\S+)", line)
            if found:
                url = found.group(1)
            # Workers log their own start-up after the supervisor's address.
            serving += "Application startup complete" in line
            if url is not None and serving == workers:
                started.put(url)

    threading.Thread(target=read_log, daemon=True).start()
    try:
        return started.get(timeout=60), process
    except queue.Empty:
        process.kill()
        raise AssertionError(f"uvicorn did not start serving {app}") from None


@dataclass
class Event:
    id: str | None
    event: str | None
    data: dict | None
    comment: str | None = None


def read_events(response: httpx.Response) -> Iterator[Event]:
    """The events (and comments) of a Server-Sent Events response, as they arrive."""
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if fields:
                data = fields.get("data")
                yield Event(
                    fields.get("id"), fields.get("event"), json.loads(data) if data else None
                )
            fields = {}
        elif line.startswith(":"):
            yield Event(None, None, None, comment=line[1:].strip())
        else:
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value


def next_event(events: Iterator[Event]) -> Event:
    """The next real event, past comments."""
    for event in events:
        if event.comment is None:
            return event
    raise AssertionError("the stream ended")


CURSOR_RE = re.compile(r"\d{8}-\d{12}")
