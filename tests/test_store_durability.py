"""Durability: an append is acknowledged only after a sync that covers its line, and a
disk that cannot take it refuses it without leaving half a line behind.

The store syncs after releasing the pool's lock, so writers that arrive
together share a sync (group commit). These tests watch the real syncs
(``Appender.finish`` still calls ``fdatasync``) and check each acknowledged
line was in its file when a sync of that file began, before the call returned.
A full disk is made real with ``RLIMIT_FSIZE`` in a child process: the kernel
then writes a line short, and refuses the next, as a full filesystem does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from taskpool.exceptions import StoreFull
from taskpool.messages import decode_line
from taskpool.stores.jsonl import JsonlStore
from taskpool.stores.jsonl.appender import Appender


class WatchedAppender(Appender):
    """Records, per thread, each sync it makes: (file inode, file size when the sync began)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.syncs: dict[int, list[tuple[int, int]]] = {}

    def finish(self, descriptor: int) -> None:
        if descriptor >= 0:
            stat = os.fstat(descriptor)
            self.syncs.setdefault(threading.get_ident(), []).append((stat.st_ino, stat.st_size))
        super().finish(descriptor)


def watched_store(directory: Path, *, fsync: bool) -> tuple[JsonlStore, WatchedAppender]:
    store = JsonlStore(directory, fsync=fsync)
    store._appender = WatchedAppender(store._files, fsync=fsync)
    return store, store._appender


def line_end(store: JsonlStore, message_id: str) -> tuple[int, int]:
    """The inode of the file holding the message, and the offset just past its line."""
    (path,) = store.directory.glob("*.jsonl")
    data = path.read_bytes()
    start = data.index(message_id.encode())
    return os.stat(path).st_ino, data.index(b"\n", start) + 1


def test_each_acknowledged_append_was_synced_first(tmp_path):
    store, appender = watched_store(tmp_path / "pool", fsync=True)
    task = store.post_task(sender="user:ops", to="device:a", title="x").message
    heartbeat = store.post_heartbeat(device_id="a")
    answer = store.post_response(device_id="a", parent_id=task["id"], status="done").message
    syncs = appender.syncs[threading.get_ident()]
    assert len(syncs) == 3
    for (inode, size), message in zip(syncs, (task, heartbeat, answer), strict=True):
        file_inode, end = line_end(store, message["id"])
        assert inode == file_inode and size >= end


def test_without_fsync_nothing_is_synced_and_the_setting_can_change(tmp_path):
    store, appender = watched_store(tmp_path / "pool", fsync=False)
    store.post_heartbeat(device_id="a")
    assert appender.syncs == {}
    store.fsync = True
    store.post_heartbeat(device_id="a")
    assert len(appender.syncs[threading.get_ident()]) == 1


@pytest.mark.parametrize("kind", ["task", "heartbeat"])
def test_concurrent_writers_are_each_acknowledged_after_a_sync_covering_their_line(tmp_path, kind):
    store, appender = watched_store(tmp_path / "pool", fsync=True)
    acknowledged: dict[int, list[str]] = {}
    start = threading.Barrier(8)

    def write() -> None:
        start.wait()
        mine = acknowledged.setdefault(threading.get_ident(), [])
        for number in range(15):
            if kind == "task":
                message = store.post_task(sender="user:ops", to="device:a", title=str(number))
                mine.append(message.message["id"])
            else:
                mine.append(store.post_heartbeat(device_id="a", body=str(number))["id"])

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(len(ids) for ids in acknowledged.values()) == 120
    for ident, ids in acknowledged.items():
        syncs = appender.syncs[ident]
        assert len(syncs) == len(ids)  # one sync per acknowledged write, in that thread
        for (inode, size), message_id in zip(syncs, ids, strict=True):
            file_inode, end = line_end(store, message_id)
            assert inode == file_inode and size >= end


# A full disk -------------------------------------------------------------------------

