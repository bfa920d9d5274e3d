"""``SqlLedger``: the pool as the rules see it in the database, and how a stored message
changes the rows.

A decision runs in one transaction. ``open_task`` locks the task's row
(``FOR UPDATE``), so two decisions on one task, from any host, run one
after the other, and decisions on different tasks do not wait for each
other. Idempotency keys are serialised by a transaction-level advisory
lock on the (sender, key) pair. ``record`` then writes what the message
changes: the task's row, the executions, the device's row.

Lock order, the same in every transaction (so none deadlocks): an
idempotency key's lock, a task row, the broadcasts' lock, a device row,
execution rows. (Giving a device its broadcast rows takes the broadcasts'
lock shared and then the device's row; a claim of the oldest task takes
that first and then task rows, but never waits for one: ``SKIP LOCKED``.
A transaction that may need the broadcasts' lock exclusively takes it
before it gives any rows, never after holding it shared.)
"""

from __future__ import annotations

from typing import Any

import orjson

from taskpool.exceptions import InvalidMessage
from taskpool.executions import answer_parts, answer_record
from taskpool.lifecycle import ABORTED, EXPIRED, FINISHED, OFFERED, Run, TaskState
from taskpool.messages import Message, response_status
from taskpool.stores.rules import ClosedTask

#: The advisory lock a broadcast task's writer holds exclusively until it
#: commits, and that giving a device rows for broadcasts holds shared: so
#: broadcasts commit in the order of their ``seq``, and a device's
#: ``broadcast_mark`` never passes one still being written. A write that
#: changes whom an open broadcast is offered to (a claim, its release, an
#: abort, a close, an expiry) holds it exclusively too, before it updates the
#: devices' rows: a device given its rows meanwhile would otherwise get them
#: as the broadcast was, and the update would miss them (``hold_broadcasts``).
BROADCASTS_LOCK = 0x7461736B706F6F6C  # "taskpool"
#: Held by the process folding the devices' pending changes into their counts.
PENDING_CHANGES_LOCK = BROADCASTS_LOCK + 1

#: Responses after which every execution of the task is looked at again.
_CHANGES_EVERY_DEVICE = frozenset({"cancelled"})


