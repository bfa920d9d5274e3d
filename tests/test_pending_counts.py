"""The devices list's pending counts equal the pending lists, and both equal a rescan.

``GET /pool/devices`` shows ``pending_counts``; a device polling
``GET /pool/pending`` gets ``pending_for``. The stores count without
listing (the database store from counted rows and the broadcasts past a
device's mark, the day files from spans of broadcasts each device is done
with), so the two can drift apart where the list does not. These tests
drive a store through its own methods with random traffic on a fixed seed
(tasks to one device, to lists and to everyone, any-one tasks, jobs with
retries, timeouts, rollouts, aborts and start times, answers in any order,
cancels, claims, the ticker's lines, expiries) and after each batch compare,
for every device: the count the store gives, the count a second store
built on the same pool gives (as another process builds its own), the
devices list of the API, the length of the pending list, and the pending
task ids a rescan of the log finds (every task replayed from its lines and
asked ``is_pending_for``). Counts are asked before the lists, since a
list may change what is kept (the database store gives a device its
broadcast rows when it asks).
"""

from __future__ import annotations

import contextlib
import random
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from taskpool import ticker
from taskpool.exceptions import PoolError
from taskpool.lifecycle import replay
from tests.conftest import client_with
from tests.support import ManualClock

pytestmark = pytest.mark.every_store

#: Devices that poll and answer.
ACTIVE = [f"d{number}" for number in range(6)]
#: Devices that never ask for their list until the end: the database store gives a
#: device its broadcast rows when it asks, so their counts come from what it has not.
QUIET = ["q0", "q1"]
DEVICES = ACTIVE + QUIET


class Traffic:
    """Random requests to a store, as a fleet and its operators make them."""

    def __init__(self, store: Any, clock: ManualClock, seed: int) -> None:
        self.store = store
        self.clock = clock
        self.rng = random.Random(seed)
        self.task_ids: list[str] = []

    def task(self) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.45:
            to = "device:*"
        elif roll < 0.75:
            to = "device:[" + ",".join(rng.sample(DEVICES, rng.randint(2, 4))) + "]"
        else:
            to = f"device:{rng.choice(DEVICES)}"
        options: dict[str, Any] = {"ttl": rng.uniform(10, 240)}
        mode = "any" if rng.random() < 0.25 else None
        if rng.random() < 0.5:
            if mode is None and rng.random() < 0.6:
                options["retries"] = {
                    "max_attempts": rng.randint(2, 3),
                    "on": ["failed", "timed_out"],
                    "backoff": rng.choice([0, 2]),
                }
            if rng.random() < 0.4:
                options["timeout"] = {"in_progress": rng.choice([3, 8])}
            if rng.random() < 0.2:
                options["rollout"] = {"max_per_minute": rng.choice([30, 120])}
            if rng.random() < 0.5:
                options["abort"] = {"failure_percentage": 40, "min_executed": 2}
            if rng.random() < 0.2:
                start = self.clock.now + rng.uniform(1, 15)
                options["not_before"] = datetime.fromtimestamp(start, UTC)
        posted = self.store.post_task(sender="user:ops", to=to, title="t", mode=mode, **options)
        self.task_ids.append(posted.message["id"])

    def answer(self) -> None:
        rng = self.rng
        device = rng.choice(ACTIVE)
        if rng.random() < 0.6:
            pending = self.store.pending_for(device, limit=1000)
            if not pending:
                return
            task_id = rng.choice(pending)["id"]
        elif self.task_ids:
            task_id = rng.choice(self.task_ids)  # any task: perhaps not pending, refused
        else:
            return
        status = rng.choices(["progress", "done", "failed", "rejected"], [35, 30, 30, 5])[0]
        self.store.post_response(device_id=device, parent_id=task_id, status=status)

    def claim(self) -> None:
        rng = self.rng
        device = rng.choice(ACTIVE)
        if rng.random() < 0.5 or not self.task_ids:
            self.store.claim(device_id=device)
        else:
            self.store.claim(device_id=device, parent_id=rng.choice(self.task_ids))

    def cancel(self) -> None:
        if self.task_ids:
            self.store.cancel(sender="user:ops", task_id=self.rng.choice(self.task_ids))

    def tick(self) -> None:
        ticker.tick(self.store, registered_devices=DEVICES)

    def batch(self, size: int) -> None:
        actions = [self.task, self.answer, self.claim, self.cancel, self.tick]
        for _ in range(size):
            self.clock.advance(self.rng.expovariate(0.5))
            action = self.rng.choices(actions, [30, 40, 12, 6, 12])[0]
            with contextlib.suppress(PoolError):  # refused by the rules: nothing stored
                action()


