"""Every refusal: the right status, a JSON ``detail`` (and ``errors`` for fields),
and day files left byte-identical."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import orjson
import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from taskpool.exceptions import MessageTooLarge
from tests.conftest import client_with, post_json
from tests.support import ManualClock, store_at

pytestmark = pytest.mark.every_store

UNKNOWN_ID = "msg_" + "0" * 32


@pytest.fixture
def task(master_client, make_device):
    """A task for pi-1 already in today's file, so there is a file to keep unchanged."""
    make_device("pi-1")
    make_device("pi-2")
    answer = post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "existing"})
    assert answer.status_code == 201
    return answer.json()


@pytest.fixture
def refused(snapshot, task):
    """``refused(response_maker, status, field=None)``: send, check the refusal, check the files."""

    def check(send, status: int, field: str | None = None):
        before = snapshot()
        assert before, "the fixture's task should be in a day file"
        response = send()
        body = response.json()
        assert response.status_code == status, body
        assert response["Content-Type"] == "application/json"
        assert isinstance(body["detail"], str) and body["detail"]
        assert set(body) <= {"detail", "errors"}
        if field is not None:
            assert field in body["errors"], body
        if "errors" in body:
            assert all(
                isinstance(messages, list) and all(isinstance(m, str) for m in messages)
                for messages in body["errors"].values()
            )
        assert snapshot() == before
        return body

    return check


# POST /pool/task ---------------------------------------------------------------------

MALFORMED = [
    b'{"to": "device:pi-1", "title": ',
    b'{"to": "device:pi-1", "title": "t",}',
    b"{'to': 'device:pi-1', 'title': 't'}",
    b'{"to": "device:pi-1", "title": NaN}',
    b'{"to": "device:pi-1", "title": "\\ud800"}',
    b'{"to": "device:pi-1", "title": "\xff"}',
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_json_is_400(refused, master_client, raw):
    refused(lambda: post_json(master_client, "/pool/task", raw), 400)


def test_a_body_that_is_not_utf8_is_400_saying_so(refused, master_client):
    answer = refused(lambda: post_json(master_client, "/pool/task", b'{"title": "\xff"}'), 400)
    assert "not UTF-8 (byte 11)" in answer["detail"]


@pytest.mark.parametrize("raw", [b"[]", b'"a task"', b"5", b"null", b""])
def test_a_body_that_is_not_an_object_is_400(refused, master_client, raw):
    refused(lambda: post_json(master_client, "/pool/task", raw), 400)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": 5}, "title"),
        ({"title": True}, "title"),
        ({"title": ["t"]}, "title"),
        ({"title": None}, "title"),
        ({"body": None}, "body"),
        ({"body": 5}, "body"),
        ({"body": {"text": "x"}}, "body"),
        ({"meta": "x"}, "meta"),
        ({"meta": []}, "meta"),
        ({"meta": 5}, "meta"),
        ({"meta": None}, "meta"),
        ({"to": 5}, "to"),
        ({"to": ["device:pi-1"]}, "to"),
        ({"to": None}, "to"),
    ],
)
def test_a_task_field_of_the_wrong_type_is_400(refused, master_client, fields, field):
    data = {"to": "device:pi-1", "title": "t", **fields}
    refused(lambda: post_json(master_client, "/pool/task", data), 400, field)


@pytest.mark.parametrize("field", ["colour", "from", "type", "parent_id", "id", "ts", "status"])
def test_an_unknown_task_field_is_400(refused, master_client, field):
    data = {"to": "device:pi-1", "title": "t", field: "x"}
    refused(lambda: post_json(master_client, "/pool/task", data), 400, field)


@pytest.mark.parametrize("missing", ["to", "title"])
def test_a_missing_task_field_is_400(refused, master_client, missing):
    data = {"to": "device:pi-1", "title": "t"}
    del data[missing]
    refused(lambda: post_json(master_client, "/pool/task", data), 400, missing)


@pytest.mark.parametrize(
    "to",
    [
        "",
        "device:",
        "device:[,]",
        "device:[]",
        "device:[pi-1,,pi-2]",
        "device:bad id!",
        "device:pi 1",
        "device:" + "x" * 65,
        "device:[pi-1",
        'device:["pi-1]',
        "robot:1",
        "pi-1",
        "user:alice@example.com",
        "user:alice",
        "backend",
    ],
)
def test_a_bad_task_address_is_400(refused, master_client, to):
    refused(lambda: post_json(master_client, "/pool/task", {"to": to, "title": "t"}), 400, "to")


def test_a_form_body_is_415(refused, master_client):
    refused(lambda: master_client.post("/pool/task", {"to": "device:pi-1", "title": "t"}), 415)