class SqlLedger:
    """The rules' view of the pool inside one transaction (see ``rules.Ledger``)."""

    def __init__(
        self,
        cursor: Any,
        now: float,
        *,
        task_ttl: float,
        horizon_day: Any,
        history: bool = False,
    ) -> None:
        self.cursor = cursor
        self.now = now
        self.task_ttl = task_ttl
        self.horizon_day = horizon_day
        #: Loading history (an import): tasks past their expiry still take their answers,
        #: as they did when the answers were written.
        self.history = history
        #: Open tasks loaded (and locked) in this transaction.
        self.states: dict[str, TaskState] = {}
        #: Of those, the ones loaded with every device's answers.
        self.complete: set[str] = set()
        self._closed: dict[str, ClosedTask | None] = {}
        #: Whether this transaction holds the broadcasts' lock exclusively.
        self._holds_broadcasts = False

    # The Ledger protocol -------------------------------------------------------

    def open_task(self, task_id: str, for_device: str | None = None) -> TaskState | None:
        if not storable(task_id):
            return None
        state = self.states.get(task_id)
        if state is not None:
            if for_device is not None and task_id not in self.complete:
                self._load_answers(state, [for_device])
            return state
        self.cursor.execute(
            "SELECT t.seq, t.record, t.closed, t.expires_at, t.broadcast, t.jobs, m.line "
            "FROM taskpool_db_task t JOIN taskpool_db_message m ON m.seq = t.seq "
            "WHERE t.task_id = %s AND t.day >= %s FOR UPDATE OF t",
            [task_id, self.horizon_day],
        )
        row = self.cursor.fetchone()
        if row is None:
            self._closed[task_id] = None
            return None
        seq, record, closed, expires_at, broadcast, jobs, line = row
        task = orjson.loads(line)
        if closed is not None or (expires_at <= self.now and not self.history):
            self._closed[task_id] = ClosedTask(task, closed or EXPIRED)
            return None
        state = TaskState.restore(task, seq, self.task_ttl, record=_record_of(record), answers={})
        self.states[task_id] = state
        if broadcast and not jobs:
            # A broadcast's answers can be thousands: only those the decision reads.
            self._load_answers(state, [d for d in (for_device, state.claimer) if d is not None])
        else:
            self.load_every_answer(state)
        return state

    def closed_task(self, task_id: str) -> ClosedTask | None:
        if task_id in self.states or not storable(task_id):
            return None
        if task_id not in self._closed:
            self.cursor.execute(
                "SELECT t.closed, t.expires_at, m.line FROM taskpool_db_task t "
                "JOIN taskpool_db_message m ON m.seq = t.seq WHERE t.task_id = %s AND t.day >= %s",
                [task_id, self.horizon_day],
            )
            row = self.cursor.fetchone()
            if row is None or (row[0] is None and row[1] > self.now):
                return None
            self._closed[task_id] = ClosedTask(orjson.loads(row[2]), row[0] or EXPIRED)
        return self._closed[task_id]

    def sent_with_key(self, sender: str, key: str) -> Message | None:
        # Held until commit: the same key from two hosts at once is decided once.
        # (hashtextextended: PostgreSQL 11 and later.)
        self.cursor.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", [f"{sender} {key}"]
        )
        self.cursor.execute(
            "SELECT m.line FROM taskpool_db_idempotency i "
            "JOIN taskpool_db_message m ON m.seq = i.seq "
            "WHERE i.sender = %s AND i.key = %s AND m.day >= %s",
            [sender, key, self.horizon_day],
        )
        row = self.cursor.fetchone()
        return None if row is None else orjson.loads(row[0])

    def whole_task(self, task_id: str) -> TaskState | None:
        state = self.open_task(task_id)
        if state is not None:
            self.load_every_answer(state)
        return state

    def oldest_claimable(self, device_id: str, now: float) -> TaskState | None:
        # A claim of an any-one broadcast needs the broadcasts' lock exclusively, taken
        # before giving (see ``record``). Most claims are of lists and need no lock: taken
        # only while such a broadcast is open, and without it a broadcast posted meanwhile
        # is left to the next claim (it committed after this one began looking).
        if self._any_one_broadcast_open(now):
            self.hold_broadcasts()
        give_broadcasts(self.cursor, device_id)
        # An active row is offered, start aside (as ``pending_for`` reads it): a task that
        # starts later is passed over here, or it would stop the claim at it with nothing.
        self.cursor.execute(
            "SELECT e.task_id FROM taskpool_db_execution e "
            "JOIN taskpool_db_task t ON t.task_id = e.task_id "
            "WHERE e.device_id = %s AND e.active AND t.any_one AND t.claimer IS NULL "
            "AND t.closed IS NULL AND t.expires_at > %s "
            "AND (t.not_before IS NULL OR t.not_before <= %s) "
            + ("" if self._holds_broadcasts else "AND NOT t.broadcast ")
            + "ORDER BY e.seq LIMIT 1 FOR UPDATE OF t SKIP LOCKED",
            [device_id, now, now],
        )
        row = self.cursor.fetchone()
        if row is None:
            return None
        state = self.open_task(row[0], device_id)
        if state is None or not state.is_pending_for(device_id, now) or state.claimer is not None:
            return None
        return state

    def _any_one_broadcast_open(self, now: float) -> bool:
        """Whether an any-one broadcast is open and unclaimed (read from the open broadcasts'
        index, not the whole pool)."""
        self.cursor.execute(
            "SELECT EXISTS (SELECT 1 FROM taskpool_db_task WHERE broadcast AND closed IS NULL "
            "AND any_one AND claimer IS NULL AND expires_at > %s)",
            [now],
        )
        return bool(self.cursor.fetchone()[0])

    # Loading answers ------------------------------------------------------------

    def load_every_answer(self, state: TaskState) -> None:
        """Give ``state`` every device's answer (those already in it win: they are newer)."""
        if state.id in self.complete:
            return
        self.cursor.execute(
            "SELECT device_id, status, updated, detail FROM taskpool_db_execution "
            "WHERE task_id = %s AND (status <> 'pending' OR detail IS NOT NULL)",
            [state.id],
        )
        stored: dict[str, tuple[str, str]] = {}
        for device, status, updated, detail in self.cursor.fetchall():
            if status != "pending" or updated:
                stored[device] = (status, updated)
            if detail is not None and device not in state.runs:
                state.runs[device] = Run.from_record(_record_of(detail))
        state.answers = {
            **{device: answer_record(*answer) for device, answer in stored.items()},
            **state.answers,
        }
        self.complete.add(state.id)

    def _load_answers(self, state: TaskState, devices: list[str]) -> None:
        wanted = [device for device in devices if device not in state.answers]
        if not wanted:
            return
        self.cursor.execute(
            "SELECT device_id, status, updated FROM taskpool_db_execution "
            "WHERE task_id = %s AND device_id = ANY(%s) AND status <> 'pending'",
            [state.id, wanted],
        )
        for device, status, updated in self.cursor.fetchall():
            state.answers.setdefault(device, answer_record(status, updated))

    def hold_broadcasts(self) -> None:
        """Hold the broadcasts' lock exclusively until commit (see ``BROADCASTS_LOCK``).

        Waits for the devices being given rows to commit, so that the rows
        updated next include theirs; those given rows later wait for this
        transaction, and see what it wrote.
        """
        if not self._holds_broadcasts:
            self.cursor.execute("SELECT pg_advisory_xact_lock(%s)", [BROADCASTS_LOCK])
            self._holds_broadcasts = True

    # Recording a stored message -------------------------------------------------

    def record(self, message: Message, seq: int) -> None:
        """Write what the message stored as row ``seq`` changes: its task, executions, device."""
        sender = message["from"]
        device = sender[7:] if sender.startswith("device:") else None
        state = None
        if message["type"] == "response" and message["parent_id"]:
            state = self.open_task(message["parent_id"], device)
            if state is not None and device is not None and state.audience.everyone:
                if state.any_one or state.aborted is not None:
                    # Its answer may claim or close the broadcast: the lock that needs,
                    # now, rather than after holding it shared to give (two would deadlock).
                    self.hold_broadcasts()
                # Its rows for every broadcast up to this one first, so that no row
                # of it lies past its mark (the device's row is locked after this).
                give_broadcasts(self.cursor, device)
        if device is not None:
            heartbeat = message["ts"] if message["type"] == "heartbeat" else None
            self.cursor.execute(
                # The latest time, not the last row's: an import of an older day comes
                # after a newer one. Compared as bytes, as the stamps' fixed form sorts.
                "INSERT INTO taskpool_db_device (device_id, broadcast_mark, last_message, "
                "last_heartbeat) VALUES (%s, 0, %s, %s) ON CONFLICT (device_id) DO UPDATE SET "
                'last_message = GREATEST(EXCLUDED.last_message COLLATE "C", '
                'taskpool_db_device.last_message COLLATE "C"), '
                'last_heartbeat = GREATEST(EXCLUDED.last_heartbeat COLLATE "C", '
                'taskpool_db_device.last_heartbeat COLLATE "C")',
                [sender[7:], message["ts"], heartbeat],
            )
        key = message["meta"].get("idempotency_key")
        if type(key) is str:
            self.cursor.execute(
                "INSERT INTO taskpool_db_idempotency (sender, key, seq) VALUES (%s, %s, %s) "
                "ON CONFLICT (sender, key) DO NOTHING",
                [sender, key[:128], seq],
            )
        if message["type"] == "task":
            self._record_task(message, seq)
        elif state is not None:
            self._record_response(message, state, device)

    def _record_task(self, task: Message, seq: int) -> None:
        try:
            state = TaskState(task, seq, self.task_ttl)
        except InvalidMessage:
            # Not addressed to devices (a line written by hand): pending for no one.
            if self._insert_task(task, seq, None):
                self.cursor.execute(
                    "UPDATE taskpool_db_task SET closed = %s WHERE task_id = %s",
                    [FINISHED, task["id"]],
                )
            return
        if not self._insert_task(task, seq, state):
            return  # the same task id again: the first one counts
        if not state.audience.everyone:
            # A rollout offers the task device by device: until then, pending for none.
            offered = state.offered_to(state.audience.device_ids[0]) if state.job else True
            self.cursor.execute(
                "INSERT INTO taskpool_db_execution (task_id, device_id, seq, status, updated, "
                "active, attempt) SELECT %s, device, %s, 'pending', '', %s, 1 "
                "FROM unnest(%s::text[]) AS device ON CONFLICT (task_id, device_id) DO NOTHING",
                [task["id"], seq, offered, list(state.audience.device_ids)],
            )

    def _insert_task(self, task: Message, seq: int, state: TaskState | None) -> bool:
        job = state.job if state is not None else None
        self.cursor.execute(
            "INSERT INTO taskpool_db_task (task_id, seq, day, sender, broadcast, any_one, "
            "expires_at, claimer, record, closed, status_bits, jobs, rollout, not_before, "
            "offered_to_unheard) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, NULL, '{}', NULL, 0, %s, %s, %s, %s) "
            "ON CONFLICT (task_id) DO NOTHING RETURNING seq",
            [
                task["id"],
                seq,
                task["ts"][:10],
                task["from"],
                state is not None and state.audience.everyone,
                state is not None and state.any_one,
                state.expires_at if state is not None else 0.0,
                job is not None,
                job is not None and job.rollout is not None,
                job.not_before if job is not None else None,
                state is not None and state.offered_to_unheard(),
            ],
        )
        return self.cursor.fetchone() is not None

    def _record_response(self, response: Message, state: TaskState, device: str | None) -> None:
        task_id = state.id
        status = response_status(response)
        if status in _CHANGES_EVERY_DEVICE or state.any_one or state.job is not None:
            self.load_every_answer(state)
        offered_before = state.offered_to_unheard()
        claim_changed = state.apply(response)
        closed = state.ended_reason()  # expiry closes tasks apart (``close_expired``)
        if closed is not None:
            self.load_every_answer(state)
        if state.audience.everyone and (
            closed is not None or state.offered_to_unheard() != offered_before
        ):
            self.hold_broadcasts()
        self.cursor.execute(
            "UPDATE taskpool_db_task SET claimer = %s, record = %s, closed = %s, status_bits = %s, "
            "offered_to_unheard = %s WHERE task_id = %s",
            [
                state.claimer,
                orjson.dumps(state.task_record()).decode(),
                closed,
                state.status_bits([], self.now) if closed is not None else 0,
                state.offered_to_unheard(),
                task_id,
            ],
        )
        touched = [device] if device is not None else _devices_named(response)
        rows = [
            self._row(state, name, closed is None)
            for name in touched
            if name in state.answers or name in state.runs
        ]
        if rows:
            # One statement (see ``BOUND_IDLE``), one row per device.
            rows = list({row[1]: row for row in rows}.values())
            self.cursor.execute(
                "INSERT INTO taskpool_db_execution (task_id, device_id, seq, status, updated, "
                "active, attempt, detail) SELECT r.task_id, r.device_id, r.seq, r.status, "
                "r.updated, r.active, r.attempt, r.detail::jsonb FROM unnest(%s::text[], "
                "%s::text[], %s::bigint[], %s::text[], %s::text[], %s::bool[], %s::int[], "
                "%s::text[]) AS r(task_id, device_id, seq, status, updated, active, attempt, "
                "detail) ON CONFLICT (task_id, device_id) DO UPDATE SET status = EXCLUDED.status, "
                "updated = EXCLUDED.updated, active = EXCLUDED.active, "
                "attempt = EXCLUDED.attempt, detail = EXCLUDED.detail",
                [list(column) for column in zip(*rows, strict=True)],
            )
        if closed is not None:
            # Closed for every device: pending for none.
            self.cursor.execute(
                "UPDATE taskpool_db_execution SET active = FALSE WHERE task_id = %s AND active",
                [task_id],
            )
        elif claim_changed or (status == ABORTED and device is None):
            self._reoffer(state)

    def _row(self, state: TaskState, device: str, open_: bool) -> tuple[Any, ...]:
        """An execution row as ``state`` has it for ``device``."""
        status, updated = answer_parts(state.answers.get(device))
        run = state.runs.get(device)
        detail = state.device_record(device)
        return (
            state.id,
            device,
            state.position,
            status,
            updated,
            open_ and state.offered_to(device),
            run.attempt if run is not None else 1,
            None if detail is None else orjson.dumps(detail).decode(),
        )

    def _reoffer(self, state: TaskState) -> None:
        """After an any-one task changed hands: whom it is pending for now, row by row."""
        self.cursor.execute(
            "SELECT device_id, active FROM taskpool_db_execution WHERE task_id = %s", [state.id]
        )
        changed = [
            (state.offered_to(device), state.id, device)
            for device, active in self.cursor.fetchall()
            if state.offered_to(device) != active
        ]
        if changed:
            self.cursor.execute(
                "UPDATE taskpool_db_execution e SET active = c.active "
                "FROM unnest(%s::bool[], %s::text[]) AS c(active, device_id) "
                "WHERE e.task_id = %s AND e.device_id = c.device_id",
                [
                    [active for active, _task, _device in changed],
                    [device for _active, _task, device in changed],
                    state.id,
                ],
            )


