"""Principals: device and user tokens, revocation, and who may call what."""

from __future__ import annotations

import base64
import json
import time
from io import StringIO

import jwt
import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from taskpool.models import DeviceUser
from taskpool.tokens import DeviceToken
from tests.conftest import client_with, post_json

pytestmark = pytest.mark.every_store

DEVICE_ENDPOINTS = [
    ("get", "/pool/pending", None),
    ("post", "/pool/heartbeat", {}),
    ("post", "/pool/response", {"parent_id": "msg_" + "0" * 32, "status": "done"}),
    ("post", "/pool/device/token", {}),
]
USER_ENDPOINTS = [
    ("post", "/pool/task", {"to": "device:pi-1", "title": "t"}),
    ("get", "/pool/log", None),
    ("get", "/pool/devices", None),
]
ALL_ENDPOINTS = DEVICE_ENDPOINTS + USER_ENDPOINTS


def call(client, method, path, data):
    if method == "get":
        return client.get(path)
    return post_json(client, path, data)


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def signed(claims: dict, key: str = settings.SECRET_KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(claims, key, algorithm=algorithm)


def device_token_claims(device_id: str = "pi-1", session: str = "", **changes) -> dict:
    now = int(time.time())
    claims = {
        "token_type": "device",
        "exp": now + 3600,
        "iat": now,
        "jti": "0123456789abcdef0123456789abcdef",
        "device_id": device_id,
        "sid": session,
    }
    claims.update(changes)
    return claims


def assert_401(response):
    assert response.status_code == 401, response.json()
    assert isinstance(response.json()["detail"], str)
    assert response.has_header("WWW-Authenticate")


def assert_403(response):
    assert response.status_code == 403, response.json()
    assert isinstance(response.json()["detail"], str)


# No or bad credentials: 401 ----------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "data"), ALL_ENDPOINTS)
def test_no_credentials_is_401_with_www_authenticate(db, method, path, data, snapshot):
    before = snapshot()
    response = call(client_with(None), method, path, data)
    assert_401(response)
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert snapshot() == before


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer garbage", "Bearer a.b.c", "Bearer " + "x" * 300, "Bearer two tokens"],
)
def test_garbage_tokens_are_401(db, header, snapshot):
    client = client_with(None)
    client.credentials(HTTP_AUTHORIZATION=header)
    before = snapshot()
    assert_401(client.get("/pool/pending"))
    assert_401(post_json(client, "/pool/task", {"to": "device:pi-1", "title": "t"}))
    assert_401(post_json(client, "/pool/heartbeat", {}))
    assert snapshot() == before


def test_a_valid_device_token_works(make_device):
    _, token = make_device("pi-1")
    assert client_with(token).get("/pool/pending").status_code == 200


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_the_scheme_is_read_whatever_its_case(make_device, make_user, scheme):
    """HTTP's authentication schemes are case-insensitive; a client that wrote ``bearer``
    was told it had sent no credentials (the metrics token was taken so already)."""
    device = client_with(None)
    device.credentials(HTTP_AUTHORIZATION=f"{scheme} {make_device('pi-1')[1]}")
    assert device.get("/pool/pending").status_code == 200
    assert device.get("/pool/pending?wait=0").status_code == 200
    master = client_with(None)
    master.credentials(HTTP_AUTHORIZATION=f"{scheme} {make_user('ops', role='master')[1]}")
    assert master.get("/pool/tasks").status_code == 200


def test_an_expired_device_token_is_401(make_device):
    device, token = make_device("pi-1")
    claims = claims_of(token)
    claims["exp"] = int(time.time()) - 10
    assert_401(client_with(signed(claims)).get("/pool/pending"))
    # The same claims, unexpired, are accepted: only the expiry was wrong.
    claims["exp"] = int(time.time()) + 600
    assert client_with(signed(claims)).get("/pool/pending").status_code == 200


