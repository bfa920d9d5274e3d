"""Reading the PostgreSQL pool's log: its days, pages after a cursor, a day's lines and pages.

The log is read in ``(xid, seq)`` order, only below the oldest of the pool's
own writers still running (``horizon``), so a tailing reader never skips a
row whose transaction commits after a later one's. A cursor names a row by
both: ``<xid>-<seq>``, 16 hex digits each.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson

from taskpool.days import day_of
from taskpool.exceptions import InvalidCursor
from taskpool.message_filter import MessageFilter
from taskpool.messages import Message
from taskpool.stores.base import DayPage, DaySummary, Page, PageEntry
from taskpool.stores.database.horizon import horizon
from taskpool.stores.database.reconnecting import reconnecting

#: A log position: the writing transaction and the row, ``<xid>-<seq>`` in 16 hex digits each.
_POSITION = re.compile(r"([0-9a-f]{16})-([0-9a-f]{16})")
#: Rows read from the log at a time.
BATCH = 500


def position(xid: int, seq: int) -> str:
    return f"{xid:016x}-{seq:016x}"


def parse_position(cursor: str) -> tuple[int, int]:
    match = _POSITION.fullmatch(cursor) if isinstance(cursor, str) else None
    if match is None:
        raise InvalidCursor(f"{cursor!r} is not a cursor of this pool.")
    return int(match[1], 16), int(match[2], 16)


class LogReading:
    """The log's part of ``DatabaseStore``: what ``BaseStore`` asks of a log, over its table."""

    _summaries: dict[date, tuple[float, DaySummary]]
    alias: str

    if TYPE_CHECKING:  # given by DatabaseStore

        def _cursor(self) -> AbstractContextManager[Any]: ...

        def now(self) -> float: ...

    def days(self) -> list[date]:
        with self._cursor() as cursor:
            # Each next day by one index lookup, not by reading every row.
            cursor.execute(
                "WITH RECURSIVE d(day) AS ("
                "SELECT min(day) FROM taskpool_db_message UNION ALL "
                "SELECT (SELECT min(day) FROM taskpool_db_message WHERE day > d.day) "
                "FROM d WHERE d.day IS NOT NULL) SELECT day FROM d WHERE day IS NOT NULL"
            )
            return [day for (day,) in cursor.fetchall()]

    def day_messages(self, day: date) -> list[Message]:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT line FROM taskpool_db_message WHERE day = %s ORDER BY xid, seq", [day]
            )
            return [orjson.loads(line) for (line,) in cursor.fetchall()]

    def day_lines(self, day: date) -> Iterator[bytes]:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT xid, seq FROM taskpool_db_message WHERE day = %s "
                "ORDER BY xid DESC, seq DESC LIMIT 1",
                [day],
            )
            last = cursor.fetchone()
        if last is None:
            return
        after = (-1, -1)
        while True:
            with self._cursor() as cursor:
                cursor.execute(
                    "SELECT xid, seq, line FROM taskpool_db_message WHERE day = %s "
                    "AND (xid, seq) > (%s, %s) AND (xid, seq) <= (%s, %s) "
                    "ORDER BY xid, seq LIMIT %s",
                    [day, *after, *last, BATCH * 4],
                )
                rows = cursor.fetchall()
            if not rows:
                return
            yield "".join(f"{line}\n" for _xid, _seq, line in rows).encode()
            after = rows[-1][0], rows[-1][1]

    @reconnecting
    def check_cursor(self, cursor: str) -> None:
        xid, seq = parse_position(cursor)
        with self._cursor() as sql:
            sql.execute("SELECT 1 FROM taskpool_db_message WHERE seq = %s AND xid = %s", [seq, xid])
            if sql.fetchone() is None:
                raise InvalidCursor(f"Cursor {cursor} names no message of this pool.")

    @reconnecting
    def end_cursor(self) -> str | None:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT xid, seq FROM taskpool_db_message WHERE xid < %s "
                "ORDER BY xid DESC, seq DESC LIMIT 1",
                [horizon(cursor)],
            )
            row = cursor.fetchone()
        return None if row is None else position(*row)

    @reconnecting
    def messages_after(self, cursor: str | None, *, limit: int) -> Page:
        if cursor is None:
            start = (-1, -1)
        else:
            self.check_cursor(cursor)
            start = parse_position(cursor)
        return self._page(start, limit, cursor)

    def messages_from_day(self, day: date, *, limit: int) -> Page:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT xid, seq FROM taskpool_db_message WHERE day >= %s AND xid < %s "
                "ORDER BY xid, seq LIMIT 1",
                [day, horizon(cursor)],
            )
            first = cursor.fetchone()
        if first is None:
            return Page([], self.end_cursor(), False)
        return self._page((first[0], first[1] - 1), limit, self.end_cursor())

    def _page(self, start: tuple[int, int], limit: int, given: str | None) -> Page:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT xid, seq, line FROM taskpool_db_message "
                "WHERE (xid, seq) > (%s, %s) AND xid < %s ORDER BY xid, seq LIMIT %s",
                [*start, horizon(cursor), limit + 1],
            )
            rows = cursor.fetchall()
        entries = [PageEntry(position(xid, seq), orjson.loads(line)) for xid, seq, line in rows]
        if len(entries) > limit:
            return Page(entries[:limit], entries[limit - 1].cursor, True)
        return Page(entries, entries[-1].cursor if entries else given, False)

    def message_at(self, cursor: str, *, day: date | None = None) -> Message:
        xid, seq = parse_position(cursor)
        with self._cursor() as sql:
            sql.execute(
                "SELECT line, day FROM taskpool_db_message WHERE seq = %s AND xid = %s", [seq, xid]
            )
            row = sql.fetchone()
        if row is None:
            raise InvalidCursor(f"Cursor {cursor} names no message of this pool.")
        if day is not None and row[1] != day:
            raise InvalidCursor(f"Cursor {cursor} is not in the day {day.isoformat()}.")
        return orjson.loads(row[0])

    def day_summaries(
        self, days: list[date], *, count_limit: int | None = None
    ) -> list[DaySummary]:
        summaries = []
        today = day_of(self.now())
        for day in days:
            kept = self._summaries.get(day)
            if kept is not None and day < today and time.monotonic() - kept[0] < 60:
                summaries.append(kept[1])
                continue
            with self._cursor() as cursor:
                cursor.execute(
                    "SELECT kind, count(*), sum(octet_length(line) + 1) FROM taskpool_db_message "
                    "WHERE day = %s GROUP BY kind",
                    [day],
                )
                rows = cursor.fetchall()
            if not rows:
                continue
            size = sum(int(total) for _kind, _count, total in rows)
            summary = DaySummary(
                day=day,
                size=size,
                messages=sum(count for _kind, count, _total in rows),
                torn=0,
                types={kind: count for kind, count, _total in rows},
                counted=size,
                on_disk=False,
            )
            self._summaries[day] = (time.monotonic(), summary)
            summaries.append(summary)
        return summaries

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
        for cursor in (after, before):
            if cursor is not None:
                self._check_in_day(cursor, day)
        where = where if where is not None and not where.is_empty else None
        backward = before is not None or from_end
        start = before if backward else after
        rows = self._day_rows(
            day, backward=backward, edge=parse_position(start) if start is not None else None
        )
        entries: list[PageEntry] = []
        scanned = 0
        edge: tuple[int, int] | None = None  # the last row examined
        exhausted = True
        for xid, seq, line in rows:
            edge = (xid, seq)
            scanned += len(line) + 1
            message = _wanted(line, where)
            if message is not None:
                entries.append(PageEntry(position(xid, seq), message))
            if len(entries) >= limit or (scan_limit is not None and scanned >= scan_limit):
                exhausted = False
                break
        if backward:
            entries.reverse()
            at_end = before is None or not self._has_after(day, parse_position(before))
            return DayPage(
                entries,
                previous_cursor=None if exhausted else self._before_position(day, edge),
                next_cursor=None if at_end else before,
                at_end=at_end,
            )
        stop = edge if edge is not None else (parse_position(after) if after else None)
        at_end = exhausted or not self._has_after(day, stop)
        return DayPage(
            entries,
            previous_cursor=after,
            next_cursor=None if at_end or stop is None else position(*stop),
            at_end=at_end,
        )

    def _day_rows(
        self, day: date, *, backward: bool, edge: tuple[int, int] | None
    ) -> Iterator[tuple[int, int, str]]:
        """The day's rows after ``edge`` in order, or (``backward``) up to ``edge`` itself
        included, newest first; a batch at a time."""
        inclusive = backward
        while True:
            if backward:
                comparison = "<=" if inclusive else "<"
                condition = f"AND (xid, seq) {comparison} (%s, %s)" if edge else ""
                order = "ORDER BY xid DESC, seq DESC"
            else:
                condition = "AND (xid, seq) > (%s, %s)" if edge else ""
                order = "ORDER BY xid, seq"
            with self._cursor() as cursor:
                cursor.execute(
                    "SELECT xid, seq, line FROM taskpool_db_message WHERE day = %s "
                    f"{condition} {order} LIMIT %s",
                    [day, *(edge or ()), BATCH],
                )
                rows = cursor.fetchall()
            yield from rows
            if len(rows) < BATCH:
                return
            edge, inclusive = (rows[-1][0], rows[-1][1]), False

    def _check_in_day(self, cursor: str, day: date) -> None:
        xid, seq = parse_position(cursor)
        with self._cursor() as sql:
            sql.execute(
                "SELECT day FROM taskpool_db_message WHERE seq = %s AND xid = %s", [seq, xid]
            )
            row = sql.fetchone()
        if row is None or row[0] != day:
            raise InvalidCursor(f"Cursor {cursor} is not in the day {day.isoformat()}.")

    def _has_after(self, day: date, edge: tuple[int, int] | None) -> bool:
        if edge is None:
            return False
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM taskpool_db_message WHERE day = %s AND (xid, seq) > (%s, %s) LIMIT 1",
                [day, *edge],
            )
            return cursor.fetchone() is not None

    def _before_position(self, day: date, edge: tuple[int, int] | None) -> str | None:
        """The position of the day's message just before ``edge`` (where a page before ends)."""
        if edge is None:
            return None
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT xid, seq FROM taskpool_db_message WHERE day = %s AND (xid, seq) < (%s, %s) "
                "ORDER BY xid DESC, seq DESC LIMIT 1",
                [day, *edge],
            )
            row = cursor.fetchone()
        return None if row is None else position(*row)


def _wanted(line: str, where: MessageFilter | None) -> Message | None:
    if where is not None and not where.could_match(line.encode()):
        return None
    message = orjson.loads(line)
    return message if where is None or where.matches(message) else None
