"""What the admin's pool pages show and do, through Django's test client (the browser tests
drive the same pages in Chromium)."""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.test import AsyncRequestFactory, Client, RequestFactory

from taskpool.admin import day_files
from taskpool.admin.downloads import download
from taskpool.admin.roles import UserRoleInline
from taskpool.days import day_of
from taskpool.messages import encode_line, new_message_id
from taskpool.models import DeviceUser, UserRole
from taskpool.tokens import DeviceToken
from tests.conftest import post_json
from tests.support import TaskStateCalls

pytestmark = pytest.mark.every_store


@pytest.fixture
def boss(db) -> Client:
    """A staff user with the pool's admin role and every permission on devices and roles."""
    user = get_user_model().objects.create_user(
        "boss", email="boss@example.com", password="pw", is_staff=True
    )
    UserRole.objects.create(user=user, role="admin")
    from django.contrib.auth.models import Permission

    user.user_permissions.add(*Permission.objects.filter(content_type__app_label="taskpool"))
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def master(db) -> Client:
    user = get_user_model().objects.create_user(
        "ops", email="ops@example.com", password="pw", is_staff=True
    )
    UserRole.objects.create(user=user, role="master")
    client = Client()
    client.force_login(user)
    return client


def today(store) -> date:
    return day_of(store.now())


def write_day(pool_dir, day: date, messages: list[dict], tail: bytes = b"") -> None:
    path = pool_dir / f"{day.isoformat()}.jsonl"
    path.write_bytes(b"".join(encode_line(message) for message in messages) + tail)


def message(
    kind="heartbeat",
    sender="device:old-1",
    to="backend",
    title="",
    ts="T00:00:00Z",
    day="2020-01-02",
):
    return {
        "id": new_message_id(),
        "ts": f"{day}{ts}",
        "from": sender,
        "to": to,
        "type": kind,
        "title": title,
        "body": "",
        "parent_id": None,
        "meta": {},
    }


# Day files ---------------------------------------------------------------------


@pytest.mark.day_files_only
def test_the_day_list_counts_each_file_newest_first(boss, store, pool_dir):
    store.post_task(sender="user:x", to="device:pi-1", title="a")
    store.post_heartbeat(device_id="pi-1")
    write_day(
        pool_dir,
        date(2020, 1, 2),
        [message(), message(kind="info"), message(kind="task", to="device:old-1")],
        tail=b'{"torn\n',
    )
    response = boss.get("/admin/taskpool/dayfile/")
    assert response.status_code == 200
    rows = response.context["rows"]
    assert [row["summary"].day for row in rows] == [today(store), date(2020, 1, 2)]
    old = rows[1]["summary"]
    assert (old.lines, old.messages, old.torn) == (4, 3, 1)
    columns = response.context["columns"]
    assert dict(zip(columns, rows[1]["counts"], strict=True)) == {
        "task": 1,
        "response": 0,
        "info": 1,
        "heartbeat": 1,
        "error": 0,
    }
    assert (
        f'href="/admin/taskpool/dayfile/{today(store).isoformat()}/"' in response.content.decode()
    )


@pytest.mark.day_files_only
def test_the_day_list_counts_big_files_a_part_at_each_view(boss, store, monkeypatch):
    for number in range(40):
        store.post_heartbeat(device_id="pi-1", body=f"beat {number}")
    monkeypatch.setattr(day_files.DayFileAdmin, "count_limit", 1)  # one chunk a view
    monkeypatch.setattr("taskpool.stores.jsonl.day_reading.FIRST_CHUNK_BYTES", 1000)
    monkeypatch.setattr("taskpool.stores.jsonl.day_reading.MAX_CHUNK_BYTES", 1000)
    views = []
    while not views or views[-1].context["counting"]:
        views.append(boss.get("/admin/taskpool/dayfile/"))
        assert len(views) < 20
    assert len(views) > 2
    partial = views[0].context["rows"][0]["summary"]
    assert 0 < partial.counted < partial.size and 0 < partial.messages < 40
    assert "Some large files are still being counted" in views[0].content.decode()
    assert views[-1].context["rows"][0]["summary"].messages == 40
    assert "still being counted" not in views[-1].content.decode()


def test_a_day_page_filters_and_pages_by_cursor(boss, store, monkeypatch):
    monkeypatch.setattr(day_files.DayFileAdmin, "messages_per_page", 3)
    tasks = [
        store.post_task(sender="user:x", to=f"device:pi-{n % 2}", title=f"job {n}").message
        for n in range(7)
    ]
    store.post_heartbeat(device_id="pi-1", body="job 3 is fine")
    url = f"/admin/taskpool/dayfile/{today(store).isoformat()}/"

    seen, query = [], "?type=task"
    while query is not None:
        page = boss.get(url + query).context
        seen += [row.message["id"] for row in page["rows"]]
        query = f"?type=task&after={page['page'].next_cursor}" if page["page"].next_cursor else None
    assert seen == [task["id"] for task in tasks]

    last = boss.get(url + "?last=1").context
    assert [row.message["type"] for row in last["rows"]] == ["task", "task", "heartbeat"]
    previous = boss.get(url + f"?before={last['page'].previous_cursor}").context
    assert [row.message["title"] for row in previous["rows"]] == ["job 2", "job 3", "job 4"]

    to_pi_0 = boss.get(url + "?to=device:pi-0").context["rows"]
    assert [row.message["title"] for row in to_pi_0] == ["job 0", "job 2", "job 4"]
    found = boss.get(url + "?q=JOB+3").context["rows"]
    assert [
        (row.message["type"], row.message["title"] or row.message["body"]) for row in found
    ] == [
        ("task", "job 3"),
        ("heartbeat", "job 3 is fine"),
    ]
    from_device = boss.get(url + "?from=device:pi-1&type=heartbeat").context["rows"]
    assert [row.message["body"] for row in from_device] == ["job 3 is fine"]


def test_rows_link_to_the_thread_and_to_the_message(boss, store):
    task = store.post_task(sender="user:x", to="device:pi-1", title="t").message
    store.post_response(device_id="pi-1", parent_id=task["id"], status="done")
    day = today(store)
    rows = boss.get(f"/admin/taskpool/dayfile/{day.isoformat()}/").context["rows"]
    assert [row.thread_url for row in rows] == [f"/admin/taskpool/task/{task['id']}/"] * 2
    message_page = boss.get(rows[0].message_url)
    assert message_page.status_code == 200
    assert f"cursor <code>{rows[0].cursor}</code>" in message_page.content.decode()
    assert json.loads(message_page.context["message_json"]) == task
    assert message_page.context["thread_url"] == f"/admin/taskpool/task/{task['id']}/"


