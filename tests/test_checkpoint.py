"""Start-up checkpoints: a store that resumes from one sees exactly what a full replay sees,
and a checkpoint that no longer describes the files is ignored."""

from __future__ import annotations

import pickle
import random
import threading
from pathlib import Path

import pytest

from taskpool.days import day_of
from taskpool.executions import record_status
from taskpool.stores.jsonl import JsonlStore, checkpoint
from tests.test_store_rescan import random_traffic, view


class EagerStore(JsonlStore):
    """Checkpoints every 20 lines, so a short test writes several."""

    checkpoint_lines = 20


class NeverCheckpointingStore(JsonlStore):
    checkpoint_lines = 10**12


def full_replay_view(directory: Path) -> dict:
    """What a store sees with no checkpoint to start from."""
    (directory / checkpoint.CHECKPOINT_FILE_NAME).unlink(missing_ok=True)
    return view(NeverCheckpointingStore(directory, fsync=False))


def resumed(directory: Path, **kwargs) -> JsonlStore:
    """A store that must start from the checkpoint on disk."""
    assert (directory / checkpoint.CHECKPOINT_FILE_NAME).exists()
    return NeverCheckpointingStore(directory, fsync=False, **kwargs)


def test_resuming_from_a_checkpoint_then_reading_on_equals_a_full_replay(tmp_path):
    directory = tmp_path / "pool"
    store = EagerStore(directory, fsync=False)
    random_traffic(store, random.Random(1), 150)
    store.pending_for("d0")  # a read writes the checkpoint (writes never do, under the lock)
    assert (directory / checkpoint.CHECKPOINT_FILE_NAME).exists()
    random_traffic(NeverCheckpointingStore(directory, fsync=False), random.Random(2), 60)

    restarted = resumed(directory)
    assert restarted._tail.lines_read > 100  # it begins where the checkpoint left off
    assert view(restarted) == full_replay_view(directory)


def test_a_store_that_resumed_keeps_appending_consistently(tmp_path):
    directory = tmp_path / "pool"
    store = EagerStore(directory, fsync=False)
    random_traffic(store, random.Random(3), 100)
    store.stats()
    restarted = resumed(directory)
    random_traffic(restarted, random.Random(4), 100)
    assert view(restarted) == full_replay_view(directory)


def checkpointed_pool(tmp_path: Path) -> tuple[Path, Path]:
    directory = tmp_path / "pool"
    store = EagerStore(directory, fsync=False)
    for number in range(30):
        store.post_task(sender="user:ops", to="device:d0", title=f"task {number:02d}")
    store.stats()
    day_file = directory / f"{day_of(store.now()).isoformat()}.jsonl"
    return directory, day_file


def test_a_pool_with_job_tasks_resumes_from_its_checkpoint(tmp_path):
    """Jobs' options and runs are data of the checkpoint, not globals it refuses."""
    directory = tmp_path / "pool"
    store = EagerStore(directory, fsync=False)
    for number in range(25):
        posted = store.post_task(
            sender="user:ops",
            to="device:*" if number % 2 else "device:[d0,d1]",
            title="job",
            retries={"max_attempts": 3, "on": ["failed"], "backoff": 60},
            timeout={"in_progress": 600},
        )
        store.post_response(device_id="d0", parent_id=posted.message["id"], status="failed")
    store.pending_for("d0")
    restarted = resumed(directory)
    assert restarted._tail.resumed
    assert view(restarted) == full_replay_view(directory)


def test_a_day_file_rewritten_in_place_invalidates_the_checkpoint(tmp_path):
    directory, day_file = checkpointed_pool(tmp_path)
    data = day_file.read_bytes()
    assert data.count(b'"task 29"') == 1
    day_file.write_bytes(data.replace(b'"task 29"', b'"edited!"'))  # same inode, same size
    titles = [task["title"] for task in resumed(directory).pending_for("d0")]
    assert titles[-1] == "edited!"
    assert view(resumed(directory)) == full_replay_view(directory)


def test_a_replaced_day_file_invalidates_the_checkpoint(tmp_path):
    directory, day_file = checkpointed_pool(tmp_path)
    lines = day_file.read_bytes().splitlines(keepends=True)
    replacement = day_file.with_suffix(".new")
    replacement.write_bytes(b"".join(lines[:10]))
    replacement.rename(day_file)
    assert len(resumed(directory).pending_for("d0")) == 10
    assert view(resumed(directory)) == full_replay_view(directory)


def test_another_task_ttl_ignores_the_checkpoint(tmp_path):
    directory, _ = checkpointed_pool(tmp_path)
    assert checkpoint.load(directory, 7 * 86400, lambda day: directory / f"{day}.jsonl")
    assert checkpoint.load(directory, 3600, lambda day: directory / f"{day}.jsonl") is None


def test_a_checkpoint_of_another_layout_is_ignored(tmp_path, monkeypatch):
    """An upgrade that changes the pickled classes must replay, not misread the old file."""
    directory, _ = checkpointed_pool(tmp_path)
    path_of = lambda day: directory / f"{day}.jsonl"  # noqa: E731
    assert checkpoint.load(directory, 7 * 86400, path_of) is not None
    monkeypatch.setattr(checkpoint, "FORMAT_VERSION", checkpoint.FORMAT_VERSION + 1)
    assert checkpoint.load(directory, 7 * 86400, path_of) is None
    assert len(resumed(directory).pending_for("d0")) == 30


@pytest.mark.parametrize("damage", [b"", b"not a pickle", None])
def test_a_damaged_checkpoint_is_ignored(tmp_path, damage):
    directory, _ = checkpointed_pool(tmp_path)
    path = directory / checkpoint.CHECKPOINT_FILE_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage is None else damage)
    assert checkpoint.load(directory, 7 * 86400, lambda day: directory / f"{day}.jsonl") is None
    assert len(resumed(directory).pending_for("d0")) == 30


