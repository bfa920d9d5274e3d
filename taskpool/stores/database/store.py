"""``DatabaseStore``: the pool in PostgreSQL (13 or later), shared by every application host.

The same nine-field messages as the day files, in an append-only table
(``models.StoredMessage``), with the state decisions and reads need kept in
small tables beside it (see ``models``), so that pending lists, task
details, claims and the devices list are index lookups. Decisions run in
short transactions that lock only the rows they decide on
(``ledger.SqlLedger``); a new process serves at once, with nothing to
replay.

The log is read in ``(xid, seq)`` order, only below the oldest of the pool's
own writers still running (``horizon``), so a tailing reader never skips a
row whose transaction commits after a later one's: cursors name ``(xid, seq)``.
Waiters read the log's tail (``tailing``) and are woken by
``LISTEN``/``NOTIFY`` hints with a poll behind them (``wakeups``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import date
from typing import Any, cast

import orjson
from django.core import checks
from django.db import DatabaseError, InterfaceError, OperationalError, connections, transaction

from taskpool.days import day_of
from taskpool.exceptions import (
    InvalidMessage,
    MessageTooLarge,
    StoreUnavailable,
    UnknownTask,
)
from taskpool.lifecycle import replay
from taskpool.messages import (
    Message,
    decode_line,
    encode_line,
    parse_address,
    parse_timestamp,
)
from taskpool.missing_tables import migrate_command, missing_table
from taskpool.stores.base import (
    BaseStore,
    DaySummary,
    DeviceActivity,
    HealthCheck,
    StoreFigures,
    TaskDetail,
    refuse_in_horizon,
)
from taskpool.stores.changes import Journal
from taskpool.stores.database.browsing import Browsing
from taskpool.stores.database.horizon import (
    LOG_WRITERS,
    WRITER_IDLE_SECONDS,
    register_writer,
)
from taskpool.stores.database.kept_counts import KeptCounts
from taskpool.stores.database.ledger import (
    BROADCASTS_LOCK,
    SqlLedger,
    storable,
)
from taskpool.stores.database.log import LogReading, position
from taskpool.stores.database.pending import PendingReads
from taskpool.stores.database.reconnecting import reconnecting
from taskpool.stores.database.sweeps import Sweeps
from taskpool.stores.database.tailing import LogTailing
from taskpool.stores.database.unapplied import unapplied_migrations
from taskpool.stores.database.wakeups import Wakeups
from taskpool.stores.rules import Decision, Ledger

#: SQLSTATEs worth running a decision again for: a deadlock, a serialisation failure.
_RETRY_STATES = {"40P01", "40001"}


class DatabaseStore(PendingReads, Sweeps, LogTailing, LogReading, Browsing, BaseStore):
    """The pool in the database named by ``TASKPOOL["DATABASE"]``; see the module docstring."""

    supports_day_files = False
    supports_import = True
    #: Seconds a waiter waits for a notification before it looks at the log anyway.
    poll_seconds = 0.5
    #: Seconds a writing transaction may wait on this process between two statements.
    writer_idle_seconds = WRITER_IDLE_SECONDS

    def __init__(
        self,
        alias: str = "default",
        *,
        task_ttl: float = 7 * 86400,
        max_message_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.alias = alias
        self.task_ttl = float(task_ttl)
        self.max_message_bytes = max_message_bytes
        self._clock = clock
        self._wakeups = Wakeups(self._connection_params)
        self._tail_lock = threading.Lock()
        self._journal = Journal()
        self._tail: tuple[int, int] | None = None
        self._swept_at = -1e18
        self._summaries: dict[date, tuple[float, DaySummary]] = {}
        #: The dashboard's counts of what can no longer change.
        self._kept_counts = KeptCounts()

    @classmethod
    def from_settings(cls, settings: Any) -> DatabaseStore:
        return cls(
            settings.DATABASE,
            task_ttl=settings.TASK_TTL.total_seconds(),
            max_message_bytes=settings.MAX_MESSAGE_BYTES,
        )

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[checks.CheckMessage]:
        from django.apps import apps
        from django.conf import settings

        alias = options.get("DATABASE", "default")
        if alias not in settings.DATABASES:
            return [
                checks.Error(
                    f"TASKPOOL['DATABASE'] is {alias!r}, which is not in DATABASES.",
                    id="taskpool.E010",
                )
            ]
        engine = settings.DATABASES[alias].get("ENGINE", "")
        if engine != "django.db.backends.postgresql":
            return [
                checks.Error(
                    f"The database store needs PostgreSQL, and the database {alias!r} is {engine}.",
                    hint="Point TASKPOOL['DATABASE'] at a PostgreSQL 13+ database, or use "
                    "taskpool.stores.jsonl.JsonlStore.",
                    id="taskpool.E011",
                )
            ]
        if not apps.is_installed("taskpool.stores.database"):
            return [
                checks.Error(
                    "The database store's tables come with its app.",
                    hint='Add "taskpool.stores.database" to INSTALLED_APPS and run migrate.',
                    id="taskpool.E012",
                )
            ]
        return []

    @classmethod
    def check_database(
        cls, options: dict[str, Any], databases: list[str]
    ) -> list[checks.CheckMessage]:
        """``taskpool.W003``: the pool's database lacks the store's tables or a migration.

        A warning, not an error: ``migrate --database ALIAS`` runs this check on
        the database it is about to migrate, and an error would refuse the cure.
        ``taskpool.E013`` when that database does not answer at all.
        """
        alias = options.get("DATABASE", "default")
        if alias not in databases:
            return []
        try:
            missing, none_applied = unapplied_migrations(alias)
        except DatabaseError as error:  # the operator asked about it: say so, not a traceback
            return [
                checks.Error(
                    f"The pool's database {alias!r} does not answer: {str(error).strip()}",
                    hint="Check its entry in DATABASES and that the server runs.",
                    id="taskpool.E013",
                )
            ]
        if not missing:
            return []
        if none_applied:
            problem = f"The pool's tables are missing on database {alias!r}"
        elif len(missing) == 1:
            problem = f"The pool's migration {missing[0]} is not applied on database {alias!r}"
        else:
            problem = (
                f"The pool's migrations {', '.join(missing)} are not applied on database {alias!r}"
            )
        return [
            checks.Warning(
                f"{problem}: run {migrate_command(alias)}.",
                hint="migrate without --database migrates the default database only; until "
                "this one is, the pool's requests and commands fail.",
                id="taskpool.W003",
            )
        ]

    def close(self) -> None:
        self._wakeups.close()

    def now(self) -> float:
        return self._clock()

    # Operations ---------------------------------------------------------------

    def health(self, *, ready: bool = False) -> list[HealthCheck]:
        """``pool_database``: the database answers and takes writes; then ``read`` (the tables).

        Nothing is built before serving, so ``ready`` adds nothing. How long a
        database that does not answer at all holds the check is its
        connection's ``connect_timeout`` (``OPTIONS`` in ``DATABASES``).
        """
        try:
            with self._cursor() as cursor:
                cursor.execute(
                    "SELECT current_setting('transaction_read_only'), "
                    "to_regclass('taskpool_db_message') IS NOT NULL"
                )
                read_only, migrated = cursor.fetchone()
        except DatabaseError:
            connections[self.alias].close()  # the next request connects afresh
            return [HealthCheck("pool_database", "The pool's database does not answer.")]
        if read_only == "on":
            return [
                HealthCheck("pool_database", "The pool's database takes no writes (read-only).")
            ]
        if not migrated:
            option = "" if self.alias == "default" else f" --database {self.alias}"
            return [
                HealthCheck(
                    "pool_database",
                    f"The pool's tables are not in its database: run manage.py migrate{option}.",
                )
            ]
        return [HealthCheck("pool_database"), *super().health(ready=ready)]

    def remove_day(self, day: date) -> None:
        """Deletes the day's rows, with the state kept for its tasks, in one transaction.

        Its tasks are closed by then (their day left the horizon); answers to
        them stored on later days stay, as lines of those days.
        """
        refuse_in_horizon(self, day)
        with transaction.atomic(using=self.alias), self._cursor() as cursor:
            cursor.execute(
                "DELETE FROM taskpool_db_execution WHERE task_id IN "
                "(SELECT task_id FROM taskpool_db_task WHERE day = %s)",
                [day],
            )
            cursor.execute("DELETE FROM taskpool_db_task WHERE day = %s", [day])
            cursor.execute(
                "DELETE FROM taskpool_db_idempotency WHERE seq IN "
                "(SELECT seq FROM taskpool_db_message WHERE day = %s)",
                [day],
            )
            cursor.execute("DELETE FROM taskpool_db_message WHERE day = %s", [day])
        self._summaries.pop(day, None)

    def figures(self) -> StoreFigures:
        """Open tasks from the tasks' table; no index, no checkpoint, no data directory."""
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM taskpool_db_task WHERE closed IS NULL AND expires_at > %s",
                [self.now()],
            )
            (open_tasks,) = cursor.fetchone()
            # The planner's estimate: counting a large table's rows would read all of it.
            cursor.execute(
                "SELECT c.reltuples::bigint, pg_total_relation_size(c.oid) "
                "FROM pg_class c WHERE c.oid = 'taskpool_db_message'::regclass"
            )
            rows, size = cursor.fetchone()
            if rows < 0:
                # Never analysed yet (autovacuum does it after the first fifty rows or
                # so): the table is young, so count it rather than say 0.
                cursor.execute("SELECT count(*) FROM taskpool_db_message")
                (rows,) = cursor.fetchone()
        return StoreFigures(open_tasks=open_tasks, stored_bytes=size, stored_rows=rows)

    # Connections -------------------------------------------------------------

    def _cursor(self) -> Any:
        """A cursor on this thread's connection, connected afresh if an error broke it.

        Django does that check at each request's start and end; the threads
        that read the pool for waiting requests outlive requests, and would
        keep a connection a database restart cut for good.
        """
        connection = connections[self.alias]
        if connection.errors_occurred and not connection.in_atomic_block:
            if connection.is_usable():
                connection.errors_occurred = False
            else:
                connection.close()
        return connection.cursor()

    def _connection_params(self) -> dict[str, Any]:
        params = connections[self.alias].get_connection_params()
        kept: dict[str, Any] = {
            k: v for k, v in params.items() if isinstance(v, (str, int)) and v != ""
        }
        # Django turns psycopg's prepared statements off unless OPTIONS asks for them (None),
        # so that a pooler in transaction mode works: the same for these connections.
        kept["prepare_threshold"] = params.get("prepare_threshold")
        return kept

    def _horizon_day(self, now: float) -> date:
        return day_of(now - self.task_ttl)

    # Writing -------------------------------------------------------------------

    def transact(
        self, decide: Callable[[Ledger, float], Decision], *, reads_pool: bool = True
    ) -> Any:
        """Decide in one transaction holding the rows' locks; notify after it commits."""
        if not reads_pool:
            return self._append_alone(decide)
        for attempt in range(5):
            begun = False
            try:
                with transaction.atomic(using=self.alias), self._cursor() as cursor:
                    register_writer(cursor, self.writer_idle_seconds)
                    begun = True
                    now = self.now()
                    ledger = SqlLedger(
                        cursor, now, task_ttl=self.task_ttl, horizon_day=self._horizon_day(now)
                    )
                    message, result = decide(ledger, now)
                    if message is None:
                        return result
                    self._store(cursor, ledger, message)
                    transaction.on_commit(self._wakeups.committed, using=self.alias)
                return result
            except (OperationalError, InterfaceError) as error:
                if _sqlstate(error) in _RETRY_STATES and attempt < 4:
                    continue  # a deadlock or serialisation failure: decided again from scratch
                if not begun and attempt == 0:
                    # The connection was cut before this transaction's first statement
                    # (atomic closed it on the way out): nothing was done, so once more.
                    continue
                raise StoreUnavailable("The pool's database cannot take the write now.") from error
            except DatabaseError as error:
                if missing_table(error):
                    raise  # not set up: the API names the migrate to run
                raise StoreUnavailable("The pool's database refused the write.") from error
        raise StoreUnavailable("The pool's database cannot take the write now.")

    def _append_alone(self, decide: Callable[[Ledger, float], Decision]) -> Any:
        """A device's message that no decision reads or follows (a heartbeat), in one statement.

        The statement registers the writer, stores the line and the device's
        activity, and commits on its own: one round trip where a transaction
        takes five. The writer's lock comes first (the rows are made from its
        result), so the transaction has no id yet when it registers, as the
        log's readers require.
        """
        message, result = decide(cast(Ledger, None), self.now())
        if message is None:
            return result
        line = self._line_of(message)
        device_id = message["from"].removeprefix("device:")
        heartbeat = message["ts"] if message["type"] == "heartbeat" else None
        try:
            with self._cursor() as cursor:
                cursor.execute(
                    "WITH writer AS (SELECT pg_advisory_xact_lock_shared(%s)), "
                    "stored AS (INSERT INTO taskpool_db_message (message_id, day, ts, kind, "
                    "sender, recipient, parent_id, line, status) "
                    "SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s FROM writer RETURNING seq) "
                    "INSERT INTO taskpool_db_device AS d (device_id, broadcast_mark, last_message, "
                    "last_heartbeat) SELECT %s, 0, %s, %s FROM stored "
                    "ON CONFLICT (device_id) DO UPDATE SET last_message = EXCLUDED.last_message, "
                    "last_heartbeat = COALESCE(EXCLUDED.last_heartbeat, d.last_heartbeat)",
                    [LOG_WRITERS, *_columns(message, line), device_id, message["ts"], heartbeat],
                )
        except DatabaseError as error:
            if missing_table(error):
                raise
            raise StoreUnavailable("The pool's database cannot take the write now.") from error
        transaction.on_commit(self._wakeups.committed, using=self.alias)
        return result

    def _line_of(self, message: Message) -> str:
        """The message's line as the log keeps it (no newline), refused when it is too large."""
        line = encode_line(message)
        if len(line) > self.max_message_bytes:
            raise MessageTooLarge(
                f"The message is {len(line)} bytes; the pool takes at most "
                f"{self.max_message_bytes}."
            )
        return line[:-1].decode()

    def _store(self, cursor: Any, ledger: SqlLedger, message: Message) -> int:
        line = self._line_of(message)
        if message["type"] == "task" and message["to"] == "device:*":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [BROADCASTS_LOCK])
        seq = _insert(cursor, message, line)
        if seq is not None:
            ledger.record(message, seq)
        return seq or 0

    def import_lines(self, lines: list[bytes]) -> tuple[int, int]:
        """One transaction per call: a batch of lines is stored whole or not at all."""
        messages = [_importable(line) for line in lines]
        stored = skipped = 0
        now = self.now()
        with transaction.atomic(using=self.alias), self._cursor() as cursor:
            register_writer(cursor, self.writer_idle_seconds)
            ledger = SqlLedger(
                cursor,
                now,
                task_ttl=self.task_ttl,
                horizon_day=date.min,
                history=True,
            )
            for line, message in zip(lines, messages, strict=True):
                seq = _insert(cursor, message, line.decode())
                if seq is None:
                    skipped += 1
                    continue
                ledger.record(message, seq)
                stored += 1
            transaction.on_commit(self._wakeups.committed, using=self.alias)
        return stored, skipped

    # Reading -------------------------------------------------------------------

    def open_job_tasks(self) -> list[str]:
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT task_id FROM taskpool_db_task WHERE jobs AND closed IS NULL AND day >= %s "
                "ORDER BY seq",
                [self._horizon_day(self.now())],
            )
            return [task_id for (task_id,) in cursor.fetchall()]

    def device_activity(self, device_ids: list[str]) -> dict[str, DeviceActivity]:
        found: dict[str, DeviceActivity] = {}
        if device_ids:
            with self._cursor() as cursor:
                cursor.execute(
                    "SELECT device_id, last_message, last_heartbeat FROM taskpool_db_device "
                    "WHERE device_id = ANY(%s)",
                    [device_ids],
                )
                for device_id, last_message, last_heartbeat in cursor.fetchall():
                    found[device_id] = DeviceActivity(last_message, last_heartbeat)
        empty = DeviceActivity(None, None)
        return {device_id: found.get(device_id, empty) for device_id in device_ids}

    @reconnecting
    def find_task(self, task_id: str) -> Message | None:
        if not storable(task_id):
            return None
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT m.line FROM taskpool_db_task t JOIN taskpool_db_message m ON m.seq = t.seq "
                "WHERE t.task_id = %s AND t.day >= %s",
                [task_id, self._horizon_day(self.now())],
            )
            row = cursor.fetchone()
        return None if row is None else orjson.loads(row[0])

    def task_detail(self, task_id: str) -> TaskDetail:
        task = self.find_task(task_id)
        if task is None:
            raise UnknownTask(f"There is no task {task_id} in the pool.")
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT line FROM taskpool_db_message WHERE parent_id = %s AND kind = 'response' "
                "ORDER BY xid, seq",
                [task_id],
            )
            responses = [orjson.loads(line) for (line,) in cursor.fetchall()]
        return TaskDetail(task, responses, replay(task, responses, self.task_ttl))


