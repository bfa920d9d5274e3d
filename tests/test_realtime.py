"""Real time in one process: stream scopes, the hub's wake-ups, keep-alives, and the WSGI fallback."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import orjson
import pytest
from django.db import OperationalError

from taskpool.exceptions import PoolError
from taskpool.messages import encode_line
from taskpool.realtime import sse
from taskpool.realtime.hub import Hub, Waiter
from taskpool.realtime.longpoll import REAUTHENTICATE_AFTER_SECONDS
from taskpool.realtime.scope import (
    ADMIN,
    ALL_TASKS,
    DEVICE,
    MASTER,
    Scope,
    StreamFilter,
    concerned_scopes,
)
from taskpool.realtime.stream import events, read_events
from tests.conftest import client_with

pytestmark = pytest.mark.every_store


def post(store, to: str, sender: str = "user:ops", **extra) -> dict:
    return store.post_task(sender=sender, to=to, title="t", **extra).message


def carried(store, scope: Scope) -> list[str]:
    """The ids of the messages a stream for ``scope`` carries from the pool's start."""
    stream_filter = StreamFilter(scope, store)
    page = store.messages_after(None, limit=1000)
    return [message["id"] for message in page.results if stream_filter.carries(message)]


# Scopes ---------------------------------------------------------------------


def test_a_device_stream_carries_what_changes_its_pending_list(store):
    own = post(store, "device:a")
    listed = post(store, "device:[b,a]")
    everyone = post(store, "device:*")
    others = post(store, "device:b")
    done = store.post_response(device_id="a", parent_id=own["id"], status="done").message
    cancel = store.cancel(sender="user:ops", task_id=listed["id"]).message
    store.cancel(sender="user:ops", task_id=others["id"])
    heartbeat = store.post_heartbeat(device_id="b")
    assert carried(store, Scope(DEVICE, "a")) == [
        own["id"],
        listed["id"],
        everyone["id"],
        cancel["id"],
    ]
    assert done["id"] not in carried(store, Scope(DEVICE, "a"))
    assert heartbeat["id"] not in carried(store, Scope(DEVICE, "b"))


def test_a_device_stream_carries_a_scheduled_task_only_when_it_is_offered(store):
    """Before its start or its rollout's step, a task changes no device's pending list:
    the stream tells the device with the line that offers it, as the long-poll would."""
    from datetime import UTC, datetime, timedelta

    from taskpool.ticker import tick

    later = datetime.now(UTC) + timedelta(hours=1)
    scheduled = post(store, "device:[a,b]", not_before=later)
    # One device a step of 10 s: a tick within the next 10 s offers one, however busy the
    # machine (at 60 a minute a tick a second late offered both).
    rolled = post(store, "device:[a,b]", rollout={"max_per_minute": 6})
    plain = post(store, "device:[a,b]")
    assert carried(store, Scope(DEVICE, "a")) == [plain["id"]]
    assert [t["id"] for t in store.pending_for("a")] == [plain["id"]]
    (offer,) = tick(store, registered_devices=[])  # the rollout's first step: one device
    (offered,) = offer["meta"]["devices"]
    assert offer["parent_id"] == rolled["id"]
    assert carried(store, Scope(DEVICE, offered)) == [plain["id"], offer["id"]]
    other = "b" if offered == "a" else "a"
    assert carried(store, Scope(DEVICE, other)) == [plain["id"]]
    assert scheduled["id"] in carried(store, Scope(ALL_TASKS))  # masters see it at once


def test_a_device_hears_of_another_devices_claim_once_and_of_its_release(store):
    task = post(store, "device:[a,b]", mode="any")
    claim = store.claim(device_id="b", parent_id=task["id"]).claim
    store.post_response(device_id="b", parent_id=task["id"], status="progress")
    release = store.post_response(device_id="b", parent_id=task["id"], status="rejected").message
    again = store.post_response(device_id="a", parent_id=task["id"], status="progress").message
    assert carried(store, Scope(DEVICE, "a")) == [task["id"], claim["id"], release["id"]]
    assert carried(store, Scope(DEVICE, "b")) == [task["id"], again["id"]]


