"""What a store answers with: the value types of the store contract (``BaseStore``).

A task's detail and a page of tasks, a day's summary and pages of its
messages, a page of the log, a device's activity, the health checks and the
store's figures; plus ``TaskQuery``, what a task list asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import NamedTuple

from taskpool.exceptions import InvalidMessage
from taskpool.lifecycle import TaskState
from taskpool.messages import Address, Message, format_timestamp, parse_address


def probe(name: str, look: Callable[[], object], problem: str) -> HealthCheck:
    """A ``HealthCheck`` that passes when ``look()`` returns, and fails with ``problem`` if it raises."""
    try:
        look()
    except Exception:  # noqa: BLE001 - any failure is the answer
        return HealthCheck(name, problem)
    return HealthCheck(name)


@dataclass(frozen=True, slots=True)
class DeviceActivity:
    """When a device was last heard from, according to the pool."""

    last_message: str | None
    last_heartbeat: str | None


@dataclass(frozen=True, slots=True)
class TaskDetail:
    """A task, its responses in pool order, and the state they lead to."""

    task: Message
    responses: list[Message]
    state: TaskState

    def executions(self, registered_devices: list[str], now: float) -> list[dict[str, str]]:
        """One execution row per addressed device (see ``TaskState.executions``)."""
        return self.state.executions(registered_devices, now)


@dataclass(frozen=True, slots=True)
class TaskQuery:
    """What the task list filters on; ``None`` means any."""

    #: Tasks with at least one execution in one of these statuses.
    statuses: frozenset[str] | None = None
    #: ``device:X`` matches tasks that address X (directly, in a list, or ``device:*``);
    #: any other address matches a task's ``to`` exactly.
    to: Address | None = None
    sender: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    #: Case-insensitive text in the title or body.
    text: str | None = None
    #: Tasks with every one of these job options (``retries``, ``timeout``, ``rollout`` ...).
    options: frozenset[str] | None = None

    def matches(self, task: Message) -> bool:
        """Whether ``task`` passes every filter except ``statuses``."""
        if self.options is not None and not all(key in task["meta"] for key in self.options):
            return False
        if self.sender is not None and task["from"] != self.sender:
            return False
        if self.since is not None and task["ts"] < format_timestamp(self.since.timestamp()):
            return False
        if self.until is not None and task["ts"] > format_timestamp(self.until.timestamp()):
            return False
        if self.text is not None:
            needle = self.text.casefold()
            if needle not in task["title"].casefold() and needle not in task["body"].casefold():
                return False
        return self.to is None or _addresses(task["to"], self.to)


def _addresses(task_to: str, wanted: Address) -> bool:
    if task_to == str(wanted):
        return True
    if wanted.kind != "device" or wanted.everyone or wanted.is_list:
        return False
    try:
        return parse_address(task_to).includes(wanted.device_ids[0])
    except InvalidMessage:  # a hand-written line with a bad address addresses nobody
        return False


@dataclass(frozen=True, slots=True)
class TaskSummary:
    """A task in the task list, with the distinct statuses of its executions."""

    task: Message
    statuses: frozenset[str]


@dataclass(frozen=True, slots=True)
class TaskPage:
    """A page of the task list, newest first; ``next_cursor`` continues with older tasks."""

    results: list[TaskSummary]
    next_cursor: str | None
    has_more: bool


@dataclass(frozen=True, slots=True)
class DaySummary:
    """What one day file holds: its size, its messages by type, its torn lines."""

    day: date
    #: Bytes in the file.
    size: int
    #: Lines that are messages.
    messages: int
    #: Lines that are not messages (a crash mid-write, a hand edit), and an
    #: unfinished last line.
    torn: int
    #: Messages per type (``task``, ``response`` ...), only types present.
    types: dict[str, int] = field(default_factory=dict)
    #: How many of the file's bytes the counts cover (less than ``size`` while
    #: counting is under way, see ``BaseStore.day_summaries``).
    counted: int = 0
    #: Whether ``size`` and ``torn`` describe a file on disk (``supports_day_files``);
    #: otherwise ``size`` is the bytes of the day's lines as an export would write them.
    on_disk: bool = True

    @property
    def lines(self) -> int:
        return self.messages + self.torn

    @property
    def complete(self) -> bool:
        """Whether the counts cover the whole file."""
        return self.counted >= self.size


class PageEntry(NamedTuple):
    """A message and the cursor just past it (where to resume after it)."""

    cursor: str
    message: Message


@dataclass(frozen=True, slots=True)
class DayPage:
    """Some of a day's messages, in pool order, and where the pages around it begin.

    Every message of the day in the stretch that was read, that the filter
    takes, is in ``entries``.
    """

    entries: list[PageEntry]
    #: Where the page before this one ends, or ``None`` at the start of the day.
    previous_cursor: str | None
    #: Where the page after this one starts, or ``None`` at the end of the day.
    next_cursor: str | None
    #: Whether the page reaches the day's last message (as far as it was written).
    at_end: bool
    #: For day files, the bytes of the file the page read: (start, end).
    span: tuple[int, int] | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """A run of messages in pool order, and where to continue reading."""

    entries: list[PageEntry]
    #: Just past the last message read (past skipped lines too); the cursor
    #: given when nothing is new; ``None`` only for an empty pool.
    next_cursor: str | None
    #: Whether more messages follow ``next_cursor`` right now.
    has_more: bool

    @property
    def results(self) -> list[Message]:
        return [entry.message for entry in self.entries]


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """One thing a store needs to serve, checked: its name, and what fails (``None``: nothing).

    ``problem`` is one sentence anyone may read (the health endpoint has no
    authentication): no paths, no addresses, no secrets.
    """

    name: str
    problem: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(frozen=True, slots=True)
class StoreFigures:
    """Figures about the pool for monitoring (``/metrics``); ``None``: the store has no such thing."""

    #: Tasks still open: pending for at least one device, not yet cancelled or expired.
    open_tasks: int
    #: Bytes in the day files that this process's index has not read yet.
    index_lag_bytes: int | None = None
    #: Seconds since the start-up checkpoint was last written (``None``: there is none).
    checkpoint_age_seconds: float | None = None
    #: Free bytes on the filesystem of ``DATA_DIR``.
    disk_free_bytes: int | None = None
    #: Bytes the pool's messages take where they are stored (day files, or tables and indexes).
    stored_bytes: int | None = None
    #: Messages stored, as the store can tell cheaply (a database's estimate).
    stored_rows: int | None = None
