"""The in-memory pending index, fed line by line from the day files.

It keeps only what is still open: the ``TaskState`` of each open task, each
device's queue of open tasks it may still have to do, the open broadcasts
with the spans of them each device is done with (``OpenBroadcasts``), and a
heap of expiry times. Of closed tasks it keeps where their line is and why
they closed, so an answer to one gets the right refusal without a scan.
Asking what is pending for a device costs about what it returns: never the
size of the history, nor the number of open broadcasts it already answered.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date

from taskpool.exceptions import InvalidMessage
from taskpool.executions import EXECUTION_STATUSES, record_status
from taskpool.jobs import served
from taskpool.lifecycle import ABORTED, CANCELLED, EXPIRED, FINISHED, OFFERED, TIMED_OUT, TaskState
from taskpool.messages import TERMINAL_STATUSES, Message
from taskpool.stores.jsonl.activity import Activity
from taskpool.stores.jsonl.broadcasts import OpenBroadcasts
from taskpool.stores.jsonl.idempotency import IdempotencyKeys, key_hash
from taskpool.stores.jsonl.task_registry import TaskRegistry, task_key

#: Positions order lines as the day files do: the day, then the byte offset.
OFFSET_BITS = 40
#: The response statuses that can end a task: a terminal answer, a cancellation, a job's
#: timed-out attempt or its abort.
_ENDING_STATUSES = TERMINAL_STATUSES | {"cancelled", TIMED_OUT, ABORTED}


def position_of(day_ordinal: int, offset: int) -> int:
    """One sortable integer for a line starting at ``offset`` in a day's file."""
    return (day_ordinal << OFFSET_BITS) | offset


def split_position(position: int) -> tuple[int, int]:
    """The day ordinal and byte offset of a ``position_of`` value."""
    return position >> OFFSET_BITS, position & ((1 << OFFSET_BITS) - 1)


@dataclass(slots=True)
class KnownTask:
    """A task the index knows of: where its line is, why it closed, and how it ended."""

    day_ordinal: int
    offset: int
    closed: str | None  # None while open, else FINISHED, CANCELLED or EXPIRED
    #: Once closed, its execution statuses as ``executions.statuses_to_bits`` (0 while open).
    status_bits: int = 0


_REASONS: tuple[str | None, ...] = (None, FINISHED, CANCELLED, EXPIRED)
_REASON_CODES = {reason: code for code, reason in enumerate(_REASONS)}
_STATUS_BITS = len(EXECUTION_STATUSES)
_STATUS_MASK = (1 << _STATUS_BITS) - 1
# reason: 2 bits, then one bit per execution status, then the offset
_STATUS_SHIFT, _OFFSET_SHIFT = 2, 2 + _STATUS_BITS


@dataclass(slots=True)
class DayRecords:
    """What the index remembers of one day file once its lines are read.

    A week of history holds hundreds of thousands of tasks, so each is kept
    as compactly as Python allows: its id as 16 bytes, and its offset, close
    reason and status bits packed into one integer, in flat arrays once the
    day is over (``TaskRegistry``).
    """

    #: task key -> offset << 10 | status bits << 2 | close reason code.
    tasks: TaskRegistry = field(default_factory=TaskRegistry)
    #: The idempotency keys the day's lines were sent with, and the first line of each.
    idempotency: IdempotencyKeys = field(default_factory=IdempotencyKeys)

    def note_task(
        self,
        task_id: str,
        offset: int,
        closed: str | None = None,
        status_bits: int = 0,
        *,
        key: str | bytes | None = None,
    ) -> None:
        """Record where a task's line starts, why it closed (``None``: open) and its statuses.

        ``key`` is ``task_key(task_id)``, when the caller has it already.
        """
        self.tasks.note(
            task_key(task_id) if key is None else key,
            offset << _OFFSET_SHIFT | status_bits << _STATUS_SHIFT | _REASON_CODES[closed],
        )

    def task(self, task_id: str) -> tuple[int, str | None, int] | None:
        """(offset, close reason, status bits) of a task of this day, or ``None``."""
        packed = self.tasks.get(task_key(task_id))
        return None if packed is None else _unpack(packed)

    def packed_task(self, key: str | bytes) -> int | None:
        """The packed record of the task with registry key ``key`` (see ``task_key``)."""
        return self.tasks.get(key)

    def tasks_newest_first(self) -> Iterator[tuple[str, int, str | None, int]]:
        """(task id, offset, close reason, status bits) of each task, last line first."""
        for task_id, packed in self.tasks.newest_first():
            yield (task_id, *_unpack(packed))

    def task_count(self) -> int:
        return len(self.tasks)