def rescan(store: Any) -> dict[str, list[str]]:
    """Each device's pending task ids from the log alone, in log order."""
    tasks: dict[str, dict] = {}
    responses: dict[str, list[dict]] = {}
    for day in store.days():
        for message in store.day_messages(day):
            if message["type"] == "task":
                tasks.setdefault(message["id"], message)
            elif message["parent_id"] in tasks:
                responses.setdefault(message["parent_id"], []).append(message)
    now = store.now()
    states = [
        replay(task, responses.get(task_id, []), store.task_ttl) for task_id, task in tasks.items()
    ]
    return {
        device: [state.id for state in states if state.is_pending_for(device, now)]
        for device in DEVICES
    }


# Seed 10 aborts a broadcast while a device runs it, before a quiet device asked for it.
@pytest.mark.parametrize("seed", [*range(6), 10])
def test_pending_counts_equal_the_pending_lists_after_random_traffic(
    seed, store, another_store, make_device, make_user
):
    clock = ManualClock(time.time())
    store._clock = clock
    second = another_store()
    second._clock = clock
    for device in DEVICES:
        make_device(device)
    admin = client_with(make_user("ops", role="admin")[1])
    traffic = Traffic(store, clock, seed)
    compared = 0
    try:
        for _batch in range(15):
            traffic.batch(10)
            counts = store.pending_counts(DEVICES)
            counts_elsewhere = second.pending_counts(DEVICES)
            listed = {row["id"]: row["pending"] for row in admin.get("/pool/devices").json()}
            expected = rescan(store)
            for device in DEVICES:
                pending = len(expected[device])
                assert counts[device] == pending, (device, "count")
                assert counts_elsewhere[device] == pending, (device, "another store's count")
                assert listed[device] == pending, (device, "GET /pool/devices")
                compared += pending
            for device in ACTIVE:
                ids = [task["id"] for task in store.pending_for(device, limit=10_000)]
                assert ids == expected[device], (device, "pending list")
        for device in QUIET:
            ids = [task["id"] for task in store.pending_for(device, limit=10_000)]
            assert ids == expected[device], (device, "pending list")
            assert store.pending_counts([device])[device] == len(ids), (device, "count")
    finally:
        second.close()
    assert compared > 0  # something was pending to compare


def test_an_aborted_broadcast_is_pending_only_for_the_devices_running_it(store):
    """Also for a device that had not asked since it was posted (the database store gives
    a device its broadcast rows only when it asks)."""
    task = store.post_task(
        sender="user:ops",
        to="device:*",
        title="update",
        abort={"failure_percentage": 40, "min_executed": 2},
    ).message
    store.post_response(device_id="d0", parent_id=task["id"], status="progress")
    store.post_response(device_id="d1", parent_id=task["id"], status="failed")
    store.post_response(device_id="d2", parent_id=task["id"], status="failed")
    (aborted,) = ticker.tick(store, registered_devices=DEVICES)
    assert aborted["meta"]["status"] == "aborted"
    # d0 still runs it: the task stays open, for d0 alone.
    assert store.pending_counts(["d0", "q0"]) == {"d0": 1, "q0": 0}
    assert [pending["id"] for pending in store.pending_for("d0")] == [task["id"]]
    assert store.pending_for("q0") == []
    assert store.pending_counts(["q0"]) == {"q0": 0}
