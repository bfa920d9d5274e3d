"""Long-poll, stream and log paging against real uvicorn servers sharing one pool.

Servers A and B serve ``project.asgi:application`` (the waiting endpoints in
front of Django); server C serves ``project.asgi:django_application`` (Django's
own async views). Each test uses its own devices, so what one leaves pending
does not reach another.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import orjson
import pytest

from taskpool.days import day_file_name, day_of
from taskpool.messages import encode_line, format_timestamp, new_message_id
from taskpool.realtime.longpoll import REAUTHENTICATE_AFTER_SECONDS
from taskpool.realtime.stream import ADMISSION_SECONDS
from taskpool.stores.jsonl import JsonlStore
from tests.live import CURSOR_RE, LivePool, next_event, read_events

pytestmark = pytest.mark.slow

# Lets a long-poll reach its wait before the test stores a task; if it has
# not, the poll answers at once, which proves less but still passes.
SETTLE_SECONDS = 0.5


@pytest.fixture(scope="module")
def live(tmp_path_factory) -> LivePool:
    pool = LivePool(tmp_path_factory.mktemp("live"))
    pool.provision()
    try:
        pool.start_server()
        pool.start_server()
        pool.start_server("project.asgi:django_application")
        yield pool
    finally:
        pool.stop()


def today_file(live: LivePool) -> Path:
    return live.data_dir / day_file_name(day_of(time.time()))


def post_task(live: LivePool, server: str, user: str, to: str, title: str = "t") -> dict:
    answer = httpx.post(
        f"{server}/pool/task", json={"to": to, "title": title}, headers=live.bearer(user)
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def respond(live: LivePool, server: str, device: str, task: dict, status: str) -> dict:
    answer = httpx.post(
        f"{server}/pool/response",
        json={"parent_id": task["id"], "status": status},
        headers=live.bearer(device),
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def long_poll_while(live: LivePool, server: str, device: str, wait: float, action):
    """Long-poll as ``device`` while ``action()`` runs; the answer, what action returned, and the time taken."""
    with ThreadPoolExecutor(1) as executor:
        started = time.monotonic()
        polling = executor.submit(
            httpx.get,
            f"{server}/pool/pending?wait={wait}",
            headers=live.bearer(device),
            timeout=wait + 30,
        )
        time.sleep(SETTLE_SECONDS)
        result = action()
        answer = polling.result()
    return answer, result, time.monotonic() - started


def open_stream(server: str, headers: dict[str, str], **params):
    return httpx.stream("GET", f"{server}/pool/stream", headers=headers, params=params, timeout=30)


# Long-poll ------------------------------------------------------------------


def test_a_long_poll_is_woken_by_a_task_posted_through_another_server(live):
    a, b, _ = live.servers
    answer, task, elapsed = long_poll_while(
        live, a, "pi-1", 30, lambda: post_task(live, b, "ops", "device:pi-1")
    )
    assert answer.status_code == 200
    assert answer.json() == [task]
    assert elapsed < 20  # woken, long before its 30 s


def test_a_long_poll_is_woken_by_a_line_appended_by_hand(live):
    a, _, _ = live.servers
    task = {
        "id": new_message_id(),
        "ts": format_timestamp(time.time()),
        "from": "user:ops",
        "to": "device:pi-2",
        "type": "task",
        "title": "by hand",
        "body": "",
        "parent_id": None,
        "meta": {},
    }

    def append() -> None:
        with open(today_file(live), "ab") as file:
            file.write(encode_line(task))

    answer, _, elapsed = long_poll_while(live, a, "pi-2", 30, append)
    assert answer.status_code == 200
    assert answer.json() == [task]
    assert elapsed < 20


def test_a_long_poll_answers_empty_after_its_wait(live):
    a, _, _ = live.servers
    started = time.monotonic()
    answer = httpx.get(f"{a}/pool/pending?wait=1", headers=live.bearer("pi-3"), timeout=30)
    assert (answer.status_code, answer.json()) == (200, [])
    assert time.monotonic() - started >= 1


def test_a_long_poll_answers_at_once_when_something_is_pending(live):
    a, b, _ = live.servers
    task = post_task(live, b, "ops", "device:pi-7")
    answer = httpx.get(f"{a}/pool/pending?wait=60", headers=live.bearer("pi-7"), timeout=5)
    assert answer.json() == [task]


def test_a_long_poll_is_not_woken_for_another_devices_task(live):
    a, b, _ = live.servers
    answer, _, elapsed = long_poll_while(
        live, a, "pi-3", 1.5, lambda: post_task(live, b, "ops", "device:pi-5")
    )
    assert (answer.status_code, answer.json()) == (200, [])
    assert elapsed >= 1.5


def new_token(live: LivePool, device: str) -> str:
    """A new token for ``device``, which revokes the ones before it (as staff do)."""
    return live.django("taskpool_device", device, "--token").strip().splitlines()[-1]


def test_a_long_poll_woken_after_its_token_was_revoked_answers_401_not_the_task(live):
    a, b, c = live.servers
    # In front of Django, and Django's own async view; a device each (the task stays pending).
    for server, device in ((a, "revoked-1"), (c, "revoked-2")):
        token = new_token(live, device)
        with ThreadPoolExecutor(1) as executor:
            polling = executor.submit(
                httpx.get,
                f"{server}/pool/pending?wait=30",
                headers={"Authorization": f"Bearer {token}"},
                timeout=60,
            )
            time.sleep(SETTLE_SECONDS)
            new_token(live, device)
            time.sleep(REAUTHENTICATE_AFTER_SECONDS)  # waited long enough to be asked again
            task = post_task(live, b, "ops", f"device:{device}")
            answer = polling.result()
        assert answer.status_code == 401, answer.text
        assert answer.json() == {"detail": "Token has been revoked."}
        assert task["id"] not in answer.text


def short_token(live: LivePool, device: str, seconds: int) -> str:
    """A token for ``device`` that expires in ``seconds`` (its session unchanged)."""
    script = (
        "from datetime import timedelta\n"
        "from taskpool.models import DeviceUser\n"
        "from taskpool.tokens import DeviceToken\n"
        f"token = DeviceToken.for_device(DeviceUser.objects.get(pk={device!r}))\n"
        f"token.set_exp(lifetime=timedelta(seconds={seconds}))\n"
        "print(token)\n"
    )
    return live.django("shell", "-c", script).strip().splitlines()[-1]


def test_a_long_poll_and_a_stream_end_once_their_token_expires_as_they_wait(live):
    """An expired token is refused as a revoked one is: renewing a token keeps the device's
    session, so the shared check of revocations alone let such a stream run on for ever."""
    a, b, c = live.servers
    for server, device in ((a, "expiring-1"), (c, "expiring-2")):
        live.django("taskpool_device", device, "--validate")
        headers = {"Authorization": f"Bearer {short_token(live, device, 3)}"}
        with (
            httpx.stream(
                "GET", f"{server}/pool/stream", headers=headers, timeout=httpx.Timeout(30, read=5)
            ) as streaming,
            ThreadPoolExecutor(1) as executor,
        ):
            events = read_events(streaming)
            assert next(events).comment == "stream open"
            polling = executor.submit(
                httpx.get, f"{server}/pool/pending?wait=30", headers=headers, timeout=60
            )
            time.sleep(3.5)  # expired as it waited
            to = f"device:{device}"
            task = post_task(live, b, "ops", to)
            answer = polling.result()
            assert answer.status_code == 401, answer.text
            assert task["id"] not in answer.text
            ends_before_it_carries(events, lambda to=to: post_task(live, b, "ops", to))


# Stream ---------------------------------------------------------------------


def test_a_stream_receives_its_devices_tasks_live_and_no_other_devices(live):
    a, b, _ = live.servers
    with open_stream(a, live.bearer("pi-4")) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        events = read_events(response)
        assert next(events).comment == "stream open"
        first = post_task(live, b, "ops", "device:pi-4")
        post_task(live, b, "ops", "device:pi-5")
        both = post_task(live, b, "ops", "device:[pi-5,pi-4]")
        post_task(live, b, "ops2", "device:pi-6")
        received = [next_event(events) for _ in range(2)]
        last = post_task(live, b, "ops", "device:pi-4")
        received.append(next_event(events))
    assert [event.data for event in received] == [first, both, last]
    assert {event.event for event in received} == {"task"}
    assert all(CURSOR_RE.fullmatch(event.id) for event in received)
    assert received[0].id < received[1].id < received[2].id


def ends_before_it_carries(events, post) -> None:
    """Once its listener was refused: the stream, asked again, ends before it carries what
    ``post`` stores (read with a timeout, a stream left open fails rather than hangs)."""
    time.sleep(ADMISSION_SECONDS)  # open long enough to be asked again
    second = post()
    rest = []
    try:
        rest.extend(events)  # to the stream's end, which the server makes
        ended = True
    except httpx.ReadTimeout:
        ended = False
    assert second["id"] not in str(rest)
    assert ended


def test_a_stream_ends_before_its_next_event_once_its_token_is_revoked(live):
    a, b, c = live.servers
    for server, device in ((a, "revoked-3"), (c, "revoked-4")):
        token = new_token(live, device)
        headers = {"Authorization": f"Bearer {token}"}
        # A read that waits 5 s for a line fails rather than hangs on keep-alives.
        timeout = httpx.Timeout(30, read=5)
        with httpx.stream(
            "GET", f"{server}/pool/stream", headers=headers, timeout=timeout
        ) as response:
            events = read_events(response)
            assert next(events).comment == "stream open"
            first = post_task(live, b, "ops", f"device:{device}")
            assert next_event(events).data == first
            new_token(live, device)
            to = f"device:{device}"
            ends_before_it_carries(events, lambda to=to: post_task(live, b, "ops", to))


def test_a_device_stream_carries_the_cancel_of_its_task_written_by_another_process(live):
    a, b, _ = live.servers
    with open_stream(a, live.bearer("pi-5")) as response:
        events = read_events(response)
        assert next(events).comment == "stream open"
        task = post_task(live, b, "ops", "device:pi-5")
        assert next_event(events).data == task
        # This test's process is another writer of the same pool.
        writer = JsonlStore(live.data_dir, fsync=False)
        try:
            cancel = writer.cancel(sender="user:ops", task_id=task["id"], reason="no need").message
        finally:
            writer.close()
        event = next_event(events)
    assert (event.event, event.data) == ("response", cancel)
    assert cancel["meta"]["status"] == "cancelled"


def _today() -> str:
    return day_of(time.time()).isoformat()


def test_a_reconnect_with_last_event_id_replays_exactly_what_was_missed_then_goes_live(live):
    a, b, _ = live.servers
    headers = live.bearer("ops")
    with open_stream(a, headers) as response:
        events = read_events(response)
        assert next(events).comment == "stream open"
        seen = post_task(live, b, "ops", "device:pi-6", "seen")
        last = next_event(events)
        assert last.data == seen
    missed = [post_task(live, b, "ops", "device:pi-6", f"missed {n}") for n in range(3)]
    post_task(live, b, "ops2", "device:pi-6", "not ops's")
    with open_stream(a, {**headers, "Last-Event-ID": last.id}) as response:
        events = read_events(response)
        replayed = [next_event(events) for _ in missed]
        live_one = post_task(live, b, "ops", "device:pi-6", "live")
        after_replay = next_event(events)
    assert [event.data for event in replayed] == missed
    assert after_replay.data == live_one
    # ?after= replays the same way.
    with open_stream(a, headers, after=last.id) as response:
        events = read_events(response)
        assert [next_event(events).data for _ in range(4)] == [*missed, live_one]


def test_a_device_resumed_after_a_claim_is_not_told_of_the_holders_progress(live):
    """Who holds an any-one task is the pool's: a device's stream resumed with
    Last-Event-ID after another device's claim does not take the holder's progress for
    a new claim."""
    a, b, _ = live.servers
    with open_stream(a, live.bearer("pi-10")) as response:
        events = read_events(response)
        assert next(events).comment == "stream open"
        posted = httpx.post(
            f"{b}/pool/task",
            json={"to": "device:[pi-10,pi-11]", "title": "any", "mode": "any"},
            headers=live.bearer("ops"),
        )
        assert posted.status_code == 201, posted.text
        task = posted.json()
        assert next_event(events).data == task
        claimed = httpx.post(
            f"{b}/pool/claim", json={"parent_id": task["id"]}, headers=live.bearer("pi-11")
        )
        assert claimed.status_code == 201, claimed.text
        last = next_event(events)
        assert last.data == claimed.json()["claim"]
    respond(live, b, "pi-11", task, "progress")
    with open_stream(a, {**live.bearer("pi-10"), "Last-Event-ID": last.id}) as response:
        events = read_events(response)
        sentinel = post_task(live, b, "ops", "device:pi-10", "after the progress")
        assert next_event(events).data == sentinel


def test_a_master_stream_carries_its_tasks_and_every_response_to_them(live):
    a, b, _ = live.servers
    with open_stream(a, live.bearer("ops2")) as response:
        events = read_events(response)
        assert next(events).comment == "stream open"
        post_task(live, b, "ops", "device:pi-6", "someone else's")
        task = post_task(live, b, "ops2", "device:pi-6", "mine")
        progress = respond(live, b, "pi-6", task, "progress")
        done = respond(live, b, "pi-6", task, "done")
        received = [next_event(events) for _ in range(3)]
    assert [(event.event, event.data) for event in received] == [
        ("task", task),
        ("response", progress),
        ("response", done),
    ]


def test_a_master_who_asks_for_all_gets_every_masters_tasks_and_responses(live):
    a, b, _ = live.servers
    with open_stream(a, live.bearer("ops2"), all="1") as response:
        events = read_events(response)
        assert next(events).comment == "stream open"
        theirs = post_task(live, b, "ops", "device:pi-7", "someone else's")
        heartbeat = httpx.post(f"{b}/pool/heartbeat", json={}, headers=live.bearer("pi-7"))
        assert heartbeat.status_code == 201
        done = respond(live, b, "pi-7", theirs, "done")
        received = [next_event(events) for _ in range(2)]
    assert [(event.event, event.data) for event in received] == [
        ("task", theirs),
        ("response", done),
    ]


def log_in(browser: httpx.Client, username: str, password: str) -> None:
    login = browser.get("/admin/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text).group(1)
    logged_in = browser.post(
        "/admin/login/?next=/admin/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
    )
    assert logged_in.status_code == 302, logged_in.text


def test_an_admin_stream_by_session_cookie_carries_everything(live):
    a, b, _ = live.servers
    with httpx.Client(base_url=a) as browser:
        log_in(browser, "boss", "pw-boss")
        with browser.stream("GET", "/pool/stream", timeout=30) as response:
            assert response.status_code == 200
            events = read_events(response)
            assert next(events).comment == "stream open"
            heartbeat = httpx.post(
                f"{b}/pool/heartbeat", json={"body": "alive"}, headers=live.bearer("pi-6")
            ).json()
            event = next_event(events)
    assert (event.event, event.data) == ("heartbeat", heartbeat)


@pytest.mark.parametrize("how", ["logged out", "role taken away"])
def test_a_browsers_stream_ends_once_its_user_logs_out_or_loses_their_role(live, how):
    a, b, _ = live.servers
    username = f"watcher-{how.replace(' ', '-')}"
    live.django("taskpool_role", username, "master", "--password", "pw-watcher-9x")
    with httpx.Client(base_url=a) as browser:
        log_in(browser, username, "pw-watcher-9x")
        timeout = httpx.Timeout(30, read=5)  # a stream left open fails the read, not hangs
        with browser.stream("GET", "/pool/stream?all=1", timeout=timeout) as response:
            assert response.status_code == 200
            events = read_events(response)
            assert next(events).comment == "stream open"
            first = post_task(live, b, "ops", "device:pi-6")
            assert next_event(events).data == first
            if how == "logged out":
                page = browser.get("/admin/")
                csrf = browser.cookies["csrftoken"]
                assert "logout" in page.text
                assert browser.post(
                    "/admin/logout/", data={"csrfmiddlewaretoken": csrf}
                ).status_code in (200, 302)
            else:
                live.django("taskpool_role", username, "user")
            ends_before_it_carries(events, lambda: post_task(live, b, "ops", "device:pi-6"))


def test_who_may_stream(live):
    a, _, _ = live.servers
    for headers, status in [
        ({}, 401),
        ({"Authorization": "Bearer not-a-token"}, 401),
        (live.bearer("viewer"), 403),
        (live.bearer("unvalidated"), 403),
    ]:
        answer = httpx.get(f"{a}/pool/stream", headers=headers)
        assert answer.status_code == status, (headers, answer.text)
        assert set(answer.json()) == {"detail"}
    assert httpx.get(f"{a}/pool/stream").headers["www-authenticate"].startswith("Bearer")
    # A token in the URL is not a credential.
    token = live.devices["pi-6"]
    assert httpx.get(f"{a}/pool/stream", params={"token": token}).status_code == 401
    assert httpx.get(f"{a}/pool/pending?wait=1", headers=live.bearer("ops")).status_code == 403


# Bad values -----------------------------------------------------------------


def test_bad_wait_after_limit_and_last_event_id_are_400_and_store_nothing(live):
    a, b, _ = live.servers
    post_task(live, b, "ops", "device:pi-6")
    size = today_file(live).stat().st_size
    mid_line = f"{day_of(time.time()):%Y%m%d}-{size - 3:012d}"
    no_day = "20200101-000000000000"
    device, admin = live.bearer("pi-6"), live.bearer("boss")
    cases = [
        ("/pool/pending?wait=", device, "wait"),
        ("/pool/pending?wait=-1", device, "wait"),
        ("/pool/pending?wait=abc", device, "wait"),
        ("/pool/pending?wait=61", device, "wait"),
        ("/pool/pending?wait=1e2", device, "wait"),
        ("/pool/pending?wait=1&limit=0", device, "limit"),
        ("/pool/pending?wait=1&limit=1001", device, "limit"),
        ("/pool/pending?wait=1&limit=ten", device, "limit"),
        ("/pool/stream?after=yesterday", device, "after"),
        (f"/pool/stream?after={no_day}", device, "after"),
        (f"/pool/stream?after={mid_line}", device, "after"),
        ("/pool/log?after=yesterday", admin, "after"),
        (f"/pool/log?after={no_day}", admin, "after"),
        (f"/pool/log?after={mid_line}", admin, "after"),
        ("/pool/log?limit=0", admin, "limit"),
        ("/pool/log?limit=1001", admin, "limit"),
        ("/pool/log?date=2026-06-03&limit=abc", admin, "limit"),
        ("/pool/log?date=20260603&limit=10", admin, "date"),
        (f"/pool/log?date=2026-06-03&after={no_day}", admin, "after"),
        ("/pool/log?format=jsonl&date=20260603", admin, "date"),
    ]
    for server in (a, live.servers[2]):
        for path, headers, field in cases:
            answer = httpx.get(f"{server}{path}", headers=headers, timeout=10)
            assert answer.status_code == 400, (path, answer.text)
            assert answer.headers["content-type"] == "application/json"
            assert list(answer.json()["errors"]) == [field], (path, answer.text)
        for last_event_id in ("garbage", "", no_day, mid_line):
            answer = httpx.get(
                f"{server}/pool/stream", headers={**device, "Last-Event-ID": last_event_id}
            )
            assert answer.status_code == 400, (last_event_id, answer.text)
            assert list(answer.json()["errors"]) == ["Last-Event-ID"]
    assert today_file(live).stat().st_size == size


# The log --------------------------------------------------------------------


def test_paging_a_day_equals_the_day_file_and_then_tails_the_pool(live):
    a, b, _ = live.servers
    for n in range(8):
        post_task(live, b, "ops", "device:pi-6", f"page {n}")
    expected = [orjson.loads(line) for line in today_file(live).read_bytes().splitlines()]
    headers = live.bearer("boss")
    page = httpx.get(f"{a}/pool/log", params={"date": _today(), "limit": 3}, headers=headers).json()
    results = list(page["results"])
    while page["has_more"]:
        assert len(page["results"]) == 3
        page = httpx.get(
            f"{a}/pool/log", params={"after": page["next_cursor"], "limit": 3}, headers=headers
        ).json()
        results.extend(page["results"])
    assert results == expected
    end = page["next_cursor"]
    assert CURSOR_RE.fullmatch(end)
    quiet = httpx.get(f"{a}/pool/log", params={"after": end}, headers=headers).json()
    assert quiet == {"results": [], "next_cursor": end, "has_more": False}
    newer = post_task(live, b, "ops", "device:pi-6", "newer")
    tail = httpx.get(f"{a}/pool/log", params={"after": end}, headers=headers).json()
    assert tail["results"] == [newer] and tail["next_cursor"] > end
    # Without limit or after, the seed's plain array.
    plain = httpx.get(f"{a}/pool/log", params={"date": _today()}, headers=headers).json()
    assert plain == [*expected, newer]


def test_the_jsonl_dump_equals_the_day_file(live):
    a, b, c = live.servers
    post_task(live, b, "ops", "device:pi-6", "in the dump: é \u2028")
    for server in (a, c):
        answer = httpx.get(
            f"{server}/pool/log",
            params={"format": "jsonl", "date": _today()},
            headers=live.bearer("boss"),
        )
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/x-ndjson"
        assert answer.content == today_file(live).read_bytes()
    empty = httpx.get(
        f"{a}/pool/log",
        params={"format": "jsonl", "date": "2020-01-01"},
        headers=live.bearer("boss"),
    )
    assert (empty.status_code, empty.content) == (200, b"")
    refused = httpx.get(f"{a}/pool/log", params={"format": "jsonl"}, headers=live.bearer("ops"))
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/json"


# Django's own async views (no front) -----------------------------------------


def test_django_alone_serves_the_same_long_poll_and_stream(live):
    _, b, c = live.servers
    answer, task, elapsed = long_poll_while(
        live, c, "pi-8", 30, lambda: post_task(live, b, "ops", "device:pi-8")
    )
    assert answer.json() == [task] and elapsed < 20
    with open_stream(c, live.bearer("pi-9")) as response:
        events = read_events(response)
        assert next(events).comment == "stream open"
        streamed = post_task(live, b, "ops", "device:pi-9")
        assert next_event(events).data == streamed
