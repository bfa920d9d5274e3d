"""The index a process keeps while appending equals the one built from the files afresh.

Writers take their own lines into the index from memory rather than reading
them back (``JsonlStore._append_line``), so these tests compare every
writer's index, and a long-lived reader's, with a store built from the files
after the fact: pending lists of every device, stats, device activity and
the location and state of every task.
"""

from __future__ import annotations

import multiprocessing
import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from taskpool.days import day_of
from taskpool.exceptions import PoolError
from taskpool.stores.jsonl import JsonlStore
from taskpool.stores.jsonl.appender import Appender
from taskpool.stores.results import TaskQuery

DEVICES = [f"d{number}" for number in range(6)]


def task_ids_in(directory: Path) -> list[str]:
    ids = []
    for path in sorted(directory.glob("*.jsonl")):
        for line in path.read_bytes().splitlines():
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if message.get("type") == "task":
                ids.append(message["id"])
    return ids


def view(store: JsonlStore) -> dict[str, Any]:
    """Everything a caller can learn from the store's index."""
    pending = {
        device: [t["id"] for t in store.pending_for(device, limit=1000)] for device in DEVICES
    }
    activity = store.device_activity(DEVICES)
    locations = {}
    for task_id in task_ids_in(store.directory):
        known = store._index.locate(task_id)
        locations[task_id] = (known.day_ordinal, known.offset, known.closed, known.status_bits)
    return {
        "pending": pending,
        "stats": store.stats(),
        "activity": {device: (a.last_message, a.last_heartbeat) for device, a in activity.items()},
        "locations": locations,
        # The dashboard's counts, kept by the index as it reads.
        "overview": store.overview(DEVICES, failures=100),
        # The task list, newest first, as the index gives the tasks of each day back.
        "tasks": [
            (summary.task["id"], sorted(summary.statuses))
            for summary in store.recent_tasks(TaskQuery(), limit=10_000).results
        ],
    }


def random_traffic(store: JsonlStore, rng: random.Random, operations: int) -> None:
    """Tasks, answers (refused ones too), claims, cancels and heartbeats, at random."""
    for _ in range(operations):
        device = rng.choice(DEVICES)
        roll = rng.random()
        try:
            if roll < 0.3:
                to = rng.choice(
                    [
                        "device:*",
                        f"device:{device}",
                        "device:[" + ",".join(rng.sample(DEVICES, 3)) + "]",
                    ]
                )
                store.post_task(sender="user:ops", to=to, title="t", mode=rng.choice([None, "any"]))
            elif roll < 0.7:
                pending = store.pending_for(device)
                if pending:
                    store.post_response(
                        device_id=device,
                        parent_id=rng.choice(pending)["id"],
                        status=rng.choice(["progress", "done", "failed", "rejected"]),
                    )
            elif roll < 0.8:
                store.claim(device_id=device)
            elif roll < 0.87:
                pending = store.pending_for(device)
                if pending:
                    store.cancel(sender="user:ops", task_id=rng.choice(pending)["id"])
            else:
                store.post_heartbeat(device_id=device)
        except PoolError:
            pass  # a refusal appends nothing; the next operation goes on


def _writer(directory: Path, seed: int, fsync: bool, barrier: Any, results: Any) -> None:
    store = JsonlStore(directory, fsync=fsync)
    store.pending_for(DEVICES[0])
    barrier.wait()
    random_traffic(store, random.Random(seed), 120)
    barrier.wait()  # every writer done: each index must now match the files
    results.put(view(store))


@pytest.mark.slow
@pytest.mark.parametrize("fsync", [False, True], ids=["fsync-off", "fsync-on"])
def test_writers_indexes_equal_a_rescan_after_random_appends_from_several_processes(
    tmp_path, fsync
):
    directory = tmp_path / "pool"
    reader = JsonlStore(directory, fsync=False)
    random_traffic(reader, random.Random(0), 40)  # some history before the writers start
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(4), context.Queue()
    writers = [
        context.Process(target=_writer, args=(directory, seed, fsync, barrier, results))
        for seed in range(1, 5)
    ]
    for writer in writers:
        writer.start()
    views = [results.get(timeout=60) for _ in writers]
    for writer in writers:
        writer.join(timeout=30)
        assert writer.exitcode == 0
    fresh = view(JsonlStore(directory, fsync=False))
    assert fresh["stats"]["lines"] > 200
    assert fresh["locations"] and any(fresh["pending"].values())
    for writer_view in views:
        assert writer_view == fresh
    assert view(reader) == fresh