def test_an_expired_user_token_is_401(make_user):
    _, token = make_user("ops", role="admin")
    claims = claims_of(token)
    claims["exp"] = int(time.time()) - 10
    assert_401(client_with(signed(claims)).get("/pool/log"))
    claims["exp"] = int(time.time()) + 600
    assert client_with(signed(claims)).get("/pool/log").status_code == 200


def test_a_device_token_past_its_lifetime_is_401(make_device, settings):
    device, _ = make_device("pi-1")
    settings.TASKPOOL = {**settings.TASKPOOL, "DEVICE_TOKEN_LIFETIME": -1}
    token = str(DeviceToken.for_device(device))
    assert claims_of(token)["exp"] < time.time()
    assert_401(client_with(token).get("/pool/pending"))


@pytest.mark.parametrize("kind", ["device", "user"])
def test_a_forged_signature_is_401(make_device, make_user, kind):
    _, token = make_device("pi-1") if kind == "device" else make_user("ops", role="admin")
    path = "/pool/pending" if kind == "device" else "/pool/log"
    forged = signed(claims_of(token), key="not-the-server-secret-but-long-enough-0123456789")
    assert_401(client_with(forged).get(path))


@pytest.mark.parametrize("kind", ["device", "user"])
def test_an_alg_none_token_is_401(make_device, make_user, kind):
    _, token = make_device("pi-1") if kind == "device" else make_user("ops", role="admin")
    path = "/pool/pending" if kind == "device" else "/pool/log"
    unsigned = jwt.encode(claims_of(token), None, algorithm="none")
    assert unsigned.endswith(".")
    assert_401(client_with(unsigned).get(path))


def test_a_token_with_a_changed_payload_is_401(make_device):
    make_device("pi-2")
    _, token = make_device("pi-1")
    header, payload, signature = token.split(".")
    claims = claims_of(token)
    claims["device_id"] = "pi-2"
    changed = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_401(client_with(f"{header}.{changed}.{signature}").get("/pool/pending"))


def test_a_device_token_for_an_unknown_device_is_401(make_device):
    device, token = make_device("pi-1")
    assert_401(
        client_with(signed(device_token_claims("ghost", device.user_session))).get("/pool/pending")
    )
    DeviceUser.objects.filter(pk="pi-1").delete()
    assert_401(client_with(token).get("/pool/pending"))


def test_a_device_token_without_the_current_session_is_401(make_device):
    device, _ = make_device("pi-1")
    assert_401(client_with(signed(device_token_claims("pi-1", "wrong"))).get("/pool/pending"))
    assert_401(client_with(signed(device_token_claims("pi-1", ""))).get("/pool/pending"))
    good = signed(device_token_claims("pi-1", device.user_session))
    assert client_with(good).get("/pool/pending").status_code == 200


def test_a_refresh_token_is_not_an_access_token(make_user):
    user, _ = make_user("ops", role="admin")
    assert_401(client_with(str(RefreshToken.for_user(user))).get("/pool/log"))


def test_a_user_token_for_a_deleted_user_is_401(make_user):
    user, token = make_user("ops", role="admin")
    user.delete()
    assert_401(client_with(token).get("/pool/log"))


# Rotation ----------------------------------------------------------------------------


def token_from_command(device_id: str, *flags: str) -> str:
    out = StringIO()
    call_command("taskpool_device", device_id, *flags, "--token", stdout=out)
    return out.getvalue().strip().splitlines()[-1]


def test_rotating_a_device_token_revokes_the_older_one(db):
    first = token_from_command("pi-1", "--validate")
    assert client_with(first).get("/pool/pending").status_code == 200
    second = token_from_command("pi-1")
    assert second != first
    assert_401(client_with(first).get("/pool/pending"))
    assert_401(post_json(client_with(first), "/pool/heartbeat", {}))
    assert client_with(second).get("/pool/pending").status_code == 200


