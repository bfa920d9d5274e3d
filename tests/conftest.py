"""Shared fixtures: a fresh pool per test, principals and API clients.

Every test runs against a real store: a ``JsonlStore`` in its own temporary
directory (the ``pool_dir`` fixture is autouse), and a real database through
pytest-django. A module marked ``every_store`` runs each of its tests once
per store: the day files, and the ``DatabaseStore`` on the PostgreSQL named
by ``TASKPOOL_TEST_POSTGRES`` (skipped without it); a test of such a module
marked ``day_files_only`` runs on the day files alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken

from taskpool.messages import encode_line
from taskpool.models import DeviceUser, UserRole
from taskpool.stores import get_store, reset_store
from taskpool.tokens import DeviceToken
from tests.contract.support import stored
from tests.support import append_messages

STORES = {
    "jsonl": "taskpool.stores.jsonl.JsonlStore",
    "database": "taskpool.stores.database.DatabaseStore",
}
NO_POSTGRES = "TASKPOOL_TEST_POSTGRES is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    definition = metafunc.definition
    if (
        "store_kind" in metafunc.fixturenames
        and definition.get_closest_marker("every_store")
        and not definition.get_closest_marker("day_files_only")
    ):
        metafunc.parametrize("store_kind", list(STORES), indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("store_kind") == "database":
            item.add_marker(pytest.mark.postgres)
            item.add_marker(
                pytest.mark.skipif(not os.environ.get("TASKPOOL_TEST_POSTGRES"), reason=NO_POSTGRES)
            )
            # Committed for real: the store's other connections (and threads) see the rows.
            item.add_marker(
                pytest.mark.django_db(transaction=True, databases=["default", "pool"]),
                append=False,
            )


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """The test databases, and before they are dropped, no session left on the pool's.

    Threads of the database store (its listener, the event loop's workers) keep
    connections of their own open; PostgreSQL drops no database in use.
    """
    yield
    from django.db import connections

    if "pool" in connections:
        with django_db_blocker.unblock(), connections["pool"].cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    """Which store this test runs on (see the module docstring)."""
    return getattr(request, "param", "jsonl")


@pytest.fixture(autouse=True)
def fresh_throttles():
    """The login and enrollment throttles count in Django's cache, which outlives a test:
    each test starts at zero."""
    from django.core.cache import cache

    cache.clear()


@pytest.fixture(autouse=True)
def pool_dir(tmp_path: Path, settings, store_kind: str) -> Path:
    """This test's DATA_DIR; the process's store is rebuilt for it."""
    directory = tmp_path / "pool"
    directory.mkdir()
    settings.TASKPOOL = {
        **settings.TASKPOOL,
        "DATA_DIR": str(directory),
        "STORE": STORES[store_kind],
    }
    yield directory
    reset_store()


@pytest.fixture
def store(pool_dir):
    return get_store()


def day_files(directory: Path) -> dict[str, bytes]:
    """Every day file's name and bytes: compare before and after to prove nothing was appended."""
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.jsonl"))}


@pytest.fixture
def snapshot(pool_dir, store_kind) -> Callable[[], object]:
    """What the pool holds now: compare before and after to prove nothing was stored.

    Day files byte for byte (a torn fragment would show), else every message.
    """
    if store_kind == "jsonl":
        return lambda: day_files(pool_dir)
    return lambda: stored(get_store())


@pytest.fixture
def other_process(pool_dir, store_kind, settings) -> Callable[..., None]:
    """``other_process(*messages)``: store messages as they are, as another process would.

    Another writer of the same pool, with its own store: for the day files, their
    lines appended to the files; for the database, its rows written by a store of
    its own. Messages keep their ids and times (yesterday's task stays yesterday's).
    """

    def write(*messages) -> None:
        if store_kind == "jsonl":
            append_messages(pool_dir, *messages)
            return
        from taskpool.stores.database.store import DatabaseStore

        other = DatabaseStore(settings.TASKPOOL["DATABASE"])
        try:
            other.import_lines([encode_line(message)[:-1] for message in messages])
        finally:
            other.close()

    return write


@pytest.fixture
def another_store(pool_dir) -> Callable[[], object]:
    """``another_store()``: a store of another process on this test's pool (close it after)."""
    from taskpool.conf import pool_settings
    from taskpool.stores import store_class

    return lambda: store_class().from_settings(pool_settings)


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
