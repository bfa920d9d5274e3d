"""``BaseStore``: the interface every taskpool store implements (DESIGN 8).

Views, the admin and the management commands talk to a store only through
these methods, never to files or tables. Every write method validates before
it stores, raises a ``taskpool.exceptions.PoolError`` subclass to refuse, and
stores nothing when it refuses.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

from django.core.checks import CheckMessage

from taskpool.cursors import Cursor
from taskpool.exceptions import InvalidMessage
from taskpool.lifecycle import TaskState
from taskpool.message_filter import MessageFilter
from taskpool.messages import Address, Message, format_timestamp, parse_address
from taskpool.stores.changes import Changes


class Posted(NamedTuple):
    """A stored message, and whether this call stored it (``False``: an idempotent replay)."""

    message: Message
    created: bool


class Claim(NamedTuple):
    """An any-one task and the response that claimed it for the caller."""

    task: Message
    claim: Message
    created: bool


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

    def matches(self, task: Message) -> bool:
        """Whether ``task`` passes every filter except ``statuses``."""
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
    next_cursor: Cursor | None
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

    @property
    def lines(self) -> int:
        return self.messages + self.torn

    @property
    def complete(self) -> bool:
        """Whether the counts cover the whole file."""
        return self.counted >= self.size


class PageEntry(NamedTuple):
    """A message and the cursor just past its line (where to resume after it)."""

    cursor: Cursor
    message: Message


@dataclass(frozen=True, slots=True)
class DayPage:
    """Some of a day's messages, in pool order, and the stretch of the day that was read.

    Every message of the day between ``start`` and ``end`` that the filter
    takes is in ``entries``; the next page begins at ``end``, the previous
    one ends at ``start``.
    """

    entries: list[PageEntry]
    start: Cursor
    end: Cursor
    #: Whether ``end`` is the end of the day's last complete line (when read).
    at_end: bool

    @property
    def previous_cursor(self) -> Cursor | None:
        """Where the page before this one ends, or ``None`` at the start of the day."""
        return self.start if self.start.offset > 0 else None

    @property
    def next_cursor(self) -> Cursor | None:
        """Where the page after this one starts, or ``None`` at the end of the day."""
        return None if self.at_end else self.end


@dataclass(frozen=True, slots=True)
class Page:
    """A run of messages in pool order, and where to continue reading."""

    entries: list[PageEntry]
    #: Just past the last message read (past skipped lines too); the cursor
    #: given when nothing is new; ``None`` only for a pool without day files.
    next_cursor: Cursor | None
    #: Whether more messages follow ``next_cursor`` right now.
    has_more: bool

    @property
    def results(self) -> list[Message]:
        return [entry.message for entry in self.entries]


class BaseStore(abc.ABC):
    """The task pool's storage: append messages, answer what is pending.

    A store is built once per process from the ``TASKPOOL`` settings and used
    from many threads; implementations make each method safe for that.
    """

    #: Whether ``claim`` is atomic across processes and hosts.
    supports_claims: bool = True

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Any) -> BaseStore:
        """Build the store from ``taskpool.conf.pool_settings``."""

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[CheckMessage]:
        """System-check errors in ``options`` (the ``TASKPOOL`` dict) for this store."""
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections; the store is not used afterwards."""

    # Writing -------------------------------------------------------------

    @abc.abstractmethod
    def post_task(
        self,
        *,
        sender: str,
        to: str,
        title: str,
        body: str = "",
        meta: dict[str, Any] | None = None,
        ttl: float | None = None,
        expires_at: datetime | None = None,
        mode: str | None = None,
        idempotency_key: str | None = None,
    ) -> Posted:
        """Store a task from ``sender`` (``user:…`` or ``backend``) to devices.

        ``to`` must be a device address. The task expires after ``ttl``
        seconds or at ``expires_at`` (aware), by default after ``TASK_TTL``,
        never later; ``meta.expires_at`` is always written. ``mode="any"``
        makes an any-one task. With ``idempotency_key``, a repeat of the same
        request by the same sender returns the first message unchanged
        (``created=False``); the key with another request raises
        ``IdempotencyConflict``.
        """

    @abc.abstractmethod
    def post_response(
        self,
        *,
        device_id: str,
        parent_id: str,
        status: str,
        title: str = "",
        body: str = "",
        meta: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Posted:
        """Store a device's answer (``progress``, ``done``, ``failed`` or ``rejected``).

        Raises ``UnknownTask`` if ``parent_id`` names no task, ``NotAddressed``
        if the task is not for this device, ``AlreadyAnswered`` after the
        device's terminal answer, ``TaskClosed`` for a cancelled or expired
        task, ``ClaimedByOther`` for an any-one task another device holds. The
        first answer to an unclaimed any-one task claims it, atomically.
        """

    @abc.abstractmethod
    def post_heartbeat(
        self, *, device_id: str, body: str = "", meta: dict[str, Any] | None = None
    ) -> Message:
        """Store a heartbeat from a device to the backend."""

    @abc.abstractmethod
    def claim(
        self, *, device_id: str, parent_id: str | None = None, idempotency_key: str | None = None
    ) -> Claim | None:
        """Claim the any-one task ``parent_id``, or the oldest claimable one for the device.

        Atomic across processes: of two devices claiming at once, one wins
        and the other gets ``ClaimedByOther``. Returns ``None`` when nothing
        is claimable; a repeated claim by the holder returns its first claim
        with ``created=False``. ``NotClaimable`` for a task that is not any-one.
        """

    @abc.abstractmethod
    def cancel(
        self,
        *,
        sender: str,
        task_id: str,
        reason: str = "",
        idempotency_key: str | None = None,
    ) -> Posted:
        """Store a ``cancelled`` response from ``sender``: the task leaves every pending list.

        ``UnknownTask`` for an unknown id; ``TaskClosed`` if it is already
        cancelled, expired or finished on every device.
        """

    # Reading -------------------------------------------------------------

    @abc.abstractmethod
    def pending_for(self, device_id: str, *, limit: int = 100) -> list[Message]:
        """At most ``limit`` tasks pending for the device, oldest first (DESIGN 3).

        Sees every message stored before the call, by any process.
        """

    @abc.abstractmethod
    def pending_counts(self, device_ids: list[str]) -> dict[str, int]:
        """How many tasks are pending for each device."""

    @abc.abstractmethod
    def device_activity(self, device_ids: list[str]) -> dict[str, DeviceActivity]:
        """For each device, the time of its last message and of its last heartbeat."""

    @abc.abstractmethod
    def days(self) -> list[date]:
        """Every day the pool holds messages for, oldest first."""

    @abc.abstractmethod
    def day_messages(self, day: date) -> list[Message]:
        """That day's messages in pool order (empty for a day without any)."""

    @abc.abstractmethod
    def task_detail(self, task_id: str) -> TaskDetail:
        """The task, its responses in pool order, and its state. ``UnknownTask`` if none."""

    @abc.abstractmethod
    def recent_tasks(
        self,
        query: TaskQuery,
        *,
        before: Cursor | None = None,
        limit: int = 50,
        registered_devices: list[str] | None = None,
    ) -> TaskPage:
        """Tasks in the horizon, newest first, that match ``query``.

        ``before`` continues a previous page (its ``next_cursor``).
        ``registered_devices`` are the devices a ``device:*`` task counts as
        addressed to when its statuses are computed.
        """

    @abc.abstractmethod
    def now(self) -> float:
        """The store's clock, in epoch seconds (the time it stamps messages with)."""

    # Browsing day files (the admin) ----------------------------------------
    # Positions are ``Cursor``s; a message is named by the cursor just past it
    # (``PageEntry.cursor``), as the stream names it.

    @abc.abstractmethod
    def day_summaries(
        self, days: list[date], *, count_limit: int | None = None
    ) -> list[DaySummary]:
        """A summary of each of ``days`` that has a file, in the order given.

        Cheap to ask again: a store remembers what it counted and, for a day
        that grew, counts only what was added. With ``count_limit``, a call
        counts at most about that many new bytes and the rest of the days
        are summarised as far as they were counted (``DaySummary.complete``
        is false); the next call goes on from there.
        """

    @abc.abstractmethod
    def day_page(
        self,
        day: date,
        *,
        after: Cursor | None = None,
        before: Cursor | None = None,
        from_end: bool = False,
        limit: int = 50,
        where: MessageFilter | None = None,
        scan_limit: int | None = None,
    ) -> DayPage:
        """Up to ``limit`` of the day's messages that ``where`` takes, in pool order.

        The page starts at ``after`` (by default at the day's start) and reads
        forward; or it ends at ``before``, or at the day's end with
        ``from_end``, and reads backward. It reads only as far as the page
        needs, and with ``scan_limit`` examines at most about that many bytes,
        so a filter that matches little gives a short page that still moves
        on (``DayPage.next_cursor``). ``InvalidCursor`` for a cursor of another
        day or one where no line starts; a day without a file is an empty page.
        """

    @abc.abstractmethod
    def message_at(self, cursor: Cursor) -> Message:
        """The message a ``PageEntry.cursor`` names: the one whose line ends at ``cursor``.

        ``InvalidCursor`` if no line of the day ends there, ``InvalidMessage``
        if the line is not a message (a torn line).
        """

    @abc.abstractmethod
    def device_messages(self, device_id: str, *, limit: int = 20) -> list[PageEntry]:
        """The device's latest messages, newest first: those it sent and those addressed to it.

        Looks back over the ``TASK_TTL`` horizon.
        """

    # Real time: cursors, pages, raw lines, and what waiting needs ------------

    @abc.abstractmethod
    def check_cursor(self, cursor: Cursor) -> None:
        """Raise ``InvalidCursor`` unless ``cursor`` is a position in the pool.

        A position is the start of an existing day file (offset 0) or the
        end of one of its complete lines.
        """

    @abc.abstractmethod
    def end_cursor(self) -> Cursor | None:
        """The position just past the last complete message of the pool; ``None`` if it is empty.

        A reader that starts there sees only messages stored afterwards.
        """

    @abc.abstractmethod
    def messages_after(self, cursor: Cursor | None, *, limit: int) -> Page:
        """At most ``limit`` messages after ``cursor``, running on into later days.

        ``None`` reads from the pool's first message. ``InvalidCursor`` if the
        cursor is not a position in the pool (see ``check_cursor``). Lines
        that are not messages are skipped; ``next_cursor`` is ``cursor``
        itself when nothing is new.
        """

    @abc.abstractmethod
    def messages_from_day(self, day: date, *, limit: int) -> Page:
        """At most ``limit`` messages from the start of ``day`` on, running on into later days.

        A day without messages starts at the next day that has some; when
        nothing follows, ``next_cursor`` is the end of the pool before ``day``
        (``None`` if there is none), so a reader can wait there for the day's
        first message.
        """

    @abc.abstractmethod
    def day_lines(self, day: date) -> Iterator[bytes]:
        """The day's complete lines exactly as stored, in chunks that end at line ends.

        Never holds the whole day in memory; lines stored after the call
        began are not included. Nothing for a day without messages.
        """

    @abc.abstractmethod
    def find_task(self, task_id: str) -> Message | None:
        """The task with this id within the ``TASK_TTL`` horizon, or ``None``; cheap."""

    @abc.abstractmethod
    def change_signature(self) -> Hashable:
        """A fingerprint of the pool's extent that differs once new messages may have arrived.

        Cheap and non-blocking (no reading, no waiting for writers), so a
        watcher may call it often from an event loop; a differing value is
        only a hint to call ``changes_since``.
        """

    @abc.abstractmethod
    def changes_since(self, mark: int | None) -> Changes:
        """Whom the messages stored since ``mark`` concern, and the mark to pass next time.

        ``mark`` comes from the previous call; ``None`` starts watching now
        (nothing is reported). Sees messages stored by any process. When the
        store cannot tell (it lost track, or ``mark`` is too old),
        ``Changes.everything`` is set. ``Changes.through`` is the position
        before which every line has been accounted for.
        """
