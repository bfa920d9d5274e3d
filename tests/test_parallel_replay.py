"""A first start that replays the day files in worker processes sees exactly what
reading them in order sees (``taskpool.stores.jsonl.parallel_replay``).

The pools here span four days, with answers, claims and cancels reaching
back to tasks of earlier days, so the fold of the segments' indexes has to
put each of them right, and cuts falling inside day files. Each test checks
that the workers really ran.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from bench.history import write_history
from taskpool.days import day_of
from taskpool.messages import encode_line
from taskpool.stores.jsonl import JsonlStore, checkpoint, parallel_replay
from tests.support import append_raw, message
from tests.test_store_rescan import DEVICES, random_traffic, task_ids_in, view

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        parallel_replay.available_cpus() < 2, reason="one CPU: the store never replays in parallel"
    ),
]

DAY = 86400


class NeverCheckpointingStore(JsonlStore):
    checkpoint_lines = 10**12


def multi_day_pool(directory: Path, seed: int) -> None:
    """Four days of random traffic, one store per day as a restarted server would be."""
    rng = random.Random(seed)
    start = time.time() - 3 * DAY - 600
    for number in range(4):
        moment = start + number * DAY
        store = NeverCheckpointingStore(directory, fsync=False, clock=lambda m=moment: m)
        random_traffic(store, rng, 150)
        store.post_task(sender="user:ops", to=f"device:{DEVICES[number]}", title="short", ttl=60)
        store.close()


def replayed(directory: Path, *, parallel: bool, monkeypatch) -> tuple[dict, JsonlStore]:
    (directory / checkpoint.CHECKPOINT_FILE_NAME).unlink(missing_ok=True)
    monkeypatch.setattr(parallel_replay, "MIN_BYTES", 0 if parallel else 10**18)
    store = NeverCheckpointingStore(directory, fsync=False)
    return view(store), store


@pytest.mark.parametrize(("seed", "cpus"), [(1, 2), (2, 3), (3, 7)])
def test_a_parallel_replay_equals_reading_the_files_in_order(tmp_path, monkeypatch, seed, cpus):
    directory = tmp_path / "pool"
    multi_day_pool(directory, seed)
    in_order, store = replayed(directory, parallel=False, monkeypatch=monkeypatch)
    assert store._tail.days_replayed_in_parallel == 0
    monkeypatch.setattr(parallel_replay, "available_cpus", lambda: cpus)
    in_parallel, store = replayed(directory, parallel=True, monkeypatch=monkeypatch)
    assert store._tail.days_replayed_in_parallel == 4
    assert store._tail.segments_replayed_in_parallel == cpus  # 7 cuts some days in two
    assert in_parallel == in_order
    assert any(in_order["pending"].values())  # something is still open to compare
    # Newest first, as the files have them: the days before the last are held compacted.
    listed = [task_id for task_id, _statuses in in_order["tasks"]]
    assert listed == task_ids_in(directory)[::-1]


def done_by(device: str, parent_id: str, *, seconds_ago: float) -> dict:
    """A ``done`` answer from ``device`` to ``parent_id``, as a line in a day file has it."""
    return message(
        kind="response",
        sender=f"device:{device}",
        to="user:ops@example.com",
        ts=time.time() - seconds_ago,
        parent_id=parent_id,
        meta={"status": "done"},
    )


def test_lines_the_workers_cannot_place_alone_are_placed_as_in_order(tmp_path, monkeypatch):
    """Answers to other days' tasks, an answer before its task, one to no task, a torn line."""
    directory = tmp_path / "pool"
    multi_day_pool(directory, 4)
    today = day_of(time.time())
    earlier = message(to="device:[d0,d1]", ts=time.time() - 2 * DAY, title="two days ago")
    task = message(to="device:d2", ts=time.time() - 30, title="answered before it was sent")
    early_answer = done_by("d0", task["id"], seconds_ago=60)
    append_raw(directory, day_of(time.time() - 2 * DAY), encode_line(earlier))
    append_raw(directory, today, encode_line(early_answer) + encode_line(task))
    answer = done_by("d0", earlier["id"], seconds_ago=20)
    nowhere = done_by("d1", "msg_" + "f" * 32, seconds_ago=10)
    append_raw(directory, today, encode_line(answer) + encode_line(nowhere) + b'{"torn":')

    in_order, _ = replayed(directory, parallel=False, monkeypatch=monkeypatch)
    in_parallel, store = replayed(directory, parallel=True, monkeypatch=monkeypatch)
    assert store._tail.days_replayed_in_parallel == 4
    assert in_parallel == in_order
    assert earlier["id"] in in_order["pending"]["d1"]
    assert earlier["id"] not in in_order["pending"]["d0"]
    assert task["id"] in in_order["pending"]["d2"]


