"""The index's pending lists equal a full rescan of the lines, whatever the traffic.

The index keeps, per device, spans of the open broadcasts the device is done
with, and moves broadcasts between those and the devices' own queues as they
are claimed, released and aborted. These tests feed it random traffic with a
fixed seed (tasks to one device, to lists and to everyone, any-one tasks,
jobs with retries, timeouts, rollouts, aborts and start times, answers in any
order, cancels, expiries and the backend's own lines) and compare, after
each batch and for every device, its pending list (same tasks, same order),
a short page of it and its count with a rescan: every task replayed from its
lines (``lifecycle.replay``) and asked ``is_pending_for``. The same holds for
an index pickled and loaded again as a checkpoint is, for one folded from two
halves read apart as a parallel replay does, and for a store restarted from
its checkpoint.
"""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest

from taskpool.lifecycle import OFFERED, replay
from taskpool.messages import format_timestamp, parse_address
from taskpool.stores.jsonl import JsonlStore
from taskpool.stores.jsonl.broadcasts import OpenBroadcasts
from taskpool.stores.jsonl.index import PoolIndex, position_of
from tests.support import ManualClock

DEVICES = [f"d{number}" for number in range(8)]
TTL = 3600.0
START = 1_780_000_000.0
DAY = 739_000


class Traffic:
    """Random lines, kept in the order fed, each with its position."""

    def __init__(self, seed: int, *, out_of_order: bool) -> None:
        self.rng = random.Random(seed)
        self.now = START
        self.offset = 0
        self.out_of_order = out_of_order
        self.lines: list[tuple[dict[str, Any], int, int]] = []  # message, day, offset
        self.numbers = 0

    def _id(self) -> str:
        self.numbers += 1
        return f"msg_{self.numbers:032x}"

    def _line(self, sender: str, kind: str, to: str, parent: str | None, meta: dict) -> dict:
        return {
            "id": self._id(),
            "ts": format_timestamp(self.now),
            "from": sender,
            "to": to,
            "type": kind,
            "title": "",
            "body": "",
            "parent_id": parent,
            "meta": meta,
        }

    def _place(self) -> tuple[int, int]:
        self.offset += 100
        if self.out_of_order and self.rng.random() < 0.03:
            return DAY - 1, self.offset  # a line in an older day's file: sorts before the rest
        return DAY, self.offset

    def task(self) -> dict:
        rng = self.rng
        roll = rng.random()
        if roll < 0.5:
            to = "device:*"
        elif roll < 0.75:
            to = "device:[" + ",".join(rng.sample(DEVICES, rng.randint(2, 4))) + "]"
        else:
            to = f"device:{rng.choice(DEVICES)}"
        meta: dict[str, Any] = {"expires_at": format_timestamp(self.now + rng.uniform(5, 120))}
        any_one = rng.random() < 0.25
        if any_one:
            meta["mode"] = "any"
        if rng.random() < 0.35:
            if not any_one and rng.random() < 0.6:
                meta["retries"] = {
                    "max_attempts": rng.randint(2, 3),
                    "on": ["failed", "timed_out"],
                    "backoff": rng.choice([0, 2]),
                }
            if rng.random() < 0.4:
                meta["timeout"] = {"in_progress": rng.choice([3, 8])}
            if rng.random() < 0.2:
                meta["rollout"] = {"max_per_minute": rng.choice([30, 120])}
            if rng.random() < 0.25:
                meta["abort"] = {"failure_percentage": 40, "min_executed": 2}
            if rng.random() < 0.2:
                meta["not_before"] = format_timestamp(self.now + rng.uniform(1, 15))
        return self._line("user:ops", "task", to, None, meta)

    def answer(self, open_tasks: list[dict]) -> dict | None:
        if not open_tasks:
            return None
        rng = self.rng
        task = rng.choice(open_tasks)
        audience = parse_address(task["to"])
        device = rng.choice(DEVICES if audience.everyone else list(audience.device_ids))
        if rng.random() < 0.1:
            device = rng.choice(DEVICES)  # perhaps not addressed: refused, changes nothing
        status = rng.choices(
            ["claimed", "progress", "done", "failed", "rejected"], [15, 20, 35, 20, 10]
        )[0]
        return self._line(
            f"device:{device}", "response", task["from"], task["id"], {"status": status}
        )

    def cancel(self, open_tasks: list[dict]) -> dict | None:
        if not open_tasks:
            return None
        task = self.rng.choice(open_tasks)
        return self._line("user:ops", "response", task["to"], task["id"], {"status": "cancelled"})

    def backend(self, index: PoolIndex) -> list[dict]:
        """The lines the backend owes the open job tasks now, as the ticker writes them."""
        lines = []
        for state in list(index.open.values()):
            if state.job is None:
                continue
            for step in state.due(self.now, lambda: DEVICES)[:1]:
                meta: dict[str, Any] = {"status": step.status}
                if step.status == OFFERED:
                    meta["devices"] = list(step.devices)
                    meta["rollout_clock"] = step.rollout_clock
                elif step.devices:
                    meta["device"] = step.devices[0]
                if step.attempt is not None:
                    meta["attempt"] = step.attempt
                lines.append(self._line("backend", "response", "user:ops", state.id, meta))
        return lines

    def batch(self, index: PoolIndex, size: int) -> list[tuple[dict, int, int]]:
        """``size`` operations' lines, fed to ``index`` as they are made."""
        made = []
        for _ in range(size):
            self.now += self.rng.expovariate(1.0)
            open_tasks = [state.task for state in index.open.values()]
            roll = self.rng.random()
            if roll < 0.3:
                lines = [self.task()]
            elif roll < 0.85:
                lines = [self.answer(open_tasks)]
            elif roll < 0.9:
                lines = [self.cancel(open_tasks)]
            else:
                lines = self.backend(index)
            for line in lines:
                if line is None:
                    continue
                day, offset = self._place()
                index.add(line, day, offset, self.now)
                made.append((line, day, offset))
        index.expire(self.now)
        self.lines += made
        return made


