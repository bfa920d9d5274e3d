"""The database store's answers to what is pending: one device's list, many devices' lists
at once, and the counts of the devices list.

A device gets its rows of the broadcasts the first time it asks after them
(``ledger.give_broadcasts``), so each read first gives what is due, in a
transaction only when there is something to give; then its rows are one
index range, each checked against its task.
"""

from __future__ import annotations

import bisect
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, cast

import orjson
from django.db import connections, transaction

from taskpool.jobs import served
from taskpool.messages import Message
from taskpool.stores.database.ledger import (
    any_broadcasts_behind,
    broadcasts_behind,
    give_broadcasts,
    give_broadcasts_to,
)
from taskpool.stores.database.reconnecting import reconnecting


class PendingReads:
    """``pending_for``, ``pending_for_many`` and ``pending_counts`` on PostgreSQL."""

    alias: str

    if TYPE_CHECKING:  # given by DatabaseStore

        def _cursor(self) -> AbstractContextManager[Any]: ...

        def now(self) -> float: ...

        def _sweep(self, now: float) -> None: ...

    @reconnecting
    def pending_for(self, device_id: str, *, limit: int = 100) -> list[Message]:
        now = self.now()
        self._sweep(now)
        with self._cursor() as cursor:
            # A transaction (two more round trips) only when there are rows to give.
            if broadcasts_behind(cursor, device_id):
                with transaction.atomic(using=self.alias):
                    give_broadcasts(cursor, device_id)
            # The device's rows in order, each checked against its task, up to ``limit``;
            # then their lines. (As a join, the planner, estimating few rows, read all the
            # device's pending rows and their lines and sorted them: 50 ms at 2,000 open
            # broadcasts. The check as a subquery makes it walk the index and stop; by the
            # task's seq, which the index holds, it need not read the rows themselves. A
            # job's attempt is looked up for the rows kept only.)
            cursor.execute(
                "SELECT m.line, t.jobs, (SELECT e2.attempt FROM taskpool_db_execution e2 "
                "WHERE t.jobs AND e2.task_id = t.task_id AND e2.device_id = %s) "
                "FROM (SELECT e.seq FROM taskpool_db_execution e "
                "WHERE e.device_id = %s AND e.active AND (SELECT t.closed IS NULL "
                "AND t.expires_at > %s AND (t.not_before IS NULL OR t.not_before <= %s) "
                "FROM taskpool_db_task t WHERE t.seq = e.seq) "
                "ORDER BY e.seq LIMIT %s) p JOIN taskpool_db_message m ON m.seq = p.seq "
                "JOIN taskpool_db_task t ON t.seq = p.seq ORDER BY p.seq",
                [device_id, device_id, now, now, limit],
            )
            return [
                cast(Message, served(orjson.loads(line), attempt if jobs else None))
                for line, jobs, attempt in cursor.fetchall()
            ]

    @reconnecting
    def pending_for_many(self, requests: list[tuple[str, int]]) -> list[list[Message]]:
        answers: list[list[Message]] = [[] for _ in requests]
        if not requests:
            return answers
        now = self.now()
        self._sweep(now)
        devices = sorted({device_id for device_id, _ in requests})
        with self._cursor() as cursor:
            # ``pending_for``'s statements, each for every device at once: a few statements
            # whatever the number of devices, where one at a time a thousand devices behind
            # a ``device:*`` task took a thousand transactions.
            if any_broadcasts_behind(cursor, devices):
                with transaction.atomic(using=self.alias):
                    give_broadcasts_to(cursor, devices)
            cursor.execute(
                "SELECT r.n, m.line, t.jobs, (SELECT e2.attempt FROM taskpool_db_execution e2 "
                "WHERE t.jobs AND e2.task_id = t.task_id AND e2.device_id = r.device_id) "
                "FROM unnest(%s::text[], %s::bigint[]) WITH ORDINALITY r(device_id, wanted, n) "
                "CROSS JOIN LATERAL (SELECT e.seq FROM taskpool_db_execution e "
                "WHERE e.device_id = r.device_id AND e.active AND (SELECT t.closed IS NULL "
                "AND t.expires_at > %s AND (t.not_before IS NULL OR t.not_before <= %s) "
                "FROM taskpool_db_task t WHERE t.seq = e.seq) "
                "ORDER BY e.seq LIMIT greatest(r.wanted, 0)) p "
                "JOIN taskpool_db_message m ON m.seq = p.seq "
                "JOIN taskpool_db_task t ON t.seq = p.seq ORDER BY r.n, p.seq",
                [
                    [device_id for device_id, _ in requests],
                    [limit for _, limit in requests],
                    now,
                    now,
                ],
            )
            for n, line, jobs, attempt in cursor.fetchall():
                answers[n - 1].append(
                    cast(Message, served(orjson.loads(line), attempt if jobs else None))
                )
        return answers

    def pending_counts(self, device_ids: list[str]) -> dict[str, int]:
        now = self.now()
        self._sweep(now)
        counts = dict.fromkeys(device_ids, 0)
        if not device_ids:
            return counts
        # The three statements read one snapshot (repeatable read): a task another host
        # posts between them would otherwise be taken off a count it was not in. Inside a
        # transaction the caller began, its isolation is the caller's to choose.
        own_snapshot = not connections[self.alias].in_atomic_block
        with transaction.atomic(using=self.alias), self._cursor() as cursor:
            if own_snapshot:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # Each device's active rows, kept counted by triggers on the executions'
            # table (counting the rows themselves read one index entry per pending
            # task: 100 ms for a thousand devices with a few hundred open broadcasts
            # each); less the few whose task has expired since the last sweep or has
            # not started yet.
            cursor.execute(
                "SELECT d.device_id, COALESCE(s.pending_rows, 0) + COALESCE("
                "(SELECT sum(c.delta) FROM taskpool_db_pending_change c "
                "WHERE c.device_id = d.device_id), 0)::bigint, COALESCE(s.broadcast_mark, 0) "
                "FROM unnest(%s::text[]) d(device_id) "
                "LEFT JOIN taskpool_db_device s ON s.device_id = d.device_id",
                [device_ids],
            )
            marks = {}
            for device_id, count, mark in cursor.fetchall():
                counts[device_id] = count
                marks[device_id] = mark
            cursor.execute(
                "SELECT e.device_id, count(*) FROM taskpool_db_task t "
                "JOIN taskpool_db_execution e ON e.task_id = t.task_id "
                "WHERE t.closed IS NULL AND (t.expires_at <= %s OR (t.jobs AND t.not_before > %s)) "
                "AND e.device_id = ANY(%s) AND e.active GROUP BY e.device_id",
                [now, now, device_ids],
            )
            for device_id, count in cursor.fetchall():
                counts[device_id] -= count
            # Broadcasts a device has no row for yet are pending for it too, when offered
            # to a device they have not heard from (the row it is given would be active).
            cursor.execute(
                "SELECT seq FROM taskpool_db_task WHERE broadcast AND NOT rollout "
                "AND closed IS NULL AND expires_at > %s AND (not_before IS NULL OR not_before <= %s) "
                "AND offered_to_unheard ORDER BY seq",
                [now, now],
            )
            broadcasts = [seq for (seq,) in cursor.fetchall()]
            if broadcasts:
                for device_id in device_ids:
                    mark = marks.get(device_id, 0)
                    counts[device_id] += len(broadcasts) - bisect.bisect_right(broadcasts, mark)
        return counts