class _Planted:
    """What a hostile checkpoint would hold: unpickling it would create ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_crafted_checkpoint_runs_nothing_and_the_store_replays(tmp_path):
    directory = tmp_path / "pool"
    store = NeverCheckpointingStore(directory, fsync=False)
    task = store.post_task(sender="user:ops", to="device:d0", title="x").message
    marker = tmp_path / "planted"
    (directory / checkpoint.CHECKPOINT_FILE_NAME).write_bytes(pickle.dumps(_Planted(marker)))

    fresh = NeverCheckpointingStore(directory, fsync=False)
    assert not marker.exists()
    assert [t["id"] for t in fresh.pending_for("d0")] == [task["id"]]
    assert fresh.stats()["lines"] == 1


def test_a_store_finding_no_checkpoint_waits_for_the_one_replaying_then_resumes(tmp_path):
    """Workers started together replay the week once between them, not once each."""
    directory, _ = checkpointed_pool(tmp_path)
    path = directory / checkpoint.CHECKPOINT_FILE_NAME
    saved = path.read_bytes()
    path.unlink()
    late = NeverCheckpointingStore(directory, fsync=False)  # finds no checkpoint
    answers: list[list[dict]] = []
    with checkpoint.replay_lock(directory):  # as a worker replaying would hold it
        reader = threading.Thread(target=lambda: answers.append(late.pending_for("d0")))
        reader.start()
        reader.join(timeout=0.5)
        assert reader.is_alive(), "it read the files itself instead of waiting"
        path.write_bytes(saved)  # the replaying worker's checkpoint, written before it lets go
    reader.join(timeout=30)
    assert not reader.is_alive()
    assert late._tail.resumed
    assert [task["title"] for task in answers[0]] == [f"task {n:02d}" for n in range(30)]


def test_without_a_checkpoint_to_find_a_waiting_store_replays_itself(tmp_path):
    directory, _ = checkpointed_pool(tmp_path)
    (directory / checkpoint.CHECKPOINT_FILE_NAME).unlink()
    store = NeverCheckpointingStore(directory, fsync=False)
    assert len(store.pending_for("d0")) == 30
    assert not store._tail.resumed


def test_answers_share_each_device_name_also_after_a_checkpoint(tmp_path):
    """A fleet's open broadcasts hold every device's answer: one name string for all of
    them, not a copy per answer, and the status coded in the answer's own string.

    Interning the names takes a third off an open broadcast's memory; the
    checkpoint's pickle must keep them shared for a restarted store too.
    """
    directory = tmp_path / "pool"
    store = EagerStore(directory, fsync=False)
    broadcasts = [
        store.post_task(sender="user:ops", to="device:*", title=f"rotate logs {n}").message["id"]
        for n in range(3)
    ]
    for task_id in broadcasts:
        store.post_response(device_id="pi-7", parent_id=task_id, status="done")
    for _ in range(EagerStore.checkpoint_lines):
        store.post_heartbeat(device_id="pi-7")
    store.stats()

    for started in (store, resumed(directory)):
        answers = [started._index.open[task_id].answers for task_id in broadcasts]
        names = [name for answered in answers for name in answered]
        statuses = [record_status(record) for answered in answers for record in answered.values()]
        assert names == ["pi-7"] * 3 and statuses == ["done"] * 3
        assert len({id(name) for name in names}) == 1


def test_a_save_removes_what_a_save_killed_midway_left_and_nothing_else(tmp_path):
    """A process killed while it wrote its checkpoint left a copy of the index behind."""
    import os
    import time

    directory = tmp_path / "pool"
    store = EagerStore(directory, fsync=False)
    random_traffic(store, random.Random(5), 20)
    abandoned = directory / (checkpoint.CHECKPOINT_FILE_NAME + ".k1lled0x")
    in_progress = directory / (checkpoint.CHECKPOINT_FILE_NAME + ".wr1t1ng0")
    for path in (abandoned, in_progress):
        path.write_bytes(b"half an index")
    long_ago = time.time() - checkpoint.ABANDONED_AFTER_SECONDS - 60
    os.utime(abandoned, (long_ago, long_ago))
    random_traffic(store, random.Random(6), 20)
    store.pending_for("d0")  # a read writes the checkpoint
    assert not abandoned.exists()
    assert in_progress.exists()  # another process's save, under way
    assert (directory / checkpoint.CHECKPOINT_FILE_NAME).exists()


def test_a_save_replaces_the_checkpoint_whole_so_a_starting_store_never_reads_half(
    tmp_path, monkeypatch
):
    """Another worker may start while one saves: until the new checkpoint is whole, the
    old one stays in place, whole (read half-written, it would be a full replay)."""
    import os

    directory = tmp_path / "pool"
    store = EagerStore(directory, fsync=False)
    random_traffic(store, random.Random(7), 30)
    store.pending_for("d0")
    path = directory / checkpoint.CHECKPOINT_FILE_NAME
    old = path.read_bytes()
    seen_at_rename = []
    real_replace = os.replace

    def replace(source, target) -> None:
        seen_at_rename.append((Path(source), Path(target).read_bytes(), Path(source).read_bytes()))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", replace)
    random_traffic(store, random.Random(8), 30)
    store.pending_for("d0")  # a read writes the checkpoint
    assert seen_at_rename, "no checkpoint was saved"
    source, in_place, new = seen_at_rename[0]
    assert source != path and in_place == old
    assert path.read_bytes() == new != old
    assert checkpoint.load(directory, store.task_ttl, store._files.path) is not None