@pytest.mark.parametrize("encoding", ["gzip", "br", "deflate"])
def test_a_compressed_body_is_415_naming_its_encoding(refused, master_client, encoding):
    """The body is read as it is: a compressed one was a 400 saying it was not UTF-8, and one
    labelled compressed but sent plain was stored."""
    task = orjson.dumps({"to": "device:pi-1", "title": "t"})
    for body in (gzip.compress(task), task):
        answer = refused(
            lambda body=body: post_json(
                master_client, "/pool/task", body, HTTP_CONTENT_ENCODING=encoding
            ),
            415,
        )
        assert encoding in answer["detail"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/pool/task"), ("put", "/pool/response"), ("delete", "/pool/pending")],
)
def test_a_wrong_method_is_405(refused, master_client, device_client, method, path):
    client = master_client if path == "/pool/task" else device_client
    refused(lambda: getattr(client, method)(path), 405)


# POST /pool/response ---------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    ["claimed", "cancelled", "DONE", "Done", " done", "", "finished", 1, None, True, ["done"]],
)
def test_a_status_a_device_may_not_send_is_400(refused, device_client, task, status):
    data = {"parent_id": task["id"], "status": status}
    refused(lambda: post_json(device_client, "/pool/response", data), 400, "status")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"parent_id": 5}, "parent_id"),
        ({"parent_id": None}, "parent_id"),
        ({"title": 5}, "title"),
        ({"body": None}, "body"),
        ({"meta": "x"}, "meta"),
        ({"meta": []}, "meta"),
        ({"to": "user:master"}, "to"),
        ({"type": "task"}, "type"),
        ({"meta": {"status": "failed"}}, "meta"),
    ],
)
def test_a_bad_response_field_is_400(refused, device_client, task, fields, field):
    data = {"parent_id": task["id"], "status": "done", **fields}
    refused(lambda: post_json(device_client, "/pool/response", data), 400, field)


def test_a_response_without_parent_or_status_is_400(refused, device_client, task):
    refused(
        lambda: post_json(device_client, "/pool/response", {"status": "done"}), 400, "parent_id"
    )
    refused(
        lambda: post_json(device_client, "/pool/response", {"parent_id": task["id"]}), 400, "status"
    )


@pytest.mark.parametrize("parent", [UNKNOWN_ID, "nonsense", "msg_" + "A" * 32])
def test_an_unknown_parent_is_404(refused, device_client, parent):
    data = {"parent_id": parent, "status": "done"}
    refused(lambda: post_json(device_client, "/pool/response", data), 404, "parent_id")


def test_a_parent_that_is_a_response_not_a_task_is_404(refused, device_client, task):
    progress = post_json(
        device_client, "/pool/response", {"parent_id": task["id"], "status": "progress"}
    )
    assert progress.status_code == 201
    data = {"parent_id": progress.json()["id"], "status": "done"}
    refused(lambda: post_json(device_client, "/pool/response", data), 404)


@pytest.mark.parametrize("to", ["device:pi-2", "device:[pi-2,pi-3]"])
def test_answering_a_task_not_addressed_to_you_is_403(
    refused, master_client, device_client, make_device, to
):
    make_device("pi-3")
    other = post_json(master_client, "/pool/task", {"to": to, "title": "not yours"}).json()
    data = {"parent_id": other["id"], "status": "done"}
    refused(lambda: post_json(device_client, "/pool/response", data), 403)


def test_answering_a_finished_task_not_addressed_to_you_is_still_403(
    refused, master_client, device_client, make_device
):
    _, token = make_device("pi-2")
    other = post_json(master_client, "/pool/task", {"to": "device:pi-2", "title": "x"}).json()
    done = post_json(
        client_with(token), "/pool/response", {"parent_id": other["id"], "status": "done"}
    )
    assert done.status_code == 201
    data = {"parent_id": other["id"], "status": "done"}
    refused(lambda: post_json(device_client, "/pool/response", data), 403)


@pytest.mark.parametrize("first", ["done", "failed", "rejected"])
@pytest.mark.parametrize("second", ["done", "failed", "rejected", "progress"])
@pytest.mark.parametrize("to", ["device:pi-1", "device:*", "device:[pi-1,pi-2]"])
def test_an_answer_after_a_terminal_one_is_409(
    refused, master_client, device_client, first, second, to
):
    sent = post_json(master_client, "/pool/task", {"to": to, "title": "once"}).json()
    answered = post_json(
        device_client, "/pool/response", {"parent_id": sent["id"], "status": first}
    )
    assert answered.status_code == 201
    data = {"parent_id": sent["id"], "status": second}
    body = refused(lambda: post_json(device_client, "/pool/response", data), 409)
    assert "already answered" in body["detail"]


# POST /pool/heartbeat ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"body": 5}, "body"),
        ({"body": None}, "body"),
        ({"meta": []}, "meta"),
        ({"meta": "x"}, "meta"),
        ({"title": "hi"}, "title"),
        ({"status": "done"}, "status"),
        ({"meta": {"idempotency_key": "k-1"}}, "meta"),
    ],
)
def test_a_bad_heartbeat_is_400(refused, device_client, data, field):
    refused(lambda: post_json(device_client, "/pool/heartbeat", data), 400, field)


