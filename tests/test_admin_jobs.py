"""Jobs in the admin: the send form takes the options as the API does, and a task's
thread shows them, each device's attempts, and why a task was aborted."""

from __future__ import annotations

import pytest

from taskpool.ticker import tick

pytestmark = pytest.mark.every_store


@pytest.fixture
def boss(client, make_user):
    user, _token = make_user("boss", role="admin", superuser=False)
    user.is_staff = True
    user.save()
    client.force_login(user)
    return client


def test_the_send_form_takes_job_options_and_shows_every_refusal(boss, make_device):
    make_device("pi-1")
    refused = boss.post(
        "/admin/taskpool/task/add/",
        {
            "to": "device:pi-1",
            "title": "update",
            "retries": '{"max_attempts": 99}',
            "rollout": "{not json",
            "not_before": "someday",
        },
    )
    assert refused.status_code == 200
    errors = refused.context["form"].errors
    assert set(errors) >= {"rollout"}
    sent = boss.post(
        "/admin/taskpool/task/add/",
        {
            "to": "device:pi-1",
            "title": "update",
            "retries": '{"max_attempts": 2, "backoff": 0}',
            "timeout": '{"in_progress": 600}',
            "not_before": "2026-01-01T00:00:00Z",
        },
    )
    assert sent.status_code == 302, sent.context["form"].errors if sent.context else sent
    thread = boss.get(sent["Location"])
    assert thread.status_code == 200
    page = thread.content.decode()
    assert 'id="job"' in page and "max_attempts" in page and "in_progress" in page
    assert thread.context["with_attempts"] is True


def test_a_thread_shows_attempts_and_why_a_task_was_aborted(boss, store, make_device):
    for name in ("a", "b", "c"):
        make_device(name)
    task = store.post_task(
        sender="user:ops",
        to="device:[a,b,c]",
        title="update",
        retries={"max_attempts": 2, "backoff": 0},
        abort={"failure_percentage": 50, "min_executed": 1, "on": ["failed", "rejected"]},
    ).message
    store.post_response(device_id="a", parent_id=task["id"], status="failed")
    store.post_response(device_id="b", parent_id=task["id"], status="rejected")
    tick(store, registered_devices=[])
    thread = boss.get(f"/admin/taskpool/task/{task['id']}/")
    page = thread.content.decode()
    assert 'id="abort-reason"' in page and "finished executions failed" in page
    rows = {row["device"]: row for row, _ in thread.context["executions"]}
    assert rows["c"]["status"] == "cancelled"
    assert rows["a"]["attempts"][0]["status"] == "failed"
