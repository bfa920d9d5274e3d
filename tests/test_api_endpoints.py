"""The seed's endpoints through HTTP: pending, response, heartbeat, task, log,
devices, the schema and docs, and clean 404s."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from taskpool.messages import encode_line, format_timestamp
from taskpool.models import DeviceUser
from taskpool.stores import get_store
from tests.conftest import client_with, post_json
from tests.support import (
    append_messages,
    append_raw,
    days_ago,
    ids,
    message,
    noon,
    today,
)

pytestmark = pytest.mark.every_store


def post_task(client, to="device:pi-1", title="t", **fields):
    response = post_json(client, "/pool/task", {"to": to, "title": title, **fields})
    assert response.status_code == 201, response.json()
    return response.json()


def answer(client, task, status="done", **fields):
    response = post_json(
        client, "/pool/response", {"parent_id": task["id"], "status": status, **fields}
    )
    assert response.status_code == 201, response.json()
    return response.json()


@pytest.fixture
def pi2(make_device):
    return client_with(make_device("pi-2")[1])


# Pending -----------------------------------------------------------------------------


def test_pending_lists_direct_broadcast_and_list_tasks_oldest_first(
    master_client, device_client, pi2
):
    direct = post_task(master_client, "device:pi-1")
    everyone = post_task(master_client, "device:*")
    listed = post_task(master_client, 'device:[pi-2, "pi-1"]')
    other = post_task(master_client, "device:pi-2")
    assert ids(device_client.get("/pool/pending").json()) == ids([direct, everyone, listed])
    assert ids(pi2.get("/pool/pending").json()) == ids([everyone, listed, other])


def test_progress_keeps_pending_and_a_terminal_answer_ends_it_for_that_device_only(
    master_client, device_client, pi2
):
    broadcast = post_task(master_client, "device:*")
    answer(device_client, broadcast, "progress", body="half way")
    assert ids(device_client.get("/pool/pending").json()) == [broadcast["id"]]
    answer(device_client, broadcast, "done")
    assert device_client.get("/pool/pending").json() == []
    assert ids(pi2.get("/pool/pending").json()) == [broadcast["id"]]
    answer(pi2, broadcast, "rejected")
    assert pi2.get("/pool/pending").json() == []


def test_a_response_is_stored_as_a_message_to_the_tasks_sender(master_client, device_client):
    task = post_task(master_client)
    stored = answer(
        device_client, task, "failed", title="no disk", body="ENOSPC", meta={"code": 28}
    )
    assert stored["type"] == "response"
    assert (stored["from"], stored["to"]) == ("device:pi-1", "user:master")
    assert stored["parent_id"] == task["id"]
    assert (stored["title"], stored["body"]) == ("no disk", "ENOSPC")
    assert stored["meta"] == {"code": 28, "status": "failed"}


def test_a_heartbeat_is_stored_from_the_device_to_the_backend(device_client):
    response = post_json(device_client, "/pool/heartbeat", {"body": "ok", "meta": {"load": 0.25}})
    assert response.status_code == 201
    beat = response.json()
    assert (beat["from"], beat["to"], beat["type"]) == ("device:pi-1", "backend", "heartbeat")
    assert (beat["body"], beat["meta"], beat["parent_id"]) == ("ok", {"load": 0.25}, None)
    assert get_store().day_messages(today()) == [beat]
    assert post_json(device_client, "/pool/heartbeat", {}).status_code == 201


def test_a_task_address_is_stored_in_its_plain_form(master_client, make_device):
    make_device("pi-1")
    make_device("pi-2")
    assert post_task(master_client, 'device:[ pi-1 , "pi-2", pi-1 ]')["to"] == "device:[pi-1,pi-2]"


def test_pending_limit_defaults_to_100_and_goes_up_to_1000(device_client, store):
    sent = [
        store.post_task(sender="backend", to="device:pi-1", title=str(n)).message
        for n in range(1001)
    ]
    assert ids(device_client.get("/pool/pending").json()) == ids(sent[:100])
    assert ids(device_client.get("/pool/pending", {"limit": "1"}).json()) == ids(sent[:1])
    assert ids(device_client.get("/pool/pending", {"limit": "250"}).json()) == ids(sent[:250])
    assert ids(device_client.get("/pool/pending", {"limit": "1000"}).json()) == ids(sent[:1000])


def test_yesterdays_task_written_by_hand_is_pending(device_client, other_process):
    old = message(ts=noon(days_ago(1)), title="from yesterday")
    other_process(old)
    new = store_task(get_store())
    assert ids(device_client.get("/pool/pending").json()) == [old["id"], new["id"]]
    answer(device_client, old)
    assert ids(device_client.get("/pool/pending").json()) == [new["id"]]


def store_task(store, to="device:pi-1"):
    return store.post_task(sender="backend", to=to, title="today").message


@pytest.mark.day_files_only
def test_a_line_appended_by_another_process_is_seen_by_the_next_request(device_client, pool_dir):
    assert device_client.get("/pool/pending").json() == []  # the index is built now
    script = (
        "import sys\n"
        "from taskpool.stores.jsonl import JsonlStore\n"
        "posted = JsonlStore(sys.argv[1]).post_task(sender='backend', to='device:pi-1', title='x')\n"
        "print(posted.message['id'])\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(pool_dir)], capture_output=True, text=True, check=True
    )
    assert ids(device_client.get("/pool/pending").json()) == [other.stdout.strip()]


@pytest.mark.day_files_only
def test_a_line_appended_with_cat_is_seen_by_the_next_request(device_client, pool_dir):
    first = store_task(get_store())
    assert ids(device_client.get("/pool/pending").json()) == [first["id"]]
    by_hand = message(ts=format_timestamp(time.time()), to="device:*", title="cat >>")
    path = pool_dir / f"{today().isoformat()}.jsonl"
    subprocess.run(
        ["sh", "-c", 'cat >> "$1"', "sh", str(path)], input=encode_line(by_hand), check=True
    )
    assert ids(device_client.get("/pool/pending").json()) == [first["id"], by_hand["id"]]


@pytest.mark.day_files_only
def test_a_torn_line_does_not_hide_the_next_task(device_client, master_client, pool_dir):
    first = post_task(master_client, title="first")
    torn = encode_line(message(ts=format_timestamp(time.time()), title="torn"))
    append_raw(pool_dir, today(), torn[:40])
    assert ids(device_client.get("/pool/pending").json()) == [first["id"]]
    after = post_task(master_client, title="after")
    assert ids(device_client.get("/pool/pending").json()) == [first["id"], after["id"]]
    assert get_store().stats()["skipped_lines"] == 1
    answer(device_client, after)
    assert ids(device_client.get("/pool/pending").json()) == [first["id"]]


# Log -----------------------------------------------------------------------------------


def test_the_log_is_todays_messages_in_file_order(master_client, device_client, admin_client_api):
    task = post_task(master_client)
    response = answer(device_client, task)
    beat = post_json(device_client, "/pool/heartbeat", {}).json()
    log = admin_client_api.get("/pool/log")
    assert log.status_code == 200
    assert log.json() == [task, response, beat]
    assert admin_client_api.get("/pool/log", {"date": today().isoformat()}).json() == log.json()


def test_the_log_of_another_day(admin_client_api, other_process):
    day = days_ago(3)
    first = message(ts=f"{day.isoformat()}T08:00:00Z")
    second = message(ts=f"{day.isoformat()}T07:00:00Z", kind="info", to="backend")
    other_process(first, second)
    assert admin_client_api.get("/pool/log", {"date": day.isoformat()}).json() == [first, second]
    assert admin_client_api.get("/pool/log", {"date": "1999-01-01"}).json() == []
    assert admin_client_api.get("/pool/log").json() == []


@pytest.mark.day_files_only
def test_the_log_leaves_out_lines_that_are_not_messages(admin_client_api, pool_dir):
    day = days_ago(3)
    first = message(ts=f"{day.isoformat()}T08:00:00Z")
    append_messages(pool_dir, first)
    append_raw(pool_dir, day, b"not a message\n")
    assert admin_client_api.get("/pool/log", {"date": day.isoformat()}).json() == [first]


def test_the_log_of_a_day_beyond_the_ttl_horizon_is_still_readable(admin_client_api, other_process):
    old = message(ts=noon(days_ago(30)))
    other_process(old)
    assert admin_client_api.get("/pool/log", {"date": days_ago(30).isoformat()}).json() == [old]


# Devices -------------------------------------------------------------------------------


def row_of(client, device_id):
    (row,) = [row for row in client.get("/pool/devices").json() if row["id"] == device_id]
    return row


def test_devices_list_every_registered_device_with_its_fields(
    make_device, admin_client_api, master_client
):
    make_device("pi-1", kind="raspberry-pi")
    make_device("phone-7", validated=False, kind="phone")
    post_task(master_client, "device:*")
    post_task(master_client, "device:pi-1")
    rows = admin_client_api.get("/pool/devices").json()
    assert rows == [
        {
            "id": "phone-7",
            "kind": "phone",
            "validated": False,
            "last_seen": None,
            "last_heartbeat": None,
            "online": False,
            "pending": 1,
        },
        {
            "id": "pi-1",
            "kind": "raspberry-pi",
            "validated": True,
            "last_seen": None,
            "last_heartbeat": None,
            "online": False,
            "pending": 2,
        },
    ]


def test_devices_filter_by_kind_and_validated(make_device, admin_client_api):
    make_device("pi-1", kind="raspberry-pi")
    make_device("pi-2", kind="raspberry-pi", validated=False)
    make_device("phone-7", kind="phone")

    def ids(**query):
        answer = admin_client_api.get("/pool/devices", query)
        assert answer.status_code == 200, answer.json()
        return [row["id"] for row in answer.json()]

    assert ids() == ["phone-7", "pi-1", "pi-2"]
    assert ids(kind="raspberry-pi") == ["pi-1", "pi-2"]
    assert ids(validated="false") == ["pi-2"]
    assert ids(kind="raspberry-pi", validated="true") == ["pi-1"]
    assert ids(kind="toaster") == []
    assert ids(kind="") == ["phone-7", "pi-1", "pi-2"]  # text: empty filters nothing, as a form's


def test_the_devices_filters_are_in_the_schema(admin_client_api):
    schema = admin_client_api.get("/pool/schema", {"format": "json"}).json()
    parameters = schema["paths"]["/pool/devices"]["get"]["parameters"]
    by_name = {parameter["name"]: parameter for parameter in parameters}
    assert {"kind", "validated"} <= set(by_name)
    assert by_name["validated"]["schema"]["enum"] == ["false", "true"]


def test_last_seen_and_last_heartbeat_come_from_the_devices_messages(
    make_device, admin_client_api, other_process
):
    make_device("pi-2")
    # pi-2 never called the API: another process stored its heartbeat and an answer.
    beat_ts = format_timestamp(time.time() - 30)
    said_ts = format_timestamp(time.time() - 20)
    other_process(
        message(kind="heartbeat", sender="device:pi-2", to="backend", ts=beat_ts),
        message(kind="info", sender="device:pi-2", to="backend", ts=said_ts),
    )
    row = row_of(admin_client_api, "pi-2")
    assert (row["last_seen"], row["last_heartbeat"], row["online"]) == (said_ts, beat_ts, True)
    assert DeviceUser.objects.get(pk="pi-2").last_seen is None


def test_a_heartbeat_sets_last_heartbeat_and_last_seen(device_client, admin_client_api):
    beat = post_json(device_client, "/pool/heartbeat", {"body": "alive"}).json()
    row = row_of(admin_client_api, "pi-1")
    assert row["last_heartbeat"] == beat["ts"]
    assert row["last_seen"] >= beat["ts"] and row["online"] is True


def test_last_seen_comes_from_accepted_requests_too(device_client, admin_client_api):
    before = format_timestamp(time.time())
    assert device_client.get("/pool/pending").status_code == 200
    after = format_timestamp(time.time())
    row = row_of(admin_client_api, "pi-1")
    assert before <= row["last_seen"] <= after
    assert row["online"] is True and row["last_heartbeat"] is None


def device_writes(queries) -> list[str]:
    return [
        q["sql"]
        for q in queries
        if q["sql"].startswith("UPDATE") and "taskpool_deviceuser" in q["sql"]
    ]


def test_a_stored_message_leaves_the_device_row_alone(device_client, admin_client_api, store):
    # The pool has the heartbeat and its time: writing the device's row as well
    # would cost every heartbeat and answer of a fleet a database write.
    with CaptureQueriesContext(connection) as captured:
        beat = post_json(device_client, "/pool/heartbeat", {})
        task = store.post_task(sender="user:x", to="device:pi-1", title="t").message
        done = post_json(
            device_client, "/pool/response", {"parent_id": task["id"], "status": "done"}
        )
    assert (beat.status_code, done.status_code) == (201, 201)
    assert device_writes(captured.captured_queries) == []
    assert DeviceUser.objects.get(pk="pi-1").last_seen is None
    row = row_of(admin_client_api, "pi-1")
    assert row["last_seen"] == done.json()["ts"] and row["online"] is True


def test_a_replayed_write_is_seen_on_the_device_row(device_client, store):
    # A write answered 200 from its Idempotency-Key stores nothing new: the
    # request itself is what says the device is there now.
    task = store.post_task(sender="user:x", to="device:pi-1", title="t").message
    answer = {"parent_id": task["id"], "status": "done"}
    headers = {"HTTP_IDEMPOTENCY_KEY": "answer-1"}
    assert post_json(device_client, "/pool/response", answer, **headers).status_code == 201
    assert DeviceUser.objects.get(pk="pi-1").last_seen is None
    assert post_json(device_client, "/pool/response", answer, **headers).status_code == 200
    assert DeviceUser.objects.get(pk="pi-1").last_seen is not None


def test_last_seen_is_written_at_most_once_per_interval(device_client, settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "LAST_SEEN_INTERVAL": 60}
    with CaptureQueriesContext(connection) as first:
        device_client.get("/pool/pending")
    assert len(device_writes(first.captured_queries)) == 1
    written = DeviceUser.objects.get(pk="pi-1").last_seen
    with CaptureQueriesContext(connection) as next_ones:
        for _ in range(5):
            device_client.get("/pool/pending")
            post_json(device_client, "/pool/heartbeat", {})
    assert device_writes(next_ones.captured_queries) == []
    assert DeviceUser.objects.get(pk="pi-1").last_seen == written

    # Once the interval has passed, the next accepted request writes again.
    DeviceUser.objects.filter(pk="pi-1").update(last_seen=written - timedelta(seconds=61))
    with CaptureQueriesContext(connection) as later:
        device_client.get("/pool/pending")
    assert len(device_writes(later.captured_queries)) == 1
    assert DeviceUser.objects.get(pk="pi-1").last_seen > written - timedelta(seconds=1)


def test_online_means_seen_within_the_online_window(make_device, admin_client_api, settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "ONLINE_WINDOW": 60}
    make_device("recent")
    make_device("stale")
    make_device("never")
    now = datetime.now(UTC)
    DeviceUser.objects.filter(pk="recent").update(last_seen=now - timedelta(seconds=50))
    DeviceUser.objects.filter(pk="stale").update(last_seen=now - timedelta(seconds=70))
    rows = {row["id"]: row for row in admin_client_api.get("/pool/devices").json()}
    assert rows["recent"]["online"] is True
    assert rows["stale"]["online"] is False
    assert rows["never"]["online"] is False and rows["never"]["last_seen"] is None
    assert rows["stale"]["last_seen"] == format_timestamp((now - timedelta(seconds=70)).timestamp())


def test_last_seen_is_the_later_of_request_and_message(
    make_device, admin_client_api, other_process
):
    make_device("pi-2")
    now = time.time()
    DeviceUser.objects.filter(pk="pi-2").update(last_seen=datetime.fromtimestamp(now - 500, UTC))
    said = format_timestamp(now - 100)
    other_process(message(kind="info", sender="device:pi-2", to="backend", ts=said))
    assert row_of(admin_client_api, "pi-2")["last_seen"] == said
    DeviceUser.objects.filter(pk="pi-2").update(last_seen=datetime.fromtimestamp(now - 5, UTC))
    assert row_of(admin_client_api, "pi-2")["last_seen"] == format_timestamp(now - 5)


# Schema, docs, paths ------------------------------------------------------------------


def test_the_schema_is_openapi_3_and_lists_the_endpoints(client, db):
    response = client.get("/pool/schema", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert {
        "/pool/pending",
        "/pool/response",
        "/pool/heartbeat",
        "/pool/task",
        "/pool/log",
        "/pool/devices",
        "/pool/auth/token",
        "/pool/auth/token/refresh",
    } <= set(schema["paths"])
    yaml = client.get("/pool/schema")
    assert yaml.status_code == 200
    assert yaml.content.startswith(b"openapi: 3.")


def test_the_schema_describes_each_endpoint_in_its_own_words(client, db):
    # drf-spectacular takes a view's description from its base classes when it has no
    # docstring: the API reference said of a dozen endpoints what PoolAPIView is for
    # in the code, and of the poll that it was "the seed's".
    from taskpool.api.views import PoolAPIView

    schema = client.get("/pool/schema", {"format": "json"}).json()
    descriptions = {
        f"{method.upper()} {path}": operation.get("description", "")
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict)
    }
    borrowed = [name for name, text in descriptions.items() if PoolAPIView.__doc__ in text]
    assert borrowed == []
    assert [name for name, text in descriptions.items() if "seed" in text] == []
    assert "wait" in descriptions["GET /pool/pending"]


def test_the_schema_lists_the_406_that_an_accept_without_json_gets(client, db):
    schema = client.get("/pool/schema", {"format": "json"}).json()
    operations = {
        f"{method.upper()} {path}": operation
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        # The stream answers in its own type, and the schema in YAML or JSON.
        if isinstance(operation, dict) and path not in ("/pool/stream", "/pool/schema")
    }
    assert [name for name, op in operations.items() if "406" not in op["responses"]] == []
    refused = client.get("/pool/health", HTTP_ACCEPT="text/html")
    assert refused.status_code == 406
    assert refused.json()["detail"]


def test_the_schema_lists_a_503_with_its_retry_after_for_every_endpoint(client, db):
    """Every endpoint reads the store or a database, and any of them may not answer."""
    schema = client.get("/pool/schema", {"format": "json"}).json()
    operations = {
        f"{method.upper()} {path}": operation["responses"]
        for path, item in schema["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and path != "/pool/schema"
    }
    assert [name for name, answers in operations.items() if "503" not in answers] == []
    without_header = [
        f"{name} {code}"
        for name, answers in operations.items()
        for code, answer in answers.items()
        if code in ("429", "503", "507") and "Retry-After" not in answer.get("headers", {})
    ]
    assert without_header == []
    assert "429" in operations["POST /pool/auth/token"]


def test_the_schema_generates_without_warnings_and_validates(db, tmp_path):
    # drf-spectacular falls back to "string" (with a warning) for a field type it cannot read.
    call_command(
        "spectacular", "--fail-on-warn", "--validate", "--file", str(tmp_path / "schema.yml")
    )


def test_the_schema_gives_the_request_fields_their_json_types(client, db):
    schema = client.get("/pool/schema", {"format": "json"}).json()
    components = schema["components"]["schemas"]
    for name in ("TaskRequest", "ResponseRequest", "HeartbeatRequest"):
        assert components[name]["properties"]["meta"]["type"] == "object", name
        assert components[name]["properties"]["body"]["type"] == "string", name
    parameters = {p["name"]: p for p in schema["paths"]["/pool/pending"]["get"]["parameters"]}
    assert parameters["limit"]["schema"]["type"] == "integer"
    assert parameters["wait"]["schema"]["type"] == "number"
    schemes = schema["components"]["securitySchemes"]
    assert (schemes["deviceJWT"]["type"], schemes["deviceJWT"]["scheme"]) == ("http", "bearer")
    assert {"deviceJWT": []} in schema["paths"]["/pool/pending"]["get"]["security"]


def test_the_docs_page_answers(client, db):
    response = client.get("/pool/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("path", ["/pool/docs", "/pool/schema", "/pool/health"])
def test_options_describes_an_endpoint_in_json_whatever_it_answers_in(client, db, path):
    """The docs page answers in HTML, from a template DRF's description has none of."""
    response = client.options(path)
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json()["name"]


