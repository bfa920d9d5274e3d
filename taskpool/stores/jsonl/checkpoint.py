"""Start-up checkpoints of ``JsonlStore``'s index, so a restart need not replay the week.

A checkpoint is the pending index and how far it had read each day file,
pickled into ``DATA_DIR/.index-checkpoint`` (written to a temporary file and
renamed over the old one, so readers see a whole checkpoint or none). A
store that starts loads it, checks each day file is still the one it read
(inode, size, and the bytes just before the offset it had reached), and
reads on from there. Anything that does not match (another format, another
``TASK_TTL``, a changed file) makes the store replay the files as if there
were no checkpoint. A process that finds none replays under ``replay_lock``,
so that processes started together replay the week once between them.

Whoever can write to ``DATA_DIR`` can rewrite the pool, but should not get
to run code in the server: a checkpoint is unpickled with only its own data
classes allowed (``_CheckpointUnpickler``), so a crafted file is refused like
a damaged one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import pickle
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import date
from pathlib import Path
from typing import Any

from taskpool.executions import EXECUTION_STATUSES
from taskpool.jobs import Abort, JobOptions, Retries, Rollout, Timeout
from taskpool.lifecycle import Run, TaskState
from taskpool.messages import Address
from taskpool.stores.jsonl.activity import Activity
from taskpool.stores.jsonl.broadcasts import OpenBroadcasts
from taskpool.stores.jsonl.idempotency import IdempotencyKeys
from taskpool.stores.jsonl.index import DayRecords, KnownTask, PoolIndex
from taskpool.stores.jsonl.task_registry import TaskRegistry

CHECKPOINT_FILE_NAME = ".index-checkpoint"
REPLAY_LOCK_NAME = ".index-checkpoint.lock"
#: Age after which a checkpoint's temporary file is taken for one a killed process left.
ABANDONED_AFTER_SECONDS = 600
FORMAT_VERSION = 9
#: Bytes before each day file's offset kept to recognise the same file on loading: the
#: last lines read. Files are only ever appended to; like a running process, a checkpoint
#: cannot see an edit further back that keeps the inode and the size.
GUARD_BYTES = 4096


#: What a job task's state holds besides its ``TaskState``: its options and each device's run.
_JOB_CLASSES = (JobOptions, Retries, Timeout, Rollout, Abort, Run)


def _layout_fingerprint() -> str:
    """Changes whenever the pickled classes change shape, so old checkpoints are ignored."""
    shape = [
        FORMAT_VERSION,
        EXECUTION_STATUSES,
        TaskState.__slots__,
        sorted(vars(PoolIndex(1.0))),
        sorted(vars(OpenBroadcasts())),
        [f.name for f in fields(DayRecords)],
        TaskRegistry.__slots__,
        IdempotencyKeys.__slots__,
        [f.name for f in fields(KnownTask)],
        [f.name for f in fields(Activity)],
        [f.name for f in fields(Address)],
        [[f.name for f in fields(kind)] for kind in _JOB_CLASSES],
    ]
    return hashlib.sha256(repr(shape).encode()).hexdigest()


@dataclass
class DayPosition:
    """How far the index had read one day file."""

    inode: int
    offset: int
    size: int
    guard: bytes  # the file's bytes just before ``offset``


@dataclass
class Checkpoint:
    """The index and the day-file positions it reflects."""

    task_ttl: float
    positions: dict[date, DayPosition]
    index: PoolIndex
    fingerprint: str = ""


#: The only globals a checkpoint may name: its own data classes and ``date``.
_ALLOWED_GLOBALS = frozenset(
    {
        ("taskpool.stores.jsonl.checkpoint", "Checkpoint"),
        ("taskpool.stores.jsonl.checkpoint", "DayPosition"),
        ("taskpool.stores.jsonl.index", "PoolIndex"),
        ("taskpool.stores.jsonl.broadcasts", "OpenBroadcasts"),
        ("taskpool.stores.jsonl.index", "DayRecords"),
        ("taskpool.stores.jsonl.idempotency", "IdempotencyKeys"),
        ("taskpool.stores.jsonl.task_registry", "TaskRegistry"),
        ("taskpool.stores.jsonl.index", "KnownTask"),
        ("taskpool.stores.jsonl.activity", "Activity"),
        ("taskpool.lifecycle", "TaskState"),
        *((kind.__module__, kind.__name__) for kind in _JOB_CLASSES),
        ("taskpool.messages", "Address"),
        ("datetime", "date"),
        # The spans of open broadcasts each device is done with are arrays.
        ("array", "array"),
        ("array", "_array_reconstructor"),
    }
)


class _CheckpointUnpickler(pickle.Unpickler):
    """Unpickles the classes of a checkpoint and nothing else (no functions, no modules)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} has no place in a checkpoint.")
        return super().find_class(module, name)