def test_a_task_line_repeated_from_an_earlier_day_makes_it_read_in_order(tmp_path, monkeypatch):
    directory = tmp_path / "pool"
    multi_day_pool(directory, 5)
    first_day = min(directory.glob("*.jsonl"))
    repeated = next(
        line for line in first_day.read_bytes().splitlines() if b'"type":"task"' in line
    )
    append_raw(directory, day_of(time.time()), repeated + b"\n")

    in_order, _ = replayed(directory, parallel=False, monkeypatch=monkeypatch)
    in_parallel, store = replayed(directory, parallel=True, monkeypatch=monkeypatch)
    assert store._tail.days_replayed_in_parallel == 0  # the fold refused; read in order
    assert in_parallel == in_order


@pytest.mark.parametrize("exit_code", [1, 0], ids=["fails", "answers-nothing"])
def test_a_failing_worker_makes_it_read_in_order(tmp_path, monkeypatch, exit_code):
    directory = tmp_path / "pool"
    multi_day_pool(directory, 6)
    in_order, _ = replayed(directory, parallel=False, monkeypatch=monkeypatch)
    broken = tmp_path / "python3"  # an interpreter that runs no worker at all
    broken.write_text(f"#!/bin/sh\nexit {exit_code}\n")
    broken.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(broken))
    monkeypatch.setattr(parallel_replay, "MIN_BYTES", 0)
    assert parallel_replay.worth_it(sorted(directory.glob("*.jsonl")))  # so it tries
    in_parallel, store = replayed(directory, parallel=True, monkeypatch=monkeypatch)
    assert store._tail.days_replayed_in_parallel == 0
    assert in_parallel == in_order


def test_no_workers_where_the_executable_is_not_python(tmp_path, monkeypatch):
    """Under uWSGI ``sys.executable`` is uwsgi, whose ``-m`` means something else."""
    directory = tmp_path / "pool"
    multi_day_pool(directory, 8)
    monkeypatch.setattr(parallel_replay, "MIN_BYTES", 0)
    paths = sorted(directory.glob("*.jsonl"))
    assert parallel_replay.worth_it(paths)
    monkeypatch.setattr(sys, "executable", "/usr/bin/uwsgi")
    assert not parallel_replay.worth_it(paths)


def test_appends_after_a_parallel_replay_are_read_on_from_where_the_workers_stopped(
    tmp_path, monkeypatch
):
    directory = tmp_path / "pool"
    multi_day_pool(directory, 7)
    _, store = replayed(directory, parallel=True, monkeypatch=monkeypatch)
    assert store._tail.days_replayed_in_parallel == 4
    other = JsonlStore(directory, fsync=False)
    posted = other.post_task(sender="user:ops", to="device:d5", title="later").message
    assert posted["id"] in [task["id"] for task in store.pending_for("d5", limit=1000)]
    in_order, _ = replayed(directory, parallel=False, monkeypatch=monkeypatch)
    assert view(store) == in_order


def test_the_checkpoint_written_after_a_parallel_replay_resumes_to_the_same_view(
    tmp_path, monkeypatch
):
    class EagerStore(JsonlStore):
        checkpoint_lines = 20

    directory = tmp_path / "pool"
    multi_day_pool(directory, 9)
    in_order, _ = replayed(directory, parallel=False, monkeypatch=monkeypatch)
    monkeypatch.setattr(parallel_replay, "MIN_BYTES", 0)
    first = EagerStore(directory, fsync=False)
    first.stats()
    assert first._tail.days_replayed_in_parallel == 4
    assert (directory / checkpoint.CHECKPOINT_FILE_NAME).exists()
    again = NeverCheckpointingStore(directory, fsync=False)
    assert again._tail.resumed
    assert view(again) == in_order


@pytest.mark.parametrize("count", [1, 2, 3, 5, 9])
def test_segments_cover_every_byte_once_and_cut_at_line_starts(tmp_path, count):
    rng = random.Random(count)
    days = []
    for number in range(4):
        path = tmp_path / f"2026-06-0{number + 1}.jsonl"
        lines = [b"x" * rng.randrange(1, 300) + b"\n" for _ in range(rng.randrange(1, 60))]
        path.write_bytes(b"".join(lines))
        days.append((day_of(time.time()) - timedelta(days=4 - number), path))
    total = sum(path.stat().st_size for _day, path in days)

    segments = parallel_replay.plan_segments(days, count)

    assert len(segments) == count
    pieces = [piece for segment in segments for piece in segment]
    for day, path in days:
        mine = [piece for piece in pieces if piece.day == day]
        assert mine[0].start == 0
        for before, after in itertools.pairwise(mine):
            assert before.stop == after.start  # contiguous, nothing read twice
            assert path.read_bytes()[after.start - 1 : after.start] == b"\n"
        assert mine[-1].stop is None  # read to the file's end
    assert [piece.day for piece in pieces] == sorted(piece.day for piece in pieces)
    for segment in segments:
        size = sum(
            (piece.stop if piece.stop is not None else piece.path.stat().st_size) - piece.start
            for piece in segment
        )
        assert abs(size - total / count) <= 300  # within a line of an equal share


