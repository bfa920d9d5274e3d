"""A broadcast's statuses over a large fleet: the same as one execution per device, and
worked out from its answers, not from each of its devices."""

from __future__ import annotations

import pytest

from taskpool.lifecycle import TaskState, replay
from tests.support import message

START = 1_780_000_000.0
FLEET = [f"pi-{number}" for number in range(2000)]


def broadcast(**meta) -> dict:
    return message(to="device:*", ts=START, title="update", meta=meta)


def answer(task: dict, device_id: str, status: str, seconds: float) -> dict:
    return message(
        kind="response",
        sender=f"device:{device_id}",
        to=task["from"],
        ts=START + seconds,
        parent_id=task["id"],
        meta={"status": status},
    )


def statuses_row_by_row(state: TaskState, registered: list[str], now: float) -> frozenset[str]:
    return frozenset(row["status"] for row in state.executions(registered, now))


@pytest.mark.parametrize(
    ("meta", "answers", "registered", "now"),
    [
        ({}, [], FLEET, START + 60),
        ({}, [("pi-1", "done"), ("pi-2", "progress"), ("other", "failed")], FLEET, START + 60),
        ({}, [(device, "done") for device in FLEET[:3]], FLEET[:3], START + 60),
        ({}, [("pi-1", "done"), ("pi-2", "progress")], FLEET, START + 30 * 86400),
        ({"mode": "any"}, [("pi-7", "claimed")], FLEET, START + 60),
        ({"mode": "any"}, [("pi-7", "done")], FLEET, START + 60),
    ],
)
def test_statuses_equal_one_execution_per_device(meta, answers, registered, now):
    task = broadcast(**meta)
    state = replay(
        task,
        [answer(task, device, status, n + 1) for n, (device, status) in enumerate(answers)],
        7 * 86400,
    )
    assert state.statuses(registered, now) == statuses_row_by_row(state, registered, now)


def test_a_broadcast_looks_at_its_answers_not_at_every_device(monkeypatch):
    task = broadcast()
    state = replay(
        task, [answer(task, "pi-1", "done", 1), answer(task, "pi-2", "failed", 2)], 7 * 86400
    )
    looked_at = []
    original = TaskState._status

    def counted(self, device_id, now):
        looked_at.append(device_id)
        return original(self, device_id, now)

    monkeypatch.setattr(TaskState, "_status", counted)
    assert state.statuses(FLEET, START + 60) == {"done", "failed", "pending"}
    assert len(looked_at) <= 3