def test_a_device_reads_only_the_status_of_another_devices_answer_on_its_stream(store):
    """What the other device answered (title, body, meta) is its own: the stream says only
    that it took the task, and an admin's stream still carries the whole answer."""
    task = post(store, "device:[a,b]", mode="any")
    answer = store.post_response(
        device_id="b",
        parent_id=task["id"],
        status="done",
        title="b's result",
        body="private",
        meta={"checksum": "x"},
    ).message

    def sent(scope: Scope) -> dict:
        chunk, _cursor, _more = read_events(store, StreamFilter(scope, store), None)
        (line,) = [
            line
            for line in chunk.splitlines()
            if line.startswith(b"data: ") and b'"response"' in line
        ]
        return orjson.loads(line[6:])

    told = sent(Scope(DEVICE, "a"))
    assert (told["id"], told["from"], told["parent_id"]) == (answer["id"], "device:b", task["id"])
    assert (told["title"], told["body"], told["meta"]) == ("", "", {"status": "done"})
    assert sent(Scope(ADMIN)) == answer


def carried_between(store, scope: Scope, start: str | None, stop: str | None) -> list[str]:
    """The ids one connection for ``scope`` carries from cursor ``start`` until it has read
    to ``stop`` (``None``: the end of the pool): what a device gets before it reconnects."""
    stream_filter = StreamFilter(scope, store)
    ids = []
    cursor = start
    while True:
        page = store.messages_after(cursor, limit=1000)
        for entry in page.entries:
            if stop is not None and entry.cursor > stop:
                return ids
            if stream_filter.carries(entry.message):
                ids.append(entry.message["id"])
            if entry.cursor == stop:
                return ids
        if not page.has_more:
            return ids
        cursor = page.next_cursor


def test_a_reconnected_device_is_not_told_again_of_a_claim_it_heard_of(store):
    """Who holds an any-one task is the pool's, not the connection's: after a reconnect
    with Last-Event-ID, the holder's progress is no new claim."""
    task = post(store, "device:[a,b]", mode="any")
    claim = store.claim(device_id="b", parent_id=task["id"]).claim
    heard = store.end_cursor()
    store.post_response(device_id="b", parent_id=task["id"], status="progress")
    store.post_response(device_id="b", parent_id=task["id"], status="done")
    assert carried_between(store, Scope(DEVICE, "a"), None, None) == [task["id"], claim["id"]]
    assert carried_between(store, Scope(DEVICE, "a"), heard, None) == []


def test_a_device_stream_is_the_same_however_it_was_cut_by_reconnects(store):
    """A randomized run of any-one tasks among three devices (claims, progress, releases,
    ends, refusals): from any cursor, one connection carries exactly what a device gets by
    reconnecting at any later position and going on from there."""
    rng = random.Random(20261128)
    devices = ["a", "b", "c"]
    tasks = [post(store, "device:[a,b,c]", mode="any")["id"] for _ in range(3)]
    for _ in range(90):
        if rng.random() < 0.08:
            tasks.append(post(store, "device:[a,b,c]", mode="any")["id"])
        task_id, device = rng.choice(tasks[-4:]), rng.choice(devices)
        try:
            if rng.random() < 0.3:
                store.claim(device_id=device, parent_id=task_id)
            else:
                status = rng.choice(["progress", "progress", "rejected", "done", "failed"])
                store.post_response(device_id=device, parent_id=task_id, status=status)
        except PoolError:
            pass  # refused by the rules (held by another, answered, closed): as a device sees
    for device in devices:
        assert len(carried_the_same_however_cut(store, Scope(DEVICE, device), every=9)) > 3


def test_a_claim_after_a_timeout_is_told_however_the_stream_was_cut(store):
    """A timeout releases an any-one task: another device's claim after it is a claim
    again, for a stream that read the timeout as for one resumed after it."""
    from taskpool.ticker import tick

    task = post(store, "device:[a,b,c]", mode="any", timeout={"in_progress": 1})
    first = store.claim(device_id="b", parent_id=task["id"]).claim
    written: list[dict] = []
    deadline = time.monotonic() + 10
    while not written and time.monotonic() < deadline:
        time.sleep(0.2)
        written = tick(store, registered_devices=[])
    assert [line["meta"]["status"] for line in written] == ["timed_out"]
    second = store.claim(device_id="c", parent_id=task["id"]).claim
    store.post_response(device_id="c", parent_id=task["id"], status="progress")
    assert carried_the_same_however_cut(store, Scope(DEVICE, "a")) == [
        task["id"],
        first["id"],
        written[0]["id"],
        second["id"],
    ]