# MAX_MESSAGE_BYTES -------------------------------------------------------------------


@pytest.fixture
def small_messages(settings, pool_dir):
    settings.TASKPOOL = {**settings.TASKPOOL, "MAX_MESSAGE_BYTES": 1024}
    return 1024


def test_the_default_limit_is_64_kib(refused, master_client):
    fits = {"to": "device:pi-1", "title": "t", "body": "x" * 60_000}
    assert post_json(master_client, "/pool/task", fits).status_code == 201
    over = {"to": "device:pi-1", "title": "t", "body": "x" * (64 * 1024)}
    refused(lambda: post_json(master_client, "/pool/task", over), 413)


def test_a_request_body_over_the_limit_is_413(
    refused, small_messages, master_client, device_client, task
):
    big = "x" * 1100
    refused(
        lambda: post_json(
            master_client, "/pool/task", {"to": "device:pi-1", "title": "t", "body": big}
        ),
        413,
    )
    refused(
        lambda: post_json(
            device_client,
            "/pool/response",
            {"parent_id": task["id"], "status": "done", "body": big},
        ),
        413,
    )
    refused(lambda: post_json(device_client, "/pool/heartbeat", {"meta": {"blob": big}}), 413)


def test_a_body_that_fits_but_whose_line_would_not_is_413(
    refused, small_messages, master_client, device_client, task
):
    # The request is under the limit; the stored line (id, ts, from, meta...) is over it.
    raw = orjson.dumps({"to": "device:pi-1", "title": "t", "body": "y" * 950})
    assert len(raw) < small_messages
    refused(lambda: post_json(master_client, "/pool/task", raw), 413)
    raw = orjson.dumps({"parent_id": task["id"], "status": "done", "body": "y" * 900})
    assert len(raw) < small_messages
    refused(lambda: post_json(device_client, "/pool/response", raw), 413)


def test_a_declared_length_over_the_limit_is_413_before_reading(
    refused, small_messages, master_client
):
    def send():
        return master_client.generic(
            "POST",
            "/pool/task",
            b'{"to": "device:pi-1", "title": "t"}',
            content_type="application/json",
            CONTENT_LENGTH="5000",
        )

    refused(send, 413)


def test_a_line_of_exactly_the_limit_is_taken_and_one_byte_more_is_not(tmp_path):
    clock = ManualClock("2026-06-03T12:00:00Z")
    probe = store_at(tmp_path / "probe", clock)
    overhead = (
        len(orjson.dumps(probe.post_task(sender="backend", to="device:pi-1", title="t").message))
        + 1
    )

    store = store_at(tmp_path / "pool", clock, max_message_bytes=1024)
    taken = store.post_task(
        sender="backend", to="device:pi-1", title="t", body="z" * (1024 - overhead)
    )
    assert len((tmp_path / "pool" / "2026-06-03.jsonl").read_bytes()) == 1024
    with pytest.raises(MessageTooLarge):
        store.post_task(sender="backend", to="device:pi-1", title="t", body="z" * (1025 - overhead))
    assert (tmp_path / "pool" / "2026-06-03.jsonl").read_bytes().count(b"\n") == 1
    assert [m["id"] for m in store.pending_for("pi-1")] == [taken.message["id"]]


# Query parameters --------------------------------------------------------------------


@pytest.mark.parametrize(
    "date",
    [
        "20260603",
        "2026-W23-3",
        "2026-02-30",
        "2026-6-3",
        "../etc",
        "../../etc/passwd",
        "",
        "2026-06-03 ",
        "2026-06-03.jsonl",
        "2026-13-01",
        "２０２６-０６-０３",
        "2026-06-03T00:00:00",
    ],
)
def test_a_bad_log_date_is_400(refused, admin_client_api, date):
    refused(lambda: admin_client_api.get("/pool/log", {"date": date}), 400, "date")


@pytest.mark.parametrize(
    "limit", ["0", "1001", "-1", "abc", "1.5", "", "1e3", " 5", "0x10", "٥", "99999999999"]
)
def test_a_bad_pending_limit_is_400(refused, device_client, limit):
    refused(lambda: device_client.get("/pool/pending", {"limit": limit}), 400, "limit")


# Refused requests are not activity --------------------------------------------------


def test_a_refused_request_does_not_count_as_activity(
    refused, device_client, master_client, task, admin_client_api
):
    from taskpool.models import DeviceUser

    refused(
        lambda: post_json(
            device_client, "/pool/response", {"parent_id": task["id"], "status": "claimed"}
        ),
        400,
    )
    refused(lambda: device_client.get("/pool/pending", {"limit": "0"}), 400)
    refused(
        lambda: post_json(
            device_client, "/pool/response", {"parent_id": UNKNOWN_ID, "status": "done"}
        ),
        404,
    )
    assert DeviceUser.objects.get(pk="pi-1").last_seen is None
    (row,) = [r for r in admin_client_api.get("/pool/devices").json() if r["id"] == "pi-1"]
    assert row["last_seen"] is None and row["online"] is False