def _unpack(packed: int) -> tuple[int, str | None, int]:
    return packed >> _OFFSET_SHIFT, _REASONS[packed & 3], (packed >> _STATUS_SHIFT) & _STATUS_MASK


class PoolIndex:
    """Open tasks per device, advanced one line at a time with ``add``.

    Not thread-safe: the store serialises access.
    """

    def __init__(self, task_ttl: float) -> None:
        self.task_ttl = task_ttl
        self.open: dict[str, TaskState] = {}
        #: device id -> the open tasks it may have to do, by id, in position order: those
        #: addressed to it by name, and broadcasts claimed, aborted or rolled out.
        self.queues: dict[str, dict[str, TaskState]] = {}
        #: The other open broadcasts, pending for every device not done with them.
        self.broadcasts = OpenBroadcasts()
        #: queues that received a task out of position order and must be sorted before use.
        self._unsorted: set[str] = set()
        self._expiries: list[tuple[float, str]] = []
        self.days: dict[int, DayRecords] = {}
        self._newest_first: list[int] = []
        self.last_message: dict[str, str] = {}
        self.last_heartbeat: dict[str, str] = {}
        #: Lines that are not messages (torn writes, hand edits), skipped.
        self.skipped_lines = 0
        self.lines = 0
        #: What the admin's dashboard shows, counted as lines are read.
        self.activity = Activity()

    # Feeding -----------------------------------------------------------

    def add(self, message: Message, day_ordinal: int, offset: int, now: float) -> None:
        """Take the message whose line starts at ``offset`` in a day's file into account."""
        # Every line of the history passes here at start-up: the common case first.
        self.lines += 1
        self.activity.count(message)
        sender = message["from"]
        kind = message["type"]
        if sender.startswith("device:"):
            device_id = sender[7:]
            ts = message["ts"]
            self.last_message[device_id] = ts
            if kind == "heartbeat":
                self.last_heartbeat[device_id] = ts
        key = message["meta"].get("idempotency_key")
        if key is not None and type(key) is str:
            self._records(day_ordinal).idempotency.add(key_hash(sender, key), offset)
        if kind == "response":
            state = self.open.get(message["parent_id"])  # type: ignore[arg-type]
            if state is not None:
                self._apply(state, message, now)
        elif kind == "task":
            self._add_task(message, day_ordinal, offset, now)

    def fold(self, later: PoolIndex, strays: list[tuple[Message, int]], now: float) -> bool:
        """Take in ``later``, the index of the lines just after those read here, read on its own.

        ``strays`` are its answers to tasks it does not hold, in file order:
        they go to the tasks still open here, as reading on would have taken
        them. A day file may be split between the two (``later`` then starts
        where this one stopped in it). Returns ``False``, having changed
        nothing, if ``later`` repeats a task line read here (which only
        reading in order gets right).
        """
        if self._repeats_a_task(later):
            return False
        for response, _offset in strays:
            state = self.open.get(response["parent_id"])  # type: ignore[arg-type]
            if state is not None:
                self._apply(state, response, now)
        for day_ordinal, records in later.days.items():
            mine = self.days.get(day_ordinal)
            if mine is None:
                self.days[day_ordinal] = records
                continue
            mine.tasks.take_later(records.tasks)
            mine.idempotency.take_later(records.idempotency)
        self._newest_first = sorted(self.days, reverse=True)
        self._compact_older_days_keys()
        self.open.update(later.open)
        for key, queue in later.queues.items():
            for state in queue.values():
                self._enqueue(key, state)
        self.broadcasts.take_later(later.broadcasts)
        self._expiries.extend(later._expiries)
        heapq.heapify(self._expiries)
        self.last_message.update(later.last_message)
        self.last_heartbeat.update(later.last_heartbeat)
        self.lines += later.lines
        self.skipped_lines += later.skipped_lines
        self.activity.merge(later.activity)
        return True

    def _repeats_a_task(self, later: PoolIndex) -> bool:
        """Whether ``later`` holds a task line this index holds too.

        The ids' high halves are compared as sets first: only a high half
        found on both sides costs a lookup.
        """
        mine = [records.tasks for records in self.days.values()]
        highs = set().union(*(tasks.id_highs() for tasks in mine))
        named = set().union(*(tasks.named_ids() for tasks in mine))
        for records in later.days.values():
            theirs = records.tasks
            if not named.isdisjoint(theirs.named_ids()):
                return True
            common = highs.intersection(theirs.id_highs())
            if common and any(
                key in tasks for key in theirs.keys_with_highs(common) for tasks in mine
            ):
                return True
        return False

    def compact_tasks(self) -> None:
        """Move each day's new tasks into its compact arrays, where due.

        Called once a batch of lines is read, not line by line: a replay
        keeps each day's dict, fast to look in, until it has read every file.
        """
        newest = self._newest_first[:1]
        for day_ordinal in self._newest_first:
            tasks = self.days[day_ordinal].tasks
            if tasks.compact_due(day_over=day_ordinal not in newest):
                tasks.compact()

    def skip_line(self) -> None:
        """Count a line that is not a message."""
        self.skipped_lines += 1

    def _records(self, day_ordinal: int) -> DayRecords:
        records = self.days.get(day_ordinal)
        if records is None:
            records = self.days[day_ordinal] = DayRecords()
            self._newest_first = sorted(self.days, reverse=True)
            self._compact_older_days_keys()
        return records

    def _compact_older_days_keys(self) -> None:
        """Move the last keys of every day but the newest out of their dict: they take few."""
        for day_ordinal in self._newest_first[1:]:
            self.days[day_ordinal].idempotency.compact()

    def _add_task(self, task: Message, day_ordinal: int, offset: int, now: float) -> None:
        task_id = task["id"]
        key = task_key(task_id)
        if task_id in self.open or self._is_known(key):
            return  # a duplicated line: the first one counts
        records = self._records(day_ordinal)
        try:
            state = TaskState(task, position_of(day_ordinal, offset), self.task_ttl)
        except InvalidMessage:
            # Not addressed to devices: never pending.
            records.note_task(task_id, offset, FINISHED, key=key)
            return
        # Open even if already past its expiry: responses further on still
        # count for its history; expire() closes it once the reading is done.
        records.note_task(task_id, offset, key=key)
        self.open[task_id] = state
        heapq.heappush(self._expiries, (state.expires_at, task_id))
        if state.job is not None and state.job.rollout is not None:
            return  # offered device by device, as the rollout's lines say
        if state.audience.everyone:
            self.broadcasts.add(state)
        else:
            for device_id in state.audience.device_ids:
                self._enqueue(device_id, state)

    def _apply(self, state: TaskState, response: Message, now: float) -> None:
        claim_changed = state.apply(response)
        status = response["meta"].get("status")
        # Only a terminal answer or a cancellation can end a task (claims and
        # progress never do): most responses skip the check.
        if type(status) is str and status in _ENDING_STATUSES:
            reason = state.ended_reason()
            if reason is not None:
                self._close(state, reason, now)
                return
        elif state.job is None and not claim_changed:
            # A plain task's progress or repeated claim leaves it offered to the same
            # devices: a fifth of a history's lines stop here.
            return
        rollout = state.job is not None and state.job.rollout is not None
        if state.audience.everyone and not rollout:
            self._apply_to_broadcast(state, response)
            return
        sender = response["from"]
        if claim_changed or (sender == "backend" and status == ABORTED):
            devices: tuple[str, ...] = _devices_of(state)
        elif sender == "backend":
            devices = _named(response)
        else:
            devices = (sender[7:],) if sender.startswith("device:") else ()
        for device_id in devices:
            # Queued while offered; the time (its start, its expiry) is looked at when read.
            if state.offered_to(device_id):
                self._enqueue(device_id, state)
            else:
                self._dequeue(device_id, state)

    def _apply_to_broadcast(self, state: TaskState, response: Message) -> None:
        """Follow an answer to a broadcast that is not a rollout (it stays open)."""
        broadcasts = self.broadcasts
        shared = state.claimer is None and state.aborted is None
        if shared != broadcasts.holds(state):
            # Claimed (or released), or aborted: it moves between the open broadcasts and
            # the queues of the devices that may still have to do it.
            if shared:
                for device_id in _devices_of(state):
                    self._dequeue(device_id, state)
                broadcasts.add(state)
            else:
                broadcasts.remove(state)
                for device_id in _devices_of(state):
                    if state.offered_to(device_id):
                        self._enqueue(device_id, state)
            return
        sender = response["from"]
        if state.job is None:
            # A plain broadcast: only a device's terminal answer changes anything, for good.
            if shared and sender.startswith("device:"):
                answer = state.answers.get(sender[7:])
                if answer is not None and record_status(answer) in TERMINAL_STATUSES:
                    broadcasts.mark_done(sender[7:], state.position)
            return
        if sender == "backend":
            devices = _named(response)
        elif sender.startswith("device:"):
            devices = (sender[7:],)
        else:
            return
        for device_id in devices:
            offered = state.offered_to(device_id)
            if shared:
                if offered:
                    broadcasts.mark_pending(device_id, state.position)
                else:
                    broadcasts.mark_done(device_id, state.position)
            elif offered:
                self._enqueue(device_id, state)
            else:
                self._dequeue(device_id, state)

    def _enqueue(self, key: str, state: TaskState) -> None:
        queue = self.queues.get(key)
        if queue is None:
            queue = self.queues[key] = {}
        elif state.id in queue:
            return
        elif queue and next(reversed(queue.values())).position > state.position:
            self._unsorted.add(key)
        queue[state.id] = state

    def _dequeue(self, key: str, state: TaskState) -> None:
        queue = self.queues.get(key)
        if queue is not None and queue.pop(state.id, None) is not None and not queue:
            del self.queues[key]
            self._unsorted.discard(key)

    def _close(self, state: TaskState, reason: str, now: float) -> None:
        del self.open[state.id]
        if state.audience.everyone:
            self.broadcasts.remove(state)
        for device_id in _devices_of(state):
            self._dequeue(device_id, state)
        day_ordinal, offset = split_position(state.position)
        records = self.days.get(day_ordinal)
        if records is not None:
            bits = state.status_bits([], now)
            records.note_task(state.id, offset, reason, bits)
            self.activity.task_closed(day_ordinal, bits)
        if len(self._expiries) > 4 * len(self.open) + 4096:
            # A closed task leaves its expiry in the heap until it comes; over a
            # week those would outnumber the open tasks a thousand to one.
            self._expiries = [
                (open_state.expires_at, task_id) for task_id, open_state in self.open.items()
            ]
            heapq.heapify(self._expiries)

    def expire(self, now: float) -> None:
        """Close every open task whose expiry has come."""
        while self._expiries and self._expiries[0][0] <= now:
            _, task_id = heapq.heappop(self._expiries)
            state = self.open.get(task_id)
            if state is not None and state.expires_at <= now:
                self._close(state, EXPIRED, now)

    def forget_days_before(self, day_ordinal: int, now: float) -> None:
        """Drop what is kept of day files that left the horizon, their open tasks too.

        A process started now would not read those files, so their tasks are
        pending for no one (only a hand-written ``expires_at`` keeps one open so long).
        """
        for old in [day for day in self.days if day < day_ordinal]:
            del self.days[old]
        self._newest_first = sorted(self.days, reverse=True)
        first = position_of(day_ordinal, 0)
        for state in [state for state in self.open.values() if state.position < first]:
            self._close(state, EXPIRED, now)
        self.activity.forget_before(day_ordinal, date.fromordinal(day_ordinal).isoformat() + "T00")

    # Reading -----------------------------------------------------------

    def _queue(self, key: str) -> dict[str, TaskState]:
        queue = self.queues.get(key)
        if queue is None:
            return {}
        if key in self._unsorted:
            ordered = sorted(queue.values(), key=lambda state: state.position)
            queue = self.queues[key] = {state.id: state for state in ordered}
            self._unsorted.discard(key)
        return queue

    def _candidates(self, device_id: str) -> Iterator[TaskState]:
        direct = self._queue(device_id).values()
        if not self.broadcasts:
            return iter(direct)
        broadcasts = self.broadcasts.pending_for(device_id)
        if not direct:
            return broadcasts
        return heapq.merge(direct, broadcasts, key=lambda state: state.position)

    def pending_states(self, device_id: str, now: float) -> Iterator[TaskState]:
        """The open tasks pending for ``device_id``, oldest first."""
        for state in self._candidates(device_id):
            if state.is_pending_for(device_id, now):
                yield state

    def pending_for(self, device_id: str, now: float, limit: int) -> list[Message]:
        """At most ``limit`` tasks pending for ``device_id``, oldest first."""
        pending: list[Message] = []
        if limit <= 0:
            return pending
        for state in self.pending_states(device_id, now):
            pending.append(served(state.task, state.attempt_of(device_id)))
            if len(pending) >= limit:
                break
        return pending

    def pending_count(self, device_id: str, now: float) -> int:
        """How many tasks are pending for ``device_id``: its queue, and the open broadcasts
        less the spans it is done with (never one by one)."""
        direct = sum(
            1 for state in self._queue(device_id).values() if state.is_pending_for(device_id, now)
        )
        return direct + self.broadcasts.count_for(device_id, now)

    def locate(self, task_id: str) -> KnownTask | None:
        """Where the task ``task_id`` is and whether it closed, or ``None`` if unknown."""
        return self._locate_key(task_key(task_id))

    def _locate_key(self, key: str | bytes) -> KnownTask | None:
        for day_ordinal in self._newest_first:
            found = self.days[day_ordinal].packed_task(key)
            if found is not None:
                return KnownTask(day_ordinal, *_unpack(found))
        return None

    def knows(self, task_id: str) -> bool:
        """Whether the task ``task_id`` was read, open or closed."""
        return task_id in self.open or self._is_known(task_key(task_id))

    def _is_known(self, key: str | bytes) -> bool:
        """Whether any day's registry has the task: ``_locate_key`` without building the answer."""
        for records in self.days.values():  # noqa: SIM110 - a loop: any() and its generator cost more
            if key in records.tasks:
                return True
        return False

    def locate_idempotent(self, sender: str, key: str) -> tuple[int, int] | None:
        """The day ordinal and offset of the first message ``sender`` sent with ``key``."""
        hashed = key_hash(sender, key)
        for day_ordinal in reversed(self._newest_first):
            offset = self.days[day_ordinal].idempotency.get(hashed)
            if offset is not None:
                return day_ordinal, offset
        return None


def _devices_of(state: TaskState) -> tuple[str, ...]:
    """The devices a task may sit in the queues of: its list, or for a broadcast those
    that answered it or were offered it."""
    if state.audience.everyone:
        return tuple(dict.fromkeys([*state.runs, *state.answers]))
    return state.audience.device_ids


def _named(line: Message) -> tuple[str, ...]:
    """The devices a backend line for a job names (a rollout step, a timeout, a retry)."""
    meta = line["meta"]
    named = meta.get("devices") if meta.get("status") == OFFERED else [meta.get("device")]
    return tuple(device for device in named or [] if type(device) is str)


__all__ = ["CANCELLED", "EXPIRED", "FINISHED", "KnownTask", "PoolIndex", "position_of"]