def test_a_message_page_refuses_a_cursor_of_another_day(boss, store, other_process):
    """It showed that day's message under this day's breadcrumbs."""
    from tests.support import days_ago, message, noon

    other_process(message(ts=noon(days_ago(1)), title="yesterday's"))
    store.post_heartbeat(device_id="pi-1")
    yesterday = days_ago(1).isoformat()
    (row,) = boss.get(f"/admin/taskpool/dayfile/{yesterday}/").context["rows"]
    assert boss.get(f"/admin/taskpool/dayfile/{yesterday}/{row.cursor}/").status_code == 200
    elsewhere = f"/admin/taskpool/dayfile/{today(store).isoformat()}/{row.cursor}/"
    assert boss.get(elsewhere).status_code == 404


@pytest.mark.day_files_only
def test_bad_days_and_cursors(boss, store):
    store.post_heartbeat(device_id="pi-1")
    day = today(store).isoformat()
    assert boss.get("/admin/taskpool/dayfile/2001-01-01/").status_code == 404  # no file
    assert boss.get("/admin/taskpool/dayfile/20010101/").status_code == 404  # not YYYY-MM-DD
    assert boss.get("/admin/taskpool/dayfile/2001-02-30/").status_code == 404
    assert boss.get(f"/admin/taskpool/dayfile/{day}/3/").status_code == 404  # not a line end
    assert boss.get(f"/admin/taskpool/dayfile/{day}/999999/").status_code == 404
    compact = day.replace("-", "")
    response = boss.get(
        f"/admin/taskpool/dayfile/{day}/?type=heartbeat&after={compact}-000000000003"
    )
    assert response.status_code == 302
    assert response["Location"] == f"/admin/taskpool/dayfile/{day}/?type=heartbeat"
    followed = boss.get(response["Location"])
    assert [str(m) for m in followed.context["messages"]] == [
        "No line starts at byte 3 of the day."
    ]
    other_day = boss.get(f"/admin/taskpool/dayfile/{day}/?after=20010101-000000000000")
    assert other_day.status_code == 302


@pytest.mark.day_files_only
def test_the_raw_download_is_the_days_complete_lines(boss, store, pool_dir):
    store.post_heartbeat(device_id="pi-1", body="é")
    day = today(store)
    path = pool_dir / f"{day.isoformat()}.jsonl"
    with open(path, "ab") as file:
        file.write(b'{"being written')
    response = boss.get(f"/admin/taskpool/dayfile/{day.isoformat()}/raw/")
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Disposition"] == f'attachment; filename="{day.isoformat()}.jsonl"'
    data = path.read_bytes()
    assert b"".join(response.streaming_content) == data[: data.rfind(b"\n") + 1]


def test_every_store_lists_its_days_and_their_lines(boss, store):
    store.post_task(sender="user:x", to="device:pi-1", title="a")
    store.post_heartbeat(device_id="pi-1", body="é")
    day = today(store)
    response = boss.get("/admin/taskpool/dayfile/")
    (row,) = response.context["rows"]
    assert (row["summary"].day, row["summary"].messages) == (day, 2)
    page = response.content.decode()
    assert ("Torn" in page) == store.supports_day_files
    download = boss.get(f"/admin/taskpool/dayfile/{day.isoformat()}/raw/")
    lines = b"".join(download.streaming_content)
    assert [json.loads(line) for line in lines.splitlines()] == store.day_messages(day)


def test_downloads_stream_a_chunk_at_a_time_under_asgi_and_wsgi():
    pulled = []

    def chunks():
        for number in range(3):
            pulled.append(number)
            yield f"chunk {number}\n".encode()

    asgi = download(
        AsyncRequestFactory().get("/"), chunks(), filename="a.jsonl", content_type="text/plain"
    )
    assert asgi.is_async

    async def first_then_rest():
        iterator = aiter(asgi.streaming_content)
        first = await anext(iterator)
        seen_after_first = list(pulled)
        rest = [chunk async for chunk in iterator]
        return first, seen_after_first, rest

    first, seen_after_first, rest = async_to_sync(first_then_rest)()
    assert first == b"chunk 0\n" and seen_after_first == [0]
    assert rest == [b"chunk 1\n", b"chunk 2\n"]

    pulled.clear()
    wsgi = download(
        RequestFactory().get("/"), chunks(), filename="a.jsonl", content_type="text/plain"
    )
    assert not wsgi.is_async
    iterator = iter(wsgi.streaming_content)
    assert next(iterator) == b"chunk 0\n" and pulled == [0]


# Tasks -------------------------------------------------------------------------


def test_sending_a_task_stores_it_from_the_logged_in_user(master, store, make_device):
    make_device("pi-1")
    form = master.get("/admin/taskpool/task/add/").context["form"]
    key = form.initial["idempotency_key"]
    body = {
        "to": "device:pi-1",
        "title": "Back up",
        "body": "tar czf ...",
        "meta": '{"target": "nas"}',
        "ttl": "3600",
        "mode": "any",
        "idempotency_key": key,
    }
    response = master.post("/admin/taskpool/task/add/", body)
    assert response.status_code == 302
    (task,) = store.pending_for("pi-1")
    assert response["Location"] == f"/admin/taskpool/task/{task['id']}/"
    assert task["from"] == "user:ops@example.com"
    assert (task["title"], task["body"]) == ("Back up", "tar czf ...")
    assert task["meta"]["target"] == "nas" and task["meta"]["mode"] == "any"
    assert task["meta"]["idempotency_key"] == key
    assert task["meta"]["expires_at"]

    again = master.post("/admin/taskpool/task/add/", body)  # a second click
    assert again["Location"] == response["Location"]
    assert len(store.pending_for("pi-1")) == 1


