"""The demo site on PostgreSQL: DATABASE_URL=postgresql://… migrates and serves the pool.

Needs TASKPOOL_TEST_POSTGRES (set by .ci/run); skips without it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.support import manage_py

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


@pytest.fixture
def fresh_database(postgres_url: str):
    """A new, empty database on the PostgreSQL server, dropped afterwards."""
    psycopg = pytest.importorskip("psycopg")
    name = f"taskpool_demo_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(postgres_url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as error:
        pytest.skip(f"PostgreSQL at TASKPOOL_TEST_POSTGRES is not reachable: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            parts = urlsplit(postgres_url)
            yield urlunsplit(parts._replace(path=f"/{name}"))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def manage(*args: str, env: dict[str, str]) -> str:
    done = manage_py(*args, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_demo_site_migrates_and_serves_the_pool_on_postgresql(fresh_database, tmp_path):
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": fresh_database,
        "TASKPOOL_VAR_DIR": str(tmp_path),
    }
    manage("migrate", "--noinput", env=env)
    manage("taskpool_role", "ops", "master", "--password", "ops-password-1", env=env)
    token = manage("taskpool_device", "pg-pi", "--validate", "--token", env=env).splitlines()[-1]
    script = (
        """
import json
from django.test import Client
from rest_framework_simplejwt.tokens import AccessToken
from django.contrib.auth import get_user_model
from django.db import connection
assert connection.vendor == "postgresql", connection.vendor
user = AccessToken.for_user(get_user_model().objects.get(username="ops"))
ops = Client(HTTP_AUTHORIZATION=f"Bearer {user}")
device = Client(HTTP_AUTHORIZATION="Bearer " + DEVICE_TOKEN)
task = ops.post("/pool/task", {"to": "device:pg-pi", "title": "on postgres"}, content_type="application/json")
assert task.status_code == 201, task.content
pending = device.get("/pool/pending").json()
assert [t["id"] for t in pending] == [task.json()["id"]], pending
from taskpool.models import DeviceUser
assert DeviceUser.objects.get(pk="pg-pi").last_seen is not None  # the poll was noted
# PostgreSQL cannot hold a NUL character in text or JSON, nor look one up: refused, not 500s.
nul_meta = Client().post("/pool/enroll", {"device_id": "pg-new", "meta": {"n": "a\\x00"}}, content_type="application/json")
assert nul_meta.status_code == 400 and "meta" in nul_meta.json()["errors"], nul_meta.content
nul_id = Client().get("/pool/enroll/a%00", headers={"Enrollment-Secret": "x"})
# jsonb gives 1e23 back as an integer: a device's retry of its enrollment is still the same one.
retried = [
    Client().post("/pool/enroll", {"device_id": "pg-retry", "meta": {"n": 1e23, "f": [0.1, 2.0]}}, content_type="application/json", headers={"Idempotency-Key": "k" * 40})
    for _ in range(2)
]
assert [answer.status_code for answer in retried] == [202, 202], [answer.content for answer in retried]
assert retried[0].json() == retried[1].json()
assert nul_id.status_code == 404 and nul_id.json()["detail"], nul_id.content
staff = Client()
staff.force_login(get_user_model().objects.get(username="ops"))
for page in ("change/", "delete/", "history/", "approve/", "token/"):
    answer = staff.get(f"/admin/taskpool/deviceuser/a%00/{page}")
    assert answer.status_code in (302, 403, 404), (page, answer.status_code)  # never a 500
# A session cookie holding a NUL names no session: the API answers as to anyone.
nul_cookie = Client(HTTP_COOKIE='sessionid="abcdefgh\\000ijklmnop"')
for path, status in (("/pool/devices", 401), ("/pool/stream", 401), ("/pool/schema", 200)):
    answer = nul_cookie.get(path)
    assert answer.status_code == status, (path, answer.status_code)
# Admin lists: a NUL in a filter is the admin's "invalid filter"; in a selection, selects none.
for page in ("/admin/taskpool/deviceuser/?kind=%00", "/admin/taskpool/deviceuser/?q=%00"):
    answer = staff.get(page)
    assert answer.status_code == 302 and answer["Location"].endswith("?e=1"), (page, answer.status_code)
root = Client()
root.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-1x"))
acted = root.post("/admin/taskpool/deviceuser/", {"action": "invalidate", "_selected_action": ["a\\x00b", "pg-pi"], "index": "0"})
assert acted.status_code == 302, acted.status_code
assert DeviceUser.objects.get(pk="pg-pi").validated is False  # the one id that names a device
print("OK", task.json()["id"])
"""
    ).replace("DEVICE_TOKEN", repr(token))
    out = manage("shell", "-c", script, env={**env, "DJANGO_ALLOWED_HOSTS": "testserver"})
    assert out.splitlines()[-1].startswith("OK msg_"), out
    day_files = list((tmp_path / "pool").glob("*.jsonl"))
    assert len(day_files) == 1 and b"on postgres" in day_files[0].read_bytes()


@contextlib.contextmanager
def demo_on_uvicorn(database: str, var_dir: Path) -> Iterator[str]:
    """The demo site on ``database`` (the site's tables and the pool's), migrated, with a
    pool admin ``boss``, served by uvicorn; its URL."""
    from tests.live import start_uvicorn

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database,
        "TASKPOOL_VAR_DIR": str(var_dir),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "TASKPOOL_STORE": "database",
    }
    manage("migrate", "--noinput", env=env)
    manage("taskpool_role", "boss", "admin", "--password", "boss-password-1", env=env)
    url, server = start_uvicorn("project.asgi:application", env)
    try:
        yield url
    finally:
        server.terminate()
        server.wait(timeout=15)


@contextlib.contextmanager
def logged_in_as_boss(url: str) -> Iterator[Any]:
    """An ``httpx.Client`` on ``url`` with the admin's session of ``boss``."""
    import httpx

    with httpx.Client(base_url=url) as staff:
        staff.get("/admin/login/")
        logged_in = staff.post(
            "/admin/login/",
            data={
                "username": "boss",
                "password": "boss-password-1",
                "csrfmiddlewaretoken": staff.cookies["csrftoken"],
                "next": "/admin/",
            },
            headers={"Referer": f"{url}/admin/login/"},
        )
        assert logged_in.status_code == 302, logged_in.text
        yield staff


