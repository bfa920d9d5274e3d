"""Cursors: positions in the pool that clients can resume from.

A cursor names a day file and a byte offset in it where a line ends (or 0,
the start of the day). Written ``YYYYMMDD-OOOOOOOOOOOO`` (the offset in 12
decimal digits), cursors sort as strings in pool order and stay valid across
restarts, because day files only grow. Clients treat them as opaque.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date

from taskpool.exceptions import InvalidCursor

# [0-9], not \d: \d and int() would also take other scripts' digits.
CURSOR_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})-([0-9]{12})")


@dataclass(frozen=True, slots=True, order=True)
class Cursor:
    """A position just past a line's end (or at a day's start) in a day file."""

    day: date
    offset: int

    def __str__(self) -> str:
        day = self.day  # not strftime: its %Y writes the year 1 as "1", not "0001"
        return f"{day.year:04d}{day.month:02d}{day.day:02d}-{self.offset:012d}"

    @classmethod
    def parse(cls, text: object) -> Cursor:
        """A cursor from its string form; ``InvalidCursor`` for anything else.

        This checks the form only; whether the position exists in the pool is
        the store's to check (``InvalidCursor`` too).
        """
        match = CURSOR_RE.fullmatch(text) if isinstance(text, str) else None
        if match is None:
            raise InvalidCursor(f"{text!r} is not a cursor.")
        year, month, day, offset = (int(part) for part in match.groups())
        try:
            return cls(date(year, month, day), offset)
        except ValueError:
            raise InvalidCursor(f"{text!r} is not a cursor.") from None

    @classmethod
    def start_of(cls, day: date) -> Cursor:
        return cls(day, 0)