def rescan(lines: list[tuple[dict, int, int]], device: str, now: float) -> list[str]:
    """The device's pending task ids from the lines alone, in position order."""
    tasks: dict[str, tuple[dict, int]] = {}
    responses: dict[str, list[dict]] = {}
    for message, day, offset in lines:
        if message["type"] == "task":
            tasks.setdefault(message["id"], (message, position_of(day, offset)))
        elif message["parent_id"] in tasks:
            responses.setdefault(message["parent_id"], []).append(message)
    pending = []
    for task_id, (task, position) in tasks.items():
        state = replay(task, responses.get(task_id, []), TTL)
        if state.is_pending_for(device, now):
            pending.append((position, task_id))
    return [task_id for _position, task_id in sorted(pending)]


def assert_agrees(index: PoolIndex, lines: list, now: float) -> int:
    """Every device's pending list, first page and count equal the rescan's; how many pending."""
    total = 0
    broadcasts = index.broadcasts
    for device in DEVICES:
        # The count kept per device is what its spans hold.
        held = broadcasts._held(broadcasts.done.get(device, []))
        assert broadcasts.done_counts.get(device, 0) == held, device
        expected = rescan(lines, device, now)
        assert [task["id"] for task in index.pending_for(device, now, 10**6)] == expected, device
        assert [task["id"] for task in index.pending_for(device, now, 3)] == expected[:3], device
        assert index.pending_count(device, now) == len(expected), device
        # Counting tidies the spans: the list must not change for it.
        assert [task["id"] for task in index.pending_for(device, now, 10**6)] == expected, device
        total += len(expected)
    return total


@pytest.mark.parametrize("seed", range(6))
def test_pending_equals_a_rescan_after_random_traffic(seed):
    traffic = Traffic(seed, out_of_order=seed % 2 == 1)
    index = PoolIndex(TTL)
    seen = done = 0
    for _batch in range(25):
        traffic.batch(index, 12)
        seen += assert_agrees(index, traffic.lines, traffic.now)
        done += sum(index.broadcasts.done_counts.values())
    assert seen > 0  # there was something pending to compare
    assert done > 0  # and devices done with open broadcasts


@pytest.mark.parametrize("seed", range(3))
def test_an_index_pickled_as_a_checkpoint_reads_on_to_the_same_lists(seed):
    traffic = Traffic(100 + seed, out_of_order=False)
    index = PoolIndex(TTL)
    for _batch in range(10):
        traffic.batch(index, 12)
    resumed = pickle.loads(pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL))
    assert_agrees(resumed, traffic.lines, traffic.now)
    for _batch in range(10):
        made = traffic.batch(index, 12)
        for line, day, offset in made:
            resumed.add(line, day, offset, traffic.now)
        resumed.expire(traffic.now)
        assert_agrees(resumed, traffic.lines, traffic.now)
        assert_agrees(index, traffic.lines, traffic.now)