@pytest.mark.parametrize(
    "path",
    [
        "/pool/nothing",
        "/pool/pending/",
        "/pool/task/",
        "/pool/log/",
        "/pool/auth/token/",
        "/pool/pending/extra",
        "/pool/",
        "/pool/Pending",
    ],
)
@pytest.mark.parametrize("method", ["get", "post"])
def test_a_wrong_path_under_the_pool_is_a_json_404(make_user, make_device, snapshot, path, method):
    make_device("pi-1")
    # CSRF checks on, as a served site has them (the test client turns them off by default).
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_user('master', role='master')[1]}")
    before = snapshot()
    if method == "get":
        response = client.get(path)
    else:
        response = post_json(client, path, {"to": "device:pi-1", "title": "t"})
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}
    assert snapshot() == before
    assert post_json(client, "/pool/task", {"to": "device:pi-1", "title": "t"}).status_code == 201


def test_a_wrong_path_is_404_without_credentials_too(db):
    client = APIClient(enforce_csrf_checks=True)
    response = client.post("/pool/task/", {}, format="json")
    assert response.status_code == 404
    assert response.json()["detail"] == "Not found."


def test_the_schema_describes_both_answers_of_the_log(client, db):
    """Without limit and after the log is a plain array; with either, a page."""
    schema = client.get("/pool/schema", {"format": "json"}).json()
    answer = schema["paths"]["/pool/log"]["get"]["responses"]["200"]["content"]["application/json"]
    ref = answer["schema"]["$ref"].rsplit("/", 1)[1]
    forms = schema["components"]["schemas"][ref]["oneOf"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/Message"}} in forms
    assert {"$ref": "#/components/schemas/LogPage"} in forms
