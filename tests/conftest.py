"""Shared fixtures: a fresh pool directory per test, principals and API clients.

Every test runs against a real ``JsonlStore`` in its own temporary directory
(the ``pool_dir`` fixture is autouse), and a real database through
pytest-django.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from taskpool.models import DeviceUser, UserRole
from taskpool.stores import get_store, reset_store
from taskpool.tokens import DeviceToken


@pytest.fixture(autouse=True)
def pool_dir(tmp_path: Path, settings) -> Path:
    """This test's DATA_DIR; the process's store is rebuilt for it."""
    directory = tmp_path / "pool"
    directory.mkdir()
    settings.TASKPOOL = {**settings.TASKPOOL, "DATA_DIR": str(directory)}
    yield directory
    reset_store()


@pytest.fixture
def store(pool_dir):
    return get_store()


def day_files(directory: Path) -> dict[str, bytes]:
    """Every day file's name and bytes: compare before and after to prove nothing was appended."""
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.jsonl"))}


@pytest.fixture
def snapshot(pool_dir) -> Callable[[], dict[str, bytes]]:
    return lambda: day_files(pool_dir)


@pytest.fixture
def make_device(db) -> Callable[..., tuple[DeviceUser, str]]:
    """``make_device("pi-1", validated=True)`` -> (device, its access token)."""

    def make(device_id: str = "pi-1", *, validated: bool = True, kind: str = "pi"):
        device, _ = DeviceUser.objects.update_or_create(
            pk=device_id, defaults={"validated": validated, "kind": kind}
        )
        return device, str(DeviceToken.for_device(device))

    return make


@pytest.fixture
def make_user(db) -> Callable[..., tuple[object, str]]:
    """``make_user("ops", role="master")`` -> (user, a user access token). ``role=None``: no role."""

    def make(
        username: str = "ops",
        *,
        role: str | None = "master",
        superuser: bool = False,
        email: str = "",
    ):
        User = get_user_model()
        user = User.objects.create_user(username, email=email, password="pw-" + username)
        if superuser:
            user.is_superuser = user.is_staff = True
            user.save()
        if role is not None:
            UserRole.objects.create(user=user, role=role)
        return user, str(AccessToken.for_user(user))

    return make


def client_with(token: str | None) -> APIClient:
    client = APIClient()
    if token:
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


@pytest.fixture
def device_client(make_device) -> APIClient:
    """A validated device ``pi-1``."""
    return client_with(make_device("pi-1")[1])


@pytest.fixture
def master_client(make_user) -> APIClient:
    return client_with(make_user("master", role="master")[1])


@pytest.fixture
def admin_client_api(make_user) -> APIClient:
    return client_with(make_user("boss", role="admin")[1])


def post_json(client: APIClient, path: str, data, **extra):
    """POST ``data`` as JSON (bytes or str are sent as they are)."""
    if isinstance(data, (bytes, str)):
        return client.generic("POST", path, data, content_type="application/json", **extra)
    return client.post(path, data, format="json", **extra)


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get("TASKPOOL_TEST_POSTGRES")
    if not url:
        pytest.skip(
            "TASKPOOL_TEST_POSTGRES is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    return url