def test_a_lookup_that_fails_partway_ends_the_page_before_that_message(store, monkeypatch):
    """The filter follows holders as it reads: a page that met a database gone away is
    not judged again from its start (a claim read once would then be no news)."""
    first = post(store, "device:[a,b]", mode="any")
    second = post(store, "device:[a,b]", mode="any")
    start = store.end_cursor()
    claims = [store.claim(device_id="b", parent_id=task["id"]).claim for task in (first, second)]
    lookup, calls = store.holder_before, []

    def failing_the_second_time(task_id: str, response_id: str) -> str | None:
        calls.append(response_id)
        if len(calls) == 2:
            raise OperationalError("the database went away")
        return lookup(task_id, response_id)

    monkeypatch.setattr(store, "holder_before", failing_the_second_time)
    stream_filter = StreamFilter(Scope(DEVICE, "a"), store)
    chunk, cursor, more = read_events(store, stream_filter, start)
    assert more and cursor == store.messages_after(start, limit=1).next_cursor
    rest, _, more = read_events(store, stream_filter, cursor)
    assert not more
    ids = [
        orjson.loads(line[6:])["id"]
        for line in (chunk + rest).splitlines()
        if line[:6] == b"data: "
    ]
    assert ids == [claim["id"] for claim in claims]


def test_a_stream_hands_out_large_messages_a_bounded_chunk_at_a_time(store):
    """A client that reads slowly holds the server's memory to about a chunk, not to the
    pool's next 500 messages of up to 64 KiB each, joined in one piece."""
    from taskpool.realtime.stream import CHUNK_BYTES

    start = store.end_cursor()
    posted = [post(store, "device:*", body="x" * 20_000)["id"] for _ in range(12)]
    stream_filter = StreamFilter(Scope(ADMIN), store)
    cursor, seen, more = start, [], True
    while more:
        chunk, cursor, more = read_events(store, stream_filter, cursor)
        assert len(chunk) < CHUNK_BYTES + 21_000
        seen += [
            orjson.loads(line[6:])["id"] for line in chunk.splitlines() if line[:6] == b"data: "
        ]
    assert seen == posted  # each once, in order


def carried_the_same_however_cut(store, scope: Scope, every: int = 1) -> list[str]:
    """What a stream for ``scope`` carries from the pool's start, having checked that from
    every ``every``-th position on, one connection carries what two do, cut anywhere."""
    positions = [None, *(entry.cursor for entry in store.messages_after(None, limit=1000).entries)]
    for start in positions[::every]:
        whole = carried_between(store, scope, start, None)
        for cut in positions[positions.index(start) + 1 :]:
            pieces = carried_between(store, scope, start, cut)
            pieces += carried_between(store, scope, cut, None)
            assert pieces == whole, (scope, start, cut)
    return carried_between(store, scope, None, None)


def test_a_master_stream_carries_its_tasks_and_their_responses(store):
    mine = post(store, "device:a", sender="user:ops")
    post(store, "device:a", sender="user:other")
    progress = store.post_response(device_id="a", parent_id=mine["id"], status="progress").message
    store.post_heartbeat(device_id="a")
    assert carried(store, Scope(MASTER, "user:ops")) == [mine["id"], progress["id"]]


def test_a_master_who_asks_for_all_gets_every_task_and_response(store):
    mine = post(store, "device:a", sender="user:ops")
    theirs = post(store, "device:b", sender="user:other")
    answer = store.post_response(device_id="b", parent_id=theirs["id"], status="done").message
    store.post_heartbeat(device_id="a")
    assert carried(store, Scope(ALL_TASKS)) == [mine["id"], theirs["id"], answer["id"]]


def test_a_master_who_asks_for_all_is_woken_by_any_task_or_response(store):
    waiting = Scope(ALL_TASKS)
    mark = store.changes_since(None).mark
    post(store, "device:b", sender="user:other")
    changes = store.changes_since(mark)
    assert waiting in concerned_scopes(changes) and waiting.concerned_by(changes)
    mark = changes.mark
    store.post_heartbeat(device_id="a")
    assert not waiting.concerned_by(store.changes_since(mark))


def test_an_admin_stream_carries_everything(store):
    post(store, "device:a")
    store.post_heartbeat(device_id="a")
    assert len(carried(store, Scope(ADMIN))) == 2