def test_a_segment_that_does_not_start_where_the_index_stopped_is_not_folded(tmp_path, monkeypatch):
    """A gap between two segments (a file changed under the plan): the store reads in order."""
    directory = tmp_path / "pool"
    multi_day_pool(directory, 10)
    in_order, _ = replayed(directory, parallel=False, monkeypatch=monkeypatch)
    real = parallel_replay.read_segments

    def read_with_a_gap(segments, task_ttl, now):
        readings = real(segments, task_ttl, now)
        first = readings[1].pieces[0]
        readings[1].pieces[0] = dataclasses.replace(first, start=first.start + 1)
        return readings

    monkeypatch.setattr(parallel_replay, "available_cpus", lambda: 3)
    monkeypatch.setattr(parallel_replay, "read_segments", read_with_a_gap)
    in_parallel, store = replayed(directory, parallel=True, monkeypatch=monkeypatch)
    assert store._tail.days_replayed_in_parallel == 0
    assert in_parallel == in_order


def test_the_workers_say_nothing_on_stderr(tmp_path, monkeypatch, capfd):
    """A worker is not run as ``-m`` of a module its package already imported (Python warns)."""
    directory = tmp_path / "pool"
    multi_day_pool(directory, 5)
    capfd.readouterr()
    monkeypatch.setattr(parallel_replay, "available_cpus", lambda: 2)
    _view, store = replayed(directory, parallel=True, monkeypatch=monkeypatch)
    assert store._tail.segments_replayed_in_parallel == 2
    assert capfd.readouterr().err == ""


def test_a_worker_imports_the_index_without_django_or_the_store():
    """Each worker starts a new interpreter: importing Django and the store cost each one
    a fifth of a second of a first start."""
    probe = (
        parallel_replay.WORKER.split(";")[1].strip()
        + "; import sys; print(sorted(name for name in sys.modules"
        " if name.startswith(('django.conf', 'taskpool.stores.jsonl.store', 'taskpool.conf'))))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


#: A server's first start: the store's warm-up thread replays the files while the main
#: thread serves. Two workers, so that each has a long share whatever the machine's CPUs.
SERVER_FIRST_START = """
import sys, time
from pathlib import Path
from taskpool.stores.jsonl import JsonlStore, parallel_replay
parallel_replay.available_cpus = lambda: 2
JsonlStore(Path(sys.argv[1]), fsync=False).health(ready=True)
time.sleep(600)
"""


def replay_workers_of(parent_pid: int) -> list[int]:
    """The replay workers whose parent is ``parent_pid`` (once they run the worker, not a fork)."""
    workers = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_bytes()
            command = (entry / "cmdline").read_bytes()
        except OSError:  # it ended meanwhile
            continue
        ppid = int(stat.rsplit(b")", 1)[1].split()[1])
        if ppid == parent_pid and b"parallel_replay.main" in command:
            workers.append(int(entry.name))
    return workers


def running(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting to be reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except FileNotFoundError:
        return False
    return stat.rsplit(b")", 1)[1].split()[0] != b"Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_the_workers_end_when_the_server_that_started_them_is_killed(tmp_path):
    """A server killed with SIGKILL in its first start (a stop timeout, the OOM killer) runs
    no ``finally``: its workers must not read on, taking the CPU its restart needs.

    About 110 MB of day files, a few seconds of replay per worker here; they are killed
    a fraction of a second after they start.
    """
    directory = tmp_path / "pool"
    write_history(directory, 400_000)
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER_FIRST_START, str(directory)], env=environment
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 2 and time.monotonic() < deadline and server.poll() is None:
            time.sleep(0.01)
            workers = replay_workers_of(server.pid)
        assert len(workers) == 2, "the server started no replay workers"
        time.sleep(0.3)  # the workers are reading
        assert all(running(pid) for pid in workers)

        os.kill(server.pid, signal.SIGKILL)
        server.wait()
        killed_at = time.monotonic()
        while any(running(pid) for pid in workers) and time.monotonic() - killed_at < 30:
            time.sleep(0.01)
        lived_on = time.monotonic() - killed_at

        assert lived_on < 1.0, f"the replay workers read on {lived_on:.1f} s after the server died"
    finally:
        server.kill()
        server.wait()
        for pid in workers:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
