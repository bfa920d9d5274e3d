"""The day files read as they are, without the index: the log, its cursors and pages, raw
lines, and the admin's browsing of days.

A mixin of ``JsonlStore``. It reads the files directly and takes no lock: day
files only grow, and each read stops at the last complete line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import date
from typing import TYPE_CHECKING

from taskpool.days import day_of
from taskpool.exceptions import InvalidCursor, InvalidMessage
from taskpool.message_filter import MessageFilter
from taskpool.messages import Message, decode_line
from taskpool.stores.base import DayPage, DaySummary, Page, PageEntry
from taskpool.stores.jsonl import browsing, day_summaries
from taskpool.stores.jsonl.cursors import Cursor
from taskpool.stores.jsonl.day_files import DayFiles


class DayFileReads:
    """``JsonlStore``'s reads of the day files themselves."""

    __slots__ = ()

    if TYPE_CHECKING:  # the store's fields these reads use (``JsonlStore`` has them)
        _files: DayFiles
        _clock: Callable[[], float]
        task_ttl: float

    def days(self) -> list[date]:
        return self._files.days()

    def day_messages(self, day: date) -> list[Message]:
        return self._files.messages(day)

    # The log: cursors, pages, raw lines -----------------------------------

    def check_cursor(self, cursor: str) -> None:
        self._files.check_cursor(Cursor.parse(cursor))

    def end_cursor(self) -> str | None:
        end = self._files.end_cursor()
        return None if end is None else str(end)

    def messages_after(self, cursor: str | None, *, limit: int) -> Page:
        if cursor is None:
            days = self._files.days()
            if not days:
                return Page([], None, False)
            start = Cursor.start_of(days[0])
        else:
            start = Cursor.parse(cursor)
            self._files.check_cursor(start)
        return self._page(start, limit)

    def messages_from_day(self, day: date, *, limit: int) -> Page:
        first = next((listed for listed in self._files.days() if listed >= day), None)
        if first is None:
            return Page([], self.end_cursor(), False)
        return self._page(Cursor.start_of(first), limit)

    def _page(self, start: Cursor, limit: int) -> Page:
        entries: list[PageEntry] = []
        position = start
        for day in [listed for listed in self._files.days() if listed >= start.day]:
            offset = start.offset if day == start.day else 0
            for end, line in self._files.lines(day, offset):
                try:
                    message = decode_line(line)
                except InvalidMessage:
                    position = Cursor(day, end)  # not a message: step over it
                    continue
                if len(entries) == limit:
                    return Page(entries, entries[-1].cursor, True)
                position = Cursor(day, end)
                entries.append(PageEntry(str(position), message))
        return Page(entries, str(position), False)

    def day_lines(self, day: date) -> Iterator[bytes]:
        return self._files.raw_chunks(day)

    # Browsing day files (the admin) ------------------------------------------

    def day_summaries(
        self, days: list[date], *, count_limit: int | None = None
    ) -> list[DaySummary]:
        budget = day_summaries.Budget(count_limit)
        summaries = (day_summaries.summarize(day, self._files.path(day), budget) for day in days)
        return [summary for summary in summaries if summary is not None]

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
        return browsing.day_page(
            self._files,
            day,
            after=None if after is None else Cursor.parse(after),
            before=None if before is None else Cursor.parse(before),
            from_end=from_end,
            limit=limit,
            where=where,
            scan_limit=scan_limit,
        )

    def message_at(self, cursor: str, *, day: date | None = None) -> Message:
        position = Cursor.parse(cursor)
        if day is not None and position.day != day:
            raise InvalidCursor(f"Cursor {cursor} is not in the day {day.isoformat()}.")
        return self._files.message_ending_at(position)

    def device_messages(self, device_id: str, *, limit: int = 20) -> list[PageEntry]:
        first_day = day_of(self._clock() - self.task_ttl)
        days = [day for day in self._files.days() if day >= first_day]
        return browsing.device_messages(self._files, device_id, days, limit=limit)
