"""A first start with no checkpoint: the day files replayed in parallel.

Replaying a week costs about 7 us of Python per line, on one core. When a
store finds no checkpoint and the horizon is large, the history is cut into
one segment per CPU, of about as many bytes each (a cut may fall inside a
day file, at a line start). A worker process reads each segment in order
into an index of its own, as if nothing came before, and the store folds the
indexes together in order (``PoolIndex.fold``). The store's own process only
waits: reading a segment itself would save a worker's start and a pickle
(about 0.2 s at 1M lines), but its memory would keep the holes the parsing
leaves (17 MiB more after the replay, for as long as the server runs).

A segment cannot know the tasks of the segments before it, so it hands back
the answers whose task it does not hold (``SegmentReading.strays``); the
fold applies them to the tasks still open from before, as reading the files
in order would have. A task line repeated from an earlier segment is the one
thing a fold cannot put right; the store then replays the files in order.

Workers are new interpreters, not forks: the server may have threads.
Anything that goes wrong in them is only a missed shortcut, and the store
replays the files itself. A worker ends with the server that started it,
even one killed without a chance to stop them (``parent_death``).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from taskpool.exceptions import InvalidMessage
from taskpool.messages import Message, decode_line
from taskpool.stores.jsonl.day_reading import whole_line_runs
from taskpool.stores.jsonl.gc_pause import gc_paused
from taskpool.stores.jsonl.index import PoolIndex
from taskpool.stores.jsonl.parent_death import end_with_parent

#: Below this many bytes in the horizon, starting workers costs more than it saves.
MIN_BYTES = 32 * 1024 * 1024
#: A worker that has not answered by then is stopped, and the files are read in order.
WORKER_TIMEOUT_SECONDS = 600
READ_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Piece:
    """The lines of one day file from ``start`` (a line start) to ``stop`` (``None``: its end)."""

    day: date
    path: Path
    start: int
    stop: int | None


@dataclass(frozen=True)
class PieceRead:
    """How much of its day file a piece read."""

    day: date
    inode: int
    start: int
    end: int  # just past the last complete line read
    size: int  # the file's size when read


@dataclass
class SegmentReading:
    """A run of the history, one or more pieces in file order, read on its own."""

    pieces: list[PieceRead]
    index: PoolIndex
    #: Answers (and their offsets) to tasks the segment does not hold, in file order.
    strays: list[tuple[Message, int]]


def worth_it(paths: list[Path]) -> bool:
    """Whether replaying these files in parallel should beat reading them in order."""
    if not paths or available_cpus() < 2 or not _runs_python():
        return False
    total = 0
    for path in paths:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            return False
    return total >= MIN_BYTES


def available_cpus() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _runs_python() -> bool:
    """Whether ``sys.executable`` is a Python that takes ``-c`` (not uWSGI, not a frozen app)."""
    name = Path(sys.executable or "").name
    return not getattr(sys, "frozen", False) and name.startswith(("python", "pypy"))


def plan_segments(days: list[tuple[date, Path]], count: int) -> list[list[Piece]]:
    """Cut the day files, in order, into at most ``count`` segments of about equal bytes.

    A cut inside a file falls at the first line start at or after its share.
    """
    sizes = [path.stat().st_size for _day, path in days]
    total = sum(sizes)
    cuts = [total * number // count for number in range(1, count)]  # global byte positions
    segments: list[list[Piece]] = [[]]
    passed = 0  # bytes of the files before the current one
    for (day, path), size in zip(days, sizes, strict=True):
        start = 0
        while cuts and cuts[0] < passed + size:
            cut = _line_start_from(path, cuts.pop(0) - passed)
            if cut > start:
                segments[-1].append(Piece(day, path, start, cut))
                start = cut
            if segments[-1]:
                segments.append([])
        if size > start:
            segments[-1].append(Piece(day, path, start, None))
        passed += size
    return [segment for segment in segments if segment]


def _line_start_from(path: Path, offset: int) -> int:
    """The first line start at or after ``offset`` (the file's size if none is left)."""
    if offset <= 0:
        return 0
    with open(path, "rb", buffering=0) as file:
        position = offset - 1  # a line starts at ``offset`` if a \n ends the byte before
        while chunk := os.pread(file.fileno(), 64 * 1024, position):
            found = chunk.find(b"\n")
            if found >= 0:
                return position + found + 1
            position += len(chunk)
        return position


#: What a worker runs. Not ``-m`` with this module: the package imports it first, and
#: Python warns of a module run as ``__main__`` that is already imported. Through the
#: module's own name, the pickle names its classes as the store knows them.
WORKER = (
    "import sys; from taskpool.stores.jsonl import parallel_replay; "
    "parallel_replay.main(sys.argv[1:])"
)


def read_segments(segments: list[list[Piece]], task_ttl: float, now: float) -> list[SegmentReading]:
    """Read each segment in a worker process, all at once. Raises if any worker fails.

    A worker is this module's ``main`` run by the same interpreter
    (``python -c``), and answers with a pickle on its stdout: it depends on
    nothing of the server's process (not even its ``__main__``).
    """
    # The workers import taskpool from where this process did.
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    processes = []
    try:
        for segment in segments:
            command = [sys.executable, "-c", WORKER, str(os.getpid()), repr(task_ttl), repr(now)]
            for piece in segment:
                stop = "-" if piece.stop is None else str(piece.stop)
                command += [piece.day.isoformat(), str(piece.path), str(piece.start), stop]
            processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, env=environment))
        readings = []
        for process in processes:
            output, _ = process.communicate(timeout=WORKER_TIMEOUT_SECONDS)
            if process.returncode != 0:
                raise RuntimeError(f"a replay worker failed with exit code {process.returncode}")
            readings.append(pickle.loads(output))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    return readings