@pytest.mark.parametrize("seed", range(4))
def test_an_index_folded_from_two_halves_equals_the_rescan(seed):
    """As a parallel replay reads the halves apart and folds them (``PoolIndex.fold``)."""
    traffic = Traffic(200 + seed, out_of_order=False)
    whole = PoolIndex(TTL)
    for _batch in range(20):
        traffic.batch(whole, 12)
    lines = traffic.lines
    now = traffic.now
    for cut in (len(lines) // 3, len(lines) // 2, 2 * len(lines) // 3):
        first, later = PoolIndex(TTL), PoolIndex(TTL)
        strays = []
        for message, day, offset in lines[:cut]:
            first.add(message, day, offset, now)
        for message, day, offset in lines[cut:]:
            parent = message["parent_id"]
            if message["type"] == "response" and parent is not None and not later.knows(parent):
                strays.append((message, offset))
            later.add(message, day, offset, now)
        assert first.fold(later, strays, now)
        first.expire(now)
        assert_agrees(first, lines, now)


def test_spans_jump_the_answered_broadcasts_and_come_apart_on_a_retry():
    broadcasts = OpenBroadcasts()
    index = PoolIndex(TTL)
    index.broadcasts = broadcasts
    traffic = Traffic(0, out_of_order=False)
    ids = []
    for _ in range(6):
        task = traffic._line("user:ops", "task", "device:*", None, {})
        traffic.offset += 100
        index.add(task, DAY, traffic.offset, START)
        ids.append(task["id"])
    for number in (0, 1, 2, 4, 5):
        answer = traffic._line("device:d0", "response", "user:ops", ids[number], {"status": "done"})
        traffic.offset += 100
        index.add(answer, DAY, traffic.offset, START)
    # One span before the unanswered broadcast, one after it.
    assert len(broadcasts.done["d0"]) == 4
    assert [task["id"] for task in index.pending_for("d0", START, 10)] == [ids[3]]
    assert index.pending_count("d0", START) == 1
    assert index.pending_count("d1", START) == 6
    assert broadcasts.done_counts == {"d0": 5}
    # The unanswered one expires: the two spans join on the next read.
    index._close(index.open[ids[3]], "expired", START)
    assert index.pending_for("d0", START, 10) == []
    assert len(broadcasts.done["d0"]) == 2
    assert index.pending_count("d0", START) == 0
    # When the last open broadcast a span holds closes, the span goes.
    for task_id in ids[:3] + ids[4:]:
        index._close(index.open[task_id], "expired", START)
    assert broadcasts.done == {} and broadcasts.done_counts == {}


def test_a_store_restarted_from_its_checkpoint_keeps_the_same_lists(tmp_path):
    """Tasks, broadcasts, jobs and answers through the store, then a restart, then more."""

    class OftenCheckpointing(JsonlStore):
        checkpoint_lines = 40

    clock = ManualClock(START, tick=0.5)
    directory = tmp_path / "pool"
    rng = random.Random(7)

    def traffic(store: JsonlStore, operations: int) -> None:
        from taskpool.exceptions import PoolError

        for _ in range(operations):
            device = rng.choice(DEVICES)
            roll = rng.random()
            try:
                if roll < 0.3:
                    to = rng.choice(
                        ["device:*", "device:*", f"device:{device}", "device:[d1,d2,d3]"]
                    )
                    options: dict[str, Any] = {}
                    mode = rng.choice([None, None, "any"])
                    if rng.random() < 0.3 and mode is None:
                        options["retries"] = {"max_attempts": 2, "backoff": 0}
                    store.post_task(sender="user:ops", to=to, title="t", mode=mode, **options)
                elif roll < 0.85:
                    pending = store.pending_for(device)
                    if pending:
                        store.post_response(
                            device_id=device,
                            parent_id=rng.choice(pending)["id"],
                            status=rng.choice(["progress", "done", "failed", "rejected"]),
                        )
                else:
                    pending = store.pending_for(device)
                    if pending:
                        store.cancel(sender="user:ops", task_id=rng.choice(pending)["id"])
            except PoolError:
                pass

    def lists(store: JsonlStore) -> dict[str, tuple[list[str], int]]:
        return {
            device: (
                [task["id"] for task in store.pending_for(device, limit=1000)],
                store.pending_counts([device])[device],
            )
            for device in DEVICES
        }

    def rescanned(store: JsonlStore) -> dict[str, tuple[list[str], int]]:
        now = store.now()
        lines = []
        for day in store.days():
            for offset, message in enumerate(store.day_messages(day)):
                lines.append((message, day.toordinal(), offset))
        expected = {}
        for device in DEVICES:
            ids = rescan(lines, device, now)
            expected[device] = (ids, len(ids))
        return expected

    first = OftenCheckpointing(directory, fsync=False, clock=clock)
    traffic(first, 150)
    clock.tick = 0
    before = lists(first)
    assert before == rescanned(first)
    assert any(ids for ids, _count in before.values())
    first.close()
    restarted = OftenCheckpointing(directory, fsync=False, clock=clock)
    assert lists(restarted) == before
    assert restarted._tail.resumed
    clock.tick = 0.5
    traffic(restarted, 100)
    clock.tick = 0
    assert lists(restarted) == rescanned(restarted)