def stored_status(message: Message) -> str | None:
    """The ``status`` column of a message's row: a response's ``meta.status``, else ``None``."""
    status = message["meta"].get("status") if message["type"] == "response" else None
    return status[:16] if isinstance(status, str) else None


def _columns(message: Message, line: str) -> list[Any]:
    """A message's row in ``taskpool_db_message``, in the order the inserts name them."""
    return [
        message["id"],
        message["ts"][:10],
        message["ts"],
        message["type"],
        message["from"],
        message["to"],
        message["parent_id"],
        line,
        stored_status(message),
    ]


def _insert(cursor: Any, message: Message, line: str) -> int | None:
    """Append ``message`` (its ``line``) to the log; ``None`` if its id is stored already."""
    cursor.execute(
        "INSERT INTO taskpool_db_message (message_id, day, ts, kind, sender, recipient, "
        "parent_id, line, status) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (message_id) DO NOTHING RETURNING seq",
        _columns(message, line),
    )
    row = cursor.fetchone()
    return None if row is None else row[0]


def _importable(line: bytes) -> Message:
    """The message of a day-file line, if the store can keep it as it is."""
    message = decode_line(line)
    try:
        parse_timestamp(message["ts"])
    except ValueError:
        raise InvalidMessage(
            f"The message's ts is not a UTC timestamp: {message['ts']!r}."
        ) from None
    columns = [message["id"], message["from"], message["to"], message["parent_id"] or ""]
    if (
        any("\x00" in text for text in columns)
        or max(len(message["id"]), len(message["from"]), len(message["parent_id"] or "")) > 255
    ):
        raise InvalidMessage("The message has a NUL character, or an id or sender too long.")
    return message


def _sqlstate(error: Exception) -> str | None:
    cause = error.__cause__
    return getattr(getattr(cause, "diag", None), "sqlstate", None) or getattr(
        cause, "sqlstate", None
    )


__all__ = ["DatabaseStore", "parse_address", "position"]
