"""Tasks as the API's and the admin's lists and pages show them: the index says where each
task is and how it stands, the day files say what it is and what was answered.

A mixin of ``JsonlStore``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING

from taskpool.exceptions import InvalidMessage, UnknownTask
from taskpool.executions import StatusCount, bits_to_statuses, registered_places
from taskpool.lifecycle import replay
from taskpool.messages import Message
from taskpool.stores.base import BaseStore, TaskDetail, TaskPage, TaskQuery, TaskSummary
from taskpool.stores.jsonl.cursors import Cursor
from taskpool.stores.jsonl.day_files import DayFiles
from taskpool.stores.jsonl.index import PoolIndex
from taskpool.stores.jsonl.ledger import IndexLedger


class TaskViews(BaseStore):
    """``JsonlStore``'s task detail, task lists and execution counts."""

    if TYPE_CHECKING:  # the store's fields these views use (``JsonlStore`` has them)
        _mutex: threading.RLock
        _files: DayFiles
        _ledger: IndexLedger
        _clock: Callable[[], float]

        @property
        def _index(self) -> PoolIndex: ...

        def _advance(self, *, checkpoint_allowed: bool = True) -> float: ...

    def task_detail(self, task_id: str) -> TaskDetail:
        with self._mutex:
            self._advance()
            known = self._index.locate(task_id)
            if known is None:
                raise UnknownTask(f"There is no task {task_id} in the pool.")
            task = self._ledger.task_at(known)
        days = [day for day in self._files.days() if day.toordinal() >= known.day_ordinal]
        responses = [
            message
            for day in days
            for message in self._files.messages_naming(day, task_id)
            if message["type"] == "response" and message["parent_id"] == task_id
        ]
        return TaskDetail(task, responses, replay(task, responses, self.task_ttl))

    def _replayed_holder_before(self, task_id: str, response_id: str) -> str | None:
        """As ``BaseStore``'s, reading the days from the task's line to the answer only:
        a stream resumed after a fleet's claims asks it of every task it meets, and the
        day before the task (megabytes of other tasks) holds none of its lines."""
        with self._mutex:
            self._advance()
            known = self._index.locate(task_id)
            if known is None:
                return None
            task = self._ledger.task_at(known)
        earlier: list[Message] = []
        for day in self._files.days():
            if day.toordinal() < known.day_ordinal:
                continue
            start = known.offset if day.toordinal() == known.day_ordinal else 0
            for message in self._files.messages_naming(day, task_id, start=start):
                if message["id"] == response_id:
                    return replay(task, earlier, self.task_ttl).claimer
                if message["type"] == "response" and message["parent_id"] == task_id:
                    earlier.append(message)
        return replay(task, earlier, self.task_ttl).claimer

    def task_status_counts(
        self, task_ids: list[str], registered_devices: list[str], *, shown: int = 5
    ) -> dict[str, list[StatusCount]]:
        """As ``BaseStore``'s, from the index's state of each open task: the day files are
        read only for closed tasks."""
        registered = registered_places(registered_devices)
        counts = {}
        closed = []
        with self._mutex:
            self._advance()
            now = self._clock()
            for task_id in task_ids:
                state = self._index.open.get(task_id)
                if state is None:
                    closed.append(task_id)
                else:
                    counts[task_id] = state.status_counts(registered, now, shown)
        if closed:
            counts.update(super().task_status_counts(closed, registered_devices, shown=shown))
        return counts

    def recent_tasks(
        self,
        query: TaskQuery,
        *,
        before: str | None = None,
        limit: int = 50,
        registered_devices: list[str] | None = None,
    ) -> TaskPage:
        registered = registered_devices or []
        bound = None
        if before is not None:
            at = Cursor.parse(before)
            bound = (at.day.toordinal(), at.offset)
        found: list[tuple[TaskSummary, str]] = []
        with self._mutex:
            self._advance()
            day_ordinals = sorted(self._index.days, reverse=True)
        for day_ordinal in day_ordinals:
            if bound is not None and day_ordinal > bound[0]:
                continue
            for task_id, offset, statuses in self._tasks_of_day(day_ordinal, registered):
                if bound is not None and (day_ordinal, offset) >= bound:
                    continue
                if query.statuses is not None and not statuses & query.statuses:
                    continue
                try:
                    task = self._files.message_starting_at(date.fromordinal(day_ordinal), offset)
                except (InvalidMessage, OSError):
                    continue
                if task["id"] != task_id or not query.matches(task):
                    continue
                found.append(
                    (
                        TaskSummary(task, statuses),
                        str(Cursor(date.fromordinal(day_ordinal), offset)),
                    )
                )
                if len(found) > limit:
                    return TaskPage(
                        [summary for summary, _ in found[:limit]], found[limit - 1][1], True
                    )
        return TaskPage([summary for summary, _ in found], found[-1][1] if found else before, False)

    def _tasks_of_day(
        self, day_ordinal: int, registered: list[str]
    ) -> list[tuple[str, int, frozenset[str]]]:
        """A day's tasks, newest first, with their execution statuses now."""
        with self._mutex:
            records = self._index.days.get(day_ordinal)
            if records is None:
                return []
            now = self._clock()
            tasks = []
            for task_id, offset, closed, bits in records.tasks_newest_first():
                state = self._index.open.get(task_id) if closed is None else None
                statuses = (
                    state.statuses(registered, now) if state is not None else bits_to_statuses(bits)
                )
                tasks.append((task_id, offset, statuses))
            return tasks