def test_rotate_session_revokes_every_earlier_token(make_device):
    device, token = make_device("pi-1")
    another = str(DeviceToken.for_device(device))
    device.rotate_session()
    for old in (token, another):
        assert_401(client_with(old).get("/pool/pending"))
    assert client_with(str(DeviceToken.for_device(device))).get("/pool/pending").status_code == 200


# Valid principals without the right: 403 ---------------------------------------------


@pytest.mark.parametrize(("method", "path", "data"), ALL_ENDPOINTS)
def test_an_unvalidated_device_is_403_not_401(make_device, snapshot, method, path, data):
    _, token = make_device("pi-new", validated=False)
    before = snapshot()
    response = call(client_with(token), method, path, data)
    assert_403(response)
    assert snapshot() == before
    assert DeviceUser.objects.get(pk="pi-new").last_seen is None


def test_a_refused_stream_does_not_count_as_the_device_being_seen(make_device):
    """A device not validated (or invalidated) that keeps opening its stream is not online."""
    _, token = make_device("pi-new", validated=False)
    response = client_with(token).get("/pool/stream")
    assert_403(response)
    assert "not been validated" in response.json()["detail"]
    assert DeviceUser.objects.get(pk="pi-new").last_seen is None


def test_an_unvalidated_device_is_told_why(make_device):
    _, token = make_device("pi-new", validated=False)
    assert "not been validated" in client_with(token).get("/pool/pending").json()["detail"]


@pytest.mark.parametrize(("method", "path", "data"), DEVICE_ENDPOINTS)
@pytest.mark.parametrize("role", ["admin", "master", "user", None])
def test_a_user_on_a_device_endpoint_is_403(make_user, snapshot, method, path, data, role):
    _, token = make_user("someone", role=role)
    before = snapshot()
    assert_403(call(client_with(token), method, path, data))
    assert snapshot() == before


@pytest.mark.parametrize(("method", "path", "data"), USER_ENDPOINTS)
def test_a_device_on_a_user_endpoint_is_403(device_client, snapshot, method, path, data):
    before = snapshot()
    assert_403(call(device_client, method, path, data))
    assert snapshot() == before


@pytest.mark.parametrize("role", ["user", None])
def test_a_role_below_master_may_not_post_tasks(make_user, snapshot, role):
    _, token = make_user("viewer", role=role)
    before = snapshot()
    response = post_json(client_with(token), "/pool/task", {"to": "device:pi-1", "title": "t"})
    assert_403(response)
    assert snapshot() == before


def test_a_master_posts_tasks_but_does_not_read_the_log_or_devices(master_client, make_device):
    make_device("pi-1")
    assert (
        post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "t"}).status_code
        == 201
    )
    assert_403(master_client.get("/pool/log"))
    assert_403(master_client.get("/pool/devices"))


def test_an_admin_does_all_a_master_does(admin_client_api, make_device):
    make_device("pi-1")
    sent = post_json(admin_client_api, "/pool/task", {"to": "device:pi-1", "title": "t"})
    assert sent.status_code == 201
    assert sent.json()["from"] == "user:boss"
    assert admin_client_api.get("/pool/log").status_code == 200
    assert admin_client_api.get("/pool/devices").status_code == 200


def test_a_superuser_without_a_role_counts_as_admin(make_user, make_device):
    make_device("pi-1")
    _, token = make_user("root", role=None, superuser=True, email="root@example.com")
    client = client_with(token)
    sent = post_json(client, "/pool/task", {"to": "device:pi-1", "title": "t"})
    assert sent.status_code == 201
    assert sent.json()["from"] == "user:root@example.com"
    assert client.get("/pool/log").status_code == 200
    assert client.get("/pool/devices").status_code == 200


def test_a_superuser_with_a_lower_role_still_counts_as_admin(make_user):
    _, token = make_user("root", role="user", superuser=True)
    assert client_with(token).get("/pool/devices").status_code == 200