def read_segment(pieces: list[Piece], task_ttl: float, now: float) -> SegmentReading:
    """Read one segment's pieces, in order, into an index of its own."""
    index = PoolIndex(task_ttl)
    strays: list[tuple[Message, int]] = []
    done = []
    for piece in pieces:
        day_ordinal = piece.day.toordinal()
        with open(piece.path, "rb", buffering=0) as file:
            stat = os.fstat(file.fileno())
            stop = stat.st_size if piece.stop is None else min(piece.stop, stat.st_size)
            end = piece.start
            for offset, run in whole_line_runs(file.fileno(), piece.start, stop, READ_CHUNK_BYTES):
                start = offset
                for line in run.split(b"\n"):
                    if line:
                        try:
                            message = decode_line(line)
                        except InvalidMessage:
                            index.skip_line()
                        else:
                            parent_id = message["parent_id"]
                            if (
                                parent_id is not None
                                and parent_id not in index.open  # most answers: one lookup
                                and message["type"] == "response"
                                and not index.knows(parent_id)
                            ):
                                strays.append((message, start))
                            index.add(message, day_ordinal, start, now)
                    start += len(line) + 1
                end = start
        done.append(PieceRead(piece.day, stat.st_ino, piece.start, end, stat.st_size))
    index.compact_tasks()  # here, in parallel, rather than after the fold
    return SegmentReading(done, index, strays)


def main(arguments: list[str]) -> None:
    """A worker: read the pieces named, write their ``SegmentReading`` pickled to stdout.

    Arguments: the store's process id (the worker ends with it), ``TASK_TTL``
    seconds, now, then for each piece its day, its file's path, its start and
    its stop (``-``: the file's end).
    """
    end_with_parent(int(arguments[0]))
    task_ttl, now = float(arguments[1]), float(arguments[2])
    pieces = [
        Piece(date.fromisoformat(day), Path(path), int(start), None if stop == "-" else int(stop))
        for day, path, start, stop in zip(*[iter(arguments[3:])] * 4, strict=True)
    ]
    with gc_paused():
        reading = read_segment(pieces, task_ttl, now)
    sys.stdout.buffer.write(pickle.dumps(reading, protocol=pickle.HIGHEST_PROTOCOL))