def test_admin_pages_served_by_djangos_asgi_handler_keep_no_connection_each(
    fresh_database, tmp_path
):
    """Each such request runs in a thread that ends with it: a connection it kept for
    CONN_MAX_AGE would stay open on the server until garbage collection found it."""
    import psycopg

    name = urlsplit(fresh_database).path.lstrip("/")

    def connections_held() -> int:
        with psycopg.connect(fresh_database.replace(name, "postgres"), autocommit=True) as probe:
            return probe.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
            ).fetchone()[0]

    with demo_on_uvicorn(fresh_database, tmp_path) as url:
        with logged_in_as_boss(url) as staff:
            for _ in range(30):
                assert staff.get("/admin/taskpool/deviceuser/").status_code == 200
        assert connections_held() <= 4  # the pool's own few, not one a page (11 before)


def test_approving_a_request_as_the_cron_forgets_it_on_postgresql(fresh_database, tmp_path):
    """The admin's *Approve* and ``--forget-enrollments``, each in its own session, one
    running between the other's read and its write: the request the cron deleted is not
    said to be approved, and the one staff approved is not deleted."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": fresh_database,
        "TASKPOOL_VAR_DIR": str(tmp_path),
        "DJANGO_ALLOWED_HOSTS": "testserver",
    }
    manage("migrate", "--noinput", env=env)
    script = """
import io
import threading
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.management import call_command
from django.db import connection, connections
from django.test import Client
from django.utils import timezone
from taskpool.admin import devices
from taskpool.management.commands import taskpool_device
from taskpool.models import DeviceUser
assert connection.vendor == "postgresql", connection.vendor

def ask(device_id):
    asked = Client().post("/pool/enroll", {"device_id": device_id}, content_type="application/json")
    assert asked.status_code == 202, asked.content
    old = timezone.now() - timedelta(days=40)
    DeviceUser.objects.filter(pk=device_id).update(enrolled_at=old, updated_at=old)

def in_another_session(action):
    done = []
    def run():
        try:
            done.append(action())
        finally:
            connections.close_all()
    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return done[0]

def forget():
    out = io.StringIO()
    call_command("taskpool_device", "--forget-enrollments", "30d", stdout=out)
    return out.getvalue()

root = Client()
root.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-1x"))
approve = lambda device_id: root.post(
    "/admin/taskpool/deviceuser/",
    {"action": "approve", "_selected_action": [device_id], "index": "0"},
)

ask("pg-forgotten")
approve_devices = devices.approve_devices
def forgetting_first(waiting):
    assert "Forgot 1 enrollment request" in in_another_session(forget)
    return approve_devices(waiting)
devices.approve_devices = forgetting_first
acted = approve("pg-forgotten")
devices.approve_devices = approve_devices
assert not DeviceUser.objects.filter(pk="pg-forgotten").exists()
said = [str(message) for message in get_messages(acted.wsgi_request)]
assert said == ["0 enrollment requests approved: the devices collect their tokens at their next "
    "ask. 1 selected device was not waiting for approval."], said

ask("pg-approved")
forget_enrollments = taskpool_device.forget_enrollments
def approving_first(found):
    assert [device.pk for device in found.waiting] == ["pg-approved"]
    assert in_another_session(lambda: approve("pg-approved").status_code) == 302
    return forget_enrollments(found)
taskpool_device.forget_enrollments = approving_first
said = forget()
assert DeviceUser.objects.get(pk="pg-approved").validated, said
assert "Forgot 0 enrollment requests" in said, said
print("OK")
"""
    out = manage("shell", "-c", script, env=env)
    assert out.splitlines()[-1] == "OK", out


def test_the_admin_says_503_when_the_sites_own_database_is_down_too(fresh_database, tmp_path):
    """Sessions, users and the pool in one database, as the deployment docs show: with it
    down, the pool's admin pages cannot even read who is asking. They still say why, with a
    503, rather than Django's bare server error."""
    import psycopg

    name = urlsplit(fresh_database).path.lstrip("/")

    def allow_connections(allowed: bool) -> None:
        with psycopg.connect(fresh_database.replace(name, "postgres"), autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS {str(allowed).lower()}')
            if not allowed:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    [name],
                )

    pages = ["/admin/taskpool/dashboard/", "/admin/taskpool/deviceuser/", "/admin/taskpool/task/"]
    with demo_on_uvicorn(fresh_database, tmp_path) as url, logged_in_as_boss(url) as staff:
        assert [staff.get(page).status_code for page in pages] == [200, 200, 200]
        allow_connections(False)
        try:
            down = [staff.get(page) for page in pages]
        finally:
            allow_connections(True)
        assert [answer.status_code for answer in down] == [503, 503, 503]
        assert all("The database does not answer now" in answer.text for answer in down)
        assert [staff.get(page).status_code for page in pages] == [200, 200, 200]
