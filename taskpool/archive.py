"""The archive: days pruned from the pool, kept as ``ARCHIVE_DIR/YYYY-MM-DD.jsonl.gz``.

``taskpool_prune`` writes a day here (the day's lines exactly as the store
gives them, gzipped), reads it back to compare, and only then has the store
remove the day. Whatever the store, an archived day is the day file a
``JsonlStore`` would hold, compressed: ``zcat`` and ``zgrep`` read it.

The archive is read-only for everything else. The log (``GET log?date=D``,
whole or as JSON Lines) and the admin's day files find a day here when the
pool no longer has it. A day is read from the start of its file (gzip does
not seek), so a page of an archived day costs a reading of the day up to it;
positions in an archived day are line numbers (``L<n>``, counted from 1),
never cursors of the pool.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

from django.core.cache import cache

from taskpool.conf import pool_settings
from taskpool.exceptions import ArchivedDayUnreadable, InvalidCursor, InvalidMessage, PoolError
from taskpool.message_filter import MessageFilter
from taskpool.messages import Message, decode_line
from taskpool.stores.base import DayPage, DaySummary, PageEntry

ARCHIVE_SUFFIX = ".jsonl.gz"
_ARCHIVE_NAME = re.compile(r"(\d{4}-\d{2}-\d{2})\.jsonl\.gz")
_POSITION = re.compile(r"L([0-9]{1,12})")
#: Bytes of decompressed lines per chunk of ``day_lines``.
CHUNK_BYTES = 1024 * 1024


class ArchiveExists(PoolError):
    """The archive holds the day already: the prune leaves both where they are."""


class DayArchive:
    """``ARCHIVE_DIR``: writing a day once, and reading archived days for the log and the admin."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)

    def path(self, day: date) -> Path:
        return self.directory / f"{day.isoformat()}{ARCHIVE_SUFFIX}"

    def days(self) -> list[date]:
        """Every archived day, oldest first (none while the directory does not exist)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        days = []
        for name in names:
            match = _ARCHIVE_NAME.fullmatch(name)
            if match is not None:
                try:
                    days.append(date.fromisoformat(match.group(1)))
                except ValueError:
                    continue
        return sorted(days)

    def has(self, day: date) -> bool:
        return self.path(day).is_file()

    # Writing ------------------------------------------------------------------

    def write(self, day: date, chunks: Iterator[bytes]) -> tuple[int, int]:
        """Archive the day's lines; returns (lines, bytes before compression).

        Written to a temporary file, synced, renamed into place, then read
        back and compared, so that a day is never removed from the pool for
        an archive that does not hold it whole. ``ArchiveExists`` if the day
        is archived already.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(day)
        if target.exists():
            raise ArchiveExists(f"{target.name} is in the archive already.")
        partial = target.with_name(f".{target.name}.partial")
        digest = hashlib.sha256()
        lines = size = 0
        try:
            with open(partial, "wb") as raw:
                with gzip.GzipFile(filename=target.name[:-3], mode="wb", fileobj=raw) as file:
                    for chunk in chunks:
                        file.write(chunk)
                        digest.update(chunk)
                        lines += chunk.count(b"\n")
                        size += len(chunk)
                raw.flush()
                os.fsync(raw.fileno())
            if _digest_of(partial) != digest.hexdigest():
                raise OSError(f"{partial.name} does not read back as written.")
            os.link(partial, target)  # never over an archive written meanwhile
        finally:
            partial.unlink(missing_ok=True)
        _sync_directory(self.directory)
        return lines, size

    def holds_exactly(self, day: date, chunks: Iterator[bytes]) -> int | None:
        """The number of lines when the archived day is exactly ``chunks``, else ``None``.

        A prune cut short between archiving a day and taking it out of the pool
        leaves such a day: the next run finishes it.
        """
        digest = hashlib.sha256()
        lines = 0
        for chunk in chunks:
            digest.update(chunk)
            lines += chunk.count(b"\n")
        try:
            same = _digest_of(self.path(day)) == digest.hexdigest()
        except (OSError, EOFError, zlib.error):  # missing, unreadable, not gzip, cut short
            return None
        return lines if same else None

    # Reading (the same answers as a store's, for the log and the admin) ---------

    def lines(self, day: date) -> Iterator[bytes]:
        """The archived day's complete lines, without their newlines; ``ArchivedDayUnreadable``
        for a file that does not read to its end."""
        try:
            with gzip.open(self.path(day), "rb") as file:
                for line in file:
                    if line.endswith(b"\n"):
                        yield line[:-1]
        except (OSError, EOFError, zlib.error) as error:  # cut short, not gzip, gone
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise ArchivedDayUnreadable(
                f"The archived day {day} ({self.path(day).name}) cannot be read whole: "
                f"{reason}. Restore it from a backup, or remove it if the day is gone for good."
            ) from error

    def day_lines(self, day: date) -> Iterator[bytes]:
        """The day's lines as archived, in chunks that end at line ends.

        The file is read through once first, so that one cut short is refused
        (``ArchivedDayUnreadable``) before a download of it begins, not midway.
        """
        for _line in self.lines(day):
            pass
        return self._chunks(day)

    def _chunks(self, day: date) -> Iterator[bytes]:
        chunk: list[bytes] = []
        size = 0
        for line in self.lines(day):
            chunk.append(line + b"\n")
            size += len(line) + 1
            if size >= CHUNK_BYTES:
                yield b"".join(chunk)
                chunk, size = [], 0
        if chunk:
            yield b"".join(chunk)

    def day_messages(self, day: date) -> list[Message]:
        found = []
        for line in self.lines(day):
            try:
                found.append(decode_line(line))
            except InvalidMessage:
                continue
        return found

    def day_summaries(self, days: list[date], **_options: object) -> list[DaySummary]:
        """Each day's counts, read once per archived file and kept in Django's cache."""
        summaries = []
        for day in days:
            path = self.path(day)
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            key = f"taskpool:archive:{day.isoformat()}:{stat.st_ino}:{stat.st_size}"
            summary = cache.get(key)
            if summary is None:
                summary = self._summarize(day)
                cache.set(key, summary, None)
            summaries.append(summary)
        return summaries

    def _summarize(self, day: date) -> DaySummary:
        """Counted from the lines, and sized as the day's download is (not gzipped)."""
        types: dict[str, int] = {}
        messages = torn = size = 0
        for line in self.lines(day):
            size += len(line) + 1
            try:
                kind = decode_line(line)["type"]
            except InvalidMessage:
                torn += 1
                continue
            messages += 1
            types[kind] = types.get(kind, 0) + 1
        return DaySummary(day, size, messages, torn, types, counted=size, on_disk=False)

    def day_page(
        self,
        day: date,
        *,
        after: str | None = None,
        before: str | None = None,
        from_end: bool = False,
        limit: int = 50,
        where: MessageFilter | None = None,
        scan_limit: int | None = None,
    ) -> DayPage:
        """A page of the archived day, as ``BaseStore.day_page``; positions are line numbers."""
        taken = [
            (number, message)
            for number, message in self._numbered(day)
            if where is None or where.matches(message)
        ]
        if after is not None:
            start = _line_number(after)
            page = [entry for entry in taken if entry[0] > start][:limit]
        elif before is not None or from_end:
            end = _line_number(before) if before is not None else None
            earlier = [entry for entry in taken if end is None or entry[0] <= end]
            page = earlier[-limit:] if limit else []
        else:
            page = taken[:limit]
        entries = [PageEntry(f"L{number}", message) for number, message in page]
        first = page[0][0] if page else None
        last = page[-1][0] if page else None
        has_before = first is not None and any(number < first for number, _ in taken)
        has_after = last is not None and any(number > last for number, _ in taken)
        return DayPage(
            entries,
            previous_cursor=f"L{first - 1}" if has_before and first is not None else None,
            next_cursor=f"L{last}" if has_after else None,
            at_end=not has_after,
        )

    def message_on(self, day: date, cursor: str) -> Message:
        """The message on line ``L<n>`` of the archived day."""
        wanted = _line_number(cursor)
        for number, line in enumerate(self.lines(day), 1):
            if number == wanted:
                return decode_line(line)
        raise InvalidCursor(f"The archived day {day} has no line {wanted}.")

    def _numbered(self, day: date) -> Iterator[tuple[int, Message]]:
        for number, line in enumerate(self.lines(day), 1):
            try:
                yield number, decode_line(line)
            except InvalidMessage:
                continue


def _line_number(cursor: str) -> int:
    match = _POSITION.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise InvalidCursor(f"{cursor!r} is not a line of an archived day.")
    return int(match.group(1))


def _digest_of(path: Path) -> str:
    digest = hashlib.sha256()
    with gzip.open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _sync_directory(directory: Path) -> None:
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def configured_archive() -> DayArchive | None:
    """The archive of ``ARCHIVE_DIR``, or ``None`` when it is not set."""
    directory = pool_settings.ARCHIVE_DIR
    return DayArchive(directory) if directory else None


def archived_day(store_days: list[date], day: date) -> DayArchive | None:
    """The archive, when it holds ``day`` and the pool does not (the pool's own day wins)."""
    if day in store_days:
        return None
    archive = configured_archive()
    return archive if archive is not None and archive.has(day) else None
