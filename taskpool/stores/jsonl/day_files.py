"""``DayFiles``: the directory of day files, and every way ``JsonlStore`` reads them.

Nothing here knows the index or takes the pool's lock: day files only grow,
and every read stops at the last complete line, so a reader never sees half
a line another process is writing. Positions are byte offsets where a line
starts (0, or just past a ``\\n``); ``Cursor`` offsets are those positions.
The chunked readers themselves are in ``day_reading``.
"""

from __future__ import annotations

import mmap
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from taskpool.days import broken_link, day_file_name, day_of_file_name
from taskpool.exceptions import DataDirMissing, DayFileMissing, InvalidCursor, InvalidMessage
from taskpool.messages import Message, decode_line
from taskpool.stores.jsonl import day_reading
from taskpool.stores.jsonl.cursors import Cursor

#: Chunks of the raw dump (``day_lines``).
DUMP_CHUNK_BYTES = 1024 * 1024
#: A directory changed this recently is listed again: its mtime may not have
#: ticked for a file created just after the last look.
_RELIST_NS = 2_000_000_000


def refuse_broken_link(path: Path) -> None:
    """After a ``FileNotFoundError``: ``DayFileMissing`` if the day file's name is there as a
    link to nothing; a day file that is really gone (pruned meanwhile) is no error."""
    if broken_link(path) is not None:
        raise DayFileMissing(
            f"The day file {path.name} is a symbolic link to a file that does not exist: that "
            "day cannot be read until the file is restored (or the link removed)."
        )


