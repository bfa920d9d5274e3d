"""Two application hosts over one PostgreSQL: the demo site with ``TASKPOOL_STORE=database``,
served by two uvicorn processes that share only the database (each its own data directory).

Needs TASKPOOL_TEST_POSTGRES (set by .ci/run); skips without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from tests.live import ROOT, next_event, read_events, start_uvicorn

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

DEVICES = ["d1", "d2", "d3", "d4"]

PROVISION = """
import json
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken
from taskpool.models import DeviceUser, UserRole
from taskpool.tokens import DeviceToken

tokens = {}
for device_id in DEVICES:
    device = DeviceUser.objects.create(pk=device_id, validated=True)
    tokens[device_id] = str(DeviceToken.for_device(device))
for username, role in [("ops", "master"), ("boss", "admin")]:
    user = get_user_model().objects.create_user(username, password="pw-" + username)
    UserRole.objects.create(user=user, role=role)
    tokens[username] = str(AccessToken.for_user(user))
print(json.dumps(tokens))
"""


@dataclass
class Hosts:
    """Two servers, A and B, over one database; tokens for the principals."""

    a: str
    b: str
    tokens: dict[str, str]
    data_dirs: list[Path]
    processes: list[subprocess.Popen] = field(default_factory=list)

    def headers(self, name: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[name]}", **extra}

    def post_task(self, host: str, **data) -> dict:
        data.setdefault("title", "job")
        answer = httpx.post(f"{host}/pool/task", json=data, headers=self.headers("ops"))
        assert answer.status_code == 201, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory) -> Iterator[Hosts]:
    url = os.environ.get("TASKPOOL_TEST_POSTGRES")
    if not url:
        pytest.skip(
            "TASKPOOL_TEST_POSTGRES is not set (e.g. postgresql://postgres@127.0.0.1:5432/test)"
        )
    import psycopg

    name = f"taskpool_hosts_{uuid.uuid4().hex[:12]}"
    admin = psycopg.connect(url, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    base = tmp_path_factory.mktemp("hosts")
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": urlunsplit(urlsplit(url)._replace(path=f"/{name}")),
        "TASKPOOL_STORE": "database",
        "DJANGO_SECRET_KEY": "two-hosts-share-this-key-" + uuid.uuid4().hex,
        "PYTHONPATH": str(ROOT),
    }

    def on_host(letter: str) -> dict[str, str]:
        return {**environment, "TASKPOOL_VAR_DIR": str(base / letter)}

    def manage(*arguments: str) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *arguments],
            cwd=ROOT,
            env=on_host("a"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    processes = []
    try:
        manage("migrate", "--noinput", "-v", "0")
        tokens = json.loads(
            manage("shell", "-c", f"DEVICES = {DEVICES!r}\n{PROVISION}").strip().splitlines()[-1]
        )
        urls = []
        for letter in "ab":
            served, process = start_uvicorn("project.asgi:application", on_host(letter))
            urls.append(served)
            processes.append(process)
        yield Hosts(urls[0], urls[1], tokens, [base / "a" / "pool", base / "b" / "pool"])
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_a_task_posted_on_one_host_is_pending_on_the_other(hosts):
    task = hosts.post_task(hosts.a, to="device:d3", title="from A")
    on_b = httpx.get(f"{hosts.b}/pool/pending", headers=hosts.headers("d3")).json()
    assert [t["id"] for t in on_b] == [task["id"]]
    done = httpx.post(
        f"{hosts.b}/pool/response",
        json={"parent_id": task["id"], "status": "done"},
        headers=hosts.headers("d3"),
    )
    assert done.status_code == 201
    detail = httpx.get(f"{hosts.a}/pool/tasks/{task['id']}", headers=hosts.headers("ops")).json()
    assert [row["status"] for row in detail["executions"]] == ["done"]
    # The pool is in the database: neither host wrote a day file.
    assert all(not list(directory.glob("*.jsonl")) for directory in hosts.data_dirs)


def test_a_long_poll_on_one_host_is_woken_by_a_post_on_the_other(hosts):
    answers: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            httpx.get(f"{hosts.b}/pool/pending?wait=30", headers=hosts.headers("d4"), timeout=40)
        )
    )
    waiting.start()
    time.sleep(0.5)  # the long-poll is waiting on B
    posted_at = time.monotonic()
    task = hosts.post_task(hosts.a, to="device:d4", title="wake up")
    waiting.join(timeout=40)
    woken_after = time.monotonic() - posted_at
    assert [t["id"] for t in answers[0].json()] == [task["id"]]
    assert woken_after < 10, woken_after  # woken by the post, long before its 30 s were up


def test_a_claim_race_across_hosts_has_one_winner_every_round(hosts):
    def claim(host, device, task, barrier, codes) -> None:
        barrier.wait()
        answer = httpx.post(
            f"{host}/pool/claim", json={"parent_id": task["id"]}, headers=hosts.headers(device)
        )
        codes[device] = answer.status_code

    for _round in range(10):
        task = hosts.post_task(hosts.a, to="device:[d1,d2]", mode="any")
        barrier = threading.Barrier(2)
        codes: dict[str, int] = {}
        racers = [
            threading.Thread(target=claim, args=(host, device, task, barrier, codes))
            for host, device in [(hosts.a, "d1"), (hosts.b, "d2")]
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(timeout=30)
        assert sorted(codes.values()) == [201, 409], codes


def test_a_stream_on_one_host_replays_what_was_written_on_the_other(hosts):
    hosts.post_task(hosts.a, to="device:d1", title="before")
    cursor = _end_of_log(hosts, hosts.b)  # just past "before"
    later = [hosts.post_task(hosts.a, to="device:d1", title=f"after {n}") for n in range(3)]
    with httpx.stream(
        "GET",
        f"{hosts.b}/pool/stream",
        headers=hosts.headers("boss", **{"Last-Event-ID": cursor}),
        timeout=30,
    ) as response:
        assert response.status_code == 200
        events = read_events(response)
        replayed = [next_event(events).data["id"] for _ in later]
    assert replayed == [task["id"] for task in later]


def _end_of_log(hosts: Hosts, host: str) -> str:
    """The log's last cursor, found by paging it from its first day."""
    headers = hosts.headers("boss")
    params: dict[str, object] = {"date": "2000-01-01", "limit": 1000}
    while True:
        page = httpx.get(f"{host}/pool/log", params=params, headers=headers).json()
        if not page["has_more"]:
            return page["next_cursor"]
        params = {"after": page["next_cursor"], "limit": 1000}


def test_an_idempotency_key_holds_across_hosts_even_when_both_get_it_at_once(hosts):
    key = f"once-{uuid.uuid4().hex}"
    barrier = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def send(host: str) -> None:
        barrier.wait()
        answers.append(
            httpx.post(
                f"{host}/pool/task",
                json={"to": "device:d2", "title": "exactly once"},
                headers=hosts.headers("ops", **{"Idempotency-Key": key}),
            )
        )

    senders = [threading.Thread(target=send, args=(host,)) for host in [hosts.a, hosts.b] * 4]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join(timeout=30)
    assert sorted(answer.status_code for answer in answers) == [200] * 7 + [201]
    assert len({answer.json()["id"] for answer in answers}) == 1
    pending = httpx.get(f"{hosts.a}/pool/pending", headers=hosts.headers("d2")).json()
    assert [t["title"] for t in pending].count("exactly once") == 1
