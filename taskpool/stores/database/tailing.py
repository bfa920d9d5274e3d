"""Waking waiters on PostgreSQL: the log's tail read into a journal of whom each line concerns.

A waiting long-poll or stream asks what changed since its mark. The store
reads the log past the last row it read (only below the horizon, as every
tailing reader does), and records for each new line the devices and users
it concerns (``stores.changes``), so that a waiter is woken only by lines
that concern it. Between hints from other hosts (``wakeups``), a waiter
looks at the log again every ``poll_seconds``.
"""

from __future__ import annotations

import threading
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

import orjson

from taskpool.exceptions import InvalidMessage
from taskpool.lifecycle import TaskState
from taskpool.messages import Message
from taskpool.stores.changes import Changes, Journal, concern_of
from taskpool.stores.database.horizon import horizon
from taskpool.stores.database.log import BATCH, parse_position, position
from taskpool.stores.database.reconnecting import reconnecting
from taskpool.stores.database.wakeups import Wakeups


class LogTailing:
    """The waiters' part of ``DatabaseStore``: ``changes_since`` and ``wait_for_changes``."""

    task_ttl: float
    poll_seconds: float
    _wakeups: Wakeups
    _tail_lock: threading.Lock
    _journal: Journal
    #: The last ``(xid, seq)`` read; ``(-1, -1)`` for an empty log, ``None`` before the first look.
    _tail: tuple[int, int] | None

    alias: str

    if TYPE_CHECKING:  # given by DatabaseStore

        def _cursor(self) -> AbstractContextManager[Any]: ...

        def end_cursor(self) -> str | None: ...

    @reconnecting
    def changes_since(self, mark: int | None) -> Changes:
        with self._tail_lock:
            if self._tail is None:
                end = self.end_cursor()
                self._tail = parse_position(end) if end is not None else (-1, -1)
                self._journal.reset()
            self._read_tail()
            through = position(*self._tail) if self._tail != (-1, -1) else None
            return self._journal.since(mark, through)

    def _read_tail(self) -> None:
        """Read the log past the tail (below the horizon) into the journal of concerns."""
        self._journal.enabled = True
        assert self._tail is not None, "changes_since sets the tail first"
        while True:
            with self._cursor() as cursor:
                cursor.execute(
                    "SELECT xid, seq, line FROM taskpool_db_message "
                    "WHERE (xid, seq) > (%s, %s) AND xid < %s ORDER BY xid, seq LIMIT %s",
                    [*self._tail, horizon(cursor), BATCH],
                )
                rows = cursor.fetchall()
                messages = [orjson.loads(line) for _xid, _seq, line in rows]
                tasks = self._tasks_answered(cursor, messages)
            for (xid, seq, _line), message in zip(rows, messages, strict=True):
                self._journal.record(concern_of(message, tasks))
                self._tail = (xid, seq)
            if len(rows) < BATCH:
                return

    def _tasks_answered(self, cursor: Any, messages: list[Message]) -> dict[str, TaskState]:
        """The open tasks the responses among ``messages`` answer (for whom they concern)."""
        wanted = list(
            {m["parent_id"] for m in messages if m["type"] == "response" and m["parent_id"]}
        )
        if not wanted:
            return {}
        cursor.execute(
            "SELECT m.line FROM taskpool_db_task t JOIN taskpool_db_message m ON m.seq = t.seq "
            "WHERE t.task_id = ANY(%s)",
            [wanted],
        )
        tasks = {}
        for (line,) in cursor.fetchall():
            task = orjson.loads(line)
            try:
                tasks[task["id"]] = TaskState(task, 0, self.task_ttl)
            except InvalidMessage:
                continue
        return tasks

    def wait_for_changes(self, mark: int | None, timeout: float) -> Changes:
        """Listen for another process's notification, and look at the log at least every
        ``poll_seconds`` whatever comes."""
        deadline = time.monotonic() + timeout
        changes = self.changes_since(mark)
        while not (changes.messages or changes.everything or mark is None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self._wakeups.wait(min(self.poll_seconds, remaining))
            changes = self.changes_since(mark)
        return changes
