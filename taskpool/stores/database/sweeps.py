"""The database store's sweeps: closing the tasks whose expiry has come, and folding the
devices' counted pending changes into their rows.

Both run from reads, at most every ``expiry_sweep_seconds`` per process, so
that a read pays for them rarely and no process has to keep time. Both hold
row locks that every host's writes may wait on (answers to the tasks closed,
heartbeats to the devices folded), so each bounds how long it may wait on
its own host (``BOUND_IDLE``), as writers do.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from datetime import date
from typing import TYPE_CHECKING, Any

import orjson
from django.db import DatabaseError, transaction

from taskpool.lifecycle import EXPIRED, TaskState
from taskpool.stores.database.horizon import BOUND_IDLE, idle
from taskpool.stores.database.ledger import PENDING_CHANGES_LOCK, SqlLedger

logger = logging.getLogger("taskpool")


class Sweeps:
    """``close_expired`` and ``fold_pending_changes``, and ``_sweep`` that runs both."""

    #: Seconds between two sweeps that close expired tasks, at most (per process).
    expiry_sweep_seconds = 1.0
    alias: str
    task_ttl: float
    writer_idle_seconds: float
    _swept_at: float
    _sweep_failing = False

    if TYPE_CHECKING:  # given by DatabaseStore

        def _cursor(self) -> AbstractContextManager[Any]: ...

        def now(self) -> float: ...

        def _horizon_day(self, now: float) -> date: ...

    def close_expired(self, now: float | None = None) -> int:
        """Close every open task whose expiry has come, or whose day left the horizon."""
        now = self.now() if now is None else now
        with transaction.atomic(using=self.alias), self._cursor() as cursor:
            # The rows it locks would hold up every host's answers to them: bounded as a writer.
            cursor.execute(f"SELECT {BOUND_IDLE}", [idle(self.writer_idle_seconds)])
            cursor.execute(
                "SELECT t.task_id, t.seq, t.record, m.line, t.broadcast FROM taskpool_db_task t "
                "JOIN taskpool_db_message m ON m.seq = t.seq WHERE t.closed IS NULL "
                "AND (t.expires_at <= %s OR t.day < %s) FOR UPDATE OF t SKIP LOCKED",
                [now, self._horizon_day(now)],
            )
            expired = cursor.fetchall()
            if not expired:
                return 0
            ledger = SqlLedger(
                cursor, now, task_ttl=self.task_ttl, horizon_day=date.min, history=True
            )
            if any(broadcast for *_task, broadcast in expired):
                ledger.hold_broadcasts()  # devices being given them: their rows closed too
            updates = []
            for task_id, seq, record, line, _broadcast in expired:
                state = TaskState.restore(
                    orjson.loads(line),
                    seq,
                    self.task_ttl,
                    record=orjson.loads(record),
                    answers={},
                )
                ledger.load_every_answer(state)
                updates.append((EXPIRED, state.status_bits([], now), task_id))
            cursor.execute(
                "UPDATE taskpool_db_task t SET closed = c.closed, status_bits = c.bits "
                "FROM unnest(%s::text[], %s::int[], %s::text[]) AS c(closed, bits, task_id) "
                "WHERE t.task_id = c.task_id",
                [list(column) for column in zip(*updates, strict=True)],
            )
            cursor.execute(
                "UPDATE taskpool_db_execution SET active = FALSE WHERE active AND task_id = ANY(%s)",
                [[task_id for _closed, _bits, task_id in updates]],
            )
        return len(updates)

    def _sweep(self, now: float) -> None:
        """``close_expired`` at most every ``expiry_sweep_seconds``, so reads stay cheap."""
        if now - self._swept_at >= self.expiry_sweep_seconds or now < self._swept_at:
            self._swept_at = now
            # Another process sweeping the same rows is no harm: reads filter expiry anyway.
            # Nor is a sweep the database refuses (down, or read-only: a replica promoted
            # late, a disk full), which each sweep is in a transaction, or a savepoint, of
            # its own: the read goes on, and the next read tries again.
            try:
                self.close_expired(now)
                self.fold_pending_changes()
            except DatabaseError as error:
                if not self._sweep_failing:  # said once, until a sweep goes through again
                    logger.warning("taskpool: a sweep of the pool's tables failed: %s", error)
                self._sweep_failing = True
            else:
                self._sweep_failing = False

    def fold_pending_changes(self) -> int:
        """Add the devices' counted changes to their pending rows; how many were folded.

        One statement, so a reader sees the changes either as rows or in the
        sum, never both; one process at a time (the others skip), so two folds
        never wait on each other's device rows.
        """
        with transaction.atomic(using=self.alias), self._cursor() as cursor:
            # The device rows it folds into would hold up every host's heartbeats: bounded.
            cursor.execute(
                f"SELECT pg_try_advisory_xact_lock(%s), {BOUND_IDLE}",
                [PENDING_CHANGES_LOCK, idle(self.writer_idle_seconds)],
            )
            if not cursor.fetchone()[0]:
                return 0
            cursor.execute(
                "WITH folded AS (DELETE FROM taskpool_db_pending_change "
                "RETURNING device_id, delta) "
                "INSERT INTO taskpool_db_device AS d (device_id, broadcast_mark, pending_rows) "
                "SELECT device_id, 0, sum(delta) FROM folded GROUP BY device_id "
                "ORDER BY device_id ON CONFLICT (device_id) "
                "DO UPDATE SET pending_rows = d.pending_rows + EXCLUDED.pending_rows",
            )
            return cursor.rowcount
