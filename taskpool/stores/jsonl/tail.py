"""``IndexTail``: this process's index of the pool, fed from the day files' tails.

The index is built once from the day files in the ``TASK_TTL`` horizon, then
advanced by reading only the bytes appended since the last look, up to the
last complete line. A file that shrinks, is replaced, or appears older than
the files already read makes it start over from the files. A start-up
checkpoint (``stores.jsonl.checkpoint``), written every ``checkpoint_lines`` lines,
lets a new process skip replaying the week. While anyone waits, a journal
records whom each new line concerns (``stores.changes``).

Not thread-safe: ``JsonlStore`` calls it under its mutex.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from taskpool.days import day_of, day_start
from taskpool.exceptions import InvalidMessage
from taskpool.messages import decode_line
from taskpool.stores.changes import Journal, concern_of
from taskpool.stores.jsonl import checkpoint, parallel_replay
from taskpool.stores.jsonl.appender import Appended
from taskpool.stores.jsonl.cursors import Cursor
from taskpool.stores.jsonl.day_files import DayFiles, refuse_broken_link
from taskpool.stores.jsonl.day_reading import whole_line_runs
from taskpool.stores.jsonl.gc_pause import gc_paused
from taskpool.stores.jsonl.index import PoolIndex

#: Lines read since the last start-up checkpoint before the next one is written.
CHECKPOINT_LINES = 50_000
READ_CHUNK_BYTES = 8 * 1024 * 1024

logger = logging.getLogger("taskpool")


@dataclass(slots=True)
class DayTail:
    """How far the index has read a day file."""

    inode: int
    offset: int  # just past the last complete line consumed
    size: int = 0  # the file's size when last looked at: more than offset after a torn line


class _StartOver(Exception):
    """A day file changed under the index in a way only a rebuild can follow."""


class IndexTail:
    """The ``PoolIndex`` and how far it has read each day file of the horizon."""

    def __init__(
        self,
        files: DayFiles,
        *,
        task_ttl: float,
        clock: Callable[[], float],
        checkpoint_lines: int = CHECKPOINT_LINES,
    ) -> None:
        self.files = files
        self.task_ttl = task_ttl
        self.clock = clock
        self.checkpoint_lines = checkpoint_lines
        self.journal = Journal()
        self._advanced_at = -math.inf  # time.monotonic() of the last advance
        #: A first start's progress: called with the bytes to replay, it returns a
        #: bar (``update(bytes)``, ``close()``) that follows the replay.
        self.replay_progress: Callable[[int], Any] | None = None
        self._bar: Any = None
        self.start_over(from_checkpoint=True)

    def start_over(self, *, from_checkpoint: bool = False) -> None:
        """Forget everything read; with ``from_checkpoint``, resume from the saved one if it fits."""
        self.journal.reset()
        self.index = PoolIndex(self.task_ttl)
        self.tails: dict[date, DayTail] = {}
        self._horizon_start: date | None = None
        self._checkpoint_failing = False  # said in the log once, until one is written
        #: Whether the index was resumed from a checkpoint rather than read from the files.
        self.resumed = False
        #: How many day files, and in how many segments, were replayed in
        #: parallel for it (``stores.jsonl.parallel_replay``).
        self.days_replayed_in_parallel = 0
        self.segments_replayed_in_parallel = 0
        if from_checkpoint:
            with gc_paused():
                saved = checkpoint.load(self.files.directory, self.task_ttl, self.files.path)
            if saved is not None:
                self.index = saved.index
                self.tails = {
                    day: DayTail(position.inode, position.offset, position.size)
                    for day, position in saved.positions.items()
                }
                self.resumed = True
        # A start that found no checkpoint replays the horizon on its first advance.
        self._replay_due = from_checkpoint and not self.resumed
        self._checkpointed_lines = self.lines_read

    @property
    def lines_read(self) -> int:
        """Lines the index has taken in, messages or not."""
        return self.index.lines + self.index.skipped_lines

    def advance(self, *, checkpoint_allowed: bool = True) -> float:
        """Bring the index up to date with every complete line in the horizon; returns now.

        Every ``checkpoint_lines`` lines it also writes a start-up checkpoint,
        unless told not to (under the pool's lock, which others wait for).
        """
        if self._replay_due:
            self._replay_due = False
            if checkpoint_allowed:
                with checkpoint.replay_lock(self.files.directory), gc_paused():
                    # Whoever held the lock before us may have left a checkpoint.
                    self.start_over(from_checkpoint=True)
                    self._replay_due = False
                    if self.resumed:
                        return self._advance(checkpoint_allowed)
                    if self.replay_progress is not None:
                        self._bar = self.replay_progress(self.unread_bytes())
                    try:
                        self._replay_in_parallel()
                        if self._bar is not None:
                            self._bar.update(sum(tail.offset for tail in self.tails.values()))
                        return self._advance(checkpoint_allowed)
                    finally:
                        if self._bar is not None:
                            self._bar.close()
                            self._bar = None
        return self._advance(checkpoint_allowed)

    def advanced_within(self, seconds: float) -> bool:
        """Whether the index was brought up to date less than ``seconds`` ago."""
        return not self._replay_due and time.monotonic() - self._advanced_at < seconds

    def _advance(self, checkpoint_allowed: bool) -> float:
        for _attempt in range(3):
            now = self.clock()
            try:
                self._advance_once(now)
            except _StartOver:
                self.start_over()
                continue
            self._advanced_at = time.monotonic()
            if checkpoint_allowed:  # not under the pool's lock: other writers would wait
                self.index.compact_tasks()
            if (
                checkpoint_allowed
                and self.lines_read - self._checkpointed_lines >= self.checkpoint_lines
            ):
                self._write_checkpoint()
            return now
        raise RuntimeError(
            f"The day files in {self.files.directory} keep changing under the reader."
        )

    def unread_bytes(self) -> int:
        """Bytes of the horizon's day files the index has not read yet (a few ``stat`` calls).

        An unfinished last line counts until it is finished.
        """
        first_day = day_of(self.clock() - self.task_ttl)
        unread = 0
        for day in self.files.days():
            if day < first_day:
                continue
            try:
                stat = os.stat(self.files.path(day))
            except FileNotFoundError:
                continue
            tail = self.tails.get(day)
            read = tail.offset if tail is not None and tail.inode == stat.st_ino else 0
            unread += max(stat.st_size - read, 0)
        return unread

    def not_behind_the_newest_day(self, now: float) -> float:
        """``now``, or the first second of the newest day file read when the clock is a day
        behind it: the time a line appended now is stamped with.

        A clock stepped back across midnight would stamp lines with the day
        before and append them to its file, behind the cursors already handed
        out in the newer one: a stream reading on would never send them. They
        are stamped with the newer day's first second instead, in file order,
        until the clock catches up. A day file further ahead (copied in, or
        written by a clock days fast) does not stop the pool's time.
        """
        newest = max(self.tails, default=None)
        if newest is not None and day_of(now + 86400) == newest:
            return day_start(newest)
        return now

    def through(self) -> Cursor | None:
        """Where the index has read to in the newest day file."""
        newest = max(self.tails, default=None)
        return None if newest is None else Cursor(newest, self.tails[newest].offset)

    def _advance_once(self, now: float) -> None:
        first_day = day_of(now - self.task_ttl)
        if first_day != self._horizon_start:
            self._horizon_start = first_day
            for day in [day for day in self.tails if day < first_day]:
                del self.tails[day]
            self.index.forget_days_before(first_day.toordinal(), now)
        listed = self.files.days()
        if not self.tails.keys() <= set(listed):
            # A day file the index read was moved or deleted (by hand, while serving): read
            # the pool again as the files now are, or this process would go on appending to
            # a file no one else will read.
            raise _StartOver
        for day in listed:
            if day >= first_day:
                self._read_new(day, now)
        self.index.expire(now)

    def _replay_in_parallel(self) -> None:
        """Read the horizon's day files in segments, in parallel, if that is worth it.

        The first start's shortcut (``stores.jsonl.parallel_replay``); whatever it
        leaves unread, ``_advance`` reads as usual.
        """
        now = self.clock()
        first_day = day_of(now - self.task_ttl)
        days = [(day, self.files.path(day)) for day in self.files.days() if day >= first_day]
        if not parallel_replay.worth_it([path for _day, path in days]):
            return
        try:
            segments = parallel_replay.plan_segments(days, parallel_replay.available_cpus())
            readings = parallel_replay.read_segments(segments, self.task_ttl, now)
        except Exception:  # noqa: BLE001 - only a shortcut: the files are read in order instead
            return
        for reading in readings:
            if not self._follows(reading) or not self.index.fold(
                reading.index, reading.strays, now
            ):
                self.start_over()
                return
            for piece in reading.pieces:
                self.tails[piece.day] = DayTail(piece.inode, piece.end, piece.size)
        self.days_replayed_in_parallel = len(self.tails)
        self.segments_replayed_in_parallel = len(readings)

    def _follows(self, reading: parallel_replay.SegmentReading) -> bool:
        """Whether a segment starts where the index stopped: the same file, the same offset."""
        first = reading.pieces[0]
        tail = self.tails.get(first.day)
        if tail is None:
            return first.start == 0
        return tail.inode == first.inode and tail.offset == first.start

    def _write_checkpoint(self) -> None:
        """Save the index and how far it has read each file (see ``stores.jsonl.checkpoint``)."""
        self._checkpointed_lines = self.lines_read
        try:
            positions = {
                day: checkpoint.DayPosition(
                    tail.inode,
                    tail.offset,
                    tail.size,
                    checkpoint.guard_of(self.files.path(day), tail.offset),
                )
                for day, tail in self.tails.items()
            }
            checkpoint.save(
                self.files.directory, checkpoint.Checkpoint(self.task_ttl, positions, self.index)
            )
        except Exception as error:  # noqa: BLE001 - only a shortcut for the next start: never fail a read
            if not self._checkpoint_failing:  # said once, until one is written again
                logger.warning(
                    "taskpool: the index's checkpoint was not written (%s); the next start "
                    "reads the whole week again.",
                    getattr(error, "strerror", None) or error,
                )
            self._checkpoint_failing = True
        else:
            self._checkpoint_failing = False

    def _read_new(self, day: date, now: float) -> None:
        path = self.files.path(day)
        tail = self.tails.get(day)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            refuse_broken_link(path)  # a day the index must not read as empty
            if tail is not None:
                raise _StartOver from None
            return
        if tail is None:
            if self.tails and day < max(self.tails):
                raise _StartOver  # an older day file appeared: file order changed
            tail = self.tails[day] = DayTail(stat.st_ino, 0)
        elif stat.st_ino != tail.inode or stat.st_size < tail.offset:
            raise _StartOver
        tail.size = stat.st_size
        if stat.st_size > tail.offset:
            self._consume(day, path, tail, stat.st_size, now)

    def _consume(self, day: date, path: Path, tail: DayTail, size: int, now: float) -> None:
        """Feed the complete lines between ``tail.offset`` and ``size`` to the index."""
        day_ordinal = day.toordinal()
        with open(path, "rb", buffering=0) as file:
            if tail.offset and os.pread(file.fileno(), 1, tail.offset - 1) != b"\n":
                # The file was edited in place (same inode, another size): what the index
                # read has moved, and where it read up to is no longer a line's end.
                raise _StartOver
            for offset, run in whole_line_runs(file.fileno(), tail.offset, size, READ_CHUNK_BYTES):
                start = offset
                for line in run.split(b"\n"):
                    if line:
                        self._take(line, day_ordinal, start, now)
                    start += len(line) + 1
                if self._bar is not None:
                    self._bar.update(start - tail.offset)
                tail.offset = start

    def _take(self, line: bytes, day_ordinal: int, offset: int, now: float) -> None:
        """One line into the index (and the journal of whom it concerns, while anyone waits)."""
        try:
            message = decode_line(line)
        except InvalidMessage:
            self.index.skip_line()
            return
        if self.journal.enabled:
            self.journal.record(concern_of(message, self.index.open))
        self.index.add(message, day_ordinal, offset, now)

    def append_position(self, day: date) -> tuple[int | None, int | None]:
        """The day file's inode as last seen, and where it ends if it ends in a whole line."""
        tail = self.tails.get(day)
        if tail is None:
            return None, None
        return tail.inode, tail.offset if tail.size == tail.offset else None

    def take_appended(
        self, day: date, line: bytes, appended: Appended, clean_end: int | None, now: float
    ) -> None:
        """Index a line this process just appended (hold the pool's lock, the index just advanced)."""
        tail = self.tails.get(day)
        if tail is not None and clean_end is not None and appended.start == clean_end:
            # The index is level with the file up to our line: take it from
            # memory, decoded from its bytes as any other process will see it.
            self._take(line[:-1], day.toordinal(), appended.start, now)
            tail.offset = tail.size = appended.end
            return
        # A new file, a torn line ended first, or a line appended without the
        # lock in between: read what is there, in file order.
        try:
            self._read_new(day, now)
        except _StartOver:
            self.start_over()