def test_the_form_shown_again_by_back_and_sent_again_asks_before_a_second_task(
    master, store, make_device
):
    """Back after sending shows the form with a new key, refilled by the browser: sent
    again, it would be a second task each device runs again."""
    make_device("pi-1")
    body = {"to": "device:pi-1", "title": "Reboot", "meta": '{"now": true}'}
    first_key = master.get("/admin/taskpool/task/add/").context["form"].initial["idempotency_key"]
    sent = master.post("/admin/taskpool/task/add/", {**body, "idempotency_key": first_key})
    assert sent.status_code == 302
    (task,) = store.pending_for("pi-1")

    second_key = master.get("/admin/taskpool/task/add/").context["form"].initial["idempotency_key"]
    assert second_key != first_key  # the page is drawn anew on Back
    held = master.post("/admin/taskpool/task/add/", {**body, "idempotency_key": second_key})
    assert held.status_code == 200
    page = held.content.decode()
    assert 'id="send-repeated"' in page and f"/admin/taskpool/task/{task['id']}/" in page
    assert [t["id"] for t in store.pending_for("pi-1")] == [task["id"]]  # nothing sent

    meant = master.post(
        "/admin/taskpool/task/add/", {**body, "idempotency_key": second_key, "send_again": "on"}
    )
    assert meant.status_code == 302
    assert len(store.pending_for("pi-1")) == 2
    other = master.post(  # another task altogether is sent at once
        "/admin/taskpool/task/add/",
        {"to": "device:pi-1", "title": "Back up", "idempotency_key": "admin-other"},
    )
    assert other.status_code == 302 and len(store.pending_for("pi-1")) == 3


#: A meta one level deeper than the pool takes: meta, then 32 arrays.
TOO_DEEP = json.loads('{"a": ' + "[" * 32 + "]" * 32 + "}")

BAD_TASKS = [
    {"to": "pi-1", "title": "x"},
    {"to": "", "title": "x"},
    {"to": "user:ops", "title": "x"},
    {"to": "device:pi-1", "title": "x", "meta": ["a"]},
    {"to": "device:pi-1", "title": "x", "meta": {"status": "done"}},
    {"to": "device:pi-1", "title": "x", "ttl": "soon"},
    {"to": "device:pi-1", "title": "x", "ttl": 0},
    {"to": "device:pi-1", "title": "x", "ttl": 10**9},
    {"to": "device:pi-1", "title": "x", "mode": "all"},
    {"to": "device:pi-1", "title": ""},
    {"to": "device:pi-1", "title": "  "},
    {"to": "device:pi-1", "title": "x", "ttl": "٣"},
    {"to": "device:pi-1", "title": "x", "meta": TOO_DEEP},
    {"to": "pi-1", "title": "", "meta": {"status": "x"}, "ttl": 10**9, "mode": "all"},
]


@pytest.mark.parametrize("bad", BAD_TASKS, ids=lambda bad: json.dumps(bad))
def test_the_send_form_refuses_what_the_api_refuses_with_its_words(
    bad, master, master_client, snapshot
):
    before = snapshot()
    api = post_json(master_client, "/pool/task", bad)
    assert api.status_code == 400
    form_data = {
        name: json.dumps(value) if name == "meta" else str(value) for name, value in bad.items()
    }
    response = master.post("/admin/taskpool/task/add/", form_data)
    assert response.status_code == 200
    form = response.context["form"]
    assert {field: list(errors) for field, errors in form.errors.items()} == api.json()["errors"]
    assert snapshot() == before


@pytest.mark.parametrize("key", ["x" * 200, "bad key é", "a b"])
def test_the_send_form_takes_only_a_key_the_api_would(master, make_device, snapshot, key):
    make_device("pi-1")
    before = snapshot()
    form_data = {"to": "device:pi-1", "title": "t", "idempotency_key": key}
    response = master.post("/admin/taskpool/task/add/", form_data)
    assert response.status_code == 200
    assert "reload the page" in str(response.context["form"].non_field_errors())
    assert "reload the page" in response.content.decode()
    assert snapshot() == before


def test_the_send_form_shows_every_fields_error_at_once(master, snapshot):
    before = snapshot()
    response = master.post(
        "/admin/taskpool/task/add/",
        {"to": "pi-2", "title": "", "meta": '{"a": 1,', "ttl": "soon", "mode": "all"},
    )
    assert response.status_code == 200
    assert set(response.context["form"].errors) == {"to", "title", "meta", "ttl", "mode"}
    assert snapshot() == before


@pytest.mark.parametrize(
    ("meta", "error"),
    [
        ('{"a": 1, "a": 2}', "Not valid JSON: the key 'a' appears twice in one object."),
        ('{"a": NaN}', None),
        (
            '{"a": ' * 1000 + "{}" + "}" * 1000,
            "meta may nest objects and arrays at most 32 levels deep.",
        ),
    ],
)
def test_the_send_form_reads_meta_as_the_api_does(master, snapshot, meta, error):
    before = snapshot()
    response = master.post(
        "/admin/taskpool/task/add/", {"to": "device:pi-1", "title": "x", "meta": meta}
    )
    assert response.status_code == 200
    (message,) = response.context["form"].errors["meta"]
    assert message == error if error else message.startswith("Not valid JSON")
    assert snapshot() == before


def test_the_thread_shows_responses_in_order_and_one_execution_per_device(
    master, store, make_device
):
    for device_id in ("pi-1", "pi-2", "pi-3"):
        make_device(device_id)
    make_device("off-1", validated=False)
    task = store.post_task(sender="user:x", to="device:*", title="All").message
    store.post_response(device_id="pi-2", parent_id=task["id"], status="progress", body="10%")
    store.post_response(device_id="pi-2", parent_id=task["id"], status="done")
    store.post_response(device_id="pi-3", parent_id=task["id"], status="rejected")
    response = master.get(f"/admin/taskpool/task/{task['id']}/")
    page = response.context
    assert [(row.sender, row.status) for row, _ in page["responses"]] == [
        ("device:pi-2", "progress"),
        ("device:pi-2", "done"),
        ("device:pi-3", "rejected"),
    ]
    assert page["response_counts"] == []  # one page: everything, with no pager
    assert 'class="paginator"' not in response.content.decode()
    assert [(e["device"], e["status"]) for e, _ in page["executions"]] == [
        ("pi-1", "pending"),
        ("pi-2", "done"),
        ("pi-3", "rejected"),
    ]
    assert page["closed"] is None and page["cancel_form"] is not None
    assert page["day_url"] is None  # a master does not read day files
    assert master.get("/admin/taskpool/task/msg_nothing/").status_code == 404


