"""``BaseStore``: the contract every taskpool store keeps.

Views, the admin and the management commands talk to a store only through
these methods, never to files or tables. The writes are written here once:
each checks the request, then asks the store to run a decision of
``taskpool.stores.rules`` atomically (``BaseStore.transact``), so that every
store refuses the same requests the same way and stores nothing when it
refuses.

What only some stores can do is an ability flag (``supports_day_files``)
that the admin and the commands consult. Cursors are opaque strings above
the store: each store has its own spelling, and the cursors of one store
sort as strings in pool order.
"""

from __future__ import annotations

import abc
import functools
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any, TypeVar

from django.core.checks import CheckMessage

from taskpool.days import day_of
from taskpool.exceptions import DayInHorizon, UnknownTask
from taskpool.executions import StatusCount, registered_places
from taskpool.lifecycle import replay
from taskpool.message_filter import MessageFilter
from taskpool.messages import (
    Message,
)
from taskpool.stores.changes import Changes
from taskpool.stores.overview import PoolOverview
from taskpool.stores.results import (
    DayPage,
    DaySummary,
    DeviceActivity,
    HealthCheck,
    Page,
    PageEntry,
    StoreFigures,
    TaskDetail,
    TaskPage,
    TaskQuery,
    TaskSummary,
    probe,
)
from taskpool.stores.writing import StoreWrites

Result = TypeVar("Result")

#: How many answers ``holder_before`` keeps what it found for.
_KEPT_HOLDERS = 4096

# The value types are kept in ``taskpool.stores.results``; named here too, as the contract's.
__all__ = [
    "BaseStore",
    "DayPage",
    "DaySummary",
    "DeviceActivity",
    "HealthCheck",
    "Page",
    "PageEntry",
    "StoreFigures",
    "TaskDetail",
    "TaskPage",
    "TaskQuery",
    "TaskSummary",
    "probe",
    "refuse_in_horizon",
]


def refuse_in_horizon(store: BaseStore, day: date) -> None:
    """``DayInHorizon`` if ``day`` can still hold a pending task of ``store``'s pool."""
    if day >= day_of(store.now() - store.task_ttl):
        raise DayInHorizon(
            f"{day} is within TASK_TTL of now: a task of that day can still be pending."
        )


