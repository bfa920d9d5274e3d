"""A broadcast's statuses over a large fleet, and how many devices have each: the same as
one execution per device, and worked out from its answers, not from each of its devices."""

from __future__ import annotations

import pytest

from taskpool.executions import StatusCount, registered_places
from taskpool.lifecycle import TaskState, replay
from tests.support import TaskStateCalls, message

START = 1_780_000_000.0
FLEET = [f"pi-{number}" for number in range(2000)]


def broadcast(**meta) -> dict:
    return message(to="device:*", ts=START, title="update", meta=meta)


def answer(task: dict, device_id: str, status: str, seconds: float, **meta) -> dict:
    return message(
        kind="response",
        sender=f"device:{device_id}",
        to=task["from"],
        ts=START + seconds,
        parent_id=task["id"],
        meta={"status": status, **meta},
    )


def from_backend(task: dict, status: str, seconds: float, **meta) -> dict:
    return message(
        kind="response",
        sender="backend",
        to=task["from"],
        ts=START + seconds,
        parent_id=task["id"],
        meta={"status": status, **meta},
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
    calls = TaskStateCalls(monkeypatch)
    assert state.statuses(FLEET, START + 60) == {"done", "failed", "pending"}
    assert len(calls.statuses) <= 3


def counts_row_by_row(
    state: TaskState, registered: list[str], now: float, shown: int
) -> list[StatusCount]:
    by_status: dict[str, list[str]] = {}
    for row in state.executions(registered, now):
        by_status.setdefault(row["status"], []).append(row["device"])
    return [
        StatusCount(status, len(devices), devices[:shown])
        for status, devices in sorted(by_status.items())
    ]


RETRIES = {"retries": {"max_attempts": 2, "backoff": 0}}
ROLLOUT = {"rollout": {"max_per_minute": 10}}


@pytest.mark.parametrize(
    ("to", "meta", "lines", "registered", "now"),
    [
        ("device:*", {}, [], FLEET, START + 60),
        ("device:*", {}, [], [], START + 60),
        (
            "device:*",
            {},
            [("pi-1", "done"), ("pi-2", "progress"), ("other", "failed"), ("pi-1999", "failed")],
            FLEET,
            START + 60,
        ),
        # Devices that answered before the ones that did not, and some that did not register.
        ("device:*", {}, [(device, "done") for device in FLEET[:8]], FLEET[:10], START + 60),
        ("device:*", {}, [(device, "done") for device in FLEET[:3]], FLEET[:3], START + 60),
        ("device:*", {}, [("zz", "done"), ("aa", "done"), ("pi-1", "done")], FLEET[:3], START + 60),
        ("device:*", {}, [("pi-1", "done"), ("pi-2", "progress")], FLEET, START + 30 * 86400),
        ("device:*", {}, [("pi-5", "progress"), ("cancel", "")], FLEET, START + 60),
        ("device:*", {"mode": "any"}, [("pi-7", "claimed")], FLEET, START + 60),
        ("device:*", {"mode": "any"}, [("pi-7", "done")], FLEET, START + 60),
        ("device:*", RETRIES, [("pi-3", "failed"), ("pi-4", "done")], FLEET, START + 60),
        ("device:*", RETRIES, [("pi-3", "failed"), ("pi-3", "failed")], FLEET, START + 60),
        (
            "device:*",
            ROLLOUT,
            [("offer", ["pi-1", "pi-4", "gone"]), ("pi-4", "progress")],
            FLEET,
            START + 60,
        ),
        ("device:[pi-1,pi-2,pi-3]", {}, [("pi-2", "done"), ("pi-9", "done")], FLEET, START + 60),
        ("device:[pi-1,pi-2]", {}, [("pi-2", "done")], [], START + 30 * 86400),
    ],
)
@pytest.mark.parametrize("shown", [1, 5])
def test_status_counts_equal_one_execution_per_device(to, meta, lines, registered, now, shown):
    task = message(to=to, ts=START, title="update", meta=meta)
    responses = []
    for n, (who, what) in enumerate(lines):
        if who == "cancel":
            responses.append(from_backend(task, "cancelled", n + 1) | {"from": "user:ops"})
        elif who == "offer":
            responses.append(from_backend(task, "offered", n + 1, devices=what))
        else:
            responses.append(answer(task, who, what, n + 1))
    state = replay(task, responses, 7 * 86400)
    assert state.status_counts(registered_places(registered), now, shown) == counts_row_by_row(
        state, registered, now, shown
    )


def test_counting_a_broadcasts_statuses_looks_at_its_answers_not_at_every_device(monkeypatch):
    task = broadcast()
    answers = [answer(task, f"pi-{n}", "done" if n % 2 else "failed", n) for n in range(10)]
    state = replay(task, answers, 7 * 86400)
    calls = TaskStateCalls(monkeypatch)
    counts = state.status_counts(registered_places(FLEET), START + 60, 5)
    assert counts == [
        StatusCount("done", 5, ["pi-1", "pi-3", "pi-5", "pi-7", "pi-9"]),
        StatusCount("failed", 5, ["pi-0", "pi-2", "pi-4", "pi-6", "pi-8"]),
        StatusCount("pending", len(FLEET) - 10, ["pi-10", "pi-11", "pi-12", "pi-13", "pi-14"]),
    ]
    assert len(calls.statuses) <= 11
    assert calls.rows == []
