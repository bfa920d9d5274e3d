"""Browsing a day file a page at a time, and a device's recent messages (the admin).

Pages read only the chunks they need, forward or backward from a line
start, and a chunk that a filter's quick byte test rules out is never split
into lines, so a day of a million lines opens as fast as a small one.
"""

from __future__ import annotations

from datetime import date

from taskpool.exceptions import InvalidCursor, InvalidMessage
from taskpool.message_filter import MessageFilter
from taskpool.messages import Message, decode_line, device_address, parse_address
from taskpool.stores.base import DayPage, PageEntry
from taskpool.stores.jsonl import day_reading
from taskpool.stores.jsonl.cursors import Cursor
from taskpool.stores.jsonl.day_files import DayFiles


def day_page(
    files: DayFiles,
    day: date,
    *,
    after: Cursor | None,
    before: Cursor | None,
    from_end: bool,
    limit: int,
    where: MessageFilter | None,
    scan_limit: int | None,
) -> DayPage:
    """``BaseStore.day_page`` over the day files."""
    for cursor in (after, before):
        if cursor is not None and cursor.day != day:
            raise InvalidCursor(f"Cursor {cursor} is not in the day {day.isoformat()}.")
    where = where if where is not None and not where.is_empty else None
    with files.open(day) as (descriptor, end):
        if descriptor is None:
            return DayPage([], None, None, True, (0, 0))
        if before is not None or from_end:
            stop = end if before is None else before.offset
            day_reading.check_line_start(descriptor, stop, end)
            entries, start = _scan_backward(day, descriptor, stop, limit, where, scan_limit)
        else:
            start = 0 if after is None else after.offset
            day_reading.check_line_start(descriptor, start, end)
            entries, stop = _scan_forward(day, descriptor, start, end, limit, where, scan_limit)
        return DayPage(
            entries,
            previous_cursor=str(Cursor(day, start)) if start > 0 else None,
            next_cursor=None if stop >= end else str(Cursor(day, stop)),
            at_end=stop >= end,
            span=(start, stop),
        )


def device_messages(
    files: DayFiles, device_id: str, days: list[date], *, limit: int
) -> list[PageEntry]:
    """The device's latest messages in ``days``, newest first: sent by it or addressed to it."""
    address = device_address(device_id)
    needles = (device_id.encode(), b'"device:*"')

    def could_name(data: bytes) -> bool:
        return b"\\" in data or any(needle in data for needle in needles)

    found: list[PageEntry] = []
    for day in reversed(days):
        with files.open(day) as (descriptor, end):
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
                        found.append(PageEntry(str(Cursor(day, offset + len(line) + 1)), message))
                        if len(found) >= limit:
                            return found
    return found


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
                entries.append(PageEntry(str(Cursor(day, offset + len(line) + 1)), message))
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
                entries.append(PageEntry(str(Cursor(day, offset + len(line) + 1)), message))
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
