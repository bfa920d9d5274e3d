"""Several writers at once, each append under the directory's lock: real processes and threads, real flocks, nothing lost or mixed."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from taskpool.exceptions import AlreadyAnswered
from taskpool.messages import decode_line
from taskpool.stores.jsonl import JsonlStore
from tests.pool_writer import body_for

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent


def start_writers(*arguments: list[str]) -> list[subprocess.Popen[str]]:
    """Start one ``tests.pool_writer`` per argument list, all waiting for the go signal."""
    return [
        subprocess.Popen(
            [sys.executable, "-m", "tests.pool_writer", *args],
            cwd=REPOSITORY,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in arguments
    ]


def run_together(
    processes: list[subprocess.Popen[str]], while_running: Callable[[], None] = lambda: None
) -> list[list[str]]:
    """Let every process go at once, call ``while_running`` until all have finished,
    and return each one's stdout lines."""
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    while any(process.poll() is None for process in processes):
        while_running()
    outputs = []
    for process in processes:
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr
        outputs.append(stdout.split())
    return outputs


def all_lines(directory: Path) -> list[bytes]:
    """Every line of every day file, in pool order; each file must end with a newline."""
    lines: list[bytes] = []
    for path in sorted(directory.glob("*.jsonl")):
        data = path.read_bytes()
        assert data.endswith(b"\n"), f"{path.name} ends in a torn line"
        lines.extend(data[:-1].split(b"\n"))
    return lines


def test_writer_processes_lose_nothing_and_interleave_nothing(pool_dir):
    writers, count = 4, 42
    names = [f"w{number}" for number in range(writers)]
    reader = JsonlStore(pool_dir, fsync=False)
    seen: list[int] = []

    def read_while_they_write() -> None:
        # A reader racing the writers sees whole lines only, and never fewer than before.
        seen.append(len(reader.pending_for("pi-1", limit=1000)))
        assert reader.stats()["skipped_lines"] == 0

    outputs = run_together(
        start_writers(*[["tasks", str(pool_dir), name, str(count)] for name in names]),
        read_while_they_write,
    )
    assert seen == sorted(seen)

    lines = all_lines(pool_dir)
    assert len(lines) == writers * count
    assert max(len(line) for line in lines) > 60_000
    messages = [decode_line(line) for line in lines]  # every line parses
    for message in messages:
        writer, number = message["title"].split(":")
        assert message["body"] == body_for(writer, int(number))
    for name, printed in zip(names, outputs, strict=True):
        # Each writer's lines are all there, once each, in the order it wrote them.
        in_file_order = [m["id"] for m in messages if m["title"].startswith(name + ":")]
        assert in_file_order == printed
        assert [m["title"] for m in messages if m["title"].startswith(name + ":")] == [
            f"{name}:{number}" for number in range(count)
        ]
    assert len({m["id"] for m in messages}) == writers * count

    assert [m["id"] for m in reader.pending_for("pi-1", limit=1000)] == [m["id"] for m in messages]
    assert reader.stats()["skipped_lines"] == 0


def test_one_terminal_answer_wins_across_processes(pool_dir):
    store = JsonlStore(pool_dir, fsync=False)
    task = store.post_task(sender="backend", to="device:pi-1", title="once").message
    outputs = run_together(start_writers(*[["answer", str(pool_dir), "pi-1", task["id"]]] * 4))
    outcomes = sorted(" ".join(output) for output in outputs)
    assert outcomes == ["ok", *["refused AlreadyAnswered"] * 3]
    answers = [decode_line(line) for line in all_lines(pool_dir)][1:]
    assert [(a["from"], a["parent_id"], a["meta"]["status"]) for a in answers] == [
        ("device:pi-1", task["id"], "done")
    ]
    with pytest.raises(AlreadyAnswered):
        store.post_response(device_id="pi-1", parent_id=task["id"], status="done")