def test_scopes_of_principals(make_device, make_user):
    device, _ = make_device("pi-1")
    master, _ = make_user("ops", role="master", email="ops@example.com")
    admin, _ = make_user("boss", role="admin")
    viewer, _ = make_user("viewer", role="user")
    superuser, _ = make_user("root", role=None, superuser=True)
    assert Scope.of(device) == Scope(DEVICE, "pi-1")
    assert Scope.of(master) == Scope(MASTER, "user:ops@example.com")
    assert Scope.of(admin) == Scope.of(superuser) == Scope(ADMIN)
    assert Scope.of(viewer) is None
    assert Scope.of(master).asking_for_all() == Scope(ALL_TASKS)
    assert Scope.of(admin).asking_for_all() == Scope(ADMIN)
    assert Scope.of(device).asking_for_all() is None


def test_an_event_takes_its_name_from_the_known_types_only_and_keeps_to_one_line():
    message = {
        "id": "msg_" + "0" * 32,
        "ts": "2026-06-03T12:00:00Z",
        "from": "user:ops",
        "to": "device:a",
        "type": "task\ndata: injected",
        "title": "a\u2028b\u2029c\u0085d\ne",
        "body": "",
        "parent_id": None,
        "meta": {},
    }
    event = sse.event("20260603-000000000100", message)
    lines = event.split(b"\n")
    assert lines[:2] == [b"id: 20260603-000000000100", b"event: message"]
    assert lines[2].startswith(b"data: ") and lines[3:] == [b"", b""]
    assert all(
        raw not in event for raw in ("\u2028".encode(), "\u2029".encode(), "\u0085".encode())
    )
    assert orjson.loads(lines[2][6:]) == message


# The hub ----------------------------------------------------------------------


def test_the_hub_wakes_only_the_waiters_a_line_from_another_process_concerns(store, another_store):
    async def scenario() -> tuple[bool, bool, bool, int]:
        hub = Hub(store)
        async with (
            hub.waiter(Scope(DEVICE, "a")) as for_a,
            hub.waiter(Scope(DEVICE, "b")) as for_b,
            hub.waiter(Scope(MASTER, "user:ops")) as for_ops,
        ):
            other = another_store()  # another writer of the same pool
            try:
                await asyncio.to_thread(post, other, "device:a")
            finally:
                other.close()
            woken = await for_a.wait(30)
            # One look wakes every waiter the line concerns at once: b would be set now.
            return woken, for_b.woken, for_ops.woken, hub.waiting

    woken, b_woken, ops_woken, waiting = asyncio.run(scenario())
    assert (woken, b_woken, ops_woken, waiting) == (True, False, True, 3)


def test_a_waiter_not_woken_may_resume_where_the_watcher_got_to(store, pool_dir):
    async def scenario():
        hub = Hub(store)
        async with hub.waiter(Scope(DEVICE, "a")) as for_a, hub.waiter(Scope(DEVICE, "b")) as for_b:
            read_to = await asyncio.to_thread(store.end_cursor)  # what a stream for a has read
            await asyncio.to_thread(post, store, "device:b")
            await for_b.wait(30)
            return (
                read_to,
                for_a.woken,
                hub.resume_point(read_to),
                hub.resume_point("29991231-000000000000"),
            )

    read_to, a_woken, resumed, ahead = asyncio.run(scenario())
    assert read_to is None and not a_woken
    assert resumed == store.end_cursor() is not None
    assert ahead == "29991231-000000000000"


def test_a_wake_up_due_with_the_timeout_counts_as_a_wake_up():
    async def scenario() -> tuple[bool, bool]:
        loop = asyncio.get_running_loop()
        waiter = Waiter(Scope(DEVICE, "a"))
        loop.call_later(0.01, waiter.wake)  # due after the wait's timeout...
        loop.call_soon(time.sleep, 0.05)  # ...but the loop is busy until both are due
        return await waiter.wait(0.005), waiter.woken

    assert asyncio.run(scenario()) == (True, True)


def test_devices_asking_together_share_one_look_at_the_pool(store, monkeypatch):
    broadcast = post(store, "device:*")
    post(store, "device:a")
    store.post_response(device_id="b", parent_id=broadcast["id"], status="done")
    looks: list[int] = []
    many = store.pending_for_many

    def counted(requests):
        looks.append(len(requests))
        return many(requests)

    monkeypatch.setattr(store, "pending_for_many", counted)

    async def scenario() -> list[list[dict]]:
        hub = Hub(store)
        leaving = asyncio.ensure_future(hub.pending_for("d", 100))
        await asyncio.sleep(0)  # it has asked
        leaving.cancel()  # a client that left: the others are answered all the same
        asked = [hub.pending_for(device, 100) for device in ["a", "b", "c"] * 20]
        answers = await asyncio.gather(*asked)
        await asyncio.gather(leaving, return_exceptions=True)
        return answers + [await hub.pending_for("a", 1)]

    answers = asyncio.run(scenario())
    assert looks == [61, 1]
    expected = {device: store.pending_for(device) for device in "abc"}
    assert answers[:60] == [expected[device] for device in ["a", "b", "c"] * 20]
    assert answers[60] == store.pending_for("a", limit=1)
    assert [len(expected[device]) for device in "abc"] == [2, 0, 1]