FILL_UP = """
import json, resource, signal, sys
from taskpool.exceptions import StoreUnavailable
from taskpool.stores.jsonl import JsonlStore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the kernel then answers EFBIG or a short write
store = JsonlStore(sys.argv[1], fsync=True)
store.post_task(sender="backend", to="device:pi-1", title="first")  # opens the day file
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
acknowledged, refusals = [], []
for number in range(60):
    try:
        posted = store.post_task(sender="backend", to="device:pi-1", title=f"task {number}", body="x" * 90)
    except StoreUnavailable as error:
        refusals.append([error.message, type(error).__name__])
    else:
        acknowledged.append(posted.message["id"])
print(json.dumps({"acknowledged": acknowledged, "refusals": refusals}))
"""


def test_a_full_disk_refuses_the_write_and_leaves_no_half_line(tmp_path):
    directory = tmp_path / "pool"
    done = subprocess.run(
        [sys.executable, "-c", FILL_UP, str(directory), "4000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result = json.loads(done.stdout)
    assert result["acknowledged"] and result["refusals"]
    message, kind = result["refusals"][0]
    assert message.startswith("The pool cannot store the message now") and kind == "StoreFull"
    (day_file,) = directory.glob("*.jsonl")
    data = day_file.read_bytes()
    assert len(data) <= 4000 and data.endswith(b"\n")  # the short line was taken back
    stored = [decode_line(line) for line in data[:-1].split(b"\n")]
    assert [m["id"] for m in stored[1:]] == result["acknowledged"]

    # Room again: the pool goes on, with every acknowledged task and nothing else.
    store = JsonlStore(directory, fsync=True)
    later = store.post_task(sender="backend", to="device:pi-1", title="later").message
    pending = [m["id"] for m in store.pending_for("pi-1", limit=1000)]
    assert pending == [stored[0]["id"], *result["acknowledged"], later["id"]]


def test_a_sync_that_fails_is_a_refusal_not_an_acknowledgement(tmp_path, monkeypatch):
    from taskpool.stores.jsonl import appender

    class SyncFails:
        def __getattr__(self, name: str):
            return getattr(os, name)

        def fdatasync(self, descriptor: int) -> None:
            raise OSError(28, "No space left on device")

    store = JsonlStore(tmp_path / "pool", fsync=True)
    monkeypatch.setattr(appender, "os", SyncFails())
    with pytest.raises(StoreFull) as refusal:
        store.post_heartbeat(device_id="a")
    assert "No space left on device" in refusal.value.message


def test_other_os_errors_are_not_dressed_up_as_a_full_disk(tmp_path, monkeypatch):
    store = JsonlStore(tmp_path / "pool", fsync=False)

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(store._appender, "append", denied)
    with pytest.raises(PermissionError):
        store.post_heartbeat(device_id="a")


FAILED_SYNC = """
import json, sys
from taskpool.exceptions import StoreUnavailable
from taskpool.stores.jsonl import JsonlStore

store = JsonlStore(sys.argv[1], fsync=True)
try:
    posted = store.post_task(sender="backend", to="device:pi-1", title="synced?", idempotency_key="k" * 32)
except StoreUnavailable as error:
    print(json.dumps({"refused": error.message}))
"""


def test_a_sync_the_disk_fails_is_refused_saying_the_message_may_be_stored(tmp_path):
    """The line is in the file before its sync, and other lines may follow it: it cannot be
    taken back. The refusal says so, and the key that stores it once."""
    import shutil

    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("needs strace to make the disk's sync fail (apt-get install strace)")
    directory = tmp_path / "pool"
    done = subprocess.run(
        [strace, "-f", "-qq", "-o", os.devnull, "-e", "trace=fdatasync"]
        + ["-e", "inject=fdatasync:error=EIO", sys.executable, "-c", FAILED_SYNC, str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    refused = json.loads(done.stdout)["refused"]
    assert refused.startswith("The disk did not make the message durable (Input/output error)")
    assert "same Idempotency-Key" in refused
    (day_file,) = directory.glob("*.jsonl")
    (line,) = day_file.read_bytes().splitlines()
    assert decode_line(line)["title"] == "synced?"  # in the pool, as the refusal warned
    again = JsonlStore(directory, fsync=False).post_task(
        sender="backend", to="device:pi-1", title="synced?", idempotency_key="k" * 32
    )
    assert again.created is False  # sent again with its key: stored once
