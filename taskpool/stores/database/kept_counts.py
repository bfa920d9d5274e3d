"""What the database store keeps of the dashboard's counts, so a view counts only what may change.

An hour that ended a while ago and a day's tasks sent are kept as counted;
a past day's closed tasks are kept with the ids of those open then, so that
asked again only the tasks closed since are looked up. Kept counts are
counted again after a while (``taskpool_import`` can add rows to the past).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from taskpool.days import day_of
from taskpool.executions import bits_to_statuses
from taskpool.messages import format_timestamp
from taskpool.stores.overview import (
    HourActivity,
)

#: Seconds after an hour ends before its counts are kept (a writer may commit a row
#: stamped within it a little later), and seconds they are kept before being counted
#: again (``taskpool_import`` can add rows to past hours).
_HOUR_SETTLES, _HOUR_KEPT = 120.0, 600.0


@dataclass(frozen=True, slots=True)
class TaskDayCounts:
    """A day's tasks as last counted: sent, closed ones by status, and those open then."""

    #: When counted (``time.monotonic``).
    counted: float
    sent: int
    closed: Counter[str]
    open_ids: frozenset[str]


class KeptCounts:
    """One process's kept counts of past hours and days; safe to share between threads."""

    def __init__(self) -> None:
        #: hour -> (when counted, its activity).
        self._hours: dict[str, tuple[float, HourActivity]] = {}
        self._task_days: dict[date, TaskDayCounts] = {}
        self._lock = threading.Lock()

    def task_days(
        self,
        cursor: Any,
        first_day: date,
        today: date,
        open_ids: dict[date, set[str]],
        now: float,
        *,
        keep: bool = True,
    ) -> dict[date, TaskDayCounts]:
        """Each day's tasks sent and closed tasks by status, from ``first_day`` to today.

        A day that ended a while ago gets no new tasks, and its open tasks only
        ever close: its counts are kept, with the ids of its tasks open then;
        asked again, the tasks no longer open are looked up by id and added.
        Today, and a day kept too long (an import may add to past days), are
        counted again.
        """
        monotonic = time.monotonic()
        settled = day_of(now - _HOUR_SETTLES)
        with self._lock:
            kept = {
                day: counts
                for day, counts in self._task_days.items()
                if keep and first_day <= day < settled and monotonic - counts.counted < _HOUR_KEPT
            }
        days = []
        day = first_day
        while day <= today:
            days.append(day)
            day += timedelta(days=1)
        fresh = [day for day in days if day not in kept]
        result: dict[date, TaskDayCounts] = {}
        if fresh:
            cursor.execute(
                "SELECT day, count(*) FROM taskpool_db_task WHERE day = ANY(%s) GROUP BY day",
                [fresh],
            )
            sent = dict(cursor.fetchall())
            cursor.execute(
                "SELECT day, status_bits, count(*) FROM taskpool_db_task "
                "WHERE day = ANY(%s) AND closed IS NOT NULL GROUP BY day, status_bits",
                [fresh],
            )
            closed: dict[date, Counter[str]] = {day: Counter() for day in fresh}
            for day, bits, count in cursor.fetchall():
                for status in bits_to_statuses(bits):
                    closed[day][status] += count
            for day in fresh:
                result[day] = TaskDayCounts(
                    monotonic, sent.get(day, 0), closed[day], frozenset(open_ids.get(day, ()))
                )
        closed_since = {
            task_id
            for day, counts in kept.items()
            for task_id in counts.open_ids - open_ids.get(day, set())
        }
        added: dict[date, Counter[str]] = {}
        if closed_since:
            cursor.execute(
                "SELECT day, status_bits FROM taskpool_db_task "
                "WHERE task_id = ANY(%s) AND closed IS NOT NULL",
                [list(closed_since)],
            )
            for day, bits in cursor.fetchall():
                added.setdefault(day, Counter()).update(bits_to_statuses(bits))
        for day, counts in kept.items():
            result[day] = TaskDayCounts(
                counts.counted,
                counts.sent,
                counts.closed + added.get(day, Counter()),
                frozenset(open_ids.get(day, ())),
            )
        if keep:
            with self._lock:
                self._task_days = {day: counts for day, counts in result.items() if day < settled}
        return result

    def hours(self, cursor: Any, hours: list[str], now: float) -> list[HourActivity]:
        """Each hour's activity, from what is kept and one grouped count of the rest."""
        monotonic = time.monotonic()
        with self._lock:
            kept = {
                hour: counts
                for hour, (counted, counts) in self._hours.items()
                if monotonic - counted < _HOUR_KEPT
            }
        missing = [hour for hour in hours if hour not in kept]
        found: dict[str, list[int]] = {}
        if missing:
            cursor.execute(
                "SELECT substr(ts, 1, 13), kind, status IN ('failed', 'timed_out'), count(*) "
                "FROM taskpool_db_message WHERE ts >= %s GROUP BY 1, 2, 3",
                [missing[0]],
            )
            for hour, kind, failed, count in cursor.fetchall():
                counts = found.setdefault(hour, [0, 0, 0, 0, 0])
                counts[4] += count
                if kind == "task":
                    counts[0] += count
                elif kind == "response":
                    counts[1] += count
                    if failed:
                        counts[2] += count
                elif kind == "heartbeat":
                    counts[3] += count
        settled = format_timestamp(now - 3600 - _HOUR_SETTLES)[:13]
        activity = []
        with self._lock:
            for hour in hours:
                of_hour = kept.get(hour)
                if of_hour is None:
                    of_hour = HourActivity(hour, *found.get(hour, ()))
                    if hour <= settled:
                        self._hours[hour] = (monotonic, of_hour)
                activity.append(of_hour)
            for hour in [hour for hour in self._hours if hour < hours[0]]:
                del self._hours[hour]
        return activity
