"""Claims from several processes on one pool of day files: each a store of its own,
deciding under the pool's lock. (The lifecycle every store keeps is in ``tests/contract``.)"""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import orjson
import pytest

from taskpool.exceptions import ClaimedByOther
from taskpool.stores.jsonl import JsonlStore


def lines(pool: JsonlStore) -> list[dict]:
    return [
        orjson.loads(line)
        for path in sorted(pool.directory.glob("*.jsonl"))
        for line in path.read_bytes().splitlines()
    ]


def task(pool: JsonlStore, to: str = "device:a", **kwargs) -> dict:
    kwargs.setdefault("title", "job")
    return pool.post_task(sender="user:ops@example.com", to=to, **kwargs).message


def _claim_in_process(directory, device_id, task_ids, barrier, results) -> None:
    store = JsonlStore(directory, fsync=False)
    for task_id in task_ids:
        barrier.wait()
        try:
            store.claim(device_id=device_id, parent_id=task_id)
            results.put((task_id, device_id))
        except ClaimedByOther:
            results.put((task_id, None))


def _claim_until_none(directory, device_id, barrier, results) -> None:
    store = JsonlStore(directory, fsync=False)
    barrier.wait()
    while (claim := store.claim(device_id=device_id)) is not None:
        results.put((claim.task["id"], device_id))
    results.put((None, device_id))


@pytest.fixture
def shared_pool(tmp_path: Path) -> JsonlStore:
    """A pool on the real clock, as the worker processes see it."""
    return JsonlStore(tmp_path / "shared", fsync=False)


@pytest.mark.slow
def test_claim_race_between_processes_has_one_winner_every_time(shared_pool):
    pool = shared_pool
    devices = [f"d{i}" for i in range(6)]
    to = "device:[" + ",".join(devices) + "]"
    task_ids = [task(pool, to, mode="any")["id"] for _ in range(15)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(devices)), context.Queue()
    workers = [
        context.Process(
            target=_claim_in_process, args=(pool.directory, d, task_ids, barrier, results)
        )
        for d in devices
    ]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=30) for _ in range(len(devices) * len(task_ids))]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0
    for task_id in task_ids:
        winners = [device for tid, device in outcomes if tid == task_id and device is not None]
        assert len(winners) == 1, (task_id, winners)
    claims = [line for line in lines(pool) if line["meta"].get("status") == "claimed"]
    assert sorted(c["parent_id"] for c in claims) == sorted(task_ids)


@pytest.mark.slow
def test_processes_claiming_the_oldest_share_the_tasks_without_overlap(shared_pool):
    pool = shared_pool
    devices = [f"d{i}" for i in range(4)]
    task_ids = [task(pool, "device:*", mode="any")["id"] for _ in range(40)]
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(devices)), context.Queue()
    workers = [
        context.Process(target=_claim_until_none, args=(pool.directory, d, barrier, results))
        for d in devices
    ]
    for worker in workers:
        worker.start()
    claimed, finished = [], 0
    while finished < len(devices):
        task_id, _device = results.get(timeout=30)
        if task_id is None:
            finished += 1
        else:
            claimed.append(task_id)
    for worker in workers:
        worker.join(timeout=30)
    assert sorted(claimed) == sorted(task_ids)