# Numbers and cursors in other scripts' digits ----------------------------------------
# Python's int(), float() and \d take Arabic-Indic or full-width digits; the pool does not.

ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.fixture
def cursor(admin_client_api, task) -> str:
    """A cursor the log gave, naming the task's line."""
    page = admin_client_api.get("/pool/log", {"limit": 1}).json()
    return page["next_cursor"]


@pytest.mark.parametrize("wait", ["٣", "３", "1.٥", "１０", "0.２"])
def test_a_wait_in_other_digits_is_400(refused, device_client, wait):
    refused(lambda: device_client.get("/pool/pending", {"wait": wait}), 400, "wait")


@pytest.mark.parametrize("digits", [ARABIC_INDIC, FULL_WIDTH])
def test_a_log_cursor_in_other_digits_is_400(refused, admin_client_api, cursor, digits):
    assert admin_client_api.get("/pool/log", {"after": cursor, "limit": 5}).status_code == 200
    spelled = cursor.translate(digits)
    refused(lambda: admin_client_api.get("/pool/log", {"after": spelled, "limit": 5}), 400, "after")


@pytest.mark.parametrize("digits", [ARABIC_INDIC, FULL_WIDTH])
def test_a_task_list_cursor_in_other_digits_is_400(refused, master_client, cursor, digits):
    before = cursor.translate(digits)
    refused(lambda: master_client.get("/pool/tasks", {"before": before}), 400, "before")


@pytest.mark.parametrize("name", ["after", "Last-Event-ID"])
def test_a_stream_cursor_in_other_digits_is_400(device_client, cursor, name):
    spelled = cursor.translate(ARABIC_INDIC)
    if name == "after":
        answer = device_client.get("/pool/stream", {"after": spelled})
    else:
        answer = device_client.get("/pool/stream", HTTP_LAST_EVENT_ID=spelled)
    try:
        assert answer.status_code == 400
        assert list(answer.json()["errors"]) == [name]
    finally:
        answer.close()


@pytest.mark.parametrize("name", ["since", "until"])
def test_a_task_list_time_in_other_digits_is_400(refused, master_client, name):
    moment = "2026-06-03T12:00:00Z".translate(ARABIC_INDIC)
    refused(lambda: master_client.get("/pool/tasks", {name: moment}), 400, name)


# One voice: messages that say what is allowed here ---------------------------------


@pytest.mark.parametrize("date", ["2026-13-01", "2026-02-30", "٢٠٢٦-٠٦-٠٣", "20260603"])
def test_a_bad_log_date_says_what_a_date_is(refused, admin_client_api, date):
    for params in ({"date": date}, {"date": date, "limit": 5}):
        body = refused(lambda params=params: admin_client_api.get("/pool/log", params), 400)
        assert body["errors"] == {
            "date": ["Must be a real date written YYYY-MM-DD, like 2026-06-03."]
        }


@pytest.mark.parametrize("limit", ["0", "1001", "x", "٥"])
def test_every_limit_says_the_same_thing(
    refused, device_client, admin_client_api, master_client, limit
):
    expected = {"limit": ["Must be a whole number from 1 to 1000."]}
    for client, path in [
        (device_client, "/pool/pending"),
        (admin_client_api, "/pool/log"),
        (master_client, "/pool/tasks"),
    ]:
        body = refused(lambda client=client, path=path: client.get(path, {"limit": limit}), 400)
        assert body["errors"] == expected, path


@pytest.mark.parametrize("to", ["pi-1", "robot:1", "user:alice@example.com", "backend"])
def test_a_bad_task_address_names_only_what_a_task_may_use(refused, master_client, to):
    body = refused(lambda: post_json(master_client, "/pool/task", {"to": to, "title": "t"}), 400)
    (message,) = body["errors"]["to"]
    assert "device:<id>, device:* or device:[<id>,...]" in message
    assert "user:" not in message.replace(to, "") and "backend" not in message.replace(to, "")


# Unknown query parameters ----------------------------------------------------------


