"""What the admin and the task list read from the PostgreSQL pool: recent tasks with their
statuses, a device's messages, and the dashboard's overview.

Closed tasks' statuses come from their status bits; an open task's are worked
out from its record and answers, as a decision would see them.
"""

from __future__ import annotations

import re
from collections import Counter
from contextlib import AbstractContextManager
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson
from django.db import connections, transaction

from taskpool.days import day_of
from taskpool.exceptions import InvalidCursor, InvalidMessage
from taskpool.executions import bits_to_statuses
from taskpool.lifecycle import TaskState, replay
from taskpool.messages import Message
from taskpool.stores.base import PageEntry, TaskPage, TaskQuery, TaskSummary
from taskpool.stores.database.kept_counts import KeptCounts
from taskpool.stores.database.ledger import SqlLedger
from taskpool.stores.database.log import BATCH, position
from taskpool.stores.overview import (
    MOST_FAILURES,
    Failure,
    PoolOverview,
    TaskDay,
    overview_window,
    window_hours,
)

#: A task list position: the task's row, in 16 hex digits.
_TASK_POSITION = re.compile(r"[0-9a-f]{16}")


class Browsing:
    """The admin's and the task list's reads of ``DatabaseStore``."""

    alias: str
    task_ttl: float
    _kept_counts: KeptCounts

    if TYPE_CHECKING:  # given by DatabaseStore

        def _cursor(self) -> AbstractContextManager[Any]: ...

        def now(self) -> float: ...

        def _sweep(self, now: float) -> None: ...

        def _horizon_day(self, now: float) -> date: ...

    def recent_tasks(
        self,
        query: TaskQuery,
        *,
        before: str | None = None,
        limit: int = 50,
        registered_devices: list[str] | None = None,
    ) -> TaskPage:
        if before is not None and not (
            isinstance(before, str) and _TASK_POSITION.fullmatch(before)
        ):
            raise InvalidCursor(f"{before!r} is not a cursor of the task list.")
        registered = registered_devices or []
        now = self.now()
        self._sweep(now)
        bound = int(before, 16) if before is not None else None
        found: list[TaskSummary] = []
        found_seq = 0
        last_seq = bound
        with self._cursor() as cursor:
            while True:
                conditions = ["t.day >= %s"]
                params: list[Any] = [self._horizon_day(now)]
                if last_seq is not None:
                    conditions.append("t.seq < %s")
                    params.append(last_seq)
                if query.sender is not None:
                    conditions.append("t.sender = %s")
                    params.append(query.sender)
                cursor.execute(
                    "SELECT t.seq, t.closed, t.status_bits, t.record, m.line "
                    "FROM taskpool_db_task t JOIN taskpool_db_message m ON m.seq = t.seq "
                    f"WHERE {' AND '.join(conditions)} ORDER BY t.seq DESC LIMIT %s",
                    [*params, BATCH],
                )
                rows = cursor.fetchall()
                for seq, closed, bits, record, line in rows:
                    last_seq = seq
                    task = orjson.loads(line)
                    if not query.matches(task):
                        continue
                    statuses = (
                        bits_to_statuses(bits)
                        if closed is not None
                        else self._open_statuses(cursor, task, seq, record, registered, now)
                    )
                    if statuses is None:
                        continue
                    if query.statuses is not None and not statuses & query.statuses:
                        continue
                    if len(found) == limit:
                        return TaskPage(found, f"{found_seq:016x}", True)
                    found.append(TaskSummary(task, statuses))
                    found_seq = seq
                if len(rows) < BATCH:
                    break
        return TaskPage(found, f"{found_seq:016x}" if found else before, False)

    def _open_statuses(
        self,
        cursor: Any,
        task: Message,
        seq: int,
        record: Any,
        registered: list[str],
        now: float,
    ) -> frozenset[str] | None:
        try:
            state = TaskState.restore(
                task,
                seq,
                self.task_ttl,
                record=orjson.loads(record),
                answers={},
            )
        except InvalidMessage:
            return None
        ledger = SqlLedger(cursor, now, task_ttl=self.task_ttl, horizon_day=date.min)
        ledger.load_every_answer(state)
        return state.statuses(registered, now)

    def device_messages(self, device_id: str, *, limit: int = 20) -> list[PageEntry]:
        horizon = self._horizon_day(self.now())
        newest_first = "ORDER BY m.xid DESC, m.seq DESC LIMIT %s"
        with self._cursor() as cursor:
            cursor.execute(
                "(SELECT m.xid, m.seq, m.line FROM taskpool_db_message m "
                f"WHERE m.sender = %s AND m.day >= %s {newest_first}) UNION ALL "
                "(SELECT m.xid, m.seq, m.line FROM taskpool_db_execution e "
                "JOIN taskpool_db_message m ON m.seq = e.seq "
                f"WHERE e.device_id = %s AND m.day >= %s {newest_first}) UNION ALL "
                "(SELECT m.xid, m.seq, m.line FROM taskpool_db_task t "
                "JOIN taskpool_db_message m ON m.seq = t.seq "
                f"WHERE t.broadcast AND t.day >= %s {newest_first})",
                [f"device:{device_id}", horizon, limit, device_id, horizon, limit, horizon, limit],
            )
            rows = sorted(set(cursor.fetchall()), reverse=True)[:limit]
        return [PageEntry(position(xid, seq), orjson.loads(line)) for xid, seq, line in rows]

    def overview(
        self, registered_devices: list[str], *, days: int = 7, failures: int = 10
    ) -> PoolOverview:
        """Counts grouped in SQL over indexed columns, the latest kept; the open tasks one by one.

        Each hour is counted from the ``ts`` index (``tp_message_ts`` covers
        the kind and status); the tasks of a day by their status bits
        (``tp_task_day_closed`` covers them). What cannot change any more is
        kept in this process (``KeptCounts``), so a
        view of the dashboard counts again only today and the latest hours.
        Every statement reads one snapshot (repeatable read), so a task that
        closes meanwhile is counted once.
        """
        now = self.now()
        self._sweep(now)
        first_day, first_hour = overview_window(now, days, self.task_ttl)
        horizon_day = self._horizon_day(now)
        # Inside a transaction begun by the caller (ATOMIC_REQUESTS) the statements may see
        # different snapshots: nothing is kept then.
        own_snapshot = not connections[self.alias].in_atomic_block
        with transaction.atomic(using=self.alias), self._cursor() as cursor:
            if own_snapshot:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            hours = self._kept_counts.hours(cursor, window_hours(first_hour, now), now)
            cursor.execute(
                "SELECT t.task_id, t.day, t.expires_at, m.line FROM taskpool_db_task t "
                "JOIN taskpool_db_message m ON m.seq = t.seq "
                "WHERE t.closed IS NULL AND t.day >= %s ORDER BY t.seq",
                [horizon_day],
            )
            open_tasks = cursor.fetchall()
            open_ids: dict[date, set[str]] = {}
            for task_id, day, _expires, _line in open_tasks:
                open_ids.setdefault(day, set()).add(task_id)
            counted = self._kept_counts.task_days(
                cursor, first_day, day_of(now), open_ids, now, keep=own_snapshot
            )
            answers: dict[str, list[Message]] = {}
            in_window = [task_id for task_id, day, _e, _l in open_tasks if day >= first_day]
            if in_window:
                cursor.execute(
                    "SELECT parent_id, line FROM taskpool_db_message "
                    "WHERE parent_id = ANY(%s) AND kind = 'response' ORDER BY xid, seq",
                    [in_window],
                )
                for parent_id, line in cursor.fetchall():
                    answers.setdefault(parent_id, []).append(orjson.loads(line))
            recent: list[Failure] = []
            if failures > 0:
                cursor.execute(
                    "SELECT line FROM taskpool_db_message WHERE status IN ('failed', 'timed_out') "
                    "AND day >= %s ORDER BY xid DESC, seq DESC LIMIT %s",
                    [horizon_day, min(failures, MOST_FAILURES)],
                )
                recent = [Failure.of(orjson.loads(line)) for (line,) in cursor.fetchall()]
        statuses = {day: Counter(kept.closed) for day, kept in counted.items()}
        oldest = None
        for _task_id, day, expires_at, line in open_tasks:
            task = orjson.loads(line)
            if oldest is None and expires_at > now:
                oldest = task
            if day < first_day:
                continue
            try:
                state = replay(task, answers.get(task["id"], []), self.task_ttl)
            except InvalidMessage:
                continue
            statuses.setdefault(day, Counter()).update(state.statuses(registered_devices, now))
        task_days = [
            TaskDay(day, kept.sent, dict(sorted(statuses.get(day, Counter()).items())))
            for day, kept in sorted(counted.items())
        ]
        return PoolOverview(task_days=task_days, hours=hours, failures=recent, oldest_open=oldest)