class DayFiles:
    """``DATA_DIR/YYYY-MM-DD.jsonl``: names, listing, and reading (never writing)."""

    def __init__(self, directory: Path, *, max_message_bytes: int) -> None:
        self.directory = directory
        self.max_message_bytes = max_message_bytes
        self._paths: dict[date, Path] = {}
        # (directory mtime, days): replaced whole, so threads and the event
        # loop may read it without a lock.
        self._listing: tuple[int, list[date]] | None = None

    def path(self, day: date) -> Path:
        path = self._paths.get(day)
        if path is None:
            if len(self._paths) > 64:
                self._paths.clear()
            path = self._paths[day] = self.directory / day_file_name(day)
        return path

    def days(self) -> list[date]:
        """Every day that has a file, oldest first; listed again only when the directory changed."""
        mtime = self._directory_mtime()
        listing = self._listing
        if listing is not None and listing[0] == mtime and time.time_ns() - mtime > _RELIST_NS:
            return listing[1]
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError as error:
            raise DataDirMissing from error
        days = sorted(day for name in names if (day := day_of_file_name(name)) is not None)
        self._listing = (mtime, days)
        return days

    def _directory_mtime(self) -> int:
        try:
            return os.stat(self.directory).st_mtime_ns
        except FileNotFoundError as error:
            raise DataDirMissing from error

    def extents(self, first_day: date) -> tuple[int, tuple[tuple[date, int, int], ...]]:
        """The directory's mtime and each file's (day, inode, size) from ``first_day`` on.

        A few ``stat`` calls and no reading: what a watcher compares to learn
        that lines may have arrived.
        """
        mtime = self._directory_mtime()
        extents = []
        for day in self.days():
            if day >= first_day:
                try:
                    stat = os.stat(self.path(day))
                except FileNotFoundError:
                    continue
                extents.append((day, stat.st_ino, stat.st_size))
        return mtime, tuple(extents)

    def total_size(self) -> int:
        """The bytes of every day file (a ``stat`` each)."""
        return sum(size for _day, _inode, size in self.extents(date.min)[1])

    @contextmanager
    def open(self, day: date) -> Iterator[tuple[int | None, int]]:
        """The day's descriptor and the end of its last complete line (``None``, 0 without a file)."""
        try:
            descriptor = os.open(self.path(day), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            refuse_broken_link(self.path(day))
            yield None, 0
            return
        try:
            yield descriptor, day_reading.complete_end(descriptor, os.fstat(descriptor).st_size)
        finally:
            os.close(descriptor)

    def message_starting_at(self, day: date, offset: int) -> Message:
        """The message whose line starts at ``offset`` (``InvalidMessage`` if it is not one)."""
        with open(self.path(day), "rb", buffering=0) as file:
            data = os.pread(file.fileno(), self.max_message_bytes + 2, offset)
        return decode_line(data.split(b"\n", 1)[0])

    def message_ending_at(self, cursor: Cursor) -> Message:
        """The message whose line ends just before ``cursor`` (a ``PageEntry.cursor``)."""
        with self.open(cursor.day) as (descriptor, end):
            if descriptor is None or not 0 < cursor.offset <= end:
                raise InvalidCursor(f"No line ends at {cursor}.")
            day_reading.check_line_start(descriptor, cursor.offset, end)
            return decode_line(day_reading.line_before(descriptor, cursor.offset))

    def lines(self, day: date, start: int = 0) -> Iterator[tuple[int, bytes]]:
        """Each complete line from ``start`` (a line start) on, with the offset just past it."""
        with self.open(day) as (descriptor, end):
            if descriptor is None:
                return
            for _chunk_end, lines in day_reading.read_forward(descriptor, start, end):
                for offset, line in lines:
                    yield offset + len(line) + 1, line

    def messages(self, day: date) -> list[Message]:
        """The day's messages in file order; lines that are not messages are left out."""
        found = []
        for _end, line in self.lines(day):
            if line:
                try:
                    found.append(decode_line(line))
                except InvalidMessage:
                    continue
        return found

    def messages_naming(self, day: date, text: str, *, start: int = 0) -> Iterator[Message]:
        """The day's messages whose line contains ``text``, found without parsing the rest;
        from the line at byte ``start`` on (a line's start)."""
        try:
            file = open(self.path(day), "rb", buffering=0)  # noqa: SIM115 - closed below
        except FileNotFoundError:
            refuse_broken_link(self.path(day))
            return
        with file:
            size = os.fstat(file.fileno()).st_size
            if size == 0:
                return
            with mmap.mmap(file.fileno(), size, access=mmap.ACCESS_READ) as data:
                end_of_complete = data.rfind(b"\n") + 1
                needle = text.encode()
                found = data.find(needle, start, end_of_complete)
                while found >= 0:
                    start = data.rfind(b"\n", 0, found) + 1
                    end = data.find(b"\n", found)
                    try:
                        message = decode_line(data[start:end])
                    except InvalidMessage:
                        message = None
                    if message is not None:
                        yield message
                    found = data.find(needle, end, end_of_complete)

    def raw_chunks(self, day: date) -> Iterator[bytes]:
        """The day's complete lines exactly as stored, in chunks that end at line ends."""
        with self.open(day) as (descriptor, end):
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

    def check_cursor(self, cursor: Cursor) -> None:
        """``InvalidCursor`` unless ``cursor`` is a day file's start or the end of one of its lines."""
        try:
            descriptor = os.open(self.path(cursor.day), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            refuse_broken_link(self.path(cursor.day))
            raise InvalidCursor(f"Cursor {cursor} names no day file.") from None
        try:
            if cursor.offset == 0:
                return
            if cursor.offset > os.fstat(descriptor).st_size:
                raise InvalidCursor(f"Cursor {cursor} is past the end of its day file.")
            if os.pread(descriptor, 1, cursor.offset - 1) != b"\n":
                raise InvalidCursor(f"Cursor {cursor} is not at the end of a line.")
        finally:
            os.close(descriptor)

    def end_cursor(self) -> Cursor | None:
        """Just past the pool's last complete line; ``None`` without day files."""
        for day in reversed(self.days()):
            with self.open(day) as (descriptor, end):
                if descriptor is not None:
                    return Cursor(day, end)
        return None