def test_an_append_after_a_torn_line_keeps_both_and_matches_a_rescan(tmp_path):
    directory = tmp_path / "pool"
    store = JsonlStore(directory, fsync=False)
    task = store.post_task(sender="user:ops", to="device:d0", title="before").message
    path = directory / f"{day_of(store.now()).isoformat()}.jsonl"
    with open(path, "ab") as file:
        file.write(b'{"id": "torn')  # a writer that crashed mid-line
    store.pending_for("d0")
    second = store.post_task(sender="user:ops", to="device:d0", title="after").message
    third = store.post_task(sender="user:ops", to="device:d0", title="again").message
    assert path.read_bytes().splitlines()[1] == b'{"id": "torn'
    assert [t["id"] for t in store.pending_for("d0")] == [task["id"], second["id"], third["id"]]
    assert store.stats()["skipped_lines"] == 1
    assert view(store) == view(JsonlStore(directory, fsync=False))


def test_a_heartbeat_after_a_torn_line_keeps_both_and_matches_a_rescan(tmp_path):
    directory = tmp_path / "pool"
    store = JsonlStore(directory, fsync=False)
    store.post_heartbeat(device_id="d0")  # heartbeats are appended without the index
    path = directory / f"{day_of(store.now()).isoformat()}.jsonl"
    with open(path, "ab") as file:
        file.write(b'{"id": "torn')
    beat = store.post_heartbeat(device_id="d1", body="after")
    task = store.post_task(sender="user:ops", to="device:d0", title="then").message
    lines = path.read_bytes().splitlines()
    assert lines[1] == b'{"id": "torn'
    assert [orjson.loads(line)["id"] for line in lines[2:]] == [beat["id"], task["id"]]
    assert store.device_activity(["d1"])["d1"].last_heartbeat == beat["ts"]
    assert store.stats() == {"lines": 3, "skipped_lines": 1, "open_tasks": 1}
    assert view(store) == view(JsonlStore(directory, fsync=False))


class _OperatorRacingAppender(Appender):
    """An appender whose day file gets a line from ``cat >>`` (no lock) just before it writes."""

    racing_line = b""

    def _writer_for(self, day, inode):
        writer = super()._writer_for(day, inode)
        if self.racing_line:
            with open(self.files.path(day), "ab") as file:
                file.write(self.racing_line)
            self.racing_line = b""
        return writer


def test_a_line_appended_without_the_lock_meanwhile_is_read_in_file_order(tmp_path):
    directory = tmp_path / "pool"
    store = JsonlStore(directory, fsync=False)
    racing = store._appender = _OperatorRacingAppender(store._files, fsync=False)
    first = store.post_task(sender="user:ops", to="device:d0", title="first").message
    operator = dict(first, id="msg_" + "e" * 32, title="by hand")
    racing.racing_line = orjson.dumps(operator) + b"\n"
    mine = store.post_task(sender="user:ops", to="device:d0", title="mine").message
    ids = [t["id"] for t in store.pending_for("d0")]
    assert ids == [first["id"], operator["id"], mine["id"]]
    assert view(store) == view(JsonlStore(directory, fsync=False))


@pytest.mark.parametrize("kind", ["task", "heartbeat"])
def test_a_replaced_day_file_is_not_written_through_the_old_descriptor(tmp_path, kind):
    directory = tmp_path / "pool"
    store = JsonlStore(directory, fsync=False)
    store.post_task(sender="user:ops", to="device:d0", title="old")
    store.post_heartbeat(device_id="d0")
    path = directory / f"{day_of(store.now()).isoformat()}.jsonl"
    replacement = path.with_suffix(".new")
    replacement.write_bytes(b"")
    replacement.rename(path)  # an operator swaps the file for an empty one
    if kind == "task":
        new = store.post_task(sender="user:ops", to="device:d0", title="new").message
        assert [t["id"] for t in store.pending_for("d0")] == [new["id"]]
    else:
        new = store.post_heartbeat(device_id="d0")
        assert store.pending_for("d0") == []
    assert [orjson.loads(line)["id"] for line in path.read_bytes().splitlines()] == [new["id"]]
    assert view(store) == view(JsonlStore(directory, fsync=False))
