"""``GET /pool/health``: 200 when the store can be read and written and the database answers,
503 naming the failing check otherwise; ``?ready`` also waits for the day files' index."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from taskpool.stores import get_store
from tests.conftest import post_json

pytestmark = pytest.mark.every_store

ROOT = Path(__file__).resolve().parent.parent


def health(query: str = ""):
    return APIClient().get(f"/pool/health{query}")


def test_a_sound_pool_is_ok_without_authentication(db, store_kind):
    response = health()
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok"}
    assert response["Cache-Control"] == "no-store"


def test_every_store_passes_its_own_checks(store):
    store.pending_for("pi-1")  # whatever a store builds first is built
    checks = store.health(ready=True)
    assert checks and all(check.ok for check in checks), checks
    names = [check.name for check in checks]
    assert "read" in names
    assert ("data_dir" in names) == store.supports_day_files


def test_an_unknown_query_parameter_is_refused(db):
    assert health("?readyy").status_code == 400


@contextmanager
def unwritable(directory: Path):
    """``directory`` refuses new files, to root too: immutable (``chattr +i``) as root."""
    if os.geteuid() == 0:
        done = subprocess.run(["chattr", "+i", str(directory)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555)
        try:
            yield
        finally:
            directory.chmod(0o755)


@pytest.mark.day_files_only
def test_a_data_directory_that_takes_no_file_is_a_503_naming_it(db, store, pool_dir):
    with unwritable(pool_dir):
        response = health()
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert list(body["checks"]) == ["data_dir"]
    assert body["detail"].startswith("data_dir: ")
    assert response["Retry-After"] == "5"  # as every 503 of the pool says
    assert str(pool_dir) not in response.content.decode()  # no paths for anyone to read
    assert health().status_code == 200  # and well again once it is writable


@pytest.mark.day_files_only
def test_a_write_to_a_data_directory_that_takes_no_file_is_a_json_503(
    store, pool_dir, device_client
):
    """As on the first write after midnight, when today's file must be made: not a 500."""
    with unwritable(pool_dir):
        refused = device_client.post("/pool/heartbeat", {}, format="json")
    assert refused.status_code == 503, refused.content[:300]
    assert refused["Content-Type"] == "application/json" and refused["Retry-After"]
    assert "cannot store the message now" in refused.json()["detail"]
    assert list(pool_dir.glob("*.jsonl")) == []
    assert device_client.post("/pool/heartbeat", {}, format="json").status_code == 201


@pytest.mark.day_files_only
def test_a_missing_data_directory_is_a_503_naming_it(db, store, pool_dir):
    shutil.rmtree(pool_dir)
    response = health()
    assert response.status_code == 503
    assert list(response.json()["checks"]) == ["data_dir"]
    assert "missing" in response.json()["checks"]["data_dir"]


@pytest.mark.day_files_only
def test_a_data_directory_moved_away_while_serving_is_a_json_503_for_every_request(
    store, pool_dir, device_client, master_client, admin_client_api
):
    """Moved away or a disk not mounted: every request says so, and nothing makes it again."""
    posted = post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "kept"})
    assert posted.status_code == 201
    away = pool_dir.with_name(pool_dir.name + ".away")
    pool_dir.rename(away)
    try:
        answers = {
            "pending": device_client.get("/pool/pending"),
            "long-poll": device_client.get("/pool/pending?wait=1"),
            "heartbeat": post_json(device_client, "/pool/heartbeat", {}),
            "task": post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "x"}),
            "tasks": master_client.get("/pool/tasks"),
            "log": admin_client_api.get("/pool/log"),
        }
        for name, answer in answers.items():
            assert answer.status_code == 503, (name, answer.content[:300])
            assert answer["Content-Type"] == "application/json", name
            assert answer["Retry-After"], name
            assert "data directory is missing" in answer.json()["detail"], name
            assert str(pool_dir) not in answer.content.decode(), name
        assert not pool_dir.exists()  # not made again, beside a pool that may come back
    finally:
        away.rename(pool_dir)
    pending = device_client.get("/pool/pending").json()
    assert [task["id"] for task in pending] == [posted.json()["id"]]
    assert [line.count(b"\n") for line in map(Path.read_bytes, pool_dir.glob("*.jsonl"))] == [1]


