"""Jobs through the HTTP API: the options of POST /pool/task, attempts in what devices are
served and how they answer, time kept by the ticker (in this process, and by taskpool_tick),
and every refusal. Each test runs on every store."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime

import orjson
import pytest
from django.core.management import call_command

from taskpool.messages import format_timestamp
from taskpool.stores import get_store
from taskpool.ticker import tick
from tests.conftest import client_with, post_json
from tests.contract.support import Clock

pytestmark = pytest.mark.every_store


@pytest.fixture
def devices(make_device):
    return {name: client_with(make_device(name)[1]) for name in ("a", "b")}


def post_task(client, **data):
    data.setdefault("title", "update")
    answer = post_json(client, "/pool/task", data)
    assert answer.status_code == 201, answer.json()
    return answer.json()


def answer(client, task_id, status="done", **extra):
    return post_json(client, "/pool/response", {"parent_id": task_id, "status": status, **extra})


def test_a_retried_task_says_its_attempt_and_refuses_an_ended_one(master_client, devices):
    task = post_task(master_client, to="device:a", retries={"max_attempts": 2, "backoff": 0})
    assert task["meta"]["retries"] == {
        "max_attempts": 2,
        "on": ["failed", "timed_out"],
        "backoff": 0,
    }
    (served,) = devices["a"].get("/pool/pending").json()
    assert served["meta"]["attempt"] == 1
    assert answer(devices["a"], task["id"], "failed").json()["meta"]["attempt"] == 1
    assert devices["a"].get("/pool/pending").json() == []
    (retry,) = tick()
    assert retry["meta"] == {"status": "retry", "device": "a", "attempt": 2}
    assert devices["a"].get("/pool/pending").json()[0]["meta"]["attempt"] == 2
    late = answer(devices["a"], task["id"], "done", meta={"attempt": 1})
    assert late.status_code == 409
    assert "attempt 2" in late.json()["detail"]
    assert answer(devices["a"], task["id"], "done").status_code == 201
    detail = master_client.get(f"/pool/tasks/{task['id']}").json()
    (execution,) = detail["executions"]
    assert (execution["status"], execution["attempt"]) == ("done", 2)
    assert [(a["attempt"], a["status"]) for a in execution["attempts"]] == [
        (1, "failed"),
        (2, "done"),
    ]


def test_the_task_list_filters_by_job_option_and_new_statuses(master_client, devices):
    plain = post_task(master_client, to="device:a")
    retried = post_task(master_client, to="device:a", retries={"max_attempts": 3, "backoff": 600})
    answer(devices["a"], retried["id"], "failed")
    by_option = master_client.get("/pool/tasks?job=retries").json()["results"]
    assert [row["task"]["id"] for row in by_option] == [retried["id"]]
    retrying = master_client.get("/pool/tasks?status=retrying").json()["results"]
    assert [row["task"]["id"] for row in retrying] == [retried["id"]]
    assert plain["id"] in [
        r["task"]["id"] for r in master_client.get("/pool/tasks").json()["results"]
    ]
    assert master_client.get("/pool/tasks?job=nonsense").status_code == 400


@pytest.mark.parametrize(
    "field, value",
    [
        ("retries", {"max_attempts": 0}),
        ("retries", {"max_attempts": 2, "on": ["rejected"]}),
        ("retries", {"max_attempts": "2"}),
        ("retries", "3"),
        ("timeout", {"in_progress": -1}),
        ("timeout", {"in_progress": 60, "step": 5}),
        ("rollout", {"max_per_minute": 5000}),
        ("rollout", {"base_per_minute": 5, "increment_factor": 9, "after_succeeded": 1}),
        ("abort", {"failure_percentage": 50}),
        ("abort", {"failure_percentage": 50, "min_executed": 1, "on": ["expired"]}),
        ("not_before", "tomorrow"),
        ("not_before", "2026-06-03T12:00:00"),
        ("not_before", "2999-01-01T00:00:00Z"),
        ("not_before", 1780000000),
        ("retries", {"max_attempts": True}),
        ("retries", {"max_attempts": 11}),
        ("retries", {"max_attempts": 2, "backoff": -5}),
        ("retries", {"max_attempts": 2, "on": "failed"}),
        ("retries", {"max_attempts": 2, "tries": 3}),
        ("retries", []),
        ("timeout", {}),
        ("timeout", {"in_progress": "60"}),
        ("rollout", {}),
        ("rollout", {"max_per_minute": 5, "burst": 2}),
        ("rollout", {"max_per_minute": 0}),
        ("abort", {"failure_percentage": 150, "min_executed": 1}),
        ("abort", {"failure_percentage": 50, "min_executed": 1, "when": "now"}),
        ("abort", None),
    ],
)
def test_malformed_job_fields_are_400_naming_the_field(
    master_client, devices, snapshot, field, value
):
    before = snapshot()
    refused = post_json(master_client, "/pool/task", {"to": "device:a", "title": "x", field: value})
    assert refused.status_code == 400, refused.json()
    assert field in refused.json()["errors"]
    assert snapshot() == before


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("retries", {"max_attempts": 2, "backoff": 120}),
        ("retries", {"max_attempts": 2, "backoff": 60}),
        ("timeout", {"in_progress": 120}),
        ("timeout", {"in_progress": 60}),
    ],
)
def test_an_option_that_would_outlive_the_task_is_400(
    master_client, devices, snapshot, field, value
):
    """Never taking effect: a retry due after the task expired, a timeout called after it."""
    before = snapshot()
    task = {"to": "device:a", "title": "x", "ttl": 60, field: value}
    refused = post_json(master_client, "/pool/task", task)
    assert refused.status_code == 400
    assert "shorter than the task's life (60 s)" in refused.json()["errors"][field][0]
    assert snapshot() == before
    shorter = {**task, field: {**value, **({"backoff": 30} if field == "retries" else {})}}
    if field == "timeout":
        shorter[field] = {"in_progress": 30}
    assert post_json(master_client, "/pool/task", shorter).status_code == 201


@pytest.mark.parametrize(
    ("field", "value"),
    [("retries", {"max_attempts": 2, "backoff": 60}), ("timeout", {"in_progress": 60})],
)
def test_an_option_that_would_outlive_the_task_from_its_start_is_400(
    master_client, devices, snapshot, field, value
):
    """A task with a start lives only from then on: 110 s of ttl, 100 of them before its
    start, leave 10 s in which a 60 s timeout or backoff never comes."""
    start = format_timestamp(time.time() + 100)
    task = {"to": "device:a", "title": "x", "ttl": 110, "not_before": start, field: value}
    before = snapshot()
    refused = post_json(master_client, "/pool/task", task)
    assert refused.status_code == 400, refused.json()
    assert "shorter than the task's life" in refused.json()["errors"][field][0]
    assert snapshot() == before
    unstarted = {key: item for key, item in task.items() if key != "not_before"}
    assert post_json(master_client, "/pool/task", unstarted).status_code == 201


def test_every_job_field_at_fault_is_named_at_once(master_client, devices, snapshot):
    before = snapshot()
    refused = post_json(
        master_client,
        "/pool/task",
        {
            "to": "device:a",
            "title": "",
            "retries": {"max_attempts": 0},
            "timeout": {},
            "rollout": {"max_per_minute": 0},
            "abort": {"failure_percentage": 150, "min_executed": 1},
        },
    )
    assert refused.status_code == 400
    assert set(refused.json()["errors"]) == {"title", "retries", "timeout", "rollout", "abort"}
    assert snapshot() == before


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("abort", {"failure_percentage": 0, "min_executed": 1}, "above 0, at most 100"),
        ("abort", {"failure_percentage": 101, "min_executed": 1}, "above 0, at most 100"),
        ("abort", {"failure_percentage": True, "min_executed": 1}, "above 0, at most 100"),
        ("rollout", {}, "rollout is empty: give max_per_minute, or base_per_minute"),
        (
            "rollout",
            {"max_per_minute": 5, "increment_factor": 2},
            "give max_per_minute, or base_per_minute, increment_factor and after_succeeded",
        ),
    ],
)
def test_a_job_field_refused_says_what_it_takes(master_client, devices, field, value, says):
    refused = post_json(master_client, "/pool/task", {"to": "device:a", "title": "x", field: value})
    assert refused.status_code == 400 and says in refused.json()["errors"][field][0]


def test_an_answer_before_a_scheduled_start_is_409(master_client, devices):
    # Half a millisecond past a second: the start is rounded up to the next one, never down.
    start = datetime.fromtimestamp(int(time.time()) + 3600, UTC).replace(microsecond=500)
    task = post_task(master_client, to="device:a", not_before=start.isoformat())
    assert task["meta"]["not_before"] == format_timestamp(int(start.timestamp()) + 1)
    refused = answer(devices["a"], task["id"])
    assert refused.status_code == 409 and "does not start before" in refused.json()["detail"]
    assert devices["a"].get("/pool/pending").json() == []


@pytest.mark.slow
def test_a_long_poll_gets_a_scheduled_task_when_its_time_comes(master_client, devices, settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "TICK_INTERVAL": 0.2}
    start = time.time() + 2
    task = post_task(
        master_client,
        to="device:a",
        not_before=datetime.fromtimestamp(start, UTC).isoformat(),
    )
    # The ticker thread (started by the requests) writes the start; the long-poll waits for it.
    waited = devices["a"].get("/pool/pending?wait=20")
    arrived = time.time()
    assert [t["id"] for t in waited.json()] == [task["id"]]
    assert arrived >= start - 1  # not before its time (second precision)
    assert arrived < start + 15  # woken when it came, not at the end of the wait


def test_taskpool_tick_writes_what_is_due_once(master_client, devices):
    task = post_task(master_client, to="device:a", timeout={"in_progress": 1})
    answer(devices["a"], task["id"], "progress")
    time.sleep(2.1)  # its second, and the one it was given
    out = io.StringIO()
    call_command("taskpool_tick", stdout=out)
    assert out.getvalue().strip() == "Wrote 1 line (timed_out)."
    again = io.StringIO()
    call_command("taskpool_tick", stdout=again)
    assert again.getvalue().strip() == "Wrote 0 lines."
    assert (
        master_client.get(f"/pool/tasks/{task['id']}").json()["executions"][0]["status"]
        == "timed_out"
    )


def test_a_start_in_the_distant_past_starts_at_once(master_client, devices):
    task = post_task(master_client, to="device:a", not_before="0999-01-01T00:00:00Z")
    assert task["meta"]["not_before"] == "0999-01-01T00:00:00Z"
    pending = devices["a"].get("/pool/pending").json()
    assert [t["id"] for t in pending] == [task["id"]]


def test_a_rollouts_rate_stops_at_the_cap_however_many_devices_succeed():
    """5-fold after every success passes a float's range after 442 successes."""
    from taskpool.jobs import MAX_PER_MINUTE, Rollout

    rollout = Rollout(base_per_minute=1000, increment_factor=5, after_succeeded=1)
    assert [rollout.per_minute(n) for n in (0, 441, 442, 10**6)] == [MAX_PER_MINUTE] * 4
    slow = Rollout(base_per_minute=1, increment_factor=1.1, after_succeeded=1)
    assert slow.per_minute(1) == 1.1 and slow.per_minute(7448) == MAX_PER_MINUTE