@pytest.fixture
def every_endpoint(task, device_client, master_client, admin_client_api):
    """(client, method, path, body) for each endpoint, as its caller would use it."""
    anyone = client_with(None)
    return [
        (device_client, "get", "/pool/pending", None),
        (device_client, "get", "/pool/pending?wait=0", None),
        (device_client, "get", "/pool/stream", None),
        (device_client, "post", "/pool/response", {"parent_id": task["id"], "status": "done"}),
        (device_client, "post", "/pool/heartbeat", {}),
        (device_client, "post", "/pool/claim", {}),
        (device_client, "post", "/pool/device/token", {}),
        (master_client, "post", "/pool/task", {"to": "device:pi-1", "title": "t"}),
        (master_client, "get", "/pool/tasks", None),
        (master_client, "get", f"/pool/tasks/{task['id']}", None),
        (master_client, "post", f"/pool/tasks/{task['id']}/cancel", {}),
        (admin_client_api, "get", "/pool/log", None),
        (admin_client_api, "get", "/pool/log?limit=5", None),
        (admin_client_api, "get", "/pool/log?format=jsonl", None),
        (admin_client_api, "get", "/pool/devices", None),
        (anyone, "post", "/pool/auth/token", {"username": "boss", "password": "pw-boss"}),
        (anyone, "post", "/pool/auth/token/refresh", {"refresh": "x"}),
        (anyone, "get", "/pool/schema", None),
        (anyone, "get", "/pool/docs", None),
    ]


def test_an_unknown_query_parameter_is_400_naming_it_on_every_endpoint(every_endpoint, snapshot):
    before = snapshot()
    for client, method, path, body in every_endpoint:
        url = path + ("&" if "?" in path else "?") + "colour=blue"
        answer = client.get(url) if method == "get" else post_json(client, url, body)
        try:
            assert answer.status_code == 400, (path, answer.status_code)
            assert answer["Content-Type"] == "application/json", path
            assert answer.json()["errors"] == {"colour": ["Unknown query parameter."]}, path
            assert "colour" in answer.json()["detail"], path
        finally:
            answer.close()
    assert snapshot() == before


@pytest.mark.parametrize(
    ("who", "path", "field"),
    [
        ("device", "/pool/pending?limit=1&limit=1000", "limit"),
        ("device", "/pool/pending?wait=soon&wait=0", "wait"),
        ("device", "/pool/stream?all=0&all=1", "all"),
        ("admin", "/pool/log?date=2026-01-01&date=2026-01-02", "date"),
        ("admin", "/pool/log?format=json&format=jsonl", "format"),
        ("admin", "/pool/devices?kind=pi&kind=phone", "kind"),
        ("master", "/pool/tasks?limit=1&limit=2", "limit"),
        ("master", "/pool/tasks?q=a&q=b", "q"),
        ("anyone", "/pool/health?ready=0&ready=1", "ready"),
    ],
)
def test_a_parameter_given_twice_is_400_not_the_last_one_taken(
    refused, device_client, master_client, admin_client_api, who, path, field
):
    """As a key twice in a JSON body: which one the client meant is not for the server to guess
    (a misspelt first value was dropped without a word)."""
    client = {
        "device": device_client,
        "master": master_client,
        "admin": admin_client_api,
        "anyone": client_with(None),
    }[who]
    body = refused(lambda: client.get(path), 400, field)
    assert body["errors"][field] == ["Given more than once."]


def test_the_repeatable_filters_still_take_many(master_client, task):
    answer = master_client.get("/pool/tasks?status=pending&status=done&job=retries&job=timeout")
    assert answer.status_code == 200, answer.json()


def test_the_task_list_does_not_ignore_a_misspelt_filter(refused, master_client):
    body = refused(lambda: master_client.get("/pool/tasks", {"foo": "bar"}), 400, "foo")
    assert body["detail"] == "Invalid request. foo: Unknown query parameter."
    refused(lambda: master_client.get("/pool/tasks", {"stauts": "failed"}), 400, "stauts")


# Duplicate keys, deep meta, empty titles ------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b'{"to": "device:pi-1", "title": "x", "to": "device:*"}',
        b'{"to": "device:pi-1", "title": "x", "title": "y"}',
        b'{"to": "device:pi-1", "title": "x", "t\\u0069tle": "y"}',
        b'{"to": "device:pi-1", "title": "x", "meta": {"a": 1, "b": {"c": 1, "c": 2}}}',
        b'{"to": "device:pi-1", "title": "x", "meta": {"list": [{"k": 1, "k": 1}]}}',
    ],
)
def test_a_body_with_a_repeated_key_is_400(refused, master_client, raw):
    body = refused(lambda: post_json(master_client, "/pool/task", raw), 400)
    assert "twice" in body["detail"]


def test_a_repeated_key_is_400_on_every_endpoint_with_a_body(refused, device_client, task):
    parent = task["id"].encode()
    for path, raw in [
        ("/pool/response", b'{"parent_id": "%s", "status": "done", "status": "failed"}' % parent),
        ("/pool/heartbeat", b'{"body": "a", "body": "b"}'),
        ("/pool/claim", b'{"parent_id": "x", "parent_id": "y"}'),
    ]:
        refused(lambda path=path, raw=raw: post_json(device_client, path, raw), 400)
    login = b'{"username": "boss", "password": "x", "password": "pw-boss"}'
    refused(lambda: post_json(client_with(None), "/pool/auth/token", login), 400)