def test_a_broadcasts_thread_pages_its_executions_and_counts_each_status(
    master, store, monkeypatch
):
    """A row per device of the fleet would be megabytes, fetched again at each answer."""
    fleet = [f"pi-{number:03d}" for number in range(250)]
    DeviceUser.objects.bulk_create(DeviceUser(id=device_id, validated=True) for device_id in fleet)
    task = store.post_task(sender="user:x", to="device:*", title="All").message
    for device_id in ("pi-001", "pi-120", "pi-249"):
        store.post_response(device_id=device_id, parent_id=task["id"], status="done")
    store.post_response(device_id="stranger", parent_id=task["id"], status="failed")
    calls = TaskStateCalls(monkeypatch)
    first = master.get(f"/admin/taskpool/task/{task['id']}/")
    executions = [(e["device"], e["status"]) for e, _ in first.context["executions"]]
    assert executions[:3] == [("pi-000", "pending"), ("pi-001", "done"), ("pi-002", "pending")]
    assert len(executions) == len(calls.rows) == 100
    assert first.context["status_counts"] == [("done", 3), ("failed", 1), ("pending", 247)]
    html = first.content.decode()
    assert '<a href="?p=3#executions">3</a>' in html and "251 devices" in html
    last = master.get(f"/admin/taskpool/task/{task['id']}/?p=3").context["executions"]
    assert [(e["device"], e["status"]) for e, _ in last][-3:] == [
        ("pi-248", "pending"),
        ("pi-249", "done"),
        ("stranger", "failed"),
    ]
    beyond = master.get(f"/admin/taskpool/task/{task['id']}/?p=99").context
    assert beyond["executions_page"].number == 3


def test_a_broadcasts_thread_pages_its_responses_and_counts_each_status(master, store):
    """Every answer of a large fleet on one page would be megabytes, fetched at each answer."""
    fleet = [f"pi-{number:03d}" for number in range(150)]
    DeviceUser.objects.bulk_create(DeviceUser(id=device_id, validated=True) for device_id in fleet)
    task = store.post_task(sender="user:x", to="device:*", title="All").message
    for device_id in fleet[:70]:
        store.post_response(device_id=device_id, parent_id=task["id"], status="progress")
        store.post_response(device_id=device_id, parent_id=task["id"], status="done")
    for device_id in ("pi-100", "pi-101", "stranger"):
        store.post_response(device_id=device_id, parent_id=task["id"], status="failed")
    url = f"/admin/taskpool/task/{task['id']}/"

    first = master.get(url)
    responses = [(row.sender, row.status) for row, _ in first.context["responses"]]
    assert len(responses) == 100
    assert responses[:3] == [
        ("device:pi-000", "progress"),
        ("device:pi-000", "done"),
        ("device:pi-001", "progress"),
    ]
    assert responses[-1] == ("device:pi-049", "done")
    assert first.context["response_counts"] == [("done", 70), ("failed", 3), ("progress", 70)]
    html = first.content.decode()
    assert '<a href="?rp=2#responses">2</a>' in html and "143 responses" in html
    assert '<a href="?p=2#executions">2</a>' in html and "151 devices" in html

    last = master.get(url + "?rp=2")
    responses = [(row.sender, row.status) for row, _ in last.context["responses"]]
    assert len(responses) == 43
    assert responses[0] == ("device:pi-050", "progress")
    assert responses[-3:] == [
        ("device:pi-100", "failed"),
        ("device:pi-101", "failed"),
        ("device:stranger", "failed"),
    ]
    assert [device.url is not None for _, device in last.context["responses"]][-3:] == [
        True,
        True,
        False,
    ]
    # Each pager keeps the page the other one shows.
    html = last.content.decode()
    assert '<a href="?rp=2&amp;p=2#executions">2</a>' in html
    assert '<a href="?rp=1#responses">1</a>' in html
    both = master.get(url + "?p=2&rp=2")
    assert both.context["executions_page"].number == both.context["responses_page"].number == 2
    assert '<a href="?p=2&amp;rp=1#responses">1</a>' in both.content.decode()
    beyond = master.get(url + "?rp=99").context
    assert beyond["responses_page"].number == 2


def test_a_cancel_reason_over_its_limit_cancels_nothing_and_says_why(master, store, snapshot):
    task = store.post_task(sender="user:x", to="device:pi-1", title="t").message
    before = snapshot()
    url = f"/admin/taskpool/task/{task['id']}/"
    refused = master.post(url + "cancel/", {"reason": "x" * 2001}, follow=True)
    assert [str(m) for m in refused.context["messages"]] == [
        "Ensure this value has at most 2000 characters (it has 2001)."
    ]
    assert refused.context["cancel_form"] is not None  # still open
    assert snapshot() == before


def test_cancelling_twice_says_why_the_second_time(master, store, snapshot):
    task = store.post_task(sender="user:x", to="device:pi-1", title="t").message
    url = f"/admin/taskpool/task/{task['id']}/"
    first = master.post(url + "cancel/", {"reason": "wrong device"}, follow=True)
    assert [str(m) for m in first.context["messages"]] == [
        "Task cancelled: it has left every device's pending list."
    ]
    assert first.context["closed"] == "cancelled" and first.context["cancel_form"] is None
    cancellation = first.context["responses"][-1][0].message
    assert (cancellation["from"], cancellation["body"]) == ("user:ops@example.com", "wrong device")
    before = snapshot()
    second = master.post(url + "cancel/", follow=True)
    assert [str(m) for m in second.context["messages"]] == [f"Task {task['id']} was cancelled."]
    assert snapshot() == before


def test_a_live_pages_refresh_leaves_the_message_for_the_page_it_was_for(master, store):
    """A live page fetches itself when its task changes: a fetch made as the cancel's redirect
    is followed must not take the "Task cancelled" the next page is to show."""
    task = store.post_task(sender="user:x", to="device:pi-1", title="t").message
    url = f"/admin/taskpool/task/{task['id']}/"
    master.post(url + "cancel/", {"reason": "wrong device"})
    refreshed = master.get(url, headers={"X-Taskpool-Live": "refresh"})
    assert refreshed.context["closed"] == "cancelled"
    shown = master.get(url)
    assert [str(m) for m in shown.context["messages"]] == [
        "Task cancelled: it has left every device's pending list."
    ]
    assert [str(m) for m in master.get(url).context["messages"]] == []  # shown once
    master.get("/admin/taskpool/dashboard/", headers={"X-Taskpool-Live": "refresh"})
    master.post(url + "cancel/")
    master.get("/admin/taskpool/dashboard/", headers={"X-Taskpool-Live": "refresh"})
    assert [str(m) for m in master.get(url).context["messages"]] == [
        f"Task {task['id']} was cancelled."
    ]


