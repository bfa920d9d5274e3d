"""UTC days: the unit of a day file, and the strict ``YYYY-MM-DD`` they are named by."""

from __future__ import annotations

import functools
import math
import os
import re
from datetime import date, timedelta
from pathlib import Path

# [0-9], not \d: \d would also take other scripts' digits.
DAY_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
DAY_FILE_RE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})\.jsonl")


def parse_day(text: object) -> date:
    """A real, zero-padded ``YYYY-MM-DD``; ``ValueError`` for anything else.

    ``date.fromisoformat`` alone would also take ``20260603`` and ``2026-W23-3``.
    """
    if isinstance(text, str) and DAY_RE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass  # its own words ("month must be in 1..12") do not say what a date is here
    raise ValueError(f"{text!r} is not a real date written YYYY-MM-DD.")


def day_of(epoch_seconds: float) -> date:
    """The UTC day of a moment."""
    return _day_number(math.floor(epoch_seconds) // 86400)


def day_start(day: date) -> float:
    """The first second of a UTC day, in epoch seconds."""
    return float((day - _EPOCH_DAY).days * 86400)


@functools.lru_cache(maxsize=8)
def _day_number(days_since_epoch: int) -> date:
    return _EPOCH_DAY + timedelta(days=days_since_epoch)


_EPOCH_DAY = date(1970, 1, 1)


def day_file_name(day: date) -> str:
    """``2026-06-03.jsonl``."""
    return f"{day.isoformat()}.jsonl"


def day_of_file_name(name: str) -> date | None:
    """The day a file name stands for, or ``None`` if it is not a day file."""
    match = DAY_FILE_RE.fullmatch(name)
    if match is None:
        return None
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        return None


def broken_link(path: Path) -> str | None:
    """Where ``path`` leads when it is a symbolic link to nothing (a day file named so
    cannot be read, and must not be read as an empty day); ``None`` otherwise."""
    try:
        target = os.readlink(path)
    except OSError:  # not a link, or not there
        return None
    return None if os.path.exists(path) else target


#: In a directory of day files, the day before which days were taken out (pruned), so
#: that a reader knows an answer near it may answer a task it cannot see.
PRUNED_BEFORE_FILE_NAME = ".pruned-before"


def note_pruned_before(directory: Path, day: date) -> None:
    """Record that the days before ``day`` were taken out of ``directory`` (the latest counts)."""
    earlier = pruned_before(directory)
    if earlier is None or day > earlier:
        (directory / PRUNED_BEFORE_FILE_NAME).write_text(day.isoformat() + "\n")


def pruned_before(directory: Path) -> date | None:
    """The day before which days were taken out of ``directory``, if any were."""
    try:
        return parse_day((directory / PRUNED_BEFORE_FILE_NAME).read_text().strip())
    except (OSError, ValueError):
        return None
