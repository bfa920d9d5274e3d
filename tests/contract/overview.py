"""The pool at a glance (``BaseStore.overview``), the same on every store: tasks per day
by status, activity per hour, the latest failures, the oldest open task. Run against
each store by ``tests/test_store_contract.py``."""

from __future__ import annotations

from datetime import date

from taskpool.stores.base import (
    BaseStore,
    TaskQuery,
)
from taskpool.stores.overview import (
    HourActivity,
)
from taskpool.ticker import tick
from tests.contract.support import DAY

REGISTERED = ["a", "b", "c"]
FIRST_DAY, SECOND_DAY = date(2026, 5, 28), date(2026, 5, 29)


def task(pool: BaseStore, to: str, **kwargs) -> dict:
    kwargs.setdefault("title", "job")
    return pool.post_task(sender="user:ops@example.com", to=to, **kwargs).message


def answer(pool: BaseStore, device: str, parent: dict, status: str, **kwargs) -> dict:
    return pool.post_response(
        device_id=device, parent_id=parent["id"], status=status, **kwargs
    ).message


def busy_hours(pool: BaseStore) -> dict[str, tuple[int, int, int, int, int]]:
    return {
        hour.hour: (hour.tasks, hour.answers, hour.failures, hour.heartbeats, hour.messages)
        for hour in pool.overview(REGISTERED).hours
        if hour.messages
    }


def days_with_tasks(pool: BaseStore) -> dict[date, tuple[int, dict[str, int]]]:
    return {day.day: (day.sent, day.statuses) for day in pool.overview(REGISTERED).task_days}


