"""``POST /pool/device/token``: a device renews its own token, in the same session."""

from __future__ import annotations

import time
from io import StringIO

import jwt
import pytest
from django.core.management import call_command

from taskpool.messages import format_timestamp
from taskpool.models import DeviceUser
from tests.conftest import client_with, post_json

pytestmark = pytest.mark.every_store

PATH = "/pool/device/token"


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def renew(token: str | None, body=b"", **extra):
    """POST with no body by default, as the agent renews."""
    client = client_with(token)
    if body == b"":
        return client.post(PATH, **extra)
    return post_json(client, PATH, body, **extra)


def test_a_device_gets_a_new_token_of_the_same_session(make_device, snapshot, settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "DEVICE_TOKEN_LIFETIME": 3600}
    device, old = make_device("pi-1")
    before = snapshot()
    response = renew(old)
    assert response.status_code == 200, response.json()
    assert response["Cache-Control"] == "no-store"
    answer = response.json()
    assert set(answer) == {"token", "expires_at"}
    new, old_claims = claims_of(answer["token"]), claims_of(old)
    assert (new["token_type"], new["device_id"]) == ("device", "pi-1")
    assert new["sid"] == old_claims["sid"]
    assert new["jti"] != old_claims["jti"]
    assert new["exp"] - new["iat"] == 3600
    assert answer["expires_at"] == format_timestamp(new["exp"])
    assert new["exp"] >= time.time() + 3600 - 60
    # Both work: renewing revokes nothing.
    assert client_with(answer["token"]).get("/pool/pending").status_code == 200
    assert client_with(old).get("/pool/pending").status_code == 200
    assert DeviceUser.objects.get(pk="pi-1").user_session == device.user_session
    assert snapshot() == before  # no line in the pool


def test_a_renewed_token_renews_again(make_device):
    _, token = make_device("pi-1")
    for _ in range(3):
        response = renew(token)
        assert response.status_code == 200
        token = response.json()["token"]
    assert client_with(token).get("/pool/pending").status_code == 200


@pytest.mark.parametrize("body", [b"", {}, b"{}", b" {} "])
def test_no_body_or_an_empty_object_is_taken(make_device, body):
    _, token = make_device("pi-1")
    assert renew(token, body).status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"token": "x"}, 400),
        ({"device_id": "pi-2"}, 400),
        ([], 400),
        (b"null", 400),
        (b'"x"', 400),
        (b"{", 400),
        (b'{"a": 1, "a": 2}', 400),
    ],
)
def test_any_other_body_is_refused_and_nothing_changes(make_device, snapshot, body, status):
    device, token = make_device("pi-1")
    before = snapshot()
    response = renew(token, body)
    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert isinstance(response.json()["detail"], str)
    assert "token" not in response.json()
    assert snapshot() == before
    assert DeviceUser.objects.get(pk="pi-1").user_session == device.user_session


def test_a_body_that_is_not_json_is_415(make_device):
    _, token = make_device("pi-1")
    response = client_with(token).generic("POST", PATH, "x", content_type="text/plain")
    assert response.status_code == 415
    assert "token" not in response.json()


def test_no_token_is_401(db):
    response = renew(None)
    assert response.status_code == 401
    assert response.has_header("WWW-Authenticate")


@pytest.mark.parametrize("role", ["admin", "master", "user", None])
def test_a_users_token_is_403(make_user, role):
    _, token = make_user("someone", role=role)
    response = renew(token)
    assert response.status_code == 403
    assert "for devices" in response.json()["detail"]


def test_a_superusers_token_is_403(make_user):
    _, token = make_user("root", role=None, superuser=True)
    assert renew(token).status_code == 403


def rotate(device_id: str) -> str:
    out = StringIO()
    call_command("taskpool_device", device_id, "--token", stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def test_a_rotated_session_ends_a_token_and_its_renewals(make_device):
    _, old = make_device("pi-1")
    renewed = renew(old).json()["token"]
    current = rotate("pi-1")
    for token in (old, renewed):
        response = renew(token)
        assert response.status_code == 401, response.json()
        assert response.has_header("WWW-Authenticate")
        assert client_with(token).get("/pool/pending").status_code == 401
    assert claims_of(renew(current).json()["token"])["sid"] == claims_of(current)["sid"]


def test_an_invalidated_device_cannot_renew(make_device, snapshot):
    _, token = make_device("pi-1")
    call_command("taskpool_device", "pi-1", "--invalidate", stdout=StringIO())
    before = snapshot()
    response = renew(token)
    assert response.status_code == 403
    assert "not been validated" in response.json()["detail"]
    assert snapshot() == before
    # Validated again, the same token renews: its session was never rotated.
    call_command("taskpool_device", "pi-1", "--validate", stdout=StringIO())
    assert renew(token).status_code == 200


def test_an_expired_token_cannot_renew(make_device, settings):
    device, _ = make_device("pi-1")
    settings.TASKPOOL = {**settings.TASKPOOL, "DEVICE_TOKEN_LIFETIME": -1}
    from taskpool.tokens import DeviceToken

    expired = str(DeviceToken.for_device(device))
    assert renew(expired).status_code == 401


def test_a_deleted_device_cannot_renew(make_device):
    _, token = make_device("pi-1")
    DeviceUser.objects.filter(pk="pi-1").delete()
    assert renew(token).status_code == 401


def test_the_schema_describes_the_renewal(client, db):
    schema = client.get("/pool/schema", {"format": "json"}).json()
    operation = schema["paths"][PATH]["post"]
    assert {"deviceJWT": []} in operation["security"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    properties = schema["components"]["schemas"][answer.rsplit("/", 1)[1]]["properties"]
    assert set(properties) == {"token", "expires_at"}
    assert {"400", "401", "403"} <= set(operation["responses"])
