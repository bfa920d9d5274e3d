"""Reading one day file forward or backward from a line boundary, a chunk at a time.

What ``JsonlStore`` uses to browse a day (the admin) without loading it: a
page reads only the chunks it needs, and a chunk that a quick byte test rules
out is never split into lines. Offsets are byte positions where a line starts
(0, or just past a ``\\n``). Every function takes an open descriptor and reads
with ``os.pread``, so callers may share it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from taskpool.exceptions import InvalidCursor

FIRST_CHUNK_BYTES = 64 * 1024
TAIL_PROBE_BYTES = 4 * 1024
MAX_CHUNK_BYTES = 4 * 1024 * 1024

#: A quick test on a run of whole lines: ``False`` if no line in it can be wanted.
ChunkTest = Callable[[bytes], bool]
#: A line's start offset and its bytes, without the ``\n``.
Line = tuple[int, bytes]


def complete_end(descriptor: int, size: int) -> int:
    """The offset just past the file's last ``\\n`` (0 if it has none) within ``size`` bytes.

    Looks at the last few KiB first: the last line is usually short.
    """
    position = size
    step = TAIL_PROBE_BYTES
    while position > 0:
        start = max(0, position - step)
        found = os.pread(descriptor, position - start, start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
        step = min(step * 2, MAX_CHUNK_BYTES)
    return 0


def whole_line_runs(
    descriptor: int, start: int, size: int, chunk_bytes: int
) -> Iterator[tuple[int, bytes]]:
    """The whole lines from ``start`` (a line start) up to ``size``, in runs of about ``chunk_bytes``.

    Yields (offset of the run's first line, the run without its last ``\n``);
    a torn last line is left out. The index reads a day file's new bytes so.
    """
    offset = start
    carry = b""
    while offset + len(carry) < size:
        chunk = os.pread(
            descriptor, min(chunk_bytes, size - offset - len(carry)), offset + len(carry)
        )
        if not chunk:
            return
        data = carry + chunk if carry else chunk
        end = data.rfind(b"\n")
        if end < 0:
            carry = data
            continue
        yield offset, data[:end]
        offset += end + 1
        carry = data[end + 1 :]


def check_line_start(descriptor: int, offset: int, end: int) -> None:
    """``InvalidCursor`` unless a line starts at ``offset`` (or it is ``end``, the day's end)."""
    if offset < 0 or offset > end or (offset > 0 and os.pread(descriptor, 1, offset - 1) != b"\n"):
        raise InvalidCursor(f"No line starts at byte {offset} of the day.")


def _chunk_sizes() -> Iterator[int]:
    size = FIRST_CHUNK_BYTES
    while True:
        yield size
        size = min(size * 2, MAX_CHUNK_BYTES)


def read_forward(
    descriptor: int, start: int, end: int, chunk_test: ChunkTest | None = None
) -> Iterator[tuple[int, list[Line]]]:
    """The complete lines between ``start`` and ``end`` (both line starts), oldest first.

    Yields ``(offset just past the chunk, its lines)`` per chunk; the lines of
    a chunk that ``chunk_test`` rules out are not split (an empty list).
    """
    position = start
    carry = b""
    sizes = _chunk_sizes()
    while position < end:
        data = os.pread(descriptor, min(next(sizes), end - position), position)
        if not data:
            return
        position += len(data)
        data = carry + data if carry else data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            carry = data
            continue
        body, carry = data[:cut], data[cut:]
        first = position - len(data)
        yield first + cut, _lines_of(body, first) if chunk_test is None or chunk_test(body) else []


def read_backward(
    descriptor: int, end: int, chunk_test: ChunkTest | None = None
) -> Iterator[tuple[int, list[Line]]]:
    """The complete lines before ``end`` (a line start), newest first.

    Yields ``(offset where the chunk starts, its lines newest first)`` per
    chunk; the lines of a chunk that ``chunk_test`` rules out are not split.
    """
    position = end
    carry = b""  # the start of the chunk read last: it ends with a \n
    sizes = _chunk_sizes()
    while position > 0:
        start = max(0, position - next(sizes))
        data = os.pread(descriptor, position - start, start) + carry
        position = start
        if start == 0:
            cut = 0
        else:
            cut = data.find(b"\n") + 1  # what comes before is part of an earlier line
            if cut == 0:
                carry = data
                continue
        body, carry = data[cut:], data[:cut]
        first = start + cut
        if not body:
            continue
        if chunk_test is not None and not chunk_test(body):
            yield first, []
        else:
            yield first, _lines_of(body, first)[::-1]


def _lines_of(body: bytes, first: int) -> list[Line]:
    """The lines of ``body`` (whole lines, ending in ``\\n``) with their offsets."""
    lines = []
    offset = first
    for line in body[:-1].split(b"\n"):
        lines.append((offset, line))
        offset += len(line) + 1
    return lines


def line_before(descriptor: int, offset: int) -> bytes:
    """The line that ends just before ``offset`` (a line start past 0), without its ``\\n``."""
    for _start, lines in read_backward(descriptor, offset):
        return lines[0][1]
    raise InvalidCursor(f"No line ends at byte {offset} of the day.")