class OverviewContract:
    """Subclasses provide ``pool``, ``clock`` and ``restarted(pool)``."""

    def restarted(self, pool: BaseStore) -> BaseStore:
        raise NotImplementedError

    def two_days_of_work(self, pool: BaseStore, clock) -> dict[str, dict]:
        """Tasks ending every way on the first day, a little on the second; returns them by name."""
        tasks = {}
        tasks["both"] = task(pool, "device:[a,b]")
        answer(pool, "a", tasks["both"], "done")
        answer(pool, "b", tasks["both"], "failed", body="disk full\nat /var")
        tasks["rejected"] = task(pool, "device:a")
        answer(pool, "a", tasks["rejected"], "rejected")
        tasks["cancelled"] = task(pool, "device:c")
        pool.cancel(sender="user:ops@example.com", task_id=tasks["cancelled"]["id"])
        tasks["expiring"] = task(pool, "device:a", ttl=60)
        tasks["broadcast"] = task(pool, "device:*")
        answer(pool, "a", tasks["broadcast"], "progress")
        tasks["timed"] = task(pool, "device:c", timeout={"in_progress": 10})
        answer(pool, "c", tasks["timed"], "progress")
        for device in ("a", "a", "b"):
            pool.post_heartbeat(device_id=device)
        clock.advance(120)
        assert [line["meta"]["status"] for line in tick(pool, registered_devices=[])] == [
            "timed_out"
        ]
        clock.advance(DAY)
        tasks["open"] = task(pool, "device:a")
        tasks["failed"] = task(pool, "device:b")
        answer(pool, "b", tasks["failed"], "failed", title="boom")
        return tasks

    def test_an_empty_pool_has_a_whole_window_of_nothing(self, pool):
        overview = pool.overview(REGISTERED)
        assert [day.day for day in overview.task_days] == [
            date(2026, 5, 22 + number) for number in range(7)
        ]
        assert all(day.sent == 0 and day.statuses == {} for day in overview.task_days)
        assert len(overview.hours) == 7 * 24
        assert overview.hours[-1] == HourActivity("2026-05-28T20")
        assert overview.hours[0].hour == "2026-05-21T21"
        assert overview.failures == []
        assert overview.oldest_open is None

    def test_tasks_are_counted_per_day_by_the_statuses_of_their_executions(self, pool, clock):
        self.two_days_of_work(pool, clock)
        found = days_with_tasks(pool)
        assert found[FIRST_DAY] == (
            6,
            {
                "cancelled": 1,
                "done": 1,
                "expired": 1,
                "failed": 1,
                "pending": 1,
                "progress": 1,
                "rejected": 1,
                "timed_out": 1,
            },
        )
        assert found[SECOND_DAY] == (2, {"failed": 1, "pending": 1})
        assert all(counts == (0, {}) for day, counts in found.items() if day < FIRST_DAY), found

    def test_each_count_is_what_the_task_list_filtered_by_that_status_holds(self, pool, clock):
        self.two_days_of_work(pool, clock)
        for day in pool.overview(REGISTERED).task_days:
            for status, count in day.statuses.items():
                listed = pool.recent_tasks(
                    TaskQuery(statuses=frozenset({status})),
                    limit=100,
                    registered_devices=REGISTERED,
                ).results
                on_day = [summary for summary in listed if summary.task["ts"][:10] == str(day.day)]
                assert len(on_day) == count, (day.day, status)

    def test_counts_follow_a_task_of_an_earlier_day_that_closes(self, pool, clock):
        tasks = self.two_days_of_work(pool, clock)
        assert days_with_tasks(pool)[FIRST_DAY][1]["progress"] == 1  # counted once already
        pool.cancel(sender="user:ops@example.com", task_id=tasks["broadcast"]["id"])
        expected = {
            "cancelled": 2,
            "done": 1,
            "expired": 1,
            "failed": 1,
            "rejected": 1,
            "timed_out": 1,
        }
        assert days_with_tasks(pool)[FIRST_DAY] == (6, expected)
        assert days_with_tasks(pool)[FIRST_DAY] == (6, expected)  # and asked again
        other = self.restarted(pool)
        try:
            assert days_with_tasks(other)[FIRST_DAY] == (6, expected)
        finally:
            other.close()

    def test_activity_is_counted_per_hour(self, pool, clock):
        self.two_days_of_work(pool, clock)
        assert busy_hours(pool) == {
            "2026-05-28T20": (6, 7, 2, 3, 16),
            "2026-05-29T20": (2, 1, 1, 0, 3),
        }

    def test_the_newest_failures_come_first_with_their_first_line(self, pool, clock):
        tasks = self.two_days_of_work(pool, clock)
        failures = pool.overview(REGISTERED).failures
        assert [(f.task_id, f.device_id, f.status, f.summary) for f in failures] == [
            (tasks["failed"]["id"], "b", "failed", "boom"),
            (tasks["timed"]["id"], "c", "timed_out", failures[1].summary),
            (tasks["both"]["id"], "b", "failed", "disk full"),
        ]
        assert failures[0].ts == "2026-05-29T20:28:40Z"
        assert len(pool.overview(REGISTERED, failures=2).failures) == 2
        assert pool.overview(REGISTERED, failures=0).failures == []

    def test_the_oldest_open_task_is_the_first_still_open(self, pool, clock):
        tasks = self.two_days_of_work(pool, clock)
        assert pool.overview(REGISTERED).oldest_open["id"] == tasks["broadcast"]["id"]
        pool.cancel(sender="user:ops@example.com", task_id=tasks["broadcast"]["id"])
        assert pool.overview(REGISTERED).oldest_open["id"] == tasks["open"]["id"]

    def test_another_process_sees_the_same_overview(self, pool, clock):
        self.two_days_of_work(pool, clock)
        other = self.restarted(pool)
        try:
            assert other.overview(REGISTERED) == pool.overview(REGISTERED)
            # And what the other process writes is counted here.
            answer(other, "a", {"id": other.overview(REGISTERED).oldest_open["id"]}, "failed")
        finally:
            other.close()
        overview = pool.overview(REGISTERED)
        assert overview.failures[0].device_id == "a"
        assert overview.hours[-1].failures == 2

    def test_a_broadcast_counts_the_registered_devices_that_have_not_answered(self, pool):
        broadcast = task(pool, "device:*")
        answer(pool, "a", broadcast, "done")
        assert pool.overview(["a"]).task_days[-1].statuses == {"done": 1}
        assert pool.overview(["a", "b"]).task_days[-1].statuses == {"done": 1, "pending": 1}

    def test_days_older_than_the_window_are_left_out(self, pool, clock):
        task(pool, "device:a")
        clock.advance(3 * DAY)
        overview = pool.overview(REGISTERED, days=2)
        assert [day.day for day in overview.task_days] == [date(2026, 5, 30), date(2026, 5, 31)]
        assert len(overview.hours) == 48
        assert sum(hour.tasks for hour in overview.hours) == 0
        assert sum(day.sent for day in pool.overview(REGISTERED).task_days) == 1
