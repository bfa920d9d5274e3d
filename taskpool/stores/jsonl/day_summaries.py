"""Counting a day file's messages by type, kept in Django's cache and advanced incrementally.

A count covers the file up to the end of a complete line. Asked again, it
reads only the bytes appended since; a file that was replaced (another
inode), shrank, or whose counted bytes changed is counted again from the
start. The cache (``caches["default"]``) lets processes and restarts share
counts where it is shared; with the default local-memory cache each process
keeps its own.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from django.core.cache import cache

from taskpool.exceptions import InvalidMessage
from taskpool.messages import decode_line
from taskpool.stores.base import DaySummary
from taskpool.stores.jsonl.day_files import refuse_broken_link
from taskpool.stores.jsonl.day_reading import complete_end, read_forward

CACHE_PREFIX = "taskpool:day-summary:"
#: How many bytes before the counted end are kept to notice a rewritten file.
TAIL_CHECK_BYTES = 64
#: Counts are kept a week after their last use.
CACHE_SECONDS = 7 * 86400


@dataclass(slots=True)
class Budget:
    """How many more bytes may be counted in this call (``None``: no limit)."""

    remaining: int | None

    def spend(self, size: int) -> None:
        if self.remaining is not None:
            self.remaining -= size

    @property
    def exhausted(self) -> bool:
        return self.remaining is not None and self.remaining <= 0


@dataclass(slots=True)
class _Count:
    inode: int
    offset: int  # just past the last complete line counted
    tail: bytes  # the TAIL_CHECK_BYTES before offset
    messages: int = 0
    torn: int = 0
    types: dict[str, int] = field(default_factory=dict)


def summarize(day: date, path: Path, budget: Budget | None = None) -> DaySummary | None:
    """The summary of one day file, or ``None`` if there is none.

    Counting stops at a line end once ``budget`` is spent; what was counted
    is kept, so the next call goes on from there.
    """
    budget = budget if budget is not None else Budget(None)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        refuse_broken_link(path)
        return None
    try:
        stat = os.fstat(descriptor)
        key = CACHE_PREFIX + hashlib.sha256(str(path).encode()).hexdigest()
        count = cache.get(key)
        if not _still_valid(count, descriptor, stat.st_ino, stat.st_size):
            count = _Count(stat.st_ino, 0, b"")
        end = complete_end(descriptor, stat.st_size)
        if end > count.offset and not budget.exhausted:
            _count_lines(count, descriptor, end, budget)
            cache.set(key, count, CACHE_SECONDS)
    finally:
        os.close(descriptor)
    complete = count.offset >= end
    unfinished = 1 if complete and stat.st_size > end else 0
    return DaySummary(
        day=day,
        size=stat.st_size,
        messages=count.messages,
        torn=count.torn + unfinished,
        types=dict(sorted(count.types.items())),
        counted=stat.st_size if complete else count.offset,
    )


def _still_valid(count: _Count | None, descriptor: int, inode: int, size: int) -> bool:
    if not isinstance(count, _Count) or count.inode != inode or count.offset > size:
        return False
    start = count.offset - len(count.tail)
    return os.pread(descriptor, len(count.tail), start) == count.tail


def _count_lines(count: _Count, descriptor: int, end: int, budget: Budget) -> None:
    types = count.types
    start = count.offset
    for chunk_end, lines in read_forward(descriptor, start, end):
        for _offset, line in lines:
            if not line:
                continue
            try:
                kind = decode_line(line)["type"]
            except InvalidMessage:
                count.torn += 1
            else:
                count.messages += 1
                types[kind] = types.get(kind, 0) + 1
        budget.spend(chunk_end - start)
        start = count.offset = chunk_end
        if budget.exhausted:
            break
    tail_start = max(0, count.offset - TAIL_CHECK_BYTES)
    count.tail = os.pread(descriptor, count.offset - tail_start, tail_start)