def broadcasts_behind(cursor: Any, device_id: str) -> bool:
    """Whether a broadcast newer than the device's mark is stored (it has rows to be given).

    One read, needing no transaction: a poll asks it first, and opens one
    only when there is something to give.
    """
    cursor.execute(
        "SELECT (SELECT max(seq) FROM taskpool_db_task WHERE broadcast), "
        "(SELECT broadcast_mark FROM taskpool_db_device WHERE device_id = %s)",
        [device_id],
    )
    newest, mark = cursor.fetchone()
    return newest is not None and (mark is None or newest > mark)


def give_broadcasts(cursor: Any, device_id: str) -> None:
    """Give the device an execution row for each open broadcast newer than its mark.

    Broadcasts are not given a row per device when posted (the fleet may be
    thousands and change): a device gets its rows the first time it asks
    after them, so its pending list stays one index range. A row is active
    when the broadcast is offered to a device it has not heard from
    (``TaskState.offered_to_unheard``: not claimed by another, not aborted).
    Under the broadcasts' lock, held shared, no broadcast is half-written, so
    the mark never passes one that commits later.
    """
    if not broadcasts_behind(cursor, device_id):
        return
    cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [BROADCASTS_LOCK])
    cursor.execute(
        "INSERT INTO taskpool_db_device (device_id, broadcast_mark) VALUES (%s, 0) "
        "ON CONFLICT (device_id) DO NOTHING",
        [device_id],
    )
    cursor.execute(
        "SELECT broadcast_mark, (SELECT max(seq) FROM taskpool_db_task WHERE broadcast) "
        "FROM taskpool_db_device WHERE device_id = %s FOR UPDATE",
        [device_id],
    )
    mark, newest = cursor.fetchone()
    if newest is None or newest <= mark:
        return
    cursor.execute(
        "INSERT INTO taskpool_db_execution (task_id, device_id, seq, status, updated, active, "
        "attempt) SELECT t.task_id, %s, t.seq, 'pending', '', t.offered_to_unheard, 1 "
        "FROM taskpool_db_task t WHERE t.broadcast AND NOT t.rollout AND t.closed IS NULL "
        "AND t.seq > %s AND t.seq <= %s ON CONFLICT (task_id, device_id) DO NOTHING",
        [device_id, mark, newest],
    )
    cursor.execute(
        "UPDATE taskpool_db_device SET broadcast_mark = %s WHERE device_id = %s",
        [newest, device_id],
    )


