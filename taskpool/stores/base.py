"""``BaseStore``: the interface every taskpool store implements (DESIGN 8).

Views, the admin and the management commands talk to a store only through
these methods, never to files or tables. Every write method validates before
it stores, raises a ``taskpool.exceptions.PoolError`` subclass to refuse, and
stores nothing when it refuses.
"""

from __future__ import annotations

import abc
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from django.core.checks import CheckMessage

from taskpool.cursors import Cursor
from taskpool.lifecycle import TaskState
from taskpool.messages import Message
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


class PageEntry(NamedTuple):
    """A message and the cursor just past its line (where to resume after it)."""

    cursor: Cursor
    message: Message


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
    def now(self) -> float:
        """The store's clock, in epoch seconds (the time it stamps messages with)."""

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