def test_a_failing_look_fails_each_device_that_asked(store, monkeypatch):
    def failing(requests):
        raise OSError("the disk went away")

    monkeypatch.setattr(store, "pending_for_many", failing)

    async def scenario() -> list:
        hub = Hub(store)
        return await asyncio.gather(
            hub.pending_for("a", 1), hub.pending_for("b", 1), return_exceptions=True
        )

    assert [type(error) for error in asyncio.run(scenario())] == [OSError, OSError]


def test_the_hub_releases_waiters_that_are_cancelled(store):
    async def scenario() -> int:
        hub = Hub(store)

        async def wait_forever() -> None:
            async with hub.waiter(Scope(DEVICE, "a")) as waiter:
                await waiter.wait(3600)

        task = asyncio.create_task(wait_forever())
        while hub.waiting == 0:
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return hub.waiting

    assert asyncio.run(scenario()) == 0


def test_the_watcher_stops_with_its_last_waiter(store):
    async def scenario() -> bool:
        hub = Hub(store)
        hub.linger = 0
        async with hub.waiter(Scope(ADMIN)):
            watcher = hub._watcher
            assert watcher is not None
        await asyncio.wait_for(watcher, 30)
        return hub._watcher is None

    assert asyncio.run(scenario())


def test_a_quiet_stream_sends_keep_alive_comments(store):
    async def scenario() -> list[bytes]:
        stream = events(store, Scope(ADMIN), None, keep_alive=0.01)
        try:
            return [await anext(stream) for _ in range(3)]
        finally:
            await stream.aclose()

    assert asyncio.run(scenario()) == [sse.OPENED, sse.KEEP_ALIVE, sse.KEEP_ALIVE]


# Without an event loop (WSGI, runserver) ------------------------------------


def later(action, delay: float = 0.3) -> threading.Thread:
    """Run ``action`` in a thread after ``delay``: a writer while the request waits."""
    thread = threading.Timer(delay, action)
    thread.start()
    return thread


@pytest.mark.slow
def test_under_wsgi_a_long_poll_is_woken(device_client, store, another_store):
    posted: list[dict] = []

    def write() -> None:
        other = another_store()
        try:
            posted.append(post(other, "device:pi-1"))
        finally:
            other.close()

    thread = later(write)
    answer = device_client.get("/pool/pending?wait=30")
    thread.join()
    assert answer.status_code == 200
    assert answer.json() == posted


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_under_wsgi_a_long_poll_woken_after_its_token_was_revoked_answers_401(
    make_device, store, another_store
):
    device, token = make_device("pi-1")
    posted: list[dict] = []

    def revoke_then_post() -> None:
        device.rotate_session()  # what a new token does to the old one
        other = another_store()
        try:
            posted.append(post(other, "device:pi-1"))
        finally:
            other.close()

    thread = later(revoke_then_post, delay=REAUTHENTICATE_AFTER_SECONDS + 0.2)
    answer = client_with(token).get("/pool/pending?wait=30")
    thread.join()
    assert answer.status_code == 401
    assert answer.json() == {"detail": "Token has been revoked."}
    assert posted and posted[0]["id"] not in answer.content.decode()


def test_under_wsgi_a_long_poll_with_nothing_for_it_answers_empty(device_client, store):
    post(store, "device:someone-else")
    answer = device_client.get("/pool/pending?wait=0.2&limit=5")
    assert (answer.status_code, answer.json()) == (200, [])


def test_under_wsgi_a_long_poll_answers_at_once_when_something_is_pending(device_client, store):
    tasks = [post(store, "device:pi-1") for _ in range(3)]
    answer = device_client.get("/pool/pending?wait=60&limit=2")
    assert answer.json() == tasks[:2]