def test_a_job_options_numbers_are_stored_as_they_were_sent(master_client, devices):
    """2 stays 2 and 1.5 stays 1.5: the answer to the post, the day's line and every read agree."""
    options = {
        "retries": {"max_attempts": 2, "on": ["failed"], "backoff": 2},
        "timeout": {"in_progress": 1.5},
        "abort": {"failure_percentage": 50, "min_executed": 1, "on": ["failed"]},
    }
    posted = post_json(master_client, "/pool/task", {"to": "device:a", "title": "t", **options})
    assert posted.status_code == 201, posted.content
    for name, sent in options.items():
        assert posted.content.count(orjson.dumps({name: sent})[1:-1]) == 1, name
    read = master_client.get(f"/pool/tasks/{posted.json()['id']}")
    assert {name: read.json()["task"]["meta"][name] for name in options} == options


def test_a_device_reads_a_rollouts_offer_as_naming_itself_alone(
    master_client, make_device, monkeypatch
):
    """A device's part of a task never says which other devices the task reaches."""
    clients = {name: client_with(make_device(name)[1]) for name in "abcd"}
    clock = Clock(time.time())
    monkeypatch.setattr(get_store(), "_clock", clock)
    task = post_task(master_client, to="device:[a,b,c,d]", rollout={"max_per_minute": 60})
    tick()
    clock.advance(3)
    tick()  # three more devices, one a second: one line names them all
    whole = master_client.get(f"/pool/tasks/{task['id']}").json()["responses"]
    offers = [r["meta"]["devices"] for r in whole if r["meta"]["status"] == "offered"]
    assert sorted(map(len, offers)) == [1, 3]
    for name, client in clients.items():
        read = client.get(f"/pool/tasks/{task['id']}").json()["responses"]
        assert [r["meta"]["devices"] for r in read if r["meta"]["status"] == "offered"] == [[name]]
