"""Load day files into a fresh ``DatabaseStore`` database in bulk (``COPY``), then check it.

``taskpool_import`` stores a few thousand lines a second (each line is a
decision's worth of statements); a million would take many minutes. This
writes the rows that the import, and then a fleet in steady state, leave:

- ``taskpool_db_message``: every line, in file order (``seq`` counts the
  lines; rows copied in one transaction share an ``xid``).
- ``taskpool_db_task``: each task's row. Open tasks' claim and cancellation
  come from a ``JsonlStore`` that replayed the same files (``PoolIndex.open``);
  closed tasks' reasons and status bits are replayed here with ``TaskState``
  (as the import does, response by response) and must equal the
  ``JsonlStore``'s ``DayRecords``, or the load fails. Tasks past their expiry
  are closed, as the store's expiry sweep leaves them.
- ``taskpool_db_execution``: per task and addressed device, the device's last
  answer and whether the task is pending for it. Broadcasts get a row per
  device that answered and, while open, per registered device, with
  ``broadcast_mark`` set past the newest broadcast: in steady state every
  device that polls has been given its rows.
- ``taskpool_db_device`` and ``taskpool_db_idempotency`` as the import writes them.

Indexes that back no constraint are dropped for the copy and built again
from their own definitions. ``check_against_jsonl`` then asks both stores
what is pending for a sample of devices, and raises if they differ.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import orjson

from taskpool.days import day_of, day_of_file_name
from taskpool.exceptions import InvalidMessage
from taskpool.executions import answer_parts
from taskpool.lifecycle import EXPIRED, FINISHED, TaskState
from taskpool.messages import Message
from taskpool.stores.database.store import stored_status
from taskpool.stores.jsonl import JsonlStore
from taskpool.stores.jsonl.index import PoolIndex

TABLES = (
    "taskpool_db_message",
    "taskpool_db_task",
    "taskpool_db_execution",
    "taskpool_db_device",
    "taskpool_db_idempotency",
)


class LoadMismatch(RuntimeError):
    """The loaded rows do not say what the JSON Lines store says of the same history."""


@dataclass
class Loaded:
    """What was loaded, and how long each step took."""

    messages: int = 0
    tasks: int = 0
    open_tasks: int = 0
    open_broadcasts: int = 0
    executions: int = 0
    devices: int = 0
    idempotency_keys: int = 0
    replay_seconds: float = 0.0
    copy_seconds: float = 0.0
    index_seconds: float = 0.0
    vacuum_seconds: float = 0.0
    database_bytes: int = 0
    checked_devices: int = 0
    checked_pending: int = 0


@dataclass
class _Task:
    seq: int
    day: str
    sender: str
    broadcast: bool
    any_one: bool
    expires_at: float
    state: TaskState | None
    responded: bool = False
    closed: str | None = None
    status_bits: int = 0


def day_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if day_of_file_name(p.name) is not None)


def replayed_store(directory: Path, *, now: float, task_ttl: float) -> JsonlStore:
    """A ``JsonlStore`` over ``directory`` that has read every line, its clock stopped at ``now``."""
    store = JsonlStore(directory, task_ttl=task_ttl, fsync=False, clock=lambda: now)
    store.pending_for("")  # builds the index
    return store


def load(
    connection: Any,
    directory: Path,
    devices: list[str],
    *,
    now: float,
    task_ttl: float,
    jsonl: JsonlStore,
) -> Loaded:
    """Copy the history of ``directory`` into the empty store tables behind ``connection``
    (a psycopg connection), as of ``now``.

    Each transaction is short (``CHUNK_ROWS`` rows): the server is shared, and the log's
    readers in every database read only below its oldest running transaction.
    """
    figures = Loaded()
    index: PoolIndex = jsonl._index  # noqa: SLF001 - the replayed state is what we load
    horizon = day_of(now - task_ttl).isoformat()
    tasks: dict[str, _Task] = {}
    last_message: dict[str, str] = {}
    last_heartbeat: dict[str, str] = {}
    idempotency: dict[tuple[str, str], int] = {}
    closed_executions: list[tuple[str, str, int, str, str, bool]] = []
    connection.autocommit = True
    dropped = _drop_plain_indexes(connection)

    def message_rows() -> Iterator[tuple]:
        for seq, line, message in _messages(directory):
            sender, kind, ts = message["from"], message["type"], message["ts"]
            yield (
                seq,
                message["id"],
                ts[:10],
                ts,
                kind,
                sender,
                message["to"],
                message["parent_id"],
                line,
                stored_status(message),
            )
            if sender.startswith("device:"):
                last_message[sender[7:]] = ts
                if kind == "heartbeat":
                    last_heartbeat[sender[7:]] = ts
            key = message["meta"].get("idempotency_key")
            if type(key) is str:
                idempotency.setdefault((sender, key[:128]), seq)
            if kind == "task":
                _take_task(tasks, message, seq, task_ttl)
            elif kind == "response":
                known = tasks.get(message["parent_id"] or "")
                if known is not None and known.state is not None and known.closed is None:
                    known.responded = True
                    known.state.apply(message)
                    reason = known.state.ended_reason()
                    if reason is not None:
                        _close(known, reason, now, closed_executions)
            figures.messages = seq

    started = time.perf_counter()
    _copy(
        connection,
        "taskpool_db_message (seq, message_id, day, ts, kind, sender, recipient, parent_id, line, "
        "status)",
        message_rows(),
    )
    for known in tasks.values():
        if known.closed is None and (known.expires_at <= now or known.day < horizon):
            _close(known, EXPIRED, now, closed_executions)
    figures.replay_seconds = time.perf_counter() - started
    _compare(tasks, index)

    # Every device was given its rows up to the newest broadcast, open or closed.
    mark = max((known.seq for known in tasks.values() if known.broadcast), default=0)
    everyone = sorted(set(devices) | set(last_message))
    figures.tasks = len(tasks)
    figures.open_tasks = sum(known.closed is None for known in tasks.values())
    figures.open_broadcasts = sum(
        known.closed is None and known.broadcast for known in tasks.values()
    )
    figures.executions = _copy(
        connection,
        "taskpool_db_execution (task_id, device_id, seq, status, updated, active, attempt)",
        ((*row, 1) for row in _executions(tasks, index, everyone, closed_executions)),
    )
    _copy(
        connection,
        "taskpool_db_task (task_id, seq, day, sender, broadcast, any_one, expires_at, claimer, "
        "record, closed, status_bits, jobs, rollout)",
        ((*row, False, False) for row in _task_rows(tasks, index)),
    )
    figures.devices = _copy(
        connection,
        "taskpool_db_device (device_id, broadcast_mark, last_message, last_heartbeat)",
        (
            (device_id, mark, last_message.get(device_id), last_heartbeat.get(device_id))
            for device_id in everyone
        ),
    )
    figures.idempotency_keys = _copy(
        connection,
        "taskpool_db_idempotency (sender, key, seq)",
        ((sender, key, seq) for (sender, key), seq in idempotency.items()),
    )
    connection.execute(
        "SELECT setval(pg_get_serial_sequence('taskpool_db_message', 'seq'), %s)",
        [max(figures.messages, 1)],
    )
    figures.copy_seconds = time.perf_counter() - started - figures.replay_seconds
    step = time.perf_counter()
    for statement in dropped:
        connection.execute(statement)
    figures.index_seconds = time.perf_counter() - step
    step = time.perf_counter()
    # As autovacuum leaves a table in steady state: statistics, and the visibility map.
    connection.execute(f"VACUUM ANALYZE {', '.join(TABLES)}")
    figures.database_bytes = connection.execute(
        "SELECT pg_database_size(current_database())"
    ).fetchone()[0]
    figures.vacuum_seconds = time.perf_counter() - step
    return figures


#: Rows copied per transaction.
CHUNK_ROWS = 100_000


def _copy(connection: Any, table: str, rows: Iterable[tuple]) -> int:
    """``COPY table FROM STDIN`` in transactions of ``CHUNK_ROWS`` rows; the rows copied."""
    rows = iter(rows)
    copied = 0
    while True:
        chunk = 0
        with (
            connection.transaction(),
            connection.cursor() as cursor,
            cursor.copy(f"COPY {table} FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
                chunk += 1
                if chunk == CHUNK_ROWS:
                    break
        copied += chunk
        if chunk < CHUNK_ROWS:
            return copied


def _task_rows(tasks: dict[str, _Task], index: PoolIndex) -> Iterator[tuple]:
    for task_id, known in tasks.items():
        state = index.open.get(task_id) if known.closed is None else known.state
        record = (
            orjson.dumps(state.task_record()).decode()
            if known.responded and state is not None
            else "{}"
        )
        yield (
            task_id,
            known.seq,
            known.day,
            known.sender,
            known.broadcast,
            known.any_one,
            known.expires_at,
            state.claimer if state is not None else None,
            record,
            known.closed,
            known.status_bits,
        )


def _messages(directory: Path) -> Iterator[tuple[int, str, Message]]:
    seq = 0
    for path in day_files(directory):
        with open(path, "rb") as file:
            for raw in file:
                if not raw.endswith(b"\n"):
                    continue  # an unfinished last line: the import leaves it out
                seq += 1
                line = raw[:-1].decode()
                yield seq, line, orjson.loads(line)


def _take_task(tasks: dict[str, _Task], task: Message, seq: int, task_ttl: float) -> None:
    if task["id"] in tasks:
        raise LoadMismatch(f"Task {task['id']} is in the history twice: load it with the import.")
    try:
        state = TaskState(task, seq, task_ttl)
        if state.job is not None:
            raise LoadMismatch(
                f"Task {task['id']} is a job: load a history of jobs with the import."
            )
    except InvalidMessage:
        tasks[task["id"]] = _Task(
            seq, task["ts"][:10], task["from"], False, False, 0.0, None, closed=FINISHED
        )
        return
    tasks[task["id"]] = _Task(
        seq,
        task["ts"][:10],
        task["from"],
        state.audience.everyone,
        state.any_one,
        state.expires_at,
        state,
    )


def _close(
    known: _Task, reason: str, now: float, executions: list[tuple[str, str, int, str, str, bool]]
) -> None:
    """Close a task as the store does (``ended_reason`` after an answer, or the expiry sweep),
    and keep its execution rows: every addressed device's, or each answering device's."""
    state = known.state
    assert state is not None
    known.closed = reason
    known.status_bits = state.status_bits([], now)
    devices = state.answers if state.audience.everyone else state.audience.device_ids
    for device_id in devices:
        status, updated = answer_parts(state.answers.get(device_id))
        executions.append((state.id, device_id, state.position, status, updated, False))


def _executions(
    tasks: dict[str, _Task],
    index: PoolIndex,
    everyone: list[str],
    closed: list[tuple[str, str, int, str, str, bool]],
) -> Iterable[tuple[str, str, int, str, str, bool]]:
    yield from closed
    for task_id, known in tasks.items():
        if known.closed is not None:
            continue
        state = index.open[task_id]
        if state.audience.everyone:
            devices: Iterable[str] = dict.fromkeys([*everyone, *state.answers])
        else:
            devices = state.audience.device_ids
        for device_id in devices:
            status, updated = answer_parts(state.answers.get(device_id))
            yield task_id, device_id, known.seq, status, updated, state.offered_to(device_id)


def _compare(tasks: dict[str, _Task], index: PoolIndex) -> None:
    """Fail unless the replay here and the ``JsonlStore``'s index agree on every task."""
    open_here = {task_id for task_id, known in tasks.items() if known.closed is None}
    if open_here != set(index.open):
        raise LoadMismatch(
            f"{len(open_here ^ set(index.open))} tasks are open in one replay and not the other."
        )
    for task_id in open_here:
        mine, theirs = tasks[task_id].state, index.open[task_id]
        assert mine is not None
        if (mine.answers, mine.claimer, mine.cancellation) != (
            theirs.answers,
            theirs.claimer,
            theirs.cancellation,
        ):
            raise LoadMismatch(f"Open task {task_id}: the two replays differ.")
    for task_id, known in tasks.items():
        if known.closed is None:
            continue
        records = index.days.get(date.fromisoformat(known.day).toordinal())
        found = records.task(task_id) if records is not None else None
        if found is None or (found[1], found[2]) != (known.closed, known.status_bits):
            raise LoadMismatch(
                f"Closed task {task_id}: {known.closed}/{known.status_bits} here, "
                f"{found and found[1:]} in the JSON Lines store's index."
            )