@pytest.mark.slow
def test_under_wsgi_a_stream_is_served_by_polling(device_client, store, pool_dir):
    response = device_client.get("/pool/stream")
    assert response.status_code == 200
    assert response["Content-Type"] == sse.MEDIA_TYPE
    chunks = iter(response.streaming_content)
    assert next(chunks) == sse.OPENED
    task = post(store, "device:pi-1")
    chunk = next(chunks)
    response.close()
    assert chunk.startswith(b"id: ") and b"event: task\n" in chunk
    assert orjson.loads(chunk.split(b"data: ", 1)[1]) == task


def test_a_site_that_gzips_its_responses_leaves_the_stream_as_it_is(device_client, store, settings):
    """Django's GZipMiddleware would hold the events in its compressor, never flushed."""
    settings.MIDDLEWARE = ["django.middleware.gzip.GZipMiddleware", *settings.MIDDLEWARE]
    response = device_client.get("/pool/stream", HTTP_ACCEPT_ENCODING="gzip")
    assert response.status_code == 200
    assert "gzip" not in response.get("Content-Encoding", "")
    chunks = iter(response.streaming_content)
    assert next(chunks) == sse.OPENED
    task = post(store, "device:pi-1")
    chunk = next(chunks)
    response.close()
    assert orjson.loads(chunk.split(b"data: ", 1)[1]) == task


@pytest.mark.slow
def test_a_master_streams_every_masters_tasks_with_all(master_client, store, make_user):
    response = master_client.get("/pool/stream", {"all": "1"})
    assert response.status_code == 200
    chunks = iter(response.streaming_content)
    assert next(chunks) == sse.OPENED
    task = post(store, "device:pi-1", sender="user:someone-else")
    chunk = next(chunks)
    response.close()
    assert orjson.loads(chunk.split(b"data: ", 1)[1]) == task


def test_only_masters_and_admins_may_ask_for_all(device_client):
    answer = device_client.get("/pool/stream", {"all": "1"})
    assert answer.status_code == 403
    assert "masters and admins" in answer.json()["detail"]


def test_under_wsgi_bad_values_are_400(device_client):
    for path in ("/pool/pending?wait=x", "/pool/stream?after=x"):
        answer = device_client.get(path)
        assert answer.status_code == 400
        assert answer.json()["detail"]


def test_the_log_page_of_an_empty_pool(admin_client_api, pool_dir: Path):
    answer = admin_client_api.get("/pool/log?limit=5")
    assert answer.json() == {"results": [], "next_cursor": None, "has_more": False}


def test_under_wsgi_the_jsonl_dump_is_the_days_lines(admin_client_api, store):
    posted = [post(store, "device:a") for _ in range(3)]
    lines = b"".join(encode_line(message) for message in posted)
    answer = admin_client_api.get("/pool/log?format=jsonl")
    assert answer["Content-Type"] == "application/x-ndjson"
    assert b"".join(answer.streaming_content) == lines
    by_accept = admin_client_api.get("/pool/log", HTTP_ACCEPT="application/x-ndjson")
    assert b"".join(by_accept.streaming_content) == lines


def test_a_stream_remembers_of_a_task_only_what_it_decides_by(store):
    """Each stream remembers the tasks it looked up: whole, every stream of a worker kept
    its own copy of each task's title, body and meta, for as long as it was open."""
    task = store.post_task(
        sender="user:ops",
        to="device:[a,b]",
        title="flash",
        body="x" * 4000,
        meta={"image": "y" * 4000},
        mode="any",
    ).message
    stream_filter = StreamFilter(Scope(DEVICE, "a"), store)
    claim = store.claim(device_id="b", parent_id=task["id"]).claim
    assert stream_filter.carries(claim)  # b took the task from a: a's list changed
    remembered = stream_filter._task(task["id"])  # noqa: SLF001 - what a stream keeps
    assert remembered == {
        "id": task["id"],
        "from": "user:ops",
        "to": "device:[a,b]",
        "meta": {"mode": "any"},
    }


def test_a_streams_reads_shrink_while_its_chunks_fill_and_grow_back_while_they_do_not():
    from taskpool.realtime.stream import CHUNK_BYTES, FIRST_PAGE, MAX_PAGE, MIN_PAGE, next_page

    full, small = b"x" * CHUNK_BYTES, b"x" * 100
    page = FIRST_PAGE
    for _ in range(10):  # messages of tens of kilobytes
        page = next_page(page, full, True)
    assert page == MIN_PAGE
    for _ in range(10):  # a catch-up of small ones
        page = next_page(page, small, True)
    assert page == MAX_PAGE
    assert next_page(page, small, False) == MAX_PAGE  # caught up: left as it was