def test_a_user_is_written_by_email_or_else_username(make_user, make_device):
    make_device("pi-1")
    _, with_email = make_user("alice", role="master", email="alice@example.com")
    _, without = make_user("bob", role="master")
    data = {"to": "device:pi-1", "title": "t"}
    assert (
        post_json(client_with(with_email), "/pool/task", data).json()["from"]
        == "user:alice@example.com"
    )
    assert post_json(client_with(without), "/pool/task", data).json()["from"] == "user:bob"


# User login ----------------------------------------------------------------------------


def test_login_gives_a_working_pair_and_refresh_gives_a_new_access_token(make_user):
    make_user("ops", role="admin")
    client = client_with(None)
    pair = post_json(client, "/pool/auth/token", {"username": "ops", "password": "pw-ops"})
    assert pair.status_code == 200
    assert set(pair.json()) == {"access", "refresh"}
    assert client_with(pair.json()["access"]).get("/pool/log").status_code == 200
    refreshed = post_json(client, "/pool/auth/token/refresh", {"refresh": pair.json()["refresh"]})
    assert refreshed.status_code == 200
    assert client_with(refreshed.json()["access"]).get("/pool/log").status_code == 200


def test_a_new_password_ends_the_tokens_issued_before_it(make_user):
    from django.contrib.auth import get_user_model

    make_user("ops", role="master")
    client = client_with(None)
    pair = post_json(client, "/pool/auth/token", {"username": "ops", "password": "pw-ops"}).json()
    assert client_with(pair["access"]).get("/pool/tasks").status_code == 200
    user = get_user_model().objects.get(username="ops")
    user.set_password("a-new-one-9f2c")
    user.save()
    refused = client_with(pair["access"]).get("/pool/tasks")
    assert refused.status_code == 401
    assert refused.json()["detail"] == "The user's password has been changed."
    refreshed = post_json(client, "/pool/auth/token/refresh", {"refresh": pair["refresh"]})
    assert refreshed.status_code == 401  # not an access token every request then refuses
    assert refreshed.json()["detail"] == "The user's password has been changed."
    again = post_json(client, "/pool/auth/token", {"username": "ops", "password": "a-new-one-9f2c"})
    fresh = post_json(client, "/pool/auth/token/refresh", {"refresh": again.json()["refresh"]})
    assert client_with(fresh.json()["access"]).get("/pool/tasks").status_code == 200


def test_a_refresh_token_of_a_user_since_deleted_is_401(make_user):
    from django.contrib.auth import get_user_model

    make_user("gone", role="master")
    client = client_with(None)
    pair = post_json(client, "/pool/auth/token", {"username": "gone", "password": "pw-gone"}).json()
    get_user_model().objects.filter(username="gone").delete()
    refreshed = post_json(client, "/pool/auth/token/refresh", {"refresh": pair["refresh"]})
    assert refreshed.status_code == 401
    assert refreshed.json()["detail"] == "No active account found for the given token."


def test_answers_that_carry_tokens_are_not_kept_by_caches(make_user):
    make_user("ops", role="master")
    client = client_with(None)
    login = post_json(client, "/pool/auth/token", {"username": "ops", "password": "pw-ops"})
    refreshed = post_json(client, "/pool/auth/token/refresh", {"refresh": login.json()["refresh"]})
    assert (login.status_code, refreshed.status_code) == (200, 200)
    assert login["Cache-Control"] == refreshed["Cache-Control"] == "no-store"


def test_logins_are_throttled_per_address(make_user, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"taskpool_login": "3/min"},
    }
    make_user("ops", role="master")
    client = client_with(None)
    guesses = [
        post_json(client, "/pool/auth/token", {"username": "ops", "password": f"guess-{n}"})
        for n in range(3)
    ]
    assert [guess.status_code for guess in guesses] == [401, 401, 401]
    right = post_json(client, "/pool/auth/token", {"username": "ops", "password": "pw-ops"})
    assert right.status_code == 429 and right["Retry-After"]
    assert "throttled" in right.json()["detail"]


def test_a_wrong_password_is_401(make_user):
    make_user("ops", role="admin")
    response = post_json(
        client_with(None), "/pool/auth/token", {"username": "ops", "password": "nope"}
    )
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)