def test_the_same_key_in_different_objects_is_fine(master_client, make_device):
    make_device("pi-1")
    raw = b'{"to": "device:pi-1", "title": "x", "meta": {"a": {"to": 1}, "b": {"to": 2, "a": 3}}}'
    answer = post_json(master_client, "/pool/task", raw)
    assert answer.status_code == 201, answer.json()
    assert answer.json()["meta"]["b"] == {"to": 2, "a": 3}


DEEP = "meta may nest objects and arrays at most 32 levels deep."


def nested(depth: int, *, in_lists: bool = False) -> dict:
    """A ``meta`` object ``depth`` levels deep (2 or more), ``meta`` itself being the first."""
    inner: object = [] if in_lists else {}
    for _ in range(depth - 2):
        inner = [inner] if in_lists else {"a": inner}
    return {"a": inner}


@pytest.mark.parametrize("depth", [33, 300, 1000])
def test_meta_nested_deeper_than_the_limit_is_400_naming_meta(
    refused, master_client, device_client, task, depth
):
    meta = nested(depth)
    for client, path, data in [
        (master_client, "/pool/task", {"to": "device:pi-1", "title": "t", "meta": meta}),
        (device_client, "/pool/heartbeat", {"meta": meta}),
        (
            device_client,
            "/pool/response",
            {"parent_id": task["id"], "status": "done", "meta": meta},
        ),
    ]:
        raw = orjson.dumps(data) if depth < 250 else _deep_json(data)
        body = refused(lambda client=client, path=path, raw=raw: post_json(client, path, raw), 400)
        assert body["errors"] == {"meta": [DEEP]}, path


@pytest.mark.parametrize("option", ["retries", "timeout", "rollout", "abort"])
def test_a_job_option_nested_too_deep_is_400_naming_the_option(refused, master_client, option):
    data = {"to": "device:pi-1", "title": "t", option: nested(40)}
    body = refused(lambda: post_json(master_client, "/pool/task", data), 400)
    assert body["errors"] == {option: [DEEP.replace("meta", option)]}


def _deep_json(data) -> bytes:
    """``data`` as JSON; orjson will not write more than 255 levels, so the nesting is spliced in."""
    meta = data["meta"]
    depth = 0
    while meta:
        meta, depth = meta["a"], depth + 1
    outer = orjson.dumps({**data, "meta": "@"})
    return outer.replace(b'"@"', b'{"a":' * depth + b"{}" + b"}" * depth)


def test_meta_at_the_limit_is_taken_in_objects_and_lists(master_client, make_device):
    make_device("pi-1")
    for meta in (nested(32), nested(32, in_lists=True)):
        answer = post_json(
            master_client, "/pool/task", {"to": "device:pi-1", "title": "t", "meta": meta}
        )
        assert answer.status_code == 201, answer.json()
    too_deep = {"to": "device:pi-1", "title": "t", "meta": nested(33, in_lists=True)}
    assert post_json(master_client, "/pool/task", too_deep).status_code == 400


@pytest.mark.parametrize("title", ["", " ", "\t\n"])
def test_an_empty_title_is_400(refused, master_client, title):
    body = refused(
        lambda: post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": title}), 400
    )
    assert body["errors"] == {"title": ["title must not be empty."]}


def test_the_store_refuses_deep_meta_and_empty_titles_too(store):
    from taskpool.exceptions import InvalidMessage

    with pytest.raises(InvalidMessage) as refusal:
        store.post_task(sender="backend", to="device:pi-1", title="")
    assert refusal.value.field == "title"
    with pytest.raises(InvalidMessage) as refusal:
        store.post_heartbeat(device_id="pi-1", meta=nested(33))
    assert refusal.value.field == "meta"


# A full disk -----------------------------------------------------------------------


class FullDisk:
    """``os`` for the day files' appender on a disk that has room for half a line more."""

    def __getattr__(self, name: str):
        import os

        return getattr(os, name)

    def write(self, descriptor: int, data: bytes) -> int:
        import os

        return os.write(descriptor, data[: len(data) // 2])


@pytest.fixture
def full_disk(monkeypatch):
    from taskpool.stores.jsonl import appender

    monkeypatch.setattr(appender, "os", FullDisk())


@pytest.mark.day_files_only
def test_a_full_disk_is_a_json_507_with_retry_after(
    refused, full_disk, master_client, device_client, task
):
    for send in (
        lambda: post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "t"}),
        lambda: post_json(device_client, "/pool/heartbeat", {}),
        lambda: post_json(
            device_client, "/pool/response", {"parent_id": task["id"], "status": "done"}
        ),
        lambda: post_json(master_client, f"/pool/tasks/{task['id']}/cancel", {}),
    ):
        response = send()
        assert response.status_code == 507, response.content
        assert int(response["Retry-After"]) > 0
        body = refused(send, 507)
        assert body["detail"].startswith("The pool cannot store the message now")


