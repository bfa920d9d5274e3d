"""What the admin's dashboard shows of the pool, as every store gives it (``BaseStore.overview``):
tasks per day by status, activity per hour, the latest failures, the oldest open task."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from taskpool.days import day_of
from taskpool.messages import Message, format_timestamp

#: The answers the dashboard counts as failures: a device's ``failed``, a job's ``timed_out``.
FAILURE_STATUSES = frozenset({"failed", "timed_out"})
#: The most failures an overview lists.
MOST_FAILURES = 50
#: How much of an answer a ``Failure`` keeps: its first line, cut to this many characters.
FAILURE_SUMMARY_CHARS = 200


def answer_summary(message: Message) -> str:
    """An answer's first line: its title, else its body's, cut to ``FAILURE_SUMMARY_CHARS``."""
    text = message["title"] or message["body"]
    first = text.split("\n", 1)[0] if isinstance(text, str) else ""
    return first[:FAILURE_SUMMARY_CHARS]


def failure_device(message: Message) -> str:
    """The device a failure is about: the sender of a ``failed``, the one a ``timed_out`` names."""
    sender = message["from"]
    if sender.startswith("device:"):
        return sender[7:]
    device = message["meta"].get("device")
    return device if isinstance(device, str) else ""


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed answer (``FAILURE_STATUSES``), as the dashboard lists it."""

    response_id: str
    task_id: str
    #: The device that failed (for a job's ``timed_out`` line, the device it names).
    device_id: str
    ts: str
    status: str
    #: The answer's first line (``answer_summary``).
    summary: str

    @classmethod
    def of(cls, message: Message) -> Failure:
        return cls(
            response_id=message["id"],
            task_id=message["parent_id"] or "",
            device_id=failure_device(message),
            ts=message["ts"],
            status=str(message["meta"].get("status", "")),
            summary=answer_summary(message),
        )


@dataclass(frozen=True, slots=True)
class HourActivity:
    """What happened in one UTC hour: tasks sent, answers, failures among them, heartbeats."""

    #: The hour as the start of its messages' ``ts``: ``YYYY-MM-DDTHH``.
    hour: str
    tasks: int = 0
    answers: int = 0
    failures: int = 0
    heartbeats: int = 0
    #: Every message of the hour, of any type.
    messages: int = 0


@dataclass(frozen=True, slots=True)
class TaskDay:
    """The tasks sent on one UTC day, and how many have an execution in each status."""

    day: date
    sent: int
    #: Status -> tasks with at least one execution in it (as the task list filters by
    #: status); only statuses that some task has.
    statuses: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PoolOverview:
    """The pool at a glance, for the admin's dashboard (``BaseStore.overview``)."""

    #: Each day of the window, oldest first (days without tasks too).
    task_days: list[TaskDay]
    #: Each hour of the window, oldest first (quiet hours too), up to the current one.
    hours: list[HourActivity]
    #: The newest failures, newest first.
    failures: list[Failure]
    #: The oldest task still open (neither finished, cancelled nor expired), or ``None``.
    oldest_open: Message | None


def overview_window(now: float, days: int, task_ttl: float) -> tuple[date, str]:
    """The first day and the first hour (``YYYY-MM-DDTHH``) an overview of ``days`` covers.

    The last ``days`` UTC days, today included, and the last ``days`` × 24 hours,
    this one included; but no further back than the ``TASK_TTL`` horizon's first
    day: what a store reads to know what is pending is all it is asked about.
    """
    horizon_day = day_of(now - task_ttl)
    first_day = max(day_of(now) - timedelta(days=days - 1), horizon_day)
    first_hour = format_timestamp(max(now - days * 86400 + 3600, _day_start(horizon_day)))[:13]
    return first_day, first_hour


def window_hours(first_hour: str, now: float) -> list[str]:
    """Every hour from ``first_hour`` to the current one, as ``YYYY-MM-DDTHH``."""
    start = datetime.fromisoformat(first_hour + ":00:00+00:00")
    last = format_timestamp(now)[:13]
    hours = []
    moment = start
    while (label := moment.strftime("%Y-%m-%dT%H")) <= last:
        hours.append(label)
        moment += timedelta(hours=1)
    return hours


def _day_start(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()