@pytest.mark.parametrize(
    "data",
    [
        {"username": "ops", "password": 5},
        {"username": "ops", "password": None},
        {"username": "ops", "password": ["pw-ops"]},
        {"username": 5, "password": "pw-ops"},
        {"username": "ops"},
        {"username": "ops", "password": "pw-ops", "extra": 1},
    ],
)
def test_a_malformed_login_is_400(make_user, data):
    make_user("ops", role="admin")
    response = post_json(client_with(None), "/pool/auth/token", data)
    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert response.json()["errors"]


def test_a_bad_refresh_token_is_401_and_a_malformed_one_400(db):
    client = client_with(None)
    response = post_json(client, "/pool/auth/token/refresh", {"refresh": "garbage"})
    assert response.status_code == 401
    assert isinstance(response.json()["detail"], str)
    assert post_json(client, "/pool/auth/token/refresh", {"refresh": 5}).status_code == 400


def test_a_user_access_token_is_no_device_token(make_user, make_device):
    make_device("pi-1")
    user, _ = make_user("ops", role="admin")
    token = AccessToken.for_user(user)
    token["device_id"] = "pi-1"
    assert_403(client_with(str(token)).get("/pool/pending"))


# The two lookups every device request makes -----------------------------------------------


@pytest.mark.day_files_only
def test_a_device_token_claims_to_be_one_and_nothing_else_does(make_device, make_user):
    from taskpool.tokens import DeviceToken

    _, device_token = make_device("pi-1")
    _, user_token = make_user("ops", role="master")
    payload = base64.urlsafe_b64encode(b'{"token_type": "device"}').rstrip(b"=").decode()
    listed = base64.urlsafe_b64encode(b'["device"]').rstrip(b"=").decode()
    assert DeviceToken.claims_to_be_one(device_token)
    assert DeviceToken.claims_to_be_one(device_token.encode())
    assert DeviceToken.claims_to_be_one(f"x.{payload}.y")  # unverified: a claim, no more
    for other in [
        user_token,
        "",
        "a.b",
        "a.b.c.d",
        f"x.{listed}.y",
        "x.!!!.y",
        "x.e30.y",
        "é.é.é",
        "€.€.€",
    ]:
        assert not DeviceToken.claims_to_be_one(other), other


# The site's own SIMPLE_JWT header -------------------------------------------------------


@pytest.fixture
def site_jwt_header(monkeypatch, settings):
    """A site that reads its own tokens from ``Authorization: JWT <token>`` (simplejwt takes
    its header types from the setting when it is imported, so they are set there too)."""
    from rest_framework_simplejwt import authentication

    settings.SIMPLE_JWT = {**settings.SIMPLE_JWT, "AUTH_HEADER_TYPES": ("JWT",)}
    monkeypatch.setattr(authentication, "AUTH_HEADER_TYPES", ("JWT",))
    monkeypatch.setattr(authentication, "AUTH_HEADER_TYPE_BYTES", {b"JWT"})


def test_the_pools_bearer_tokens_work_whatever_header_the_site_names_for_its_own(
    site_jwt_header, make_device, make_user
):
    """Devices and their agent send ``Bearer``, as the API documents: a site's own choice of
    scheme for its tokens must not lock the fleet out."""
    device = client_with(make_device("pi-1")[1])
    assert device.get("/pool/pending").status_code == 200
    _user, user_token = make_user("ops", role="master")
    master = client_with(user_token)
    assert post_json(master, "/pool/task", {"to": "device:pi-1", "title": "t"}).status_code == 201
    site_scheme = client_with(None)
    site_scheme.credentials(HTTP_AUTHORIZATION=f"JWT {user_token}")
    assert site_scheme.get("/pool/tasks").status_code == 200  # the site's scheme is taken too
    refused = client_with(None).get("/pool/pending")
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == 'Bearer realm="taskpool"'