@pytest.mark.day_files_only
def test_the_admin_says_so_when_the_disk_is_full(task, full_disk, snapshot, db):
    from django.test import Client

    from taskpool.models import UserRole

    user = get_user_model().objects.create_user("ops", email="ops@example.com", is_staff=True)
    UserRole.objects.create(user=user, role="master")
    admin = Client()
    admin.force_login(user)
    before = snapshot()
    sent = admin.post("/admin/taskpool/task/add/", {"to": "device:pi-2", "title": "t"})
    assert sent.status_code == 200
    assert (
        sent.context["form"]
        .non_field_errors()[0]
        .startswith("The pool cannot store the message now")
    )
    cancelled = admin.post(f"/admin/taskpool/task/{task['id']}/cancel/", follow=True)
    assert cancelled.status_code == 200
    assert str(list(cancelled.context["messages"])[0]).startswith(
        "The pool cannot store the message now"
    )
    assert snapshot() == before


# Tasks for devices nobody registered -------------------------------------------------


@pytest.mark.parametrize(
    ("to", "named"),
    [
        ("device:ghost", ["ghost"]),
        ("device:[pi-1,ghost,nosuch]", ["ghost", "nosuch"]),
        ('device:["ghost"]', ["ghost"]),
    ],
)
def test_a_task_for_an_unregistered_device_is_400_naming_it(refused, master_client, to, named):
    body = refused(lambda: post_json(master_client, "/pool/task", {"to": to, "title": "t"}), 400)
    (message,) = body["errors"]["to"]
    for device_id in named:
        assert device_id in message
    assert "pi-1" not in message


def test_every_device_needs_no_registry(master_client, make_device):
    assert (
        post_json(master_client, "/pool/task", {"to": "device:*", "title": "t"}).status_code == 201
    )


def test_a_setting_allows_devices_registered_later(master_client, settings, pool_dir):
    settings.TASKPOOL = {**settings.TASKPOOL, "ALLOW_UNREGISTERED_DEVICES": True}
    answer = post_json(master_client, "/pool/task", {"to": "device:[ghost,later-1]", "title": "t"})
    assert answer.status_code == 201, answer.json()


def test_the_send_form_refuses_unregistered_devices_too(task, snapshot, db):
    from django.test import Client

    from taskpool.models import UserRole

    user = get_user_model().objects.create_user("ops", email="ops@example.com", is_staff=True)
    UserRole.objects.create(user=user, role="master")
    admin = Client()
    admin.force_login(user)
    before = snapshot()
    sent = admin.post("/admin/taskpool/task/add/", {"to": "device:nosuch", "title": "t"})
    assert sent.status_code == 200
    assert "nosuch" in sent.context["form"].errors["to"][0]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/pool/log?format=xml", "Must be one of: json, jsonl."),
        ("/pool/devices?format=xml", "Unknown query parameter."),
        ("/pool/devices?format=json", "Unknown query parameter."),
        # Two renderers each for YAML and JSON: each format named once.
        ("/pool/schema?format=xml", "Must be one of: yaml, json."),
    ],
)
def test_a_format_no_renderer_has_is_a_400_in_words(refused, admin_client_api, path, message):
    body = refused(lambda: admin_client_api.get(path), 400)
    assert body["errors"] == {"format": [message]}


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"validated": "banana"}, "validated"),
        ({"validated": ""}, "validated"),  # a choice: empty is a bad value, as elsewhere
        ({"kind": "x" * 65}, "kind"),
        ({"online": "true"}, "online"),
    ],
)
def test_a_bad_devices_filter_is_a_400_naming_it(refused, admin_client_api, query, field):
    refused(lambda: admin_client_api.get("/pool/devices", query), 400, field)


# Hostile requests found by probing a running server ----------------------------------
# Each was once a 500, an HTML page, or a body the pool stored as something else.

# In range as written, out of the calendar once moved to UTC.
OFF_THE_CALENDAR = ["9999-12-31T23:59:59-00:01", "0001-01-01T00:00:00+00:01"]


def test_a_time_may_end_in_a_lower_case_z_as_rfc_3339_allows(master_client, make_device):
    make_device("pi-1")
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    written = soon.strftime("%Y-%m-%dt%H:%M:%Sz")
    data = {"to": "device:pi-1", "title": "t", "expires_at": written}
    answer = post_json(master_client, "/pool/task", data)
    assert answer.status_code == 201, answer.json()
    assert answer.json()["meta"]["expires_at"] == soon.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("moment", OFF_THE_CALENDAR)
@pytest.mark.parametrize("field", ["expires_at", "not_before"])
def test_a_time_that_leaves_the_calendar_in_utc_is_400(refused, master_client, field, moment):
    data = {"to": "device:pi-1", "title": "t", field: moment}
    refused(lambda: post_json(master_client, "/pool/task", data), 400, field)


@pytest.mark.parametrize("moment", OFF_THE_CALENDAR)
@pytest.mark.parametrize("name", ["since", "until"])
def test_a_task_list_time_that_leaves_the_calendar_is_400(refused, master_client, name, moment):
    query = urlencode({name: moment})
    refused(lambda: master_client.get(f"/pool/tasks?{query}"), 400, name)


