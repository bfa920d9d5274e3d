"""``serve_waiting``: the waiting endpoints served in front of Django behave as Django would
where it matters before a view runs (the Host header), in one process, without a server."""

from __future__ import annotations

import pytest
from asgiref.sync import async_to_sync
from django.core.asgi import get_asgi_application

from taskpool.asgi import serve_waiting


async def call(app, path: str, query: str = "", headers: dict[str, str] | None = None):
    """Send one GET through ``app``; its status, headers and body."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict] = []
    received = False

    async def receive():
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": b"", "more_body": False}
        import asyncio

        await asyncio.sleep(3600)  # the client stays until the answer is sent

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
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