def test_the_task_list_is_newest_first_with_statuses_filters_and_paging(master, store, make_device):
    make_device("pi-1")
    make_device("pi-2")
    first = store.post_task(sender="user:x", to="device:pi-1", title="first").message
    store.post_task(sender="user:y", to="device:pi-2", title="second")
    store.post_task(sender="user:x", to="device:*", title="third")
    store.post_response(device_id="pi-1", parent_id=first["id"], status="done")
    store.post_heartbeat(device_id="pi-1")

    def listed(query=""):
        page = master.get("/admin/taskpool/task/" + query).context
        rows = [(row.message["title"], [g.status for g in groups]) for row, groups in page["rows"]]
        return rows, page

    rows, page = listed()
    assert rows == [("third", ["pending"]), ("second", ["pending"]), ("first", ["done"])]
    assert all(row.message_url is None for row, _ in page["rows"])  # day files are for admins
    assert listed("?status=done")[0] == [("first", ["done"])]
    assert [title for title, _ in listed("?to=device:pi-2")[0]] == ["third", "second"]
    assert [title for title, _ in listed("?from=user:x&q=THI")[0]] == ["third"]

    rows, page = listed("?limit=2")
    assert [title for title, _ in rows] == ["third", "second"] and page["page"].has_more
    older, _ = listed(f"?limit=2&before={page['page'].next_cursor}")
    assert [title for title, _ in older] == ["first"]

    rows, page = listed("?to=pi-1")
    assert page["filter_errors"] == {
        "to": [
            "'pi-1' is not an address: use device:<id>, device:*, device:[<id>,...], user:<email> or backend."
        ]
    }
    assert len(rows) == 3  # shown unfiltered, with the error above

    for cursor in ("garbage", "msg_nonexistent"):  # an edited or stale "Older" link
        rows, page = listed(f"?before={cursor}")
        assert list(page["filter_errors"]) == ["before"]
        assert len(rows) == 3


# Devices and roles ---------------------------------------------------------------


def test_the_device_list_asks_the_store_once_per_page(boss, store, make_device, monkeypatch):
    for number in range(12):
        make_device(f"pi-{number:02d}")
    store.post_task(sender="user:x", to="device:pi-03", title="t")
    store.post_heartbeat(device_id="pi-05")
    calls = []
    for name in ("pending_counts", "device_activity"):
        real = getattr(store, name)
        monkeypatch.setattr(
            store, name, lambda ids, real=real, name=name: calls.append(name) or real(ids)
        )
    response = boss.get("/admin/taskpool/deviceuser/")
    assert sorted(calls) == ["device_activity", "pending_counts"]
    devices = {device.id: device.fleet_status for device in response.context["cl"].result_list}
    assert devices["pi-03"].pending == 1 and devices["pi-04"].pending == 0
    assert devices["pi-05"].online and not devices["pi-04"].online
    online = boss.get("/admin/taskpool/deviceuser/?online=yes").context["cl"].result_list
    assert [device.id for device in online] == ["pi-05"]
    offline = boss.get("/admin/taskpool/deviceuser/?online=no").context["cl"].result_list
    assert list(offline) == []  # each of the others was never heard from
    never = boss.get("/admin/taskpool/deviceuser/?online=never").context["cl"].result_list
    assert len(never) == 11 and "pi-05" not in {device.id for device in never}


