"""FSYNC: an append is acknowledged only after a sync that covers its line (issue 3).

The store syncs after releasing the pool's lock, so writers that arrive
together share a sync (group commit). These tests watch the real syncs
(``Appender.finish`` still calls ``fdatasync``) and check each acknowledged
line was in its file when a sync of that file began, before the call returned.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

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