@pytest.mark.parametrize(
    ("path", "client_name"),
    [
        ("/pool/pending?" + "&".join(["limit=1"] * 1001), "device_client"),
        ("/pool/pending?" + "&".join(["wait=0"] * 1001), "device_client"),
        ("/pool/tasks?" + "&".join(["status=open"] * 1001), "master_client"),
        ("/pool/stream?" + "&".join(["all=1"] * 1001), "master_client"),
    ],
    ids=["pending", "long-poll", "tasks", "stream"],
)
def test_more_query_parameters_than_django_parses_is_a_json_400(
    refused, request, path, client_name
):
    client = request.getfixturevalue(client_name)
    body = refused(lambda: client.get(path), 400)
    assert "parameters" in body["detail"]


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_write_to_the_stream_is_a_json_405_not_a_csrf_page(refused, make_device, method):
    client = APIClient(enforce_csrf_checks=True)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_device('pi-3')[1]}")
    refused(lambda: getattr(client, method)("/pool/stream"), 405)


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "head", "options"])
def test_a_405_from_the_stream_says_which_method_it_takes(device_client, method):
    """HTTP asks a 405 to carry Allow, as every other endpoint's does."""
    answer = getattr(device_client, method)("/pool/stream")
    assert answer.status_code == 405
    assert answer["Allow"] == "GET"


def test_a_write_to_no_endpoint_is_a_json_404_not_a_csrf_page(refused):
    refused(lambda: APIClient(enforce_csrf_checks=True).post("/pool/nowhere"), 404)


@pytest.mark.parametrize(
    ("path", "data"),
    [
        ("/pool/heartbeat", {"body": "sent in chunks", "meta": {"k": 1}}),
        ("/pool/claim", {"parent_id": UNKNOWN_ID}),
        ("/pool/response", {"parent_id": UNKNOWN_ID, "status": "done"}),
    ],
)
def test_a_body_without_a_length_is_411_not_read_as_empty(refused, device_client, path, data):
    # What a chunked request looks like to Django: no Content-Length, so the body reads as empty.
    refused(
        lambda: post_json(
            device_client,
            path,
            orjson.dumps(data),
            HTTP_TRANSFER_ENCODING="chunked",
            CONTENT_LENGTH="",
        ),
        411,
    )


def test_a_task_may_not_set_the_attempt_its_devices_are_served(refused, master_client):
    data = {"to": "device:pi-1", "title": "t", "meta": {"attempt": "x"}}
    body = refused(lambda: post_json(master_client, "/pool/task", data), 400, "meta")
    assert body["errors"]["meta"] == ["meta.attempt is set by the server."]


@pytest.mark.parametrize(
    "timing",
    [
        {"ttl": 60, "not_before": "+120"},
        {"ttl": 60, "not_before": "+90"},
        {"expires_at": "+60", "not_before": "+3600"},
    ],
)
def test_a_task_that_would_expire_before_it_starts_is_400(refused, master_client, timing):
    now = datetime.now(UTC).replace(microsecond=0)
    data = {"to": "device:pi-1", "title": "t"}
    for key, value in timing.items():
        if isinstance(value, str):
            value = (now + timedelta(seconds=int(value))).isoformat().replace("+00:00", "Z")
        data[key] = value
    refused(lambda: post_json(master_client, "/pool/task", data), 400, "not_before")


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("format=jsonl&limit=5", {}, "limit"),
        ("format=jsonl&after={cursor}", {}, "after"),
        ("after={cursor}", {"HTTP_ACCEPT": "application/x-ndjson"}, "after"),
    ],
)
def test_a_page_of_raw_lines_is_400_not_the_whole_day(
    refused, admin_client_api, task, query, headers, field
):
    cursor = admin_client_api.get("/pool/log?limit=1").json()["next_cursor"]
    path = "/pool/log?" + query.format(cursor=cursor)
    refused(lambda: admin_client_api.get(path, **headers), 400, field)


@pytest.mark.parametrize("number", ["18446744073709551616", "-9223372036854775809", "1" * 40])
def test_a_whole_number_beyond_64_bits_is_400_not_stored_rounded(refused, master_client, number):
    raw = b'{"to": "device:pi-1", "title": "t", "meta": {"n": %s}}' % number.encode()
    body = refused(lambda: post_json(master_client, "/pool/task", raw), 400)
    assert "64 bits" in body["detail"]


def test_whole_numbers_at_the_64_bit_edges_are_stored_exactly(master_client, task, store):
    raw = b'{"to": "device:pi-1", "title": "t", "meta": {"n": [18446744073709551615, -9223372036854775808, 1.5e300]}}'
    answer = post_json(master_client, "/pool/task", raw)
    assert answer.status_code == 201, answer.json()
    assert answer.json()["meta"]["n"] == [2**64 - 1, -(2**63), 1.5e300]