def _drop_plain_indexes(connection: Any) -> list[str]:
    """Drop the store tables' indexes that back no constraint; the statements that rebuild them."""
    found = connection.execute(
        "SELECT i.indexname, i.indexdef FROM pg_indexes i WHERE i.tablename = ANY(%s) "
        "AND i.schemaname = current_schema() AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)",
        [list(TABLES)],
    ).fetchall()
    for name, _definition in found:
        connection.execute(f'DROP INDEX "{name}"')
    return [definition for _name, definition in found]


def check_against_jsonl(
    database: Any, jsonl: JsonlStore, devices: list[str], *, sample: int, seed: int = 5
) -> tuple[int, int]:
    """Ask both stores (their clocks stopped at the same moment) what is pending for ``sample``
    devices: every task, in order, and the counts. Raises ``LoadMismatch`` if they differ.
    Returns the devices checked and the pending tasks compared."""
    chosen = random.Random(seed).sample(devices, min(sample, len(devices)))
    compared = 0
    for device_id in chosen:
        ours = [task["id"] for task in database.pending_for(device_id, limit=100_000)]
        reference = [task["id"] for task in jsonl.pending_for(device_id, limit=100_000)]
        if ours != reference:
            missing = len(set(reference) - set(ours))
            extra = len(set(ours) - set(reference))
            raise LoadMismatch(
                f"Pending for {device_id}: the database has {len(ours)} tasks, the day files "
                f"{len(reference)} ({missing} missing, {extra} extra, or another order)."
            )
        compared += len(ours)
    counts, reference_counts = database.pending_counts(chosen), jsonl.pending_counts(chosen)
    if counts != reference_counts:
        raise LoadMismatch(f"Pending counts differ: {counts} against {reference_counts}.")
    activity, reference_activity = (
        database.device_activity(chosen),
        jsonl.device_activity(chosen),
    )
    if activity != reference_activity:
        raise LoadMismatch("Devices' last messages differ between the two stores.")
    return len(chosen), compared
