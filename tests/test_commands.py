"""Provisioning commands (DESIGN 6): ``taskpool_device`` and ``taskpool_role``."""

from __future__ import annotations

from io import StringIO

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from taskpool.models import DeviceUser, UserRole
from tests.conftest import client_with, post_json


def run(command: str, *args: str) -> list[str]:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue().splitlines()


# taskpool_device -----------------------------------------------------------------------


def test_a_new_device_starts_unvalidated(db):
    run("taskpool_device", "pi-1")
    device = DeviceUser.objects.get(pk="pi-1")
    assert (device.validated, device.kind) == (False, "")


def test_validate_invalidate_and_kind(db):
    run("taskpool_device", "pi-1", "--validate", "--kind", "raspberry-pi")
    device = DeviceUser.objects.get(pk="pi-1")
    assert (device.validated, device.kind) == (True, "raspberry-pi")
    run("taskpool_device", "pi-1")  # no flags: nothing changes
    device.refresh_from_db()
    assert (device.validated, device.kind) == (True, "raspberry-pi")
    run("taskpool_device", "pi-1", "--invalidate", "--kind", "phone")
    device.refresh_from_db()
    assert (device.validated, device.kind) == (False, "phone")


def test_token_prints_a_working_token_as_the_last_line(db):
    lines = run("taskpool_device", "pi-1", "--validate", "--token")
    assert len(lines) >= 2
    token = lines[-1]
    response = client_with(token).get("/pool/pending")
    assert response.status_code == 200
    assert response.json() == []
    assert post_json(client_with(token), "/pool/heartbeat", {}).json()["from"] == "device:pi-1"


def test_a_device_token_lives_device_token_lifetime(db, settings):
    claims = jwt.decode(
        run("taskpool_device", "pi-1", "--token")[-1], options={"verify_signature": False}
    )
    assert claims["exp"] - claims["iat"] == 30 * 86400  # the default: 30 days
    assert (claims["token_type"], claims["device_id"]) == ("device", "pi-1")
    assert claims["sid"] == DeviceUser.objects.get(pk="pi-1").user_session
    settings.TASKPOOL = {**settings.TASKPOOL, "DEVICE_TOKEN_LIFETIME": 3600}
    claims = jwt.decode(
        run("taskpool_device", "pi-1", "--token")[-1], options={"verify_signature": False}
    )
    assert claims["exp"] - claims["iat"] == 3600


def test_a_token_for_an_unvalidated_device_authenticates_and_is_refused(db):
    token = run("taskpool_device", "pi-1", "--token")[-1]
    assert client_with(token).get("/pool/pending").status_code == 403
    run("taskpool_device", "pi-1", "--validate")  # validating does not revoke the token
    assert client_with(token).get("/pool/pending").status_code == 200


def test_a_new_token_revokes_the_old_one(db):
    first = run("taskpool_device", "pi-1", "--validate", "--token")[-1]
    second = run("taskpool_device", "pi-1", "--token")[-1]
    assert client_with(first).get("/pool/pending").status_code == 401
    assert client_with(second).get("/pool/pending").status_code == 200


def test_without_token_nothing_is_revoked(db):
    token = run("taskpool_device", "pi-1", "--validate", "--token")[-1]
    run("taskpool_device", "pi-1", "--kind", "phone")
    assert client_with(token).get("/pool/pending").status_code == 200


@pytest.mark.parametrize("device_id", ["bad id", "_pi", ".pi", "", "x" * 65, "pi/1", "pi:1", "pï"])
def test_a_bad_device_id_is_refused(db, device_id):
    with pytest.raises(CommandError):
        run("taskpool_device", device_id)
    assert not DeviceUser.objects.exists()


def test_validate_and_invalidate_together_are_refused(db):
    with pytest.raises(CommandError):
        run("taskpool_device", "pi-1", "--validate", "--invalidate")
    assert not DeviceUser.objects.exists()


# taskpool_role -------------------------------------------------------------------------


def login(username: str, password):
    return post_json(
        client_with(None), "/pool/auth/token", {"username": username, "password": password}
    )


@pytest.mark.parametrize("role", ["admin", "master", "user"])
def test_role_creates_the_user_and_sets_the_role(db, role):
    run("taskpool_role", "alice", role)
    user = get_user_model().objects.get(username="alice")
    assert UserRole.objects.get(user=user).role == role
    assert not user.has_usable_password()


def test_role_changes_an_existing_users_role(db):
    run("taskpool_role", "alice", "user")
    run("taskpool_role", "alice", "admin")
    assert UserRole.objects.get(user__username="alice").role == "admin"
    assert get_user_model().objects.filter(username="alice").count() == 1
    assert UserRole.objects.count() == 1


def test_a_password_lets_the_user_log_in_and_use_the_role(db, make_device):
    make_device("pi-1")
    run("taskpool_role", "alice", "master", "--password", "s3cret-enough")
    response = login("alice", "s3cret-enough")
    assert response.status_code == 200
    client = client_with(response.json()["access"])
    assert post_json(client, "/pool/task", {"to": "device:pi-1", "title": "t"}).status_code == 201
    assert client.get("/pool/log").status_code == 403  # master, not admin


def test_a_user_without_a_password_cannot_log_in(db):
    run("taskpool_role", "alice", "admin")
    assert login("alice", "").status_code == 400
    assert login("alice", "anything").status_code == 401


def test_changing_the_role_keeps_the_password(db):
    run("taskpool_role", "alice", "user", "--password", "s3cret-enough")
    run("taskpool_role", "alice", "admin")
    response = login("alice", "s3cret-enough")
    assert response.status_code == 200
    assert client_with(response.json()["access"]).get("/pool/log").status_code == 200


@pytest.mark.parametrize("password", [5, None, ["s3cret-enough"], {"p": 1}, True])
def test_login_with_a_non_string_password_is_400(db, password):
    run("taskpool_role", "alice", "admin", "--password", "s3cret-enough")
    response = login("alice", password)
    assert response.status_code == 400
    assert "password" in response.json()["errors"]


def test_an_unknown_role_is_refused(db):
    with pytest.raises(CommandError):
        run("taskpool_role", "alice", "root")
    assert not get_user_model().objects.exists()


def test_an_email_makes_the_users_address(db, make_device):
    make_device("pi-1")
    run(
        "taskpool_role",
        "alice",
        "master",
        "--password",
        "s3cret-enough",
        "--email",
        "a@example.com",
    )
    token = login("alice", "s3cret-enough").json()["access"]
    sent = post_json(client_with(token), "/pool/task", {"to": "device:pi-1", "title": "t"})
    assert sent.json()["from"] == "user:a@example.com"


@pytest.mark.parametrize("role, staff", [("admin", True), ("master", True), ("user", False)])
def test_taskpool_role_gives_admin_access_to_admins_and_masters(db, role, staff):
    call_command("taskpool_role", f"someone-{role}", role, stdout=StringIO())
    assert get_user_model().objects.get(username=f"someone-{role}").is_staff is staff
