"""What the index counts for the admin's dashboard as it reads lines: per-hour activity,
the latest failures, and the closed tasks of each day by status.

Every line of the horizon passes through ``PoolIndex.add`` once (at a replay,
from the tail, or from this process's own writes), so counting there keeps
the dashboard's figures without ever reading the files again. The counts
travel with the index: in the start-up checkpoint, and through the fold of a
parallel replay (``merge``), where the later segment's lines come after this
one's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from taskpool.executions import EXECUTION_STATUSES
from taskpool.messages import Message
from taskpool.stores.overview import (
    FAILURE_STATUSES,
    MOST_FAILURES,
    answer_summary,
    failure_device,
)

#: The counters of one hour, in this order.
TASKS, ANSWERS, FAILURES, HEARTBEATS, MESSAGES = range(5)
#: Failures kept, newest last: as many as an overview gives.
KEPT_FAILURES = MOST_FAILURES
_STATUS_COUNT = len(EXECUTION_STATUSES)


@dataclass(slots=True)
class Activity:
    """Counts kept as lines are read; see the module docstring."""

    #: ``YYYY-MM-DDTHH`` -> [tasks, answers, failures, heartbeats, messages] stored in that hour.
    hours: dict[str, list[int]] = field(default_factory=dict)
    #: The latest failures, oldest first: (response id, task id, device, ts, status, summary).
    failures: list[tuple[str, str, str, str, str, str]] = field(default_factory=list)
    #: Day ordinal -> how many of the day's closed tasks closed with each set of execution
    #: statuses (``executions.statuses_to_bits``). A closed task's statuses never change;
    #: a week's tasks share a few dozen sets, so counting sets is one step a task.
    closed: dict[int, dict[int, int]] = field(default_factory=dict)

    def count(self, message: Message) -> None:
        """Take one message into the hour it was stored in."""
        kind = message["type"]
        ts = message["ts"]
        counts = self.hours.get(ts[:13])
        if counts is None:
            counts = self.hours[ts[:13]] = [0, 0, 0, 0, 0]
        counts[MESSAGES] += 1
        if kind == "response":
            counts[ANSWERS] += 1
            status = message["meta"].get("status")
            if type(status) is str and status in FAILURE_STATUSES:
                counts[FAILURES] += 1
                self._note_failure(message, status)
        elif kind == "task":
            counts[TASKS] += 1
        elif kind == "heartbeat":
            counts[HEARTBEATS] += 1

    def _note_failure(self, message: Message, status: str) -> None:
        self.failures.append(
            (
                message["id"],
                message["parent_id"] or "",
                failure_device(message),
                message["ts"],
                status,
                answer_summary(message),
            )
        )
        if len(self.failures) > KEPT_FAILURES:
            del self.failures[0]

    def task_closed(self, day_ordinal: int, status_bits: int) -> None:
        """Count a task of that day that closed with these execution statuses."""
        if not status_bits:
            return
        counts = self.closed.get(day_ordinal)
        if counts is None:
            counts = self.closed[day_ordinal] = {}
        counts[status_bits] = counts.get(status_bits, 0) + 1

    def merge(self, later: Activity) -> None:
        """Add in the counts of lines read after this one's (a parallel replay's fold)."""
        for hour, counts in later.hours.items():
            mine = self.hours.get(hour)
            if mine is None:
                self.hours[hour] = list(counts)
            else:
                for number, value in enumerate(counts):
                    mine[number] += value
        self.failures.extend(later.failures)
        del self.failures[:-KEPT_FAILURES]
        for day_ordinal, per_set in later.closed.items():
            kept = self.closed.setdefault(day_ordinal, {})
            for bits, value in per_set.items():
                kept[bits] = kept.get(bits, 0) + value

    def forget_before(self, day_ordinal: int, first_hour: str) -> None:
        """Drop what is kept of days and hours that left the horizon."""
        for old in [day for day in self.closed if day < day_ordinal]:
            del self.closed[old]
        for hour in [hour for hour in self.hours if hour < first_hour]:
            del self.hours[hour]
        self.failures = [failure for failure in self.failures if failure[3] >= first_hour]

    def closed_statuses(self, day_ordinal: int) -> dict[str, int]:
        """The day's closed tasks per status, only statuses some task has."""
        per_status = [0] * _STATUS_COUNT
        for bits, value in self.closed.get(day_ordinal, {}).items():
            for number in range(_STATUS_COUNT):
                if bits & (1 << number):
                    per_status[number] += value
        return {EXECUTION_STATUSES[n]: value for n, value in enumerate(per_status) if value}
