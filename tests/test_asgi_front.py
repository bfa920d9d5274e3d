"""The ASGI front, in one process, without a server.

``serve_waiting``: the waiting endpoints served in front of Django behave as
Django would where it matters before a view runs (the Host header).
``serve_pool``: the pool's other requests, served on threads of its own, get
what Django would answer, with its middleware, and nothing else is touched.
"""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.core.asgi import get_asgi_application

from taskpool.asgi import serve_pool, serve_waiting
from tests.contract.support import stored
from tests.support import loads


async def call(
    app,
    path: str,
    query: str = "",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    body: bytes = b"",
    parts: int = 1,
    leave: bool = False,
):
    """Send one request through ``app``; its status, headers and body.

    ``parts``: the body in that many messages. ``leave``: the client
    disconnects instead of sending its body (nothing is answered: None).
    """
    import asyncio

    size = -(-len(body) // parts) if body else 0
    messages = [
        {"type": "http.request", "body": body[at : at + size], "more_body": True}
        for at in range(0, len(body), size or 1)
    ] or [{"type": "http.request", "body": b"", "more_body": True}]
    messages[-1]["more_body"] = False
    if leave:
        messages = [{"type": "http.disconnect"}]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [
            (k.lower().encode(), v.encode())
            for k, v in (headers.items() if isinstance(headers, dict) else headers or [])
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict] = []

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # the client stays until the answer is sent

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    if leave:
        assert sent == []
        return None
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict((k.decode(), v.decode()) for k, v in start["headers"]), body


@pytest.fixture
def front(settings, db):
    settings.ALLOWED_HOSTS = ["example.com"]
    return serve_waiting(get_asgi_application(), prefix="/pool/")


@pytest.mark.parametrize(
    ("path", "query"),
    [("/pool/pending", "wait=1"), ("/pool/stream", ""), ("/pool/pending", "")],
    ids=["long-poll (front)", "stream (front)", "poll (Django)"],
)
def test_a_host_not_in_allowed_hosts_is_400_in_front_as_in_django(front, path, query, caplog):
    status, _, body = async_to_sync(call)(front, path, query, {"Host": "evil.test"})
    assert status == 400
    assert b"Bad Request" in body
    assert any(record.name == "django.security.DisallowedHost" for record in caplog.records)


def test_an_allowed_host_goes_on_to_authenticate(front):
    status, headers, _ = async_to_sync(call)(
        front, "/pool/pending", "wait=1", {"Host": "example.com"}
    )
    assert status == 401
    assert headers["Content-Type"] == "application/json"


# serve_pool: the pool's short requests on threads of the front's own ------------------------


@pytest.fixture
def pool_front(settings, transactional_db):
    # Committed for real: the front's threads have database connections of their own.
    settings.ALLOWED_HOSTS = ["example.com"]
    return serve_pool(get_asgi_application(), prefix="/pool/", threads=2)


def heartbeat(front, token: str, body: bytes, **options):
    headers = {
        "Host": "example.com",
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }
    return async_to_sync(call)(
        front, "/pool/heartbeat", headers=headers, method="POST", body=body, **options
    )


def test_a_heartbeat_through_the_threads_is_stored(pool_front, make_device, store):
    device, token = make_device("pi-1")
    status, headers, body = heartbeat(pool_front, token, b'{"meta": {"uptime": 5}}', parts=3)
    assert status == 201, body
    assert headers["Content-Type"] == "application/json"
    beats = [message for message in stored(store) if message["type"] == "heartbeat"]
    assert [(beat["from"], beat["meta"]) for beat in beats] == [("device:pi-1", {"uptime": 5})]
    assert loads(body)["id"] == beats[0]["id"]


def test_the_threads_refuse_as_django_does_and_append_nothing(
    pool_front, make_device, snapshot, settings
):
    _, token = make_device("pi-1")
    before = snapshot()
    status, headers, body = heartbeat(pool_front, token, b'{"meta": ')
    assert (status, headers["Content-Type"]) == (400, "application/json")
    assert "detail" in loads(body)
    status, _, _ = heartbeat(pool_front, "not-a-token", b"{}")
    assert status == 401
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    status, _, body = heartbeat(
        pool_front, token, b'{"meta": {"pad": "' + b"x" * 500 + b'"}}', parts=7
    )
    assert status == 400, body
    assert snapshot() == before


@pytest.mark.every_store
@pytest.mark.parametrize("through", ["threads of serve_pool", "Django's ASGI handler"])
def test_an_idempotency_key_sent_twice_is_400_and_stores_nothing(
    settings, transactional_db, make_user, snapshot, through
):
    """Sent twice, the header arrives as two; Django joins them (``a,b``) on either path."""
    settings.ALLOWED_HOSTS = ["example.com"]
    app = get_asgi_application()
    front = serve_pool(app, prefix="/pool/", threads=2) if through.startswith("threads") else app
    _, token = make_user("ops", role="master")
    body = b'{"to": "device:*", "title": "once"}'
    headers = [
        ("Host", "example.com"),
        ("Authorization", f"Bearer {token}"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("Idempotency-Key", "first-key"),
        ("Idempotency-Key", "second-key"),
    ]
    before = snapshot()
    status, answer_headers, answer = async_to_sync(call)(
        front, "/pool/task", headers=headers, method="POST", body=body
    )
    assert (status, answer_headers["Content-Type"]) == (400, "application/json"), answer
    assert "Idempotency-Key" in loads(answer)["errors"]
    assert snapshot() == before


def test_a_host_not_in_allowed_hosts_is_400_on_the_threads_too(pool_front, caplog):
    status, _, body = async_to_sync(call)(pool_front, "/pool/pending", "", {"Host": "evil.test"})
    assert status == 400
    assert any(record.name == "django.security.DisallowedHost" for record in caplog.records)


def test_a_client_that_leaves_before_its_body_gets_nothing(pool_front, make_device, snapshot):
    _, token = make_device("pi-1")
    before = snapshot()
    assert heartbeat(pool_front, token, b"{}", leave=True) is None
    assert snapshot() == before


def test_what_is_not_the_pool_goes_to_the_app_behind(pool_front):
    status, _, body = async_to_sync(call)(pool_front, "/admin/login/", "", {"Host": "example.com"})
    assert status == 200
    assert b"<form" in body


def test_the_threads_keep_their_database_connections(pool_front, make_device, settings):
    """One thread, two requests: the connection the first opened serves the second."""
    from django.db import connection

    settings.DATABASES["default"]["CONN_MAX_AGE"] = 60
    front = serve_pool(get_asgi_application(), prefix="/pool/", threads=1)
    _, token = make_device("pi-1")
    heartbeat(front, token, b"{}")
    first = front.threaded.executor.submit(lambda: id(connection.connection)).result()
    heartbeat(front, token, b"{}")
    second = front.threaded.executor.submit(lambda: id(connection.connection)).result()
    assert first == second != id(None)


def test_a_streamed_answer_goes_out_whole_through_the_threads(
    pool_front, make_device, make_user, store
):
    """The day's raw lines: an async iterator under ASGI, sent by the event loop."""
    from tests.support import today

    _, device_token = make_device("pi-1")
    for number in range(3):
        assert heartbeat(pool_front, device_token, b'{"meta": {"n": %d}}' % number)[0] == 201
    _, admin_token = make_user("boss", role="admin")
    headers = {
        "Host": "example.com",
        "Authorization": f"Bearer {admin_token}",
        "Accept": "application/x-ndjson",
    }
    status, answer_headers, body = async_to_sync(call)(pool_front, "/pool/log", "", headers)
    assert status == 200
    assert answer_headers["Content-Type"].startswith("application/x-ndjson")
    lines = [loads(line) for line in body.splitlines()]
    assert [line["meta"] for line in lines if line["type"] == "heartbeat"] == [
        {"n": 0},
        {"n": 1},
        {"n": 2},
    ]
    assert body == b"".join(store.day_lines(today()))


def test_a_chunked_body_through_the_threads_is_411_and_stores_nothing(
    pool_front, make_device, snapshot
):
    """Under ASGI the body is there, but Django reads it as empty without its length."""
    _, token = make_device("pi-1")
    before = snapshot()
    headers = {
        "Host": "example.com",
        "Authorization": f"Bearer {token}",
        "Content-Type": "application/json",
        "Transfer-Encoding": "chunked",
    }
    status, answer_headers, body = async_to_sync(call)(
        pool_front,
        "/pool/heartbeat",
        headers=headers,
        method="POST",
        body=b'{"body": "x"}',
        parts=2,
    )
    assert (status, answer_headers["Content-Type"]) == (411, "application/json"), body
    assert "Content-Length" in loads(body)["detail"]
    assert snapshot() == before


@pytest.mark.parametrize("path", ["/pool/pending", "/pool/stream"])
def test_more_parameters_than_django_parses_is_a_json_400_in_front(
    settings, transactional_db, make_device, path
):
    settings.ALLOWED_HOSTS = ["example.com"]
    front = serve_waiting(get_asgi_application(), prefix="/pool/")
    _, token = make_device("pi-1")
    query = "&".join(["wait=1" if path == "/pool/pending" else "after=x"] * 1001)
    headers = {"Host": "example.com", "Authorization": f"Bearer {token}"}
    status, answer_headers, body = async_to_sync(call)(front, path, query, headers)
    assert (status, answer_headers["Content-Type"]) == (400, "application/json"), body
    assert loads(body)["detail"] == "The request has more than 1000 parameters."


def test_a_head_long_poll_waits_in_front_not_on_a_thread_of_the_pool(
    transactional_db, make_device, store, settings
):
    """``HEAD pending?wait`` waits as ``GET`` does, in the event loop: on one of the threads
    that serve the pool's short requests, a few of them from one device held every
    heartbeat, answer and task of the server for as long as they waited."""
    import asyncio

    settings.ALLOWED_HOSTS = ["example.com"]
    front = serve_pool(get_asgi_application(), prefix="/pool/", threads=1)
    _, token = make_device("pi-1")
    headers = {"Host": "example.com", "Authorization": f"Bearer {token}"}
    json_headers = {**headers, "Content-Type": "application/json", "Content-Length": "2"}

    async def head_then_heartbeat():
        waiting = asyncio.ensure_future(
            call(front, "/pool/pending", "wait=30", headers, method="HEAD")
        )
        await asyncio.sleep(0.2)  # the HEAD is on its way (a thread, or the event loop)
        beat = await call(front, "/pool/heartbeat", "", json_headers, method="POST", body=b"{}")
        still_waiting = not waiting.done()
        await asyncio.to_thread(store.post_task, sender="backend", to="device:pi-1", title="wake")
        return beat, still_waiting, await waiting

    beat, still_waiting, (status, answer_headers, _) = async_to_sync(head_then_heartbeat)()
    assert beat[0] == 201, beat
    assert still_waiting, "the heartbeat waited for the HEAD's thread"
    assert (status, answer_headers["Content-Type"]) == (200, "application/json")


@pytest.mark.parametrize(
    ("accept", "status"),
    [("text/html", 406), ("", 406), ("application/json", 200), ("*/*", 200), (None, 200)],
)
def test_a_long_poll_negotiates_as_the_plain_poll_does(front, make_device, accept, status):
    """Through the front as through Django: an Accept that takes no JSON is a 406 in JSON
    (the front answered it 200, the same request through Django 406)."""
    from rest_framework.test import APIClient

    _, token = make_device("pi-1")
    headers = {"Host": "example.com", "Authorization": f"Bearer {token}"}
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}", "HTTP_HOST": "example.com"}
    if accept is not None:
        headers["Accept"] = accept
        extra["HTTP_ACCEPT"] = accept
    through_django = APIClient().get("/pool/pending?wait=0", **extra)
    answer, answer_headers, _ = async_to_sync(call)(front, "/pool/pending", "wait=0", headers)
    assert (through_django.status_code, answer) == (status, status)
    assert answer_headers["Content-Type"] == "application/json"