class BaseStore(StoreWrites):
    """The task pool's storage: stores messages by the rules, answers what is pending.

    A store is built once per process from the ``TASKPOOL`` settings and used
    from many threads; implementations make each method safe for that.
    """

    #: Whether the pool lives in day files in ``DATA_DIR`` (one per UTC day,
    #: appended to, readable with ``cat``): the admin then shows file sizes,
    #: torn lines and the raw files, and ``taskpool_verify`` and
    #: ``taskpool_prune`` work on them.
    supports_day_files: bool = False

    #: Whether ``import_lines`` loads day-file lines into this store (``taskpool_import``).
    supports_import: bool = False

    #: The longest a task lives, in seconds (``TASK_TTL``); the horizon of what
    #: can still be pending.
    task_ttl: float = 7 * 86400

    @classmethod
    @abc.abstractmethod
    def from_settings(cls, settings: Any) -> BaseStore:
        """Build the store from ``taskpool.conf.pool_settings``."""

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[CheckMessage]:
        """System-check errors in ``options`` (the ``TASKPOOL`` dict) for this store."""
        return []

    @classmethod
    def check_database(cls, options: dict[str, Any], databases: list[str]) -> list[CheckMessage]:
        """System-check problems found by querying the ``databases`` asked for, if this store
        keeps the pool in one of them (``check --database``, and ``migrate`` for its own).

        Called only once ``check`` found nothing wrong with ``options``.
        """
        return []

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release files and connections; the store is not used afterwards."""

    @abc.abstractmethod
    def now(self) -> float:
        """The store's clock, in epoch seconds (the time it stamps messages with)."""

    # Operations --------------------------------------------------------------

    def health(self, *, ready: bool = False) -> list[HealthCheck]:
        """Whether the store can serve now: one named check per thing it needs. Never raises.

        This default checks that the pool can be read (``read``); each store
        puts its own checks first (a writable directory, a database that
        answers). With ``ready``, it also says whether the store is ready to
        answer quickly: a store that builds something before it can (the day
        files' index) fails a check while it does, and starts building if it
        had not. Cheap enough for a load balancer to ask every few seconds.
        """
        return [probe("read", self.end_cursor, "The pool cannot be read.")]

    def prunable_days(self, before: date) -> list[date]:
        """The days older than ``before`` that no longer matter to the pool, oldest first.

        Those outside the ``TASK_TTL`` horizon: no task of theirs can still be
        pending, since no task lives longer. ``remove_day`` takes them.
        """
        horizon = day_of(self.now() - self.task_ttl)
        return [day for day in self.days() if day < before and day < horizon]

    def unfinished_bytes(self, day: date) -> int:
        """Bytes of the day after its last complete line: a line torn by a crash, or one
        left without its newline by hand. They are in no message, so no archive made from
        ``day_lines`` holds them. A store that keeps rows has none."""
        return 0

    @abc.abstractmethod
    def remove_day(self, day: date) -> None:
        """Remove a day's messages for good (``taskpool_prune``, once they are archived).

        Refuses, with ``DayInHorizon``, a day inside the ``TASK_TTL`` horizon:
        one that can still hold a pending task. Readers that were on the day
        find it gone (an ``InvalidCursor``), as for a day file deleted by hand.
        """

    @abc.abstractmethod
    def figures(self) -> StoreFigures:
        """Figures about the pool for monitoring: open tasks, and what the store can tell.

        Asked on every scrape of the metrics: costs what a pending count does,
        never a reading of the history.
        """

    # Reading -------------------------------------------------------------

    @abc.abstractmethod
    def pending_for(self, device_id: str, *, limit: int = 100) -> list[Message]:
        """At most ``limit`` tasks pending for the device, oldest first.

        Sees every message stored before the call, by any process. Costs in
        proportion to what it returns, not to the history.
        """

    def pending_for_many(self, requests: list[tuple[str, int]]) -> list[list[Message]]:
        """``pending_for(device_id, limit=limit)`` for each ``(device_id, limit)``, in order.

        What the waiters a ``device:*`` task wakes together ask at once; a
        store may answer them all from one look at the pool.
        """
        return [self.pending_for(device_id, limit=limit) for device_id, limit in requests]

    @abc.abstractmethod
    def pending_counts(self, device_ids: list[str]) -> dict[str, int]:
        """How many tasks are pending for each device (``len(pending_for(...))`` without a limit)."""

    @abc.abstractmethod
    def device_activity(self, device_ids: list[str]) -> dict[str, DeviceActivity]:
        """For each device, the time of its last message and of its last heartbeat."""

    @abc.abstractmethod
    def find_task(self, task_id: str) -> Message | None:
        """The task with this id within the ``TASK_TTL`` horizon, or ``None``; cheap."""

    @abc.abstractmethod
    def task_detail(self, task_id: str) -> TaskDetail:
        """The task, its responses in pool order, and its state. ``UnknownTask`` if none."""

    def holder_before(self, task_id: str, response_id: str) -> str | None:
        """The device that held the any-one task ``task_id`` just before its response
        ``response_id``, as the task's lines up to there say (``None``: nobody, or no task).

        What a stream that did not read the task's earlier lines (it resumed after them)
        needs to judge an answer it meets: a claim, or the holder's progress. Replays the
        task's responses by the lifecycle's rules, so it reads the task's lines; the answer
        does not change once the response is stored, and the last ones asked are kept, so
        streams that meet the same answer together (a fleet reconnecting) read it once.
        """
        return self._kept_holders_before(task_id, response_id)

    @functools.cached_property
    def _kept_holders_before(self) -> Callable[[str, str], str | None]:
        return functools.lru_cache(maxsize=_KEPT_HOLDERS)(self._replayed_holder_before)

    def _replayed_holder_before(self, task_id: str, response_id: str) -> str | None:
        try:
            detail = self.task_detail(task_id)
        except UnknownTask:
            return None
        earlier = []
        for response in detail.responses:
            if response["id"] == response_id:
                break
            earlier.append(response)
        return replay(detail.task, earlier, self.task_ttl).claimer

    @abc.abstractmethod
    def recent_tasks(
        self,
        query: TaskQuery,
        *,
        before: str | None = None,
        limit: int = 50,
        registered_devices: list[str] | None = None,
    ) -> TaskPage:
        """Tasks in the horizon, newest first, that match ``query``.

        ``before`` continues a previous page (its ``next_cursor``);
        ``InvalidCursor`` for one this store did not give.
        ``registered_devices`` are the devices a ``device:*`` task counts as
        addressed to when its statuses are computed.
        """

    def task_status_counts(
        self, task_ids: list[str], registered_devices: list[str], *, shown: int = 5
    ) -> dict[str, list[StatusCount]]:
        """Each task's execution statuses, for a page of the task list: how many of the
        executions of ``TaskDetail.executions`` have each status, and the first ``shown``
        devices of each, in that order (``TaskState.status_counts``).

        Tasks the pool does not have are left out. This asks ``task_detail`` for
        each: the admin asks only for the tasks whose devices are in more than
        one state (where one state, every addressed device is in it). A
        ``device:*`` task costs its answers, not the fleet.
        """
        now = self.now()
        registered = registered_places(registered_devices)
        counts = {}
        for task_id in task_ids:
            try:
                detail = self.task_detail(task_id)
            except UnknownTask:
                continue
            counts[task_id] = detail.state.status_counts(registered, now, shown)
        return counts

    @abc.abstractmethod
    def device_messages(self, device_id: str, *, limit: int = 20) -> list[PageEntry]:
        """The device's latest messages, newest first: those it sent and those addressed to it.

        Looks back over the ``TASK_TTL`` horizon.
        """

    @abc.abstractmethod
    def overview(
        self, registered_devices: list[str], *, days: int = 7, failures: int = 10
    ) -> PoolOverview:
        """The pool at a glance over the last ``days`` UTC days (see ``overview_window``).

        For each day, the tasks sent and how many have an execution in each
        status, counted as ``recent_tasks`` filters by status (a ``device:*``
        task counts as addressed to ``registered_devices``); for each hour,
        the tasks, answers (responses), failures (``FAILURE_STATUSES``) and
        heartbeats stored; the ``failures`` newest failures of the horizon
        (at most ``MOST_FAILURES``);
        the oldest open task. Asked on every view of the admin's dashboard:
        costs what the store keeps counted (its index, its tables' indexes,
        the open tasks), never a reading of the window's messages.
        """

    # The log: every message in pool order, by cursor -------------------------

    @abc.abstractmethod
    def days(self) -> list[date]:
        """Every UTC day the pool holds messages for, oldest first."""

    @abc.abstractmethod
    def day_messages(self, day: date) -> list[Message]:
        """That day's messages in pool order (empty for a day without any)."""

    @abc.abstractmethod
    def day_lines(self, day: date) -> Iterator[bytes]:
        """The day's messages as JSON Lines, in chunks that end at line ends.

        The lines exactly as stored; never the whole day in memory; messages
        stored after the call began are not included. Nothing for a day
        without messages.
        """

    @abc.abstractmethod
    def check_cursor(self, cursor: str) -> None:
        """Raise ``InvalidCursor`` unless ``cursor`` is a position this store gave out.

        A position is the start of a day or the end of one of its messages.
        """

    @abc.abstractmethod
    def end_cursor(self) -> str | None:
        """The position just past the last message of the pool; ``None`` if it is empty.

        A reader that starts there sees only messages stored afterwards.
        """

    @abc.abstractmethod
    def messages_after(self, cursor: str | None, *, limit: int) -> Page:
        """At most ``limit`` messages after ``cursor``, in pool order, running on into later days.

        ``None`` reads from the pool's first message. ``InvalidCursor`` if the
        cursor is not a position in the pool (see ``check_cursor``).
        ``next_cursor`` is ``cursor`` itself when nothing is new. A reader that
        follows ``next_cursor`` sees every message exactly once, also one
        whose writer finished after a later writer (no message is skipped).
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
    def message_at(self, cursor: str, *, day: date | None = None) -> Message:
        """The message a ``PageEntry.cursor`` names: the one just before ``cursor``.

        ``InvalidCursor`` if no message ends there (or, given ``day``, if the
        cursor is not in that day), ``InvalidMessage`` if what is there is not
        a message (a torn line).
        """

    @abc.abstractmethod
    def day_summaries(
        self, days: list[date], *, count_limit: int | None = None
    ) -> list[DaySummary]:
        """A summary of each of ``days`` that has messages, in the order given.

        Cheap to ask again. With ``count_limit``, a store that counts by
        reading (day files) reads at most about that many new bytes per call
        and summarises the rest as far as it got (``DaySummary.complete`` is
        false); the next call goes on from there.
        """

    @abc.abstractmethod
    def day_page(
        self,
        day: date,
        *,
        after: str | None = None,
        before: str | None = None,
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
        day or one this store did not give; a day without messages is an
        empty page.
        """

    # Waking waiters ----------------------------------------------------------

    @abc.abstractmethod
    def changes_since(self, mark: int | None) -> Changes:
        """Whom the messages stored since ``mark`` concern, and the mark to pass next time.

        ``mark`` comes from the previous call; ``None`` starts watching now
        (nothing is reported). Sees messages stored by any process. When the
        store cannot tell (it lost track, or ``mark`` is too old),
        ``Changes.everything`` is set. ``Changes.through`` is a cursor before
        which every message has been accounted for.
        """

    def wait_for_changes(self, mark: int | None, timeout: float) -> Changes:
        """``changes_since(mark)``, once something may have been stored or ``timeout`` passed.

        Blocks its thread; one watcher per process calls it in a loop. This
        default looks every ``change_poll_interval`` seconds; stores that can
        be told (file sizes, a database's notifications) override it.
        """
        deadline = time.monotonic() + timeout
        while True:
            changes = self.changes_since(mark)
            if changes.messages or changes.everything or mark is None:
                return changes
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return changes
            time.sleep(min(self.change_poll_interval, remaining))

    #: Seconds between two looks in the default ``wait_for_changes``.
    change_poll_interval: float = 0.05
