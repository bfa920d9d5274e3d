"""``JsonlStore``: the pool as JSON Lines day files (DESIGN 2), the reference store.

Writes: one ``write()`` of one complete line to an ``O_APPEND`` descriptor,
made while holding an exclusive ``flock`` on ``DATA_DIR/.lock``. Under that
lock the writer first catches its index up with the files, so each decision
(a 409, a claim) is made on everything any process wrote, then stamps the
time, picks the day file, and ends a torn last line before its own. With
``FSYNC`` the line is synced after the lock is released, so writers that
arrive together share one sync (group commit); a write is acknowledged only
once its sync returns.

Reads: each process keeps a ``PoolIndex``, built once from the day files in
the ``TASK_TTL`` horizon and then advanced by reading only the bytes appended
since its last look, up to the last complete line. A file that shrinks, is
replaced, or appears older than the files already read makes the index start
over from the files. A start-up checkpoint (``stores.checkpoint``), written
every ``CHECKPOINT_LINES`` lines, lets a new process skip replaying the week.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from django.core import checks

from taskpool.cursors import Cursor
from taskpool.days import day_file_name, day_of, day_of_file_name
from taskpool.exceptions import (
    AlreadyAnswered,
    IdempotencyConflict,
    InvalidCursor,
    InvalidMessage,
    MessageTooLarge,
    NotAddressed,
    NotClaimable,
    StoreImproperlyConfigured,
    TaskClosed,
    UnknownTask,
)
from taskpool.lifecycle import CANCELLED, EXPIRED, FINISHED, TaskState, bits_to_statuses, replay
from taskpool.message_filter import MessageFilter
from taskpool.messages import (
    DEVICE_STATUSES,
    Message,
    decode_line,
    device_address,
    encode_line,
    format_timestamp,
    new_message_id,
    parse_address,
    same_request,
)
from taskpool.stores import checkpoint, day_reading, day_summaries
from taskpool.stores.base import (
    BaseStore,
    Claim,
    DayPage,
    DaySummary,
    DeviceActivity,
    Page,
    PageEntry,
    Posted,
    TaskDetail,
    TaskPage,
    TaskQuery,
    TaskSummary,
)
from taskpool.stores.changes import Changes, Journal, concern_of
from taskpool.stores.index import PoolIndex

LOCK_FILE_NAME = ".lock"
#: Lines read since the last start-up checkpoint before the next one is written.
CHECKPOINT_LINES = 50_000
READ_CHUNK_BYTES = 8 * 1024 * 1024
PAGE_READ_BYTES = 256 * 1024
DUMP_CHUNK_BYTES = 1024 * 1024
_TASK_META_RESERVED = ("expires_at", "mode", "idempotency_key", "status")
_RESPONSE_META_RESERVED = ("idempotency_key",)

Result = TypeVar("Result")


@dataclass(slots=True)
class _Tail:
    """How far this process has read a day file."""

    inode: int
    offset: int  # just past the last complete line consumed
    size: int = 0  # the file's size when last looked at: more than offset after a torn line


@dataclass(slots=True)
class _DayWriter:
    """This process's ``O_APPEND`` descriptor on the day file it appends to."""

    day: date
    inode: int
    descriptor: int
    pid: int
    end: int = -1  # the file offset just past this process's last line in it


class _StartOver(Exception):
    """A day file changed under the index in a way only a rebuild can follow."""