def test_revoking_tokens_and_issuing_one(boss, make_device, client):
    device, old_token = make_device("pi-1")
    from taskpool.models import DeviceUser

    ended = "an enrollment's secret, which staff revoking tokens ends"
    DeviceUser.objects.filter(pk="pi-1").update(enrollment_secret_hash=ended)
    response = boss.post(
        "/admin/taskpool/deviceuser/",
        {"action": "revoke_tokens", "_selected_action": ["pi-1"], "index": "0"},
    )
    assert response.status_code == 302
    assert client.get("/pool/pending", HTTP_AUTHORIZATION=f"Bearer {old_token}").status_code == 401
    assert DeviceUser.objects.get(pk="pi-1").enrollment_secret_hash == ""

    DeviceUser.objects.filter(pk="pi-1").update(enrollment_secret_hash=ended)
    confirm = boss.get("/admin/taskpool/deviceuser/pi-1/token/")
    assert confirm.context["token"] is None
    issued = boss.post("/admin/taskpool/deviceuser/pi-1/token/", follow=True)
    token = issued.context["token"]
    assert "no-store" in issued["Cache-Control"]
    assert client.get("/pool/pending", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    # A reload of the page that showed it (a redirect's GET) issues nothing and ends nothing.
    reloaded = boss.get(issued.redirect_chain[-1][0])
    assert reloaded.context["token"] is None and reloaded.context["shown_before"]
    assert 'id="token-shown-before"' in reloaded.content.decode()
    assert client.get("/pool/pending", HTTP_AUTHORIZATION=f"Bearer {token}").status_code == 200
    assert DeviceUser.objects.get(pk="pi-1").enrollment_secret_hash == ""


FLEET = 300
FLEET_ACTIONS = {
    "approve": (
        "Approved its enrollment request.",
        f"{FLEET} enrollment requests approved: the devices collect their tokens at their next "
        "ask.",
    ),
    "validate": (
        json.dumps([{"changed": {"fields": ["validated"]}}]),
        f"{FLEET} devices validated.",
    ),
    "invalidate": (
        json.dumps([{"changed": {"fields": ["validated"]}}]),
        f"{FLEET} devices invalidated.",
    ),
    "revoke_tokens": (
        "Revoked every token.",
        f"Revoked the tokens of {FLEET} devices: their next request gets a 401.",
    ),
}


@pytest.mark.day_files_only
@pytest.mark.parametrize("action", list(FLEET_ACTIONS))
def test_an_action_on_a_whole_fleet_takes_a_few_queries_and_logs_each_device(
    boss, client, action, django_assert_max_num_queries
):
    """Each device changed and its log entry written as one at a time would, in a few queries
    (an insert per batch of log entries), not a few per device."""
    from django.contrib.admin.models import CHANGE, LogEntry

    validated = action in ("invalidate", "revoke_tokens")
    DeviceUser.objects.bulk_create(
        DeviceUser(
            id=f"pi-{number:03d}",
            validated=validated,
            enrolled_at=datetime(2026, 1, 1, tzinfo=UTC),
            enrollment_secret_hash="an enrollment's secret",
        )
        for number in range(FLEET)
    )
    before = {device.id: device for device in DeviceUser.objects.all()}
    old_token = str(DeviceToken.for_device(before["pi-007"]))
    assert client.get("/pool/pending", HTTP_AUTHORIZATION=f"Bearer {old_token}").status_code in (
        200,
        403,
    )
    with django_assert_max_num_queries(20):
        response = boss.post(
            "/admin/taskpool/deviceuser/",
            {"action": action, "select_across": "1", "_selected_action": ["pi-000"], "index": "0"},
        )
    assert response.status_code == 302
    change_message, text = FLEET_ACTIONS[action]
    assert [str(line) for line in boss.get(response["Location"]).context["messages"]] == [text]

    after = {device.id: device for device in DeviceUser.objects.all()}
    entries = LogEntry.objects.order_by("object_id")
    assert [entry.object_id for entry in entries] == sorted(before)
    user = get_user_model().objects.get(username="boss")
    for entry in entries:
        assert (entry.user, entry.action_flag, entry.change_message) == (
            user,
            CHANGE,
            change_message,
        )
        assert entry.object_repr == entry.object_id
        assert entry.get_edited_object() == after[entry.object_id]
    if action == "revoke_tokens":
        sessions = {device.user_session for device in after.values()}
        assert len(sessions) == FLEET  # a session of each device's own
        assert not sessions & {device.user_session for device in before.values()}
        assert all(len(session) == 32 for session in sessions)
        assert {device.enrollment_secret_hash for device in after.values()} == {""}
        pending = client.get("/pool/pending", HTTP_AUTHORIZATION=f"Bearer {old_token}")
        assert pending.status_code == 401
        new_token = str(DeviceToken.for_device(after["pi-007"]))
        assert (
            client.get("/pool/pending?wait=0", HTTP_AUTHORIZATION=f"Bearer {new_token}").status_code
            == 200
        )
    else:
        assert {device.validated for device in after.values()} == {action != "invalidate"}
        assert {device.user_session for device in after.values()} == {
            device.user_session for device in before.values()
        }


def test_the_device_page_shows_its_recent_messages(boss, store, make_device):
    make_device("pi-1")
    task = store.post_task(sender="user:x", to="device:pi-1", title="t").message
    store.post_heartbeat(device_id="pi-1")
    store.post_heartbeat(device_id="pi-2")
    page = boss.get("/admin/taskpool/deviceuser/pi-1/change/").context
    assert [row.message["type"] for row in page["recent_messages"]] == ["heartbeat", "task"]
    assert [row.message["id"] for row in page["pending_tasks"]] == [task["id"]]
    assert page["can_issue_token"] is True


def test_roles_are_inline_on_the_user_admin(boss):
    user_admin = admin.site.get_model_admin(get_user_model())
    assert UserRoleInline in user_admin.inlines
    user = get_user_model().objects.get(username="boss")
    page = Client()
    page.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    html = page.get(f"/admin/auth/user/{user.pk}/change/").content.decode()
    assert 'id="taskpool_role-group"' in html


def test_the_devices_endpoint_is_unchanged(admin_client_api, device_client, store):
    post_json(device_client, "/pool/heartbeat", {})
    store.post_task(sender="user:x", to="device:pi-1", title="t")
    DeviceUser.objects.create(id="quiet", kind="phone")
    rows = admin_client_api.get("/pool/devices").json()
    heartbeat_ts = store.device_activity(["pi-1"])["pi-1"].last_heartbeat
    assert rows == [
        {
            "id": "pi-1",
            "kind": "pi",
            "validated": True,
            "last_seen": rows[0]["last_seen"],
            "last_heartbeat": heartbeat_ts,
            "online": True,
            "pending": 1,
        },
        {
            "id": "quiet",
            "kind": "phone",
            "validated": False,
            "last_seen": None,
            "last_heartbeat": None,
            "online": False,
            "pending": 0,
        },
    ]
    assert rows[0]["last_seen"] >= heartbeat_ts


# What the task list, the thread, the day page and the device page show ----------------


def execution_groups(page) -> dict[str, list[tuple[str, str | None, bool]]]:
    """Per task title: (status, devices shown, every device?) for each execution status."""
    return {
        row.message["title"]: [
            (group.status, ",".join(device.id for device in group.devices), group.everyone)
            for group in groups
        ]
        for row, groups in page["rows"]
    }


def test_the_task_list_says_which_device_has_which_status_with_links(master, store, make_device):
    for device_id in ("pi-1", "pi-2", "pi-3"):
        make_device(device_id)
    mixed = store.post_task(sender="user:x", to="device:[pi-1,pi-2,pi-3]", title="mixed").message
    store.post_response(device_id="pi-1", parent_id=mixed["id"], status="failed")
    store.post_response(device_id="pi-3", parent_id=mixed["id"], status="progress")
    closed = store.post_task(sender="user:x", to="device:[pi-1,pi-2]", title="closed").message
    store.post_response(device_id="pi-1", parent_id=closed["id"], status="done")
    store.post_response(device_id="pi-2", parent_id=closed["id"], status="failed")
    store.post_task(sender="user:x", to="device:*", title="everyone")
    store.post_task(sender="user:x", to="device:pi-2", title="one")

    response = master.get("/admin/taskpool/task/")
    assert execution_groups(response.context) == {
        "one": [("pending", "pi-2", False)],
        "everyone": [("pending", "", True)],
        "closed": [("done", "pi-1", False), ("failed", "pi-2", False)],
        "mixed": [
            ("failed", "pi-1", False),
            ("pending", "pi-2", False),
            ("progress", "pi-3", False),
        ],
    }
    html = response.content.decode()
    assert 'href="/admin/taskpool/deviceuser/pi-1/change/"' in html


def test_a_big_broadcast_lists_a_few_devices_per_status_and_counts_the_rest(
    master, store, make_device
):
    for number in range(12):
        make_device(f"pi-{number:02d}")
    task = store.post_task(sender="user:x", to="device:*", title="all").message
    store.post_response(device_id="pi-03", parent_id=task["id"], status="done")
    (groups,) = [groups for _, groups in master.get("/admin/taskpool/task/").context["rows"]]
    done, pending = groups
    assert (done.status, [d.id for d in done.devices], done.more) == ("done", ["pi-03"], 0)
    assert (pending.status, len(pending.devices), pending.more) == ("pending", 5, 6)


def test_the_task_list_costs_the_broadcasts_answers_not_the_fleet(master, store, monkeypatch):
    """Thousands of registered devices: each broadcast's devices in a status are counted
    from its answers, and only the first few are named, never a row per device."""
    fleet = [f"pi-{number:04d}" for number in range(3000)]
    DeviceUser.objects.bulk_create(DeviceUser(id=device_id, validated=True) for device_id in fleet)
    for number in range(3):
        task = store.post_task(sender="user:x", to="device:*", title=f"all {number}").message
        for device_id in fleet[1 : 20 : number + 1]:
            store.post_response(device_id=device_id, parent_id=task["id"], status="progress")
        store.post_response(device_id=fleet[2999], parent_id=task["id"], status="failed")
    calls = TaskStateCalls(monkeypatch)
    response = master.get("/admin/taskpool/task/?to=device:pi-0042")
    assert response.status_code == 200
    groups = {row.message["title"]: groups for row, groups in response.context["rows"]}
    shown = {
        title: [
            (group.status, [device.id for device in group.devices], group.more) for group in row
        ]
        for title, row in groups.items()
    }
    assert shown["all 0"] == [
        ("failed", ["pi-2999"], 0),
        ("pending", ["pi-0000", "pi-0020", "pi-0021", "pi-0022", "pi-0023"], 2975),
        ("progress", ["pi-0001", "pi-0002", "pi-0003", "pi-0004", "pi-0005"], 14),
    ]
    assert shown["all 2"] == [
        ("failed", ["pi-2999"], 0),
        ("pending", ["pi-0000", "pi-0002", "pi-0003", "pi-0005", "pi-0006"], 2987),
        ("progress", ["pi-0001", "pi-0004", "pi-0007", "pi-0010", "pi-0013"], 2),
    ]
    assert 'href="/admin/taskpool/deviceuser/pi-0021/change/"' in response.content.decode()
    answers = 20 + 11 + 8
    assert len(calls.statuses) <= 3 * answers  # the task list's statuses, and the counts
    assert calls.rows == []


def test_the_threads_devices_link_to_their_pages(master, store, make_device):
    make_device("pi-1")
    task = store.post_task(sender="user:x", to="device:pi-1", title="t").message
    store.post_response(device_id="pi-1", parent_id=task["id"], status="done")
    html = master.get(f"/admin/taskpool/task/{task['id']}/").content.decode()
    assert html.count('href="/admin/taskpool/deviceuser/pi-1/change/"') == 2  # execution, response


def test_a_nul_in_a_list_filter_is_an_invalid_filter_and_in_a_selection_selects_nothing(
    boss, make_device
):
    """PostgreSQL refuses even to look for a NUL (a 500 there): refused before it asks."""
    for page in (
        "/admin/taskpool/deviceuser/?kind=%00",
        "/admin/taskpool/deviceuser/?q=a%00",
        "/admin/taskpool/userrole/?role=%00",
    ):
        answer = boss.get(page)
        assert answer.status_code == 302 and answer["Location"].endswith("/?e=1"), page
    make_device("pi-1")
    boss.post(
        "/admin/taskpool/deviceuser/",
        {"action": "invalidate", "_selected_action": ["pi-1\x00", "pi-1"], "index": "0"},
    )
    assert DeviceUser.objects.get(pk="pi-1").validated is False


def test_links_to_a_device_whose_id_looks_quoted_reach_it(boss, store, make_device):
    """The admin reads ``_2F`` in a URL as ``/``: an id such as ``Z_2F9`` must be quoted in
    every link to its page (``Z_5F2F9``), or the link leads to no device."""
    make_device("Z_2F9")
    page = "/admin/taskpool/deviceuser/Z_5F2F9/change/"
    task = store.post_task(sender="user:x", to="device:Z_2F9", title="t").message
    store.post_response(device_id="Z_2F9", parent_id=task["id"], status="failed", title="no")
    thread = boss.get(f"/admin/taskpool/task/{task['id']}/").content.decode()
    assert thread.count(f'href="{page}"') == 2  # execution, response
    assert f'href="{page}"' in boss.get("/admin/taskpool/dashboard/").content.decode()
    token_page = boss.get("/admin/taskpool/deviceuser/Z_5F2F9/token/")
    assert token_page.context["change_url"] == page
    assert boss.get(page).context["original"].pk == "Z_2F9"

    enrolled = Client().post(
        "/pool/enroll", {"device_id": "enr_2F2"}, content_type="application/json"
    )
    assert enrolled.status_code == 202
    approved = boss.post("/admin/taskpool/deviceuser/enr_5F2F2/approve/")
    assert approved.status_code == 302
    assert approved["Location"] == "/admin/taskpool/deviceuser/enr_5F2F2/change/"
    assert DeviceUser.objects.get(pk="enr_2F2").validated


def test_the_task_list_filters_by_the_day_sent(master, store, make_device, other_process):
    make_device("pi-1")
    day = today(store)
    yesterday = day.fromordinal(day.toordinal() - 1)
    old = message(
        kind="task",
        sender="user:x",
        to="device:pi-1",
        title="yesterday",
        ts="T12:00:00Z",
        day=yesterday.isoformat(),
    )
    other_process(old)
    today_task = store.post_task(sender="user:x", to="device:pi-1", title="today").message
    page = master.get("/admin/taskpool/task/").context
    choices = {label: url for label, url, _ in page["date_choices"]}
    assert list(choices)[:3] == ["Any date", "Today", "Yesterday"]
    titles = lambda url: [row.message["title"] for row, _ in master.get(url).context["rows"]]  # noqa: E731
    assert titles("/admin/taskpool/task/") == ["today", "yesterday"]
    assert titles("/admin/taskpool/task/" + choices["Today"]) == ["today"]
    assert titles("/admin/taskpool/task/" + choices["Yesterday"]) == ["yesterday"]
    selected = master.get("/admin/taskpool/task/" + choices["Yesterday"]).context["date_choices"]
    assert [label for label, _, chosen in selected if chosen] == ["Yesterday"]
    assert today_task["id"]


def test_the_thread_shows_an_idempotency_key_apart_from_the_meta(master, store, make_device):
    make_device("pi-1")
    form = master.get("/admin/taskpool/task/add/").context["form"]
    key = form.initial["idempotency_key"]
    sent = master.post(
        "/admin/taskpool/task/add/",
        {"to": "device:pi-1", "title": "t", "meta": '{"script": "a.sh"}', "idempotency_key": key},
        follow=True,
    )
    assert json.loads(sent.context["task_meta"]) == {"script": "a.sh"}
    assert sent.context["task"]["meta"]["idempotency_key"] == key
    html = sent.content.decode()
    assert html.count(key) == 1 and 'id="idempotency-key"' in html


def test_the_day_page_keeps_titles_and_bodies_apart(boss, store):
    task = store.post_task(sender="user:x", to="device:pi-1", title="Back up").message
    store.post_response(device_id="pi-1", parent_id=task["id"], status="done", body="all 3 GB")
    page = boss.get(f"/admin/taskpool/dayfile/{today(store).isoformat()}/")
    html = page.content.decode()
    rows = html.split("<tbody>")[1].split("</tbody>")[0].split("<tr>")[1:]
    title_cells = [row.split('class="taskpool-title"')[1].split("</td>")[0] for row in rows]
    assert "Back up" in title_cells[0] and "all 3 GB" not in title_cells[1]
    assert "all 3 GB" in rows[1].split('class="taskpool-body"')[1]


def test_the_device_page_shows_last_seen_once(boss, make_device, device_client):
    make_device("pi-1")
    assert device_client.get("/pool/pending").status_code == 200  # sets last_seen
    html = boss.get("/admin/taskpool/deviceuser/pi-1/change/").content.decode()
    assert "field-last_seen" not in html
    assert html.count("Last seen") == 1


def test_the_device_page_says_its_utc_times_in_utc_whatever_the_sites_time_zone(
    boss, make_device, settings
):
    from datetime import UTC, datetime

    from taskpool.models import DeviceUser

    settings.TIME_ZONE = "America/New_York"
    make_device("pi-1")
    seen = datetime(2026, 6, 3, 16, 31, 8, tzinfo=UTC)
    DeviceUser.objects.filter(pk="pi-1").update(last_seen=seen)
    html = boss.get("/admin/taskpool/deviceuser/pi-1/change/").content.decode()
    assert "2026-06-03 16:31:08" in html  # not 12:31:08, New York's, under "(UTC)"


def test_addresses_break_between_ids_not_inside_them(master, store, make_device):
    for device_id in ("pi-1", "pi-2"):
        make_device(device_id)
    store.post_task(sender="user:x", to="device:[pi-1,pi-2]", title="t")
    html = master.get("/admin/taskpool/task/").content.decode()
    assert (
        'device:[<span class="taskpool-id">pi-1</span>,<wbr><span class="taskpool-id">pi-2</span>]'
        in html
    )
    css = (Path(__file__).parent.parent / "taskpool/static/taskpool/admin.css").read_text()
    assert ".taskpool-id { white-space: nowrap; }" in css
    assert "overflow-wrap: anywhere; min-width" not in css


def test_a_pool_page_of_the_admin_starts_this_processs_ticker(master, settings):
    """A process that only staff reach still writes jobs' timeouts and retries."""
    from taskpool.ticker import ticker

    if ticker.is_running():  # an earlier test's, ending at its next tick (TICK_INTERVAL 0)
        ticker._thread.join(timeout=5)
    assert not ticker.is_running()
    settings.TASKPOOL = {**settings.TASKPOOL, "TICK_INTERVAL": 0.05}
    assert master.get("/admin/taskpool/task/").status_code == 200
    assert ticker.is_running()
    settings.TASKPOOL = {**settings.TASKPOOL, "TICK_INTERVAL": 0}
    ticker._thread.join(timeout=5)  # it stops at its next tick
    assert not ticker.is_running()


@pytest.mark.urls("tests.two_admin_sites_urls")
def test_a_second_admin_site_keeps_its_staff_on_its_own_pages(boss, store, make_device):
    """Links and redirects of the pool's pages stay on the admin site they were drawn by."""
    make_device("pi-1")
    form = boss.get("/second/taskpool/task/add/").context["form"]
    sent = boss.post(
        "/second/taskpool/task/add/",
        {
            "to": "device:pi-1",
            "title": "Back up",
            "idempotency_key": form.initial["idempotency_key"],
        },
    )
    assert sent.status_code == 302
    (task,) = store.pending_for("pi-1")
    assert sent["Location"] == f"/second/taskpool/task/{task['id']}/"
    store.post_response(device_id="pi-1", parent_id=task["id"], status="failed", title="no disk")
    day = task["ts"][:10]
    for page in (
        "/second/taskpool/dashboard/",
        "/second/taskpool/task/",
        f"/second/taskpool/task/{task['id']}/",
        f"/second/taskpool/dayfile/{day}/",
        "/second/taskpool/deviceuser/pi-1/change/",
    ):
        answer = boss.get(page)
        assert answer.status_code == 200, page
        links = re.findall(r'href="(/[^"]*)"', answer.content.decode())
        assert [link for link in links if link.startswith("/admin/")] == [], page
        assert any(link.startswith("/second/taskpool/") for link in links), page
    cancelled = boss.post(f"/second/taskpool/task/{task['id']}/cancel/", {"reason": "not now"})
    assert cancelled["Location"] == f"/second/taskpool/task/{task['id']}/"


def test_a_task_day_or_device_not_there_is_a_404_in_the_admins_frame_saying_so(boss, store):
    """A bookmarked thread whose task left the horizon lands on the admin, not a bare page."""
    for path, said in (
        ("/admin/taskpool/task/msg_gone/", "There is no task msg_gone in the pool."),
        ("/admin/taskpool/dayfile/2001-01-01/", "There is no day file for 2001-01-01."),
        ("/admin/taskpool/dayfile/notaday/", "notaday is not a day."),
        ("/admin/taskpool/deviceuser/nobody/token/", "There is no device nobody."),
    ):
        answer = boss.get(path)
        assert answer.status_code == 404, path
        text = answer.content.decode()
        assert 'id="site-name"' in text, path  # the admin's header
        assert 'id="not-found"' in text and said in text, path


def test_a_paged_task_list_counts_its_page_as_the_page(master, store, monkeypatch):
    """Its count is of the page: read as a total, it disagreed with the dashboard's."""
    from taskpool.admin.tasks import TaskAdmin

    monkeypatch.setattr(TaskAdmin, "tasks_per_page", 2)
    for number in range(3):
        store.post_task(sender="user:x", to="device:pi-1", title=f"job {number}")
    first = master.get("/admin/taskpool/task/").content.decode()
    assert "2 tasks on this page" in first
    alone = master.get("/admin/taskpool/task/?q=job%202").content.decode()
    assert "1 task &middot;" in alone and "on this page" not in alone