def test_a_broadcast_takes_one_answer_from_each_device_across_processes(pool_dir):
    store = JsonlStore(pool_dir, fsync=False)
    task = store.post_task(sender="backend", to="device:*", title="each").message
    devices = [f"pi-{number}" for number in range(3)]
    arguments = [
        ["answer", str(pool_dir), device, task["id"]] for device in devices for _ in range(2)
    ]
    outputs = run_together(start_writers(*arguments))
    per_device = {
        device: sorted(
            " ".join(o) for a, o in zip(arguments, outputs, strict=True) if a[2] == device
        )
        for device in devices
    }
    assert per_device == {device: ["ok", "refused AlreadyAnswered"] for device in devices}
    assert all(store.pending_for(device) == [] for device in devices)
    assert [m["id"] for m in store.pending_for("pi-9")] == [task["id"]]


def test_threads_sharing_one_store_lose_nothing(pool_dir):
    store = JsonlStore(pool_dir, fsync=False)
    threads_count, count = 6, 40
    seen_while_writing: list[int] = []
    errors: list[BaseException] = []

    def write(name: str) -> None:
        try:
            for number in range(count):
                store.post_task(
                    sender="backend",
                    to="device:pi-1",
                    title=f"{name}:{number}",
                    body=body_for(name, number),
                )
                seen_while_writing.append(len(store.pending_for("pi-1", limit=1000)))
        except BaseException as error:  # surfaced below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=write, args=(f"t{n}",)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    messages = [decode_line(line) for line in all_lines(pool_dir)]
    assert len(messages) == threads_count * count
    for message in messages:
        writer, number = message["title"].split(":")
        assert message["body"] == body_for(writer, int(number))
    assert len(store.pending_for("pi-1", limit=1000)) == threads_count * count
    assert max(seen_while_writing) == threads_count * count


def watch_catch_ups(store: JsonlStore, pool_dir: Path) -> list[tuple[bool, int]]:
    """Record, for each time ``store`` catches up, whether the pool's lock was held
    (probed with a real ``flock`` of our own) and how many lines it read."""
    probe = os.open(pool_dir / ".lock", os.O_RDWR)
    reads: list[tuple[bool, int]] = []
    advance = store._tail.advance

    def watched_advance(**kwargs):
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            held = True
        else:
            held = False
            fcntl.flock(probe, fcntl.LOCK_UN)
        before = store._tail.lines_read
        now = advance(**kwargs)
        reads.append((held, store._tail.lines_read - before))
        return now

    store._tail.advance = watched_advance
    return reads


def test_a_fresh_process_catches_up_before_it_takes_the_pool_lock(pool_dir):
    """Its first write must not replay the history while every other writer waits."""
    history = JsonlStore(pool_dir, fsync=False)
    for number in range(2000):
        history.post_task(sender="user:ops", to=f"device:d{number % 7}", title=f"t{number}")
    (pool_dir / ".index-checkpoint").unlink(missing_ok=True)

    fresh = JsonlStore(pool_dir, fsync=False)
    reads = watch_catch_ups(fresh, pool_dir)
    fresh.post_task(sender="user:ops", to="device:d0", title="first write of a fresh process")
    assert (False, 2000) in reads
    assert [lines for held, lines in reads if held] == [0]
    assert len(fresh.pending_for("d0", limit=1000)) == 287


def test_an_idle_process_catches_up_before_it_takes_the_pool_lock(pool_dir, monkeypatch):
    busy, idle = JsonlStore(pool_dir, fsync=False), JsonlStore(pool_dir, fsync=False)
    idle.stats()
    for number in range(500):
        busy.post_task(sender="user:ops", to="device:d1", title=f"t{number}")
    monkeypatch.setattr("taskpool.stores.jsonl.store.CATCH_UP_UNLOCKED_AFTER", 0.0)  # it has idled
    reads = watch_catch_ups(idle, pool_dir)
    idle.post_task(sender="user:ops", to="device:d1", title="after a while")
    assert reads[0] == (False, 500)
    assert [lines for held, lines in reads if held] == [0]
    assert len(idle.pending_for("d1", limit=1000)) == 501