class JsonlStore(BaseStore):
    """The pool in ``DATA_DIR/YYYY-MM-DD.jsonl`` files; see the module docstring."""

    #: Lines read between two start-up checkpoints (see ``taskpool.stores.checkpoint``).
    checkpoint_lines = CHECKPOINT_LINES

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        task_ttl: float = 7 * 86400,
        fsync: bool = True,
        max_message_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        directory = Path(data_dir)
        if not directory.is_absolute():
            raise StoreImproperlyConfigured(f"DATA_DIR must be an absolute path, not {directory}.")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.task_ttl = float(task_ttl)
        self.fsync = fsync
        self.max_message_bytes = max_message_bytes
        self._clock = clock
        self._mutex = threading.RLock()
        self._lock_fd: int | None = None
        self._lock_pid = 0
        self._writer: _DayWriter | None = None
        self._paths: dict[date, Path] = {}
        self._journal = Journal()
        self._watch_listing: tuple[int, list[str]] | None = None
        self._start_over(from_checkpoint=True)

    @classmethod
    def from_settings(cls, settings: Any) -> JsonlStore:
        if not settings.DATA_DIR:
            raise StoreImproperlyConfigured("TASKPOOL['DATA_DIR'] is required.")
        return cls(
            settings.DATA_DIR,
            task_ttl=settings.TASK_TTL.total_seconds(),
            fsync=settings.FSYNC,
            max_message_bytes=settings.MAX_MESSAGE_BYTES,
        )

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[checks.CheckMessage]:
        data_dir = options.get("DATA_DIR")
        if not data_dir:
            return [
                checks.Error(
                    "TASKPOOL['DATA_DIR'] is not set.",
                    hint="Set it to the absolute path of the directory for the day files.",
                    id="taskpool.E002",
                )
            ]
        path = Path(data_dir)
        if not path.is_absolute():
            return [
                checks.Error(
                    f"TASKPOOL['DATA_DIR'] is not an absolute path: {data_dir}.",
                    id="taskpool.E003",
                )
            ]
        if path.exists() and not (path.is_dir() and os.access(path, os.W_OK | os.X_OK)):
            return [
                checks.Error(
                    f"TASKPOOL['DATA_DIR'] is not a writable directory: {data_dir}.",
                    id="taskpool.E004",
                )
            ]
        return []

    def close(self) -> None:
        with self._mutex:
            if self._lock_fd is not None and self._lock_pid == os.getpid():
                os.close(self._lock_fd)
            self._lock_fd = None
            self._close_writer()

    def now(self) -> float:
        return self._clock()

    # Reading the files into the index -------------------------------------

    def _start_over(self, *, from_checkpoint: bool = False) -> None:
        self._journal.reset()
        self._index = PoolIndex(self.task_ttl)
        self._tails: dict[date, _Tail] = {}
        self._listing: tuple[int, list[date]] | None = None
        self._horizon_start: date | None = None
        if from_checkpoint:
            saved = checkpoint.load(self.directory, self.task_ttl, self._path)
            if saved is not None:
                self._index = saved.index
                self._tails = {
                    day: _Tail(position.inode, position.offset, position.size)
                    for day, position in saved.positions.items()
                }
        self._checkpointed_lines = self._lines_read()

    def _lines_read(self) -> int:
        return self._index.lines + self._index.skipped_lines

    def _advance(self, *, checkpoint_allowed: bool = True) -> float:
        """Bring the index up to date with every complete line in the horizon.

        Every ``checkpoint_lines`` lines it also writes a start-up checkpoint,
        unless told not to (under the pool's lock, which others wait for).
        """
        for _attempt in range(3):
            now = self._clock()
            try:
                self._advance_once(now)
            except _StartOver:
                self._start_over()
                continue
            if (
                checkpoint_allowed
                and self._lines_read() - self._checkpointed_lines >= self.checkpoint_lines
            ):
                self._write_checkpoint()
            return now
        raise RuntimeError(f"The day files in {self.directory} keep changing under the reader.")

    def _advance_once(self, now: float) -> None:
        first_day = day_of(now - self.task_ttl)
        if first_day != self._horizon_start:
            self._horizon_start = first_day
            for day in [day for day in self._tails if day < first_day]:
                del self._tails[day]
            self._index.forget_days_before(first_day.toordinal(), now)
        for day in self._listed_days():
            if day >= first_day:
                self._read_new(day, now)
        self._index.expire(now)

    def _write_checkpoint(self) -> None:
        """Save the index and how far it has read each file (see ``stores.checkpoint``)."""
        self._checkpointed_lines = self._lines_read()
        try:
            positions = {
                day: checkpoint.DayPosition(
                    tail.inode,
                    tail.offset,
                    tail.size,
                    checkpoint.guard_of(self._path(day), tail.offset),
                )
                for day, tail in self._tails.items()
            }
            checkpoint.save(
                self.directory, checkpoint.Checkpoint(self.task_ttl, positions, self._index)
            )
        except Exception:  # noqa: BLE001 - only a shortcut for the next start: never fail a read
            pass

    def _listed_days(self) -> list[date]:
        stat = os.stat(self.directory)
        listing = self._listing
        # A directory changed in the last two seconds is listed again: its
        # mtime may not have ticked for a file created just after the last look.
        if (
            listing is not None
            and listing[0] == stat.st_mtime_ns
            and time.time_ns() - stat.st_mtime_ns > 2_000_000_000
        ):
            return listing[1]
        days = sorted(
            day
            for name in os.listdir(self.directory)
            if (day := day_of_file_name(name)) is not None
        )
        self._listing = (stat.st_mtime_ns, days)
        return days

    def _read_new(self, day: date, now: float) -> None:
        path = self._path(day)
        tail = self._tails.get(day)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            if tail is not None:
                raise _StartOver from None
            return
        if tail is None:
            if self._tails and day < max(self._tails):
                raise _StartOver  # an older day file appeared: file order changed
            tail = self._tails[day] = _Tail(stat.st_ino, 0)
        elif stat.st_ino != tail.inode or stat.st_size < tail.offset:
            raise _StartOver
        tail.size = stat.st_size
        if stat.st_size > tail.offset:
            self._consume(day, path, tail, stat.st_size, now)

    def _consume(self, day: date, path: Path, tail: _Tail, size: int, now: float) -> None:
        day_ordinal = day.toordinal()
        index = self._index
        journal = self._journal
        with open(path, "rb", buffering=0) as file:
            file.seek(tail.offset)
            offset = tail.offset
            carry = b""
            remaining = size - offset
            while remaining > 0:
                chunk = file.read(min(READ_CHUNK_BYTES, remaining))
                if not chunk:
                    break
                remaining -= len(chunk)
                data = carry + chunk if carry else chunk
                end = data.rfind(b"\n")
                if end < 0:
                    carry = data
                    continue
                start = offset
                for line in data[:end].split(b"\n"):
                    if line:
                        try:
                            message = decode_line(line)
                        except InvalidMessage:
                            index.skip_line()
                        else:
                            if journal.enabled:
                                journal.record(concern_of(message, index.open))
                            index.add(message, day_ordinal, start, now)
                    start += len(line) + 1
                offset += end + 1
                carry = data[end + 1 :]
        tail.offset = offset

    def _path(self, day: date) -> Path:
        path = self._paths.get(day)
        if path is None:
            if len(self._paths) > 64:
                self._paths.clear()
            path = self._paths[day] = self.directory / day_file_name(day)
        return path

    def _read_message(self, day_ordinal: int, offset: int) -> Message:
        """The message whose line starts at ``offset`` in a day's file."""
        path = self._path(date.fromordinal(day_ordinal))
        with open(path, "rb", buffering=0) as file:
            data = os.pread(file.fileno(), self.max_message_bytes + 2, offset)
        return decode_line(data.split(b"\n", 1)[0])

    # Writing ----------------------------------------------------------------

    @contextmanager
    def _pool_lock(self) -> Iterator[None]:
        """The exclusive ``flock`` on ``DATA_DIR/.lock`` (hold ``_mutex`` first)."""
        if self._lock_fd is None or self._lock_pid != os.getpid():
            # After a fork the inherited descriptor shares its lock with the
            # parent, which would then not exclude it: open our own.
            self._lock_fd = os.open(
                self.directory / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            self._lock_pid = os.getpid()
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _append(
        self, decide: Callable[[float], tuple[Message | None, Result]], *, indexed: bool = True
    ) -> Result:
        """Decide under the pool's lock, append the line ``decide`` returns, then sync it.

        ``decide(now)`` sees the index caught up with every process's writes
        and returns the message to store (``None`` to store nothing) and the
        result to give back; it raises a ``PoolError`` to refuse.

        ``indexed=False`` is for messages no decision reads (heartbeats): the
        writer neither catches its index up first nor takes its line into
        it. Its next read does, in file order, as for any other process's
        line, so concurrent writers do not parse each other's lines under
        the lock.
        """
        with self._mutex, self._pool_lock():
            now = self._advance(checkpoint_allowed=False) if indexed else self._clock()
            message, result = decide(now)
            if message is None:
                return result
            line = encode_line(message)
            if len(line) > self.max_message_bytes:
                raise MessageTooLarge(
                    f"The message is {len(line)} bytes; the pool takes at most "
                    f"{self.max_message_bytes}."
                )
            day = day_of(now)
            if indexed:
                descriptor = self._append_line(day, line, now)
            else:
                descriptor = self._append_unindexed(day, line)
            if self.fsync:
                # Synced outside the lock, on a descriptor of its own: another
                # thread may retire the cached one meanwhile.
                descriptor = os.dup(descriptor)
        if self.fsync:
            try:
                os.fdatasync(descriptor)
            finally:
                os.close(descriptor)
        return result

    def _append_line(self, day: date, line: bytes, now: float) -> int:
        """Append ``line`` to the day's file in one ``write()`` and take it into the index.

        Hold the pool's lock, with the index just advanced. Returns the
        day file's descriptor (this process's cached one: do not close it).
        """
        descriptor = self._day_descriptor(day)
        tail = self._tails.get(day)
        if tail is None or tail.size != tail.offset or tail.inode != self._writer.inode:  # type: ignore[union-attr]
            # A file the index has not read to a clean end (new, or ending in a
            # torn line): check its last byte, and read our line back from it.
            size = os.fstat(descriptor).st_size
            if size and os.pread(descriptor, 1, size - 1) != b"\n":
                line = b"\n" + line  # end a torn line so ours stays whole
            self._writer.end = self._write(descriptor, day, line)  # type: ignore[union-attr]
            self._reread(day, now)
            return descriptor
        start = tail.size
        end = self._writer.end = self._write(descriptor, day, line)  # type: ignore[union-attr]
        if end != start + len(line):
            self._reread(day, now)  # someone appended without the lock: read what is there
            return descriptor
        # The index is level with the file up to ``start``: take our line from
        # memory, decoded from its bytes as any other process will see it.
        message = decode_line(line[:-1])
        if self._journal.enabled:
            self._journal.record(concern_of(message, self._index.open))
        self._index.add(message, day.toordinal(), start, now)
        tail.offset = tail.size = end
        return descriptor

    def _append_unindexed(self, day: date, line: bytes) -> int:
        """Append ``line`` to the day's file without the index (hold the pool's lock).

        Returns the day file's descriptor (this process's cached one).
        """
        path = self._path(day)
        try:
            stat: os.stat_result | None = os.stat(path)
        except FileNotFoundError:
            stat = None
        writer = self._writer
        if (
            writer is None
            or writer.day != day
            or writer.pid != os.getpid()
            or stat is None
            or stat.st_ino != writer.inode
        ):
            writer = self._open_writer(day)
            stat = os.fstat(writer.descriptor)
        size = stat.st_size
        # A file that ends where our last line ended ends with a newline.
        if size and size != writer.end and os.pread(writer.descriptor, 1, size - 1) != b"\n":
            line = b"\n" + line  # end a torn line so ours stays whole
        writer.end = self._write(writer.descriptor, day, line)
        return writer.descriptor

    def _write(self, descriptor: int, day: date, line: bytes) -> int:
        """One ``write()`` of ``line``; returns the file offset just past it."""
        written = os.write(descriptor, line)
        if written != len(line):
            raise OSError(
                errno.EIO, f"short write to {self._path(day)}: {written} of {len(line)} bytes"
            )
        return os.lseek(descriptor, 0, os.SEEK_CUR)

    def _reread(self, day: date, now: float) -> None:
        try:
            self._read_new(day, now)
        except _StartOver:
            self._start_over()

    def _day_descriptor(self, day: date) -> int:
        """This process's ``O_APPEND`` descriptor on the day's file, opened (or created) once."""
        writer = self._writer
        tail = self._tails.get(day)
        if (
            writer is not None
            and writer.day == day
            and writer.pid == os.getpid()
            and tail is not None
            and tail.inode == writer.inode
        ):
            return writer.descriptor
        return self._open_writer(day).descriptor

    def _open_writer(self, day: date) -> _DayWriter:
        """Open (or create) the day's file for appending, as this process's cached writer."""
        self._close_writer()
        path = self._path(day)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            descriptor = os.open(path, flags)
        except FileNotFoundError:
            descriptor = os.open(path, flags | os.O_CREAT, 0o644)
            if self.fsync:
                self._sync_directory()
        self._writer = _DayWriter(day, os.fstat(descriptor).st_ino, descriptor, os.getpid())
        return self._writer

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and writer.pid == os.getpid():
            os.close(writer.descriptor)

    def _sync_directory(self) -> None:
        descriptor = os.open(self.directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _message(
        self,
        now: float,
        *,
        sender: str,
        to: str,
        kind: str,
        title: str,
        body: str,
        parent_id: str | None,
        meta: dict[str, Any],
    ) -> Message:
        return {
            "id": new_message_id(),
            "ts": format_timestamp(now),
            "from": sender,
            "to": to,
            "type": kind,
            "title": title,
            "body": body,
            "parent_id": parent_id,
            "meta": meta,
        }

    def _replayed(
        self, sender: str, key: str | None, candidate: Message, *, with_parent: bool = True
    ) -> Message | None:
        """The message first stored with ``key`` by ``sender``, if the request is a repeat."""
        if key is None:
            return None
        found = self._index.locate_idempotent(sender, key)
        if found is None:
            return None
        stored = self._read_message(*found)
        if not same_request(stored, candidate, with_parent=with_parent):
            raise IdempotencyConflict(
                f"Idempotency key {key!r} was used for a different request ({stored['id']})."
            )
        return stored

    def _open_task_for(self, task_id: str, device_id: str, now: float) -> TaskState:
        """The open task a device acts on, or the refusal that explains why it cannot."""
        state = self._index.open.get(task_id)
        if state is not None:
            if not state.audience.includes(device_id):
                raise NotAddressed(f"Task {task_id} is not addressed to device {device_id}.")
            return state
        known = self._index.locate(task_id)
        if known is None:
            raise UnknownTask(f"There is no task {task_id} in the pool.", field="parent_id")
        task = self._read_message(known.day_ordinal, known.offset)
        try:
            addressed = parse_address(task["to"]).includes(device_id)
        except InvalidMessage:
            addressed = False
        if not addressed:
            raise NotAddressed(f"Task {task_id} is not addressed to device {device_id}.")
        if known.closed == FINISHED and task["meta"].get("mode") != "any":
            # Finished means every addressed device answered for good, this one too.
            raise AlreadyAnswered(f"Device {device_id} has already answered task {task_id}.")
        raise _closed_error(task_id, known.closed)

    def post_task(
        self,
        *,
        sender: str,
        to: str,
        title: str,
        body: str = "",
        meta: dict[str, Any] | None = None,
        ttl: float | None = None,
        expires_at: datetime | None = None,
        mode: str | None = None,
        idempotency_key: str | None = None,
    ) -> Posted:
        try:
            address = parse_address(to)
        except InvalidMessage as error:
            raise InvalidMessage(error.message, field="to") from None
        if address.kind != "device":
            raise InvalidMessage(
                "A task is addressed to devices: device:<id>, device:* or device:[<id>,...].",
                field="to",
            )
        if mode not in (None, "any"):
            raise InvalidMessage('mode is "any" or absent.', field="mode")
        if ttl is not None and expires_at is not None:
            raise InvalidMessage("Give ttl or expires_at, not both.", field="ttl")
        meta = _own_meta(meta, _TASK_META_RESERVED)
        if mode is not None:
            meta["mode"] = mode
        if idempotency_key is not None:
            meta["idempotency_key"] = idempotency_key

        def decide(now: float) -> tuple[Message | None, Posted]:
            task = self._message(
                now,
                sender=sender,
                to=str(address),
                kind="task",
                title=title,
                body=body,
                parent_id=None,
                meta=meta,
            )
            replayed = self._replayed(sender, idempotency_key, task)
            if replayed is not None:
                return None, Posted(replayed, False)
            meta["expires_at"] = format_timestamp(self._deadline(now, ttl, expires_at))
            return task, Posted(task, True)

        return self._append(decide)

    def _deadline(self, now: float, ttl: float | None, expires_at: datetime | None) -> float:
        limit = self.task_ttl
        if ttl is not None:
            if ttl < 1:
                raise InvalidMessage("ttl must be at least 1 second.", field="ttl")
            if ttl > limit:
                raise InvalidMessage(
                    f"ttl may be at most {limit:g} seconds (TASK_TTL).", field="ttl"
                )
            return now + ttl
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidMessage("expires_at must be in UTC.", field="expires_at")
            moment = expires_at.timestamp()
            if moment < now + 1:
                raise InvalidMessage("expires_at must be in the future.", field="expires_at")
            if moment > now + limit + 1:
                raise InvalidMessage(
                    f"expires_at may be at most {limit:g} seconds (TASK_TTL) ahead.",
                    field="expires_at",
                )
            return moment
        return now + limit

    def post_response(
        self,
        *,
        device_id: str,
        parent_id: str,
        status: str,
        title: str = "",
        body: str = "",
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Posted:
        if status not in DEVICE_STATUSES:
            raise InvalidMessage(
                f"status must be one of {', '.join(DEVICE_STATUSES)}.", field="status"
            )
        meta = _own_meta(meta, _RESPONSE_META_RESERVED)
        if meta.get("status", status) != status:
            raise InvalidMessage("meta.status differs from status.", field="meta")
        meta["status"] = status
        if idempotency_key is not None:
            meta["idempotency_key"] = idempotency_key
        sender = device_address(device_id)

        def decide(now: float) -> tuple[Message | None, Posted]:
            response = self._message(
                now,
                sender=sender,
                to="",
                kind="response",
                title=title,
                body=body,
                parent_id=parent_id,
                meta=meta,
            )
            replayed = self._replayed(sender, idempotency_key, response)
            if replayed is not None:
                return None, Posted(replayed, False)
            state = self._open_task_for(parent_id, device_id, now)
            state.check_answer(device_id, now)
            response["to"] = state.task["from"]
            return response, Posted(response, True)

        return self._append(decide)

    def post_heartbeat(
        self, *, device_id: str, body: str = "", meta: dict[str, Any] | None = None
    ) -> Message:
        meta = _own_meta(meta, ())

        def decide(now: float) -> tuple[Message, Message]:
            heartbeat = self._message(
                now,
                sender=device_address(device_id),
                to="backend",
                kind="heartbeat",
                title="",
                body=body,
                parent_id=None,
                meta=meta,
            )
            return heartbeat, heartbeat

        return self._append(decide, indexed=False)

    def claim(
        self, *, device_id: str, parent_id: str | None = None, idempotency_key: str | None = None
    ) -> Claim | None:
        sender = device_address(device_id)
        meta: dict[str, Any] = {"status": "claimed"}
        if idempotency_key is not None:
            meta["idempotency_key"] = idempotency_key

        def decide(now: float) -> tuple[Message | None, Claim | None]:
            candidate = self._message(
                now,
                sender=sender,
                to="",
                kind="response",
                title="",
                body="",
                parent_id=parent_id,
                meta=meta,
            )
            replayed = self._replayed(
                sender, idempotency_key, candidate, with_parent=parent_id is not None
            )
            if replayed is not None:
                known = self._index.locate(replayed["parent_id"] or "")
                if known is None:
                    raise UnknownTask(f"There is no task {replayed['parent_id']} in the pool.")
                task = self._read_message(known.day_ordinal, known.offset)
                return None, Claim(task, replayed, False)
            if parent_id is not None:
                state = self._open_task_for(parent_id, device_id, now)
                if not state.any_one:
                    raise NotClaimable(
                        f'Task {parent_id} is not an any-one task (meta.mode "any").',
                        field="parent_id",
                    )
                if state.claimer == device_id and state.claim is not None:
                    return None, Claim(state.task, state.claim, False)
                state.check_answer(device_id, now)
            else:
                state = next(
                    (
                        state
                        for state in self._index.pending_states(device_id, now)
                        if state.any_one and state.claimer is None
                    ),
                    None,
                )
                if state is None:
                    return None, None
            candidate["parent_id"] = state.id
            candidate["to"] = state.task["from"]
            return candidate, Claim(state.task, candidate, True)

        return self._append(decide)

    def cancel(
        self,
        *,
        sender: str,
        task_id: str,
        reason: str = "",
        idempotency_key: str | None = None,
    ) -> Posted:
        meta: dict[str, Any] = {"status": "cancelled"}
        if idempotency_key is not None:
            meta["idempotency_key"] = idempotency_key

        def decide(now: float) -> tuple[Message | None, Posted]:
            cancellation = self._message(
                now,
                sender=sender,
                to="",
                kind="response",
                title="",
                body=reason,
                parent_id=task_id,
                meta=meta,
            )
            replayed = self._replayed(sender, idempotency_key, cancellation)
            if replayed is not None:
                return None, Posted(replayed, False)
            state = self._index.open.get(task_id)
            if state is None:
                known = self._index.locate(task_id)
                if known is None:
                    raise UnknownTask(f"There is no task {task_id} in the pool.")
                raise _closed_error(task_id, known.closed)
            cancellation["to"] = state.task["to"]
            return cancellation, Posted(cancellation, True)

        return self._append(decide)

    # Reading ----------------------------------------------------------------

    def pending_for(self, device_id: str, *, limit: int = 100) -> list[Message]:
        with self._mutex:
            now = self._advance()
            return self._index.pending_for(device_id, now, limit)

    def pending_counts(self, device_ids: list[str]) -> dict[str, int]:
        with self._mutex:
            now = self._advance()
            return {device_id: self._index.pending_count(device_id, now) for device_id in device_ids}

    def device_activity(self, device_ids: list[str]) -> dict[str, DeviceActivity]:
        with self._mutex:
            self._advance()
            index = self._index
            return {
                device_id: DeviceActivity(
                    index.last_message.get(device_id), index.last_heartbeat.get(device_id)
                )
                for device_id in device_ids
            }

    def days(self) -> list[date]:
        with self._mutex:
            return list(self._listed_days())

    def day_messages(self, day: date) -> list[Message]:
        messages: list[Message] = []
        for _offset, line in self._complete_lines(day):
            try:
                messages.append(decode_line(line))
            except InvalidMessage:
                continue
        return messages

    def _complete_lines(self, day: date) -> Iterator[tuple[int, bytes]]:
        """Each complete, non-blank line of a day's file with its offset."""
        try:
            file = open(self._path(day), "rb", buffering=0)
        except FileNotFoundError:
            return
        with file:
            offset = 0
            carry = b""
            while chunk := file.read(READ_CHUNK_BYTES):
                data = carry + chunk if carry else chunk
                end = data.rfind(b"\n")
                if end < 0:
                    carry = data
                    continue
                start = offset
                for line in data[:end].split(b"\n"):
                    if line:
                        yield start, line
                    start += len(line) + 1
                offset += end + 1
                carry = data[end + 1 :]

    def task_detail(self, task_id: str) -> TaskDetail:
        with self._mutex:
            self._advance()
            known = self._index.locate(task_id)
            if known is None:
                raise UnknownTask(f"There is no task {task_id} in the pool.")
            task = self._read_message(known.day_ordinal, known.offset)
            days = [day for day in self._listed_days() if day.toordinal() >= known.day_ordinal]
        responses = [
            message
            for day in days
            for message in self._messages_naming(day, task_id)
            if message["type"] == "response" and message["parent_id"] == task_id
        ]
        return TaskDetail(task, responses, replay(task, responses, self.task_ttl))

    def _messages_naming(self, day: date, text: str) -> Iterator[Message]:
        """The messages of a day whose line contains ``text``, found without parsing the rest."""
        try:
            file = open(self._path(day), "rb", buffering=0)
        except FileNotFoundError:
            return
        with file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) as data:
                end_of_complete = data.rfind(b"\n") + 1
                needle = text.encode()
                found = data.find(needle, 0, end_of_complete)
                while found >= 0:
                    start = data.rfind(b"\n", 0, found) + 1
                    end = data.find(b"\n", found)
                    try:
                        yield decode_line(data[start:end])
                    except InvalidMessage:
                        pass
                    found = data.find(needle, end, end_of_complete)

    def recent_tasks(
        self,
        query: TaskQuery,
        *,
        before: Cursor | None = None,
        limit: int = 50,
        registered_devices: list[str] | None = None,
    ) -> TaskPage:
        registered = registered_devices or []
        bound = (before.day.toordinal(), before.offset) if before is not None else None
        found: list[tuple[TaskSummary, Cursor]] = []
        with self._mutex:
            self._advance()
            day_ordinals = sorted(self._index.days, reverse=True)
        for day_ordinal in day_ordinals:
            if bound is not None and day_ordinal > bound[0]:
                continue
            for task_id, offset, statuses in self._tasks_of_day(day_ordinal, registered):
                if bound is not None and (day_ordinal, offset) >= bound:
                    continue
                if query.statuses is not None and not statuses & query.statuses:
                    continue
                try:
                    task = self._read_message(day_ordinal, offset)
                except (InvalidMessage, OSError):
                    continue
                if task["id"] != task_id or not query.matches(task):
                    continue
                found.append(
                    (TaskSummary(task, statuses), Cursor(date.fromordinal(day_ordinal), offset))
                )
                if len(found) > limit:
                    return TaskPage([summary for summary, _ in found[:limit]], found[limit - 1][1], True)
        return TaskPage([summary for summary, _ in found], found[-1][1] if found else before, False)

    def _tasks_of_day(
        self, day_ordinal: int, registered: list[str]
    ) -> list[tuple[str, int, frozenset[str]]]:
        """A day's tasks, newest first, with their execution statuses now."""
        with self._mutex:
            records = self._index.days.get(day_ordinal)
            if records is None:
                return []
            now = self._clock()
            tasks = []
            for task_id, offset, closed, bits in records.tasks_newest_first():
                state = self._index.open.get(task_id) if closed is None else None
                statuses = (
                    state.statuses(registered, now) if state is not None else bits_to_statuses(bits)
                )
                tasks.append((task_id, offset, statuses))
            return tasks

    # Real time: cursors, pages, raw lines, changes ------------------------

    def check_cursor(self, cursor: Cursor) -> None:
        try:
            descriptor = os.open(self._path(cursor.day), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise InvalidCursor(f"Cursor {cursor} names no day file.") from None
        try:
            if cursor.offset == 0:
                return
            if (
                cursor.offset > os.fstat(descriptor).st_size
                or os.pread(descriptor, 1, cursor.offset - 1) != b"\n"
            ):
                raise InvalidCursor(f"Cursor {cursor} is not at the end of a line.")
        finally:
            os.close(descriptor)

    def end_cursor(self) -> Cursor | None:
        for day in reversed(self.days()):
            end = self._end_of_complete_lines(day)
            if end is not None:
                return Cursor(day, end)
        return None

    def _end_of_complete_lines(self, day: date) -> int | None:
        """Just past the day file's last newline (0 if it has none); ``None`` without a file."""
        try:
            descriptor = os.open(self._path(day), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            end = os.fstat(descriptor).st_size
            while end > 0:
                start = max(0, end - PAGE_READ_BYTES)
                newline = os.pread(descriptor, end - start, start).rfind(b"\n")
                if newline >= 0:
                    return start + newline + 1
                end = start
            return 0
        finally:
            os.close(descriptor)

    def messages_after(self, cursor: Cursor | None, *, limit: int) -> Page:
        if cursor is None:
            days = self.days()
            if not days:
                return Page([], None, False)
            cursor = Cursor.start_of(days[0])
        else:
            self.check_cursor(cursor)
        return self._page(cursor, limit)

    def messages_from_day(self, day: date, *, limit: int) -> Page:
        first = next((listed for listed in self.days() if listed >= day), None)
        if first is None:
            return Page([], self.end_cursor(), False)
        return self._page(Cursor.start_of(first), limit)

    def _page(self, start: Cursor, limit: int) -> Page:
        entries: list[PageEntry] = []
        position = start
        for day in [listed for listed in self.days() if listed >= start.day]:
            offset = start.offset if day == start.day else 0
            with closing(self._lines_from(day, offset)) as lines:
                for end, line in lines:
                    try:
                        message = decode_line(line)
                    except InvalidMessage:
                        position = Cursor(day, end)  # not a message: step over it
                        continue
                    if len(entries) == limit:
                        return Page(entries, entries[-1].cursor, True)
                    position = Cursor(day, end)
                    entries.append(PageEntry(position, message))
        return Page(entries, position, False)

    def _lines_from(self, day: date, offset: int) -> Iterator[tuple[int, bytes]]:
        """Each complete line of a day's file from ``offset`` on, with the offset just past it."""
        file = self._open_day_file(day)
        if file is None:
            return
        with file:
            file.seek(offset)
            position = offset  # the file offset of ``carry``
            carry = b""
            while chunk := file.read(PAGE_READ_BYTES):
                data = carry + chunk if carry else chunk
                end = data.rfind(b"\n")
                if end < 0:
                    carry = data
                    continue
                for line in data[:end].split(b"\n"):
                    position += len(line) + 1
                    yield position, line
                carry = data[end + 1 :]

    def _open_day_file(self, day: date) -> BinaryIO | None:
        """The day's file opened for unbuffered reading, or ``None`` if there is none."""
        try:
            return open(self._path(day), "rb", buffering=0)  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            return None

    def find_task(self, task_id: str) -> Message | None:
        with self._mutex:
            known = self._index.locate(task_id)
            if known is None:  # perhaps stored since the index last looked
                self._advance()
                known = self._index.locate(task_id)
                if known is None:
                    return None
            return self._read_message(known.day_ordinal, known.offset)

    def change_signature(self) -> Hashable:
        # Without the mutex: a watcher calls this from an event loop.
        directory = os.stat(self.directory)
        first = day_file_name(day_of(self._clock() - self.task_ttl))
        extents = []
        for name in self._day_file_names(directory.st_mtime_ns):
            if name >= first:
                try:
                    stat = os.stat(self.directory / name)
                except FileNotFoundError:
                    continue
                extents.append((name, stat.st_ino, stat.st_size))
        return directory.st_mtime_ns, tuple(extents)

    def _day_file_names(self, directory_mtime_ns: int) -> list[str]:
        listing = self._watch_listing
        # As in _listed_days: a directory changed in the last two seconds is listed again.
        if (
            listing is None
            or listing[0] != directory_mtime_ns
            or time.time_ns() - directory_mtime_ns <= 2_000_000_000
        ):
            names = sorted(
                name for name in os.listdir(self.directory) if day_of_file_name(name) is not None
            )
            listing = self._watch_listing = (directory_mtime_ns, names)
        return listing[1]

    def changes_since(self, mark: int | None) -> Changes:
        with self._mutex:
            self._advance()
            newest = max(self._tails, default=None)
            through = None if newest is None else Cursor(newest, self._tails[newest].offset)
            return self._journal.since(mark, through)

    def stats(self) -> dict[str, int]:
        """Figures about the index: lines read, lines skipped, open tasks."""
        with self._mutex:
            self._advance()
            index = self._index
            return {
                "lines": index.lines,
                "skipped_lines": index.skipped_lines,
                "open_tasks": len(index.open),
            }

    # Browsing day files (the admin) ------------------------------------------
    # Reads the files directly with pread, never the index, and takes no lock:
    # day files only grow, and each read stops at the last complete line.

    def day_summaries(
        self, days: list[date], *, count_limit: int | None = None
    ) -> list[DaySummary]:
        budget = day_summaries.Budget(count_limit)
        summaries = (day_summaries.summarize(day, self._path(day), budget) for day in days)
        return [summary for summary in summaries if summary is not None]

    def day_page(
        self,
        day: date,
        *,
        after: Cursor | None = None,
        before: Cursor | None = None,
        from_end: bool = False,
        limit: int = 50,
        where: MessageFilter | None = None,
        scan_limit: int | None = None,
    ) -> DayPage:
        for cursor in (after, before):
            if cursor is not None and cursor.day != day:
                raise InvalidCursor(f"Cursor {cursor} is not in the day {day.isoformat()}.")
        where = where if where is not None and not where.is_empty else None
        with self._open_day(day) as (descriptor, end):
            if descriptor is None:
                return DayPage([], Cursor.start_of(day), Cursor.start_of(day), True)
            if before is not None or from_end:
                stop = end if before is None else before.offset
                day_reading.check_line_start(descriptor, stop, end)
                entries, start = _scan_backward(day, descriptor, stop, limit, where, scan_limit)
                return DayPage(entries, Cursor(day, start), Cursor(day, stop), stop >= end)
            start = 0 if after is None else after.offset
            day_reading.check_line_start(descriptor, start, end)
            entries, stop = _scan_forward(day, descriptor, start, end, limit, where, scan_limit)
            return DayPage(entries, Cursor(day, start), Cursor(day, stop), stop >= end)

    def message_at(self, cursor: Cursor) -> Message:
        with self._open_day(cursor.day) as (descriptor, end):
            if descriptor is None or not 0 < cursor.offset <= end:
                raise InvalidCursor(f"No line ends at {cursor}.")
            day_reading.check_line_start(descriptor, cursor.offset, end)
            return decode_line(day_reading.line_before(descriptor, cursor.offset))

    def device_messages(self, device_id: str, *, limit: int = 20) -> list[PageEntry]:
        address = device_address(device_id)
        needles = (device_id.encode(), b'"device:*"')

        def could_name(data: bytes) -> bool:
            return b"\\" in data or any(needle in data for needle in needles)

        found: list[PageEntry] = []
        first_day = day_of(self._clock() - self.task_ttl)
        with self._mutex:
            days = [day for day in self._listed_days() if day >= first_day]
        for day in reversed(days):
            with self._open_day(day) as (descriptor, end):
                if descriptor is None:
                    continue
                for _start, lines in day_reading.read_backward(descriptor, end, could_name):
                    for offset, line in lines:
                        if not could_name(line):
                            continue
                        try:
                            message = decode_line(line)
                        except InvalidMessage:
                            continue
                        if message["from"] == address or _addressed_to(message, device_id):
                            found.append(PageEntry(Cursor(day, offset + len(line) + 1), message))
                            if len(found) >= limit:
                                return found
        return found

    def day_lines(self, day: date) -> Iterator[bytes]:
        with self._open_day(day) as (descriptor, end):
            if descriptor is None:
                return
            position = 0
            carry = b""
            while position < end:
                chunk = os.pread(descriptor, min(DUMP_CHUNK_BYTES, end - position), position)
                if not chunk:
                    return
                position += len(chunk)
                data = carry + chunk if carry else chunk
                cut = data.rfind(b"\n") + 1
                if cut:
                    yield data[:cut]
                carry = data[cut:]

    @contextmanager
    def _open_day(self, day: date) -> Iterator[tuple[int | None, int]]:
        """The day file's descriptor and the end of its last complete line (``None``, 0 if no file)."""
        try:
            descriptor = os.open(self._path(day), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            yield None, 0
            return
        try:
            yield descriptor, day_reading.complete_end(descriptor, os.fstat(descriptor).st_size)
        finally:
            os.close(descriptor)


def _scan_forward(
    day: date,
    descriptor: int,
    start: int,
    end: int,
    limit: int,
    where: MessageFilter | None,
    scan_limit: int | None,
) -> tuple[list[PageEntry], int]:
    """A page's entries reading forward from ``start``, and where the reading stopped."""
    entries: list[PageEntry] = []
    chunk_test = where.could_match if where is not None else None
    for chunk_end, lines in day_reading.read_forward(descriptor, start, end, chunk_test):
        for offset, line in lines:
            message = _wanted(line, where)
            if message is not None:
                entries.append(PageEntry(Cursor(day, offset + len(line) + 1), message))
                if len(entries) >= limit:
                    return entries, offset + len(line) + 1
        if scan_limit is not None and chunk_end - start >= scan_limit:
            return entries, chunk_end
    return entries, end


def _scan_backward(
    day: date,
    descriptor: int,
    stop: int,
    limit: int,
    where: MessageFilter | None,
    scan_limit: int | None,
) -> tuple[list[PageEntry], int]:
    """A page's entries (in file order) reading backward to ``stop``, and where it began."""
    entries: list[PageEntry] = []
    chunk_test = where.could_match if where is not None else None
    for chunk_start, lines in day_reading.read_backward(descriptor, stop, chunk_test):
        for offset, line in lines:
            message = _wanted(line, where)
            if message is not None:
                entries.append(PageEntry(Cursor(day, offset + len(line) + 1), message))
                if len(entries) >= limit:
                    return entries[::-1], offset
        if scan_limit is not None and stop - chunk_start >= scan_limit:
            return entries[::-1], chunk_start
    return entries[::-1], 0


def _wanted(line: bytes, where: MessageFilter | None) -> Message | None:
    """The line's message if it is one and ``where`` takes it."""
    if not line or (where is not None and not where.could_match(line)):
        return None
    try:
        message = decode_line(line)
    except InvalidMessage:
        return None
    return message if where is None or where.matches(message) else None


def _addressed_to(message: Message, device_id: str) -> bool:
    try:
        return parse_address(message["to"]).includes(device_id)
    except InvalidMessage:
        return False


def _own_meta(meta: dict[str, Any] | None, reserved: tuple[str, ...]) -> dict[str, Any]:
    """A copy of a client's ``meta``, refusing keys the server writes itself."""
    if meta is None:
        return {}
    if type(meta) is not dict:
        raise InvalidMessage("meta must be a JSON object.", field="meta")
    for key in reserved:
        if key in meta:
            raise InvalidMessage(f"meta.{key} is set by the server.", field="meta")
    return dict(meta)


def _closed_error(task_id: str, reason: str | None) -> TaskClosed:
    if reason == CANCELLED:
        return TaskClosed(f"Task {task_id} was cancelled.")
    if reason == EXPIRED:
        return TaskClosed(f"Task {task_id} has expired.")
    return TaskClosed(f"Task {task_id} is already finished.")