def any_broadcasts_behind(cursor: Any, device_ids: list[str]) -> bool:
    """``broadcasts_behind`` for several devices at once: whether any of them has rows to be
    given. One read."""
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM unnest(%s::text[]) d(device_id) "
        "LEFT JOIN taskpool_db_device s ON s.device_id = d.device_id "
        "WHERE s.broadcast_mark IS NULL OR s.broadcast_mark < b.newest) "
        "FROM (SELECT max(seq) AS newest FROM taskpool_db_task WHERE broadcast) b "
        "WHERE b.newest IS NOT NULL",
        [device_ids],
    )
    row = cursor.fetchone()
    return row is not None and bool(row[0])


def give_broadcasts_to(cursor: Any, device_ids: list[str]) -> None:
    """``give_broadcasts`` for several devices, in a few statements whatever their number.

    What a look at the pool for many devices at once needs (``pending_for_many``):
    one device at a time, a thousand devices took a thousand transactions. The
    devices' rows are locked in the order of their ids, so two such looks over
    devices in common wait for each other rather than deadlock.
    """
    cursor.execute("SELECT pg_advisory_xact_lock_shared(%s)", [BROADCASTS_LOCK])
    cursor.execute(
        "INSERT INTO taskpool_db_device (device_id, broadcast_mark) "
        "SELECT d.device_id, 0 FROM unnest(%s::text[]) d(device_id) ORDER BY d.device_id "
        "ON CONFLICT (device_id) DO NOTHING",
        [device_ids],
    )
    cursor.execute(
        "SELECT device_id, broadcast_mark FROM taskpool_db_device WHERE device_id = ANY(%s) "
        "ORDER BY device_id FOR UPDATE",
        [device_ids],
    )
    marks = cursor.fetchall()
    cursor.execute("SELECT max(seq) FROM taskpool_db_task WHERE broadcast")
    (newest,) = cursor.fetchone()
    behind = [
        (device_id, mark) for device_id, mark in marks if newest is not None and mark < newest
    ]
    if not behind:
        return
    ids = [device_id for device_id, _ in behind]
    cursor.execute(
        "INSERT INTO taskpool_db_execution (task_id, device_id, seq, status, updated, active, "
        "attempt) SELECT t.task_id, d.device_id, t.seq, 'pending', '', t.offered_to_unheard, 1 "
        "FROM unnest(%s::text[], %s::bigint[]) d(device_id, mark) "
        "JOIN taskpool_db_task t ON t.broadcast AND NOT t.rollout AND t.closed IS NULL "
        "AND t.seq > d.mark AND t.seq <= %s ON CONFLICT (task_id, device_id) DO NOTHING",
        [ids, [mark for _, mark in behind], newest],
    )
    cursor.execute(
        "UPDATE taskpool_db_device SET broadcast_mark = %s WHERE device_id = ANY(%s)",
        [newest, ids],
    )


def _devices_named(line: Message) -> list[str]:
    """The devices a backend line for a job names (the rollout's step, a timeout, a retry)."""
    meta = line["meta"]
    named = meta.get("devices") if meta.get("status") == OFFERED else [meta.get("device")]
    return [device for device in named or [] if type(device) is str]


def storable(text: str) -> bool:
    """Whether ``text`` can be in a text column (PostgreSQL's text holds no NUL character).

    An id a client sends with one names nothing stored.
    """
    return "\x00" not in text


def _record_of(value: Any) -> dict[str, Any]:
    """The task's kept record, whatever the driver gave back for the JSON column."""
    if isinstance(value, str):
        value = orjson.loads(value)
    return value if isinstance(value, dict) else {}
