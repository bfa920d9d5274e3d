"""Reading day files through for what should not be there (``taskpool_verify``).

Each problem names its file and line (counted from 1):

- ``torn``: a line cut short (a crash mid-write leaves the start of a
  message, which the next writer ends with a newline), or an unfinished
  last line;
- ``bad_json``: a line that is not JSON at all (a hand edit);
- ``invalid``: JSON that is not a message (missing or extra keys, a bad
  address, a wrong type, a ``ts`` that is not a UTC timestamp);
- ``duplicate_id``: a message id seen before, with where;
- ``out_of_order``: a message stamped earlier than the one before it (by
  more than a skew allowed, none by default), or in the file of another day;
- ``missing``: a day file that is a symbolic link to nothing (line 0: the
  file itself); its day cannot be read, and the pool refuses to read until
  it is mended;
- ``unknown_task``: a response whose ``parent_id`` names no task before it.
  Not judged where its task may be in a day taken out of the pool
  (``taskpool_prune`` notes where) or before ``--since``'s horizon: an answer
  less than ``TASK_TTL`` after that day may answer a task no file here shows.

Only complete files are judged: the verifier reads what is there when it
opens each file, so lines appended meanwhile are left for the next run.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from pathlib import Path

import orjson

from taskpool.days import broken_link, day_of, day_of_file_name, pruned_before
from taskpool.exceptions import InvalidMessage
from taskpool.messages import decode_line, parse_timestamp
from taskpool.stores.validation import check_as_written

PROBLEM_KINDS = (
    "torn",
    "bad_json",
    "invalid",
    "duplicate_id",
    "out_of_order",
    "missing",
    "unknown_task",
)
_CHUNK_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Problem:
    file: str
    #: Counted from 1.
    line: int
    kind: str
    detail: str


@dataclass(slots=True)
class Report:
    """What a verification found, and how much it read."""

    files: int = 0
    lines: int = 0
    messages: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def sound(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(PROBLEM_KINDS, 0)
        for problem in self.problems:
            counts[problem.kind] += 1
        return counts

    def as_json(self) -> dict[str, object]:
        return {
            "sound": self.sound,
            "files": self.files,
            "lines": self.lines,
            "messages": self.messages,
            "counts": self.counts(),
            "problems": [asdict(problem) for problem in self.problems],
        }


def unread_files(directory: Path) -> list[str]:
    """What to say of each file in ``directory`` that looks meant for a day file but is not
    read as one: the pool, and verify and import, take only ``YYYY-MM-DD.jsonl`` of a real
    date."""
    said = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".") or ".jsonl" not in name.lower() or day_of_file_name(name):
            continue
        if name.endswith(".jsonl.gz"):
            said.append(f"{name}: not read: an archived day (gunzip it to read it)")
        else:
            said.append(f"{name}: not read: not a day file's name (YYYY-MM-DD.jsonl)")
    return said


def day_files(directory: Path) -> list[tuple[date, Path]]:
    """The day files of ``directory``, in day order."""
    found = [
        (day, directory / name)
        for name in os.listdir(directory)
        if (day := day_of_file_name(name)) is not None
    ]
    return sorted(found)


class Verifier:
    """Reads day files in pool order and keeps what later lines are judged against."""

    def __init__(
        self,
        *,
        first_day: date | None = None,
        task_ttl: timedelta | None = None,
        max_message_bytes: int,
        skew_seconds: int = 0,
    ) -> None:
        self.report = Report()
        #: How long before the newest stamp read a line may be stamped and still be in order.
        self._skew_seconds = skew_seconds
        self._ids: dict[bytes, tuple[str, int]] = {}
        self._tasks: set[bytes] = set()
        self._last_ts = ""
        #: The first day read: an answer whose task may be older is not judged unknown.
        self._first_day = first_day
        self._task_ttl = task_ttl
        self._max_message_bytes = max_message_bytes

    def learn_tasks(self, path: Path) -> None:
        """Take the tasks of a file read only for context (before ``--since``), judging nothing."""
        for _number, line in _lines(path, lambda _n: None):
            if line is None:
                continue
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(message, dict) and message.get("type") == "task":
                self._tasks.add(str(message.get("id")).encode())

    def verify(self, day: date, path: Path, advance: Callable[[int], None]) -> None:
        """Judge every line of one day file (``advance`` is told the bytes read)."""
        name = path.name
        self.report.files += 1
        for number, line in _lines(path, advance):
            self.report.lines += 1
            if line is None:
                self._found(name, number, "torn", "an unfinished last line (no newline)")
                continue
            self._judge(day, name, number, line)

    def _within_skew(self, ts: str) -> bool:
        """Whether ``ts``, earlier than the newest stamp read, is within the skew allowed."""
        if not self._skew_seconds:
            return False
        return parse_timestamp(self._last_ts) - parse_timestamp(ts) <= self._skew_seconds

    def _judge(self, day: date, name: str, number: int, line: bytes) -> None:
        try:
            message = decode_line(line)
        except InvalidMessage as error:
            self._unparsed(name, number, line, error)
            return
        try:
            moment = check_as_written(message, len(line) + 1, self._max_message_bytes)
        except InvalidMessage as error:
            self._found(name, number, "invalid", f"not a message the pool writes: {error.message}")
            return
        self.report.messages += 1
        key = message["id"].encode()
        seen = self._ids.get(key)
        if seen is not None:  # a copy of an earlier line: judged there
            self._found(
                name, number, "duplicate_id", f"{message['id']} is also {seen[0]} line {seen[1]}"
            )
            return
        self._ids[key] = (name, number)
        ts = message["ts"]
        misplaced = ts[:10] != day.isoformat()
        if ts < self._last_ts and not self._within_skew(ts):
            self._found(
                name, number, "out_of_order", f"stamped {ts}, after a line stamped {self._last_ts}"
            )
        elif misplaced:
            self._found(name, number, "out_of_order", f"stamped {ts}, in the file of {day}")
        if not misplaced:  # one stamped for another day (a clock's jump) sets no mark
            self._last_ts = max(self._last_ts, ts)
        if message["type"] == "task":
            self._tasks.add(key)
        elif message["type"] == "response":
            parent = message["parent_id"]
            if (parent is None or parent.encode() not in self._tasks) and self._judged(moment):
                self._found(
                    name, number, "unknown_task", f"answers {parent}, which no earlier line posts"
                )

    def _judged(self, answered_at: float) -> bool:
        """Whether the task of an answer given then would be in the files read."""
        if self._first_day is None or self._task_ttl is None:
            return True
        return day_of(answered_at - self._task_ttl.total_seconds()) >= self._first_day

    def _unparsed(self, name: str, number: int, line: bytes, error: InvalidMessage) -> None:
        try:
            orjson.loads(line)
        except orjson.JSONDecodeError as not_json:
            if line.lstrip().startswith(b"{") and not_json.pos >= len(line.rstrip()) - 1:
                self._found(name, number, "torn", "a message cut short")
            else:
                self._found(name, number, "bad_json", f"not JSON: {not_json.msg}")
            return
        self._found(name, number, "invalid", f"not a message: {error.message}")

    def _found(self, name: str, number: int, kind: str, detail: str) -> None:
        self.report.problems.append(Problem(name, number, kind, detail))


def _lines(path: Path, advance: Callable[[int], None]) -> Iterator[tuple[int, bytes | None]]:
    """Each line of the file as it is now, numbered from 1; ``None`` for an unfinished last one."""
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        number = 0
        carry = b""
        remaining = size
        while remaining > 0:
            chunk = file.read(min(_CHUNK_BYTES, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            advance(len(chunk))
            data = carry + chunk
            *whole, carry = data.split(b"\n")
            for line in whole:
                number += 1
                yield number, line
        if carry:
            yield number + 1, None


def verify_directory(
    directory: Path,
    *,
    since: date | None = None,
    task_ttl: timedelta,
    max_message_bytes: int,
    skew_seconds: int = 0,
    progress: Callable[[int], Callable[[int], None]] = lambda _total: lambda _n: None,
) -> Report:
    """Verify the day files of ``directory`` from ``since`` on (all of them by default).

    A line stamped up to ``skew_seconds`` before the newest line ahead of it is
    in order (an export of the database store, whose writers overlap).
    The days within ``task_ttl`` before ``since`` are read too, for the
    tasks that answers from ``since`` on may name; their lines are not judged.
    ``progress(total_bytes)`` returns what is told each chunk's bytes.
    """
    files = day_files(directory)
    # A link to nothing is said once, and not read: it has no lines.
    missing = {path: target for _day, path in files if (target := broken_link(path)) is not None}
    files = [(day, path) for day, path in files if path not in missing]
    judged = [(day, path) for day, path in files if since is None or day >= since]
    context = [path for day, path in files if since is not None and since - task_ttl <= day < since]
    # Answers to tasks of days taken out (pruned) cannot be judged: where the files start
    # after such days, or after ``since`` less the horizon, an answer's task may be older.
    starts = [pruned_before(directory)]
    if since is not None:
        starts.append(since - task_ttl)
    known = [day for day in starts if day is not None]
    verifier = Verifier(
        first_day=max(known, default=None),
        task_ttl=task_ttl,
        max_message_bytes=max_message_bytes,
        skew_seconds=skew_seconds,
    )
    for path, target in missing.items():
        verifier.report.problems.append(
            Problem(path.name, 0, "missing", f"a symbolic link to {target}, which does not exist")
        )
    for path in context:
        verifier.learn_tasks(path)
    advance = progress(sum(path.stat().st_size for _day, path in judged))
    for day, path in judged:
        verifier.verify(day, path, advance)
    return verifier.report


def archived_only(directory: Path) -> str | None:
    """What to say of a directory with no day files but a prune's archives (``.jsonl.gz``)."""
    archives = sorted(directory.glob("*.jsonl.gz"))
    if not archives or any(directory.glob("*.jsonl")):
        return None
    return (
        f"{directory} holds {len(archives)} archived days ({archives[0].name}, ...) and no day "
        "files: gunzip the ones you need into a directory of their own, and give that."
    )