def test_a_site_database_never_migrated_is_a_503_naming_the_migrate(db, store):
    """Else a load balancer would send devices to a server whose every request fails."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE taskpool_deviceuser RENAME TO taskpool_deviceuser_away")
    try:
        response = health()
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE taskpool_deviceuser_away RENAME TO taskpool_deviceuser")
    assert response.status_code == 503
    assert response.json()["checks"] == {
        "database": "The database has no table taskpool_deviceuser: run manage.py migrate."
    }
    assert health().status_code == 200


@pytest.mark.day_files_only
def test_ready_fails_while_the_index_is_built_and_starts_building_it(db, store):
    assert health().status_code == 200  # alive, even so
    response = health("?ready")
    assert response.status_code == 503
    assert list(response.json()["checks"]) == ["index"]
    deadline = time.monotonic() + 10
    while health("?ready").status_code != 200:
        assert time.monotonic() < deadline, "the index was never built"
        time.sleep(0.05)


def test_ready_on_a_store_with_nothing_to_build(db, store_kind):
    if store_kind == "jsonl":
        get_store().pending_for("pi-1")  # the index built
    assert health("?ready=1").status_code == 200


def free_port() -> int:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        return listener.getsockname()[1]


# Run with the pool's database on a port where nothing listens: the store's
# check and the endpoint, as a server configured so would answer them.
DOWN = """
import json, django
django.setup()
from django.core.management import call_command
from django.test import Client, override_settings
from taskpool.stores.database.store import DatabaseStore

call_command("migrate", database="default", verbosity=0)  # the site's own, in memory

checks = DatabaseStore("pool").health(ready=True)
with override_settings(TASKPOOL={"STORE": "taskpool.stores.database.DatabaseStore",
                                 "DATABASE": "pool"}):
    response = Client().get("/pool/health")
print(json.dumps({"checks": [[c.name, c.problem] for c in checks],
                  "status": response.status_code, "body": response.json()}))
"""


@pytest.mark.day_files_only
def test_a_database_store_whose_server_does_not_answer_is_a_503_naming_it():
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-c", DOWN],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "TASKPOOL_TEST_POSTGRES": f"postgresql://postgres@127.0.0.1:{port}/nothing",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["checks"] == [["pool_database", "The pool's database does not answer."]]
    assert answer["status"] == 503
    assert list(answer["body"]["checks"]) == ["pool_database"]
    assert str(port) not in json.dumps(answer["body"])


@pytest.mark.day_files_only
def test_a_data_directory_that_cannot_be_made_is_a_json_503_and_the_log_says_why(
    db, pool_dir, settings, make_device, caplog
):
    """A path through a file (or a directory the server may not write): every request is the
    store's refusal as JSON, never a server error, and the log names the path and the reason."""
    from tests.conftest import client_with, post_json

    in_the_way = pool_dir / "a-file"
    in_the_way.write_text("not a directory\n")
    settings.TASKPOOL = {**settings.TASKPOOL, "DATA_DIR": str(in_the_way / "pool")}
    device = client_with(make_device("pi-1")[1])
    with caplog.at_level("ERROR", logger="taskpool"):
        pending = device.get("/pool/pending")
        posted = post_json(device, "/pool/heartbeat", {"body": "ok"})
        checked = health()
    for response in (pending, posted, checked):
        assert response.status_code == 503, response.content
        assert response["Content-Type"] == "application/json"
        assert "data directory cannot be made" in response.content.decode()
        assert str(in_the_way) not in response.content.decode()  # no paths for anyone to read
    assert list(checked.json()["checks"]) == ["store"]
    assert any(
        str(in_the_way / "pool") in record.getMessage() and "Not a directory" in record.getMessage()
        for record in caplog.records
    )