@contextmanager
def replay_lock(directory: Path) -> Iterator[None]:
    """Held by the process replaying the day files because it found no checkpoint.

    Processes started together (a server's workers) wait here, then resume
    from the checkpoint the first one wrote, instead of each replaying the
    week on the same cores. The kernel drops the lock if its holder dies.
    Without a writable ``DATA_DIR`` there is no lock, and each process replays.
    """
    try:
        descriptor = os.open(
            directory / REPLAY_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
    except OSError:
        yield
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # and with it the lock


def save(directory: Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` atomically into ``directory``."""
    checkpoint.fingerprint = _layout_fingerprint()
    descriptor, temporary = tempfile.mkstemp(prefix=CHECKPOINT_FILE_NAME + ".", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as file:
            pickle.dump(checkpoint, file, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(temporary, directory / CHECKPOINT_FILE_NAME)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    _remove_abandoned(directory)


def _remove_abandoned(directory: Path) -> None:
    """Remove the temporary files of saves that never ended (a process killed while it
    wrote one): each is a copy of the index, and nothing else would ever remove it. A save
    takes seconds at most, so one older than ``ABANDONED_AFTER_SECONDS`` is no one's."""
    now = time.time()
    for path in directory.glob(CHECKPOINT_FILE_NAME + ".*"):
        if path.name == REPLAY_LOCK_NAME:
            continue
        with contextlib.suppress(OSError):  # gone already, removed by another process
            if now - path.stat().st_mtime > ABANDONED_AFTER_SECONDS:
                path.unlink()


def load(directory: Path, task_ttl: float, path_of: Any) -> Checkpoint | None:
    """The checkpoint in ``directory`` if it still describes the day files, else ``None``.

    ``path_of(day)`` is the path of a day's file.
    """
    try:
        with open(directory / CHECKPOINT_FILE_NAME, "rb") as file:
            checkpoint = _CheckpointUnpickler(file).load()
    except FileNotFoundError:
        return None
    except Exception:  # a torn or foreign file is only a missed shortcut
        return None
    if (
        not isinstance(checkpoint, Checkpoint)
        or checkpoint.fingerprint != _layout_fingerprint()
        or checkpoint.task_ttl != task_ttl
    ):
        return None
    for day, position in checkpoint.positions.items():
        if not _still_the_same(path_of(day), position):
            return None
    return checkpoint


def _still_the_same(path: Path, position: DayPosition) -> bool:
    try:
        with open(path, "rb", buffering=0) as file:
            stat = os.fstat(file.fileno())
            if stat.st_ino != position.inode or stat.st_size < position.size:
                return False
            start = position.offset - len(position.guard)
            return os.pread(file.fileno(), len(position.guard), start) == position.guard
    except FileNotFoundError:
        return False


def guard_of(path: Path, offset: int) -> bytes:
    """The bytes of a file just before ``offset`` (see ``DayPosition.guard``)."""
    start = max(0, offset - GUARD_BYTES)
    with open(path, "rb", buffering=0) as file:
        return os.pread(file.fileno(), offset - start, start)
