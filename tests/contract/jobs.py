"""Jobs that look after themselves, on every store: retries, timeouts, rollouts, aborts,
scheduled starts, and time kept by ``taskpool.ticker.tick`` on a clock the test drives.
Run against each store by ``tests/test_store_contract.py``."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from taskpool.exceptions import (
    AlreadyAnswered,
    AttemptEnded,
    IdempotencyConflict,
    InvalidMessage,
    NotStarted,
    TaskClosed,
)
from taskpool.stores.base import BaseStore
from taskpool.ticker import tick
from tests.contract.support import stored, transition_failing_for


def job(pool: BaseStore, to: str = "device:a", **options) -> dict:
    return pool.post_task(sender="user:ops", to=to, title="update", **options).message


def pending(pool: BaseStore, device: str) -> list[dict]:
    return pool.pending_for(device)


def statuses(pool: BaseStore, task_id: str, registered: list[str] | None = None) -> dict:
    detail = pool.task_detail(task_id)
    return {row["device"]: row["status"] for row in detail.executions(registered or [], pool.now())}


def backend_lines(pool: BaseStore, status: str) -> list[dict]:
    return [m for m in stored(pool) if m["from"] == "backend" and m["meta"].get("status") == status]


class JobsContract:
    """Subclasses provide ``pool``, ``clock`` and ``restarted(pool)``."""

    def restarted(self, pool: BaseStore) -> BaseStore:
        raise NotImplementedError

    # Retries ---------------------------------------------------------------------

    def test_a_failed_attempt_is_offered_again_after_the_backoff_and_not_before(self, pool, clock):
        task = job(pool, retries={"max_attempts": 3, "on": ["failed"], "backoff": 60})
        assert task["meta"]["retries"] == {"max_attempts": 3, "on": ["failed"], "backoff": 60}
        (served,) = pending(pool, "a")
        assert served["meta"]["attempt"] == 1
        failed = pool.post_response(device_id="a", parent_id=task["id"], status="failed").message
        assert failed["meta"]["attempt"] == 1  # the server says which attempt it ended
        assert pending(pool, "a") == []
        assert statuses(pool, task["id"]) == {"a": "retrying"}
        with pytest.raises(AttemptEnded):
            pool.post_response(device_id="a", parent_id=task["id"], status="done")
        # From the end of the failure's second (a line's time is its second): at least 60 s.
        clock.advance(60)
        assert tick(pool, registered_devices=[]) == []
        clock.advance(1)
        (retry,) = tick(pool, registered_devices=[])
        assert retry["meta"] == {"status": "retry", "device": "a", "attempt": 2}
        assert (retry["from"], retry["parent_id"]) == ("backend", task["id"])
        (served,) = pending(pool, "a")
        assert served["id"] == task["id"] and served["meta"]["attempt"] == 2
        assert tick(pool, registered_devices=[]) == []  # written once
        with pytest.raises(AttemptEnded, match="attempt 2"):
            pool.post_response(
                device_id="a", parent_id=task["id"], status="done", meta={"attempt": 1}
            )
        done = pool.post_response(device_id="a", parent_id=task["id"], status="done")
        assert done.message["meta"]["attempt"] == 2
        detail = pool.task_detail(task["id"]).executions([], pool.now())
        assert detail[0]["status"] == "done" and detail[0]["attempt"] == 2
        assert [(a["attempt"], a["status"]) for a in detail[0]["attempts"]] == [
            (1, "failed"),
            (2, "done"),
        ]

    def test_an_answer_sent_again_with_its_key_is_the_one_stored_though_it_named_no_attempt(
        self, pool, clock
    ):
        """The server writes the attempt into an answer that does not name it; the same
        request again, with the same key, is a repeat, also once a retry has begun."""
        task = job(pool, retries={"max_attempts": 2, "on": ["failed"], "backoff": 0})
        answer = {"device_id": "a", "parent_id": task["id"], "status": "failed", "body": "x"}
        first = pool.post_response(**answer, idempotency_key="answer-1")
        assert first.created and first.message["meta"]["attempt"] == 1
        again = pool.post_response(**answer, idempotency_key="answer-1")
        assert (again.created, again.message) == (False, first.message)
        clock.advance(1)
        (retry,) = tick(pool, registered_devices=[])
        assert retry["meta"]["attempt"] == 2
        late = pool.post_response(**answer, idempotency_key="answer-1")
        assert (late.created, late.message) == (False, first.message)
        named = pool.post_response(**answer, meta={"attempt": 1}, idempotency_key="answer-1")
        assert named.message == first.message
        with pytest.raises(IdempotencyConflict):
            pool.post_response(**answer, meta={"attempt": 2}, idempotency_key="answer-1")
        assert len([m for m in stored(pool) if m["from"] == "device:a"]) == 1

    def test_attempts_are_spent_and_rejections_never_retried(self, pool, clock):
        task = job(pool, "device:[a,b]", retries={"max_attempts": 2, "backoff": 0})
        pool.post_response(device_id="a", parent_id=task["id"], status="failed")
        pool.post_response(device_id="b", parent_id=task["id"], status="rejected")
        clock.advance(1)
        (retry,) = tick(pool, registered_devices=[])
        assert retry["meta"]["device"] == "a"
        pool.post_response(device_id="a", parent_id=task["id"], status="failed")
        clock.advance(1)
        assert tick(pool, registered_devices=[]) == []
        assert statuses(pool, task["id"]) == {"a": "failed", "b": "rejected"}
        with pytest.raises(AlreadyAnswered):
            pool.post_response(device_id="a", parent_id=task["id"], status="done")
        assert pending(pool, "a") == pending(pool, "b") == []

    # Timeouts --------------------------------------------------------------------

    def test_a_timeout_is_written_once_with_several_processes_ticking(self, pool, clock):
        task = job(pool, timeout={"in_progress": 60})
        pool.post_response(device_id="a", parent_id=task["id"], status="progress")
        clock.advance(60)  # its full 60 s, from the end of the second it answered in
        assert tick(pool, registered_devices=[]) == []
        clock.advance(1)
        others = [self.restarted(pool) for _ in range(4)]
        barrier = threading.Barrier(len(others))
        written: list[dict] = []
        errors: list[BaseException] = []

        def keep_time(store: BaseStore) -> None:
            try:
                barrier.wait()
                written.extend(tick(store, registered_devices=[]))
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
            finally:
                store.close()

        threads = [threading.Thread(target=keep_time, args=(other,)) for other in others]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert [line["meta"]["status"] for line in written] == ["timed_out"]
        assert len(backend_lines(pool, "timed_out")) == 1
        assert statuses(pool, task["id"]) == {"a": "timed_out"}
        with pytest.raises(AlreadyAnswered):
            pool.post_response(device_id="a", parent_id=task["id"], status="done")

    def test_an_answer_after_the_deadline_is_refused_before_the_line_is_written(self, pool, clock):
        task = job(pool, timeout={"in_progress": 10})
        pool.post_response(device_id="a", parent_id=task["id"], status="progress")
        clock.advance(10.5)  # the 10 s it was promised, even had it answered late in its second
        pool.post_response(device_id="a", parent_id=task["id"], status="progress")
        clock.advance(0.5)
        with pytest.raises(AttemptEnded, match="timed out"):
            pool.post_response(device_id="a", parent_id=task["id"], status="done")

    def test_an_answer_after_the_last_attempt_timed_out_says_so(self, pool, clock):
        both = job(pool, "device:[a,b]", timeout={"in_progress": 5})  # b keeps it open
        alone = job(pool, "device:a", timeout={"in_progress": 5})  # closed once a is done
        for task in (both, alone):
            pool.post_response(device_id="a", parent_id=task["id"], status="progress")
        clock.advance(7)
        tick(pool, registered_devices=[])  # the server writes timed_out
        assert len(backend_lines(pool, "timed_out")) == 2
        # Not only "has already answered": the device never did; the server ended it.
        with pytest.raises(AttemptEnded, match="Attempt 1 .* timed out, and no attempt follows"):
            pool.post_response(device_id="a", parent_id=both["id"], status="done")
        with pytest.raises(AlreadyAnswered, match="or its last attempt timed out"):
            pool.post_response(device_id="a", parent_id=alone["id"], status="done")

    def test_a_step_timeout_moves_the_deadline_but_never_past_the_bound(self, pool, clock):
        task = job(pool, "device:[a,b]", timeout={"in_progress": 100})
        for device in "ab":
            pool.post_response(device_id=device, parent_id=task["id"], status="progress")
        clock.advance(10)
        pool.post_response(
            device_id="a", parent_id=task["id"], status="progress", meta={"step_timeout": 30}
        )
        pool.post_response(
            device_id="b", parent_id=task["id"], status="progress", meta={"step_timeout": 1000}
        )
        clock.advance(30)  # 40 s in: a's step of 30 s runs to the end of its second
        assert tick(pool, registered_devices=[]) == []
        clock.advance(1)
        timed_out = tick(pool, registered_devices=[])
        assert [(line["meta"]["status"], line["meta"]["device"]) for line in timed_out] == [
            ("timed_out", "a")
        ]
        clock.advance(59)  # 100 s in: b's bound, counted the same way
        assert tick(pool, registered_devices=[]) == []
        clock.advance(1)
        assert [line["meta"]["device"] for line in tick(pool, registered_devices=[])] == ["b"]

    def test_a_timed_out_attempt_is_retried_when_the_retries_say_so(self, pool, clock):
        task = job(
            pool,
            timeout={"in_progress": 30},
            retries={"max_attempts": 2, "on": ["timed_out"], "backoff": 5},
        )
        pool.post_response(device_id="a", parent_id=task["id"], status="progress")
        clock.advance(31)
        assert [line["meta"]["status"] for line in tick(pool, registered_devices=[])] == [
            "timed_out"
        ]
        assert statuses(pool, task["id"]) == {"a": "retrying"}
        clock.advance(5)  # from the end of the timed_out line's second: at least the backoff
        assert tick(pool, registered_devices=[]) == []
        clock.advance(1)
        assert [line["meta"]["status"] for line in tick(pool, registered_devices=[])] == ["retry"]
        assert pending(pool, "a")[0]["meta"]["attempt"] == 2

    def test_an_any_one_task_that_times_out_is_released_to_the_others(self, pool, clock):
        task = job(pool, "device:[a,b]", mode="any", timeout={"in_progress": 20})
        pool.claim(device_id="a", parent_id=task["id"])
        assert pending(pool, "b") == []
        clock.advance(21)
        tick(pool, registered_devices=[])
        assert [t["id"] for t in pending(pool, "b")] == [task["id"]]
        assert pool.claim(device_id="b").task["id"] == task["id"]

    @pytest.mark.parametrize("to", ["device:[a,b]", "device:*"])
    def test_a_claim_of_the_oldest_passes_over_an_aborted_any_one_task(self, pool, clock, to):
        """An any-one task its abort ended (its holder timed out, and timing out aborts
        it) is pending for nobody: a claim of the oldest takes the younger task instead
        of stopping at it and finding nothing."""
        aborted = job(
            pool,
            to,
            mode="any",
            timeout={"in_progress": 20},
            abort={"failure_percentage": 100, "min_executed": 1, "on": ["timed_out"]},
        )
        pool.claim(device_id="a", parent_id=aborted["id"])
        clock.advance(21)
        written = tick(pool, registered_devices=[]) + tick(pool, registered_devices=[])
        assert [line["meta"]["status"] for line in written] == ["timed_out", "aborted"]
        with pytest.raises(TaskClosed, match="or the job's abort ended it"):
            pool.claim(device_id="b", parent_id=aborted["id"])
        with pytest.raises(TaskClosed, match="or the job's abort ended it"):
            pool.cancel(sender="user:ops", task_id=aborted["id"])
        younger = job(pool, "device:[a,b]", mode="any")
        assert [t["id"] for t in pending(pool, "b")] == [younger["id"]]
        claim = pool.claim(device_id="b")
        assert claim is not None and claim.task["id"] == younger["id"]

    @pytest.mark.parametrize("to", ["device:[a,b]", "device:*"])
    def test_a_claim_of_the_oldest_passes_over_an_any_one_task_not_started(self, pool, clock, to):
        """An any-one task that starts later is offered to its devices but pending for none
        yet: a claim of the oldest takes the younger task instead of stopping at it."""
        scheduled = job(pool, to, mode="any", not_before=datetime.fromtimestamp(clock() + 120, UTC))
        younger = job(pool, "device:[a,b]", mode="any")
        assert [t["id"] for t in pending(pool, "b")] == [younger["id"]]
        claim = pool.claim(device_id="b")
        assert claim is not None and claim.task["id"] == younger["id"]
        clock.advance(121)
        assert pool.claim(device_id="a").task["id"] == scheduled["id"]

    # Rollouts --------------------------------------------------------------------

    def test_a_rollout_offers_the_task_at_its_rate_spread_evenly(self, pool, clock):
        devices = [f"d{n}" for n in range(6)]
        task = job(pool, "device:[" + ",".join(devices) + "]", rollout={"max_per_minute": 60})
        assert all(pending(pool, d) == [] for d in devices)  # none offered yet
        assert set(statuses(pool, task["id"]).values()) == {"scheduled"}
        with pytest.raises(NotStarted, match="offered"):
            pool.post_response(device_id="d0", parent_id=task["id"], status="done")
        offered: list[str] = []
        for second in range(4):
            for line in tick(pool, registered_devices=[]):
                offered += line["meta"]["devices"]
            assert offered == devices[: second + 1]  # one a second, not a burst
            clock.advance(1)
        assert [t["id"] for t in pending(pool, "d0")] == [task["id"]]
        assert pending(pool, "d5") == []
        clock.advance(30)
        for line in tick(pool, registered_devices=[]):
            offered += line["meta"]["devices"]
        assert offered == devices

    def test_a_rollouts_first_look_late_in_a_second_offers_one_device(self, pool, clock):
        """The task's time is cut to its second: the rate counts from the first offer."""
        clock.advance(0.8 - clock() % 1)  # posted late in its second
        devices = [f"d{n}" for n in range(4)]
        job(pool, "device:[" + ",".join(devices) + "]", rollout={"max_per_minute": 60})
        clock.advance(0.8)  # the first look, 1.6 s after the task's (cut) time

        def offered_now() -> list[str]:
            return [
                d for line in tick(pool, registered_devices=[]) for d in line["meta"]["devices"]
            ]

        assert offered_now() == ["d0"]
        clock.advance(0.9)
        assert offered_now() == []
        clock.advance(0.1)
        assert offered_now() == ["d1"]

    @pytest.mark.parametrize(("per_minute", "made_up"), [(60, 5), (6, 1)])
    def test_a_rollout_makes_no_burst_after_a_quiet_spell(self, pool, clock, per_minute, made_up):
        devices = [f"d{n}" for n in range(20)]
        job(pool, "device:[" + ",".join(devices) + "]", rollout={"max_per_minute": per_minute})

        def offered_now() -> list[str]:
            return [
                d for line in tick(pool, registered_devices=[]) for d in line["meta"]["devices"]
            ]

        assert offered_now() == ["d0"]  # the first at once
        clock.advance(600)  # no process ticked for ten minutes (a restart, an outage)
        # Five seconds' worth at most (one step, when a step is longer), then the rate.
        assert offered_now() == devices[1 : 1 + made_up]
        assert offered_now() == []
        clock.advance(60 / per_minute)
        assert offered_now() == [devices[1 + made_up]]

    def test_a_broadcast_rollout_offers_devices_that_join_later_too(self, pool, clock):
        task = job(pool, "device:*", rollout={"max_per_minute": 600})
        registered = ["a", "b"]
        tick(pool, registered_devices=registered)
        clock.advance(1)
        tick(pool, registered_devices=registered)
        assert {d for d in "ab" if pending(pool, d)} == {"a", "b"}
        assert pending(pool, "c") == []
        clock.advance(1)
        (late,) = tick(pool, registered_devices=["a", "b", "c"])
        assert late["meta"]["devices"] == ["c"]
        assert [t["id"] for t in pending(pool, "c")] == [task["id"]]

    def test_an_exponential_rollout_speeds_up_as_devices_succeed(self, pool, clock):
        devices = [f"d{n}" for n in range(20)]
        task = job(
            pool,
            "device:[" + ",".join(devices) + "]",
            rollout={"base_per_minute": 60, "increment_factor": 2, "after_succeeded": 2},
        )
        offered: list[str] = []

        def step(seconds: float) -> list[str]:
            clock.advance(seconds)
            return [
                d for line in tick(pool, registered_devices=[]) for d in line["meta"]["devices"]
            ]

        offered += step(0)
        offered += step(1)
        assert offered == devices[:2]  # 60 a minute
        for device in offered:
            pool.post_response(device_id=device, parent_id=task["id"], status="done")
        assert len(step(1)) == 2  # two succeeded: 120 a minute

    def test_a_task_whose_time_cannot_be_kept_leaves_the_others_kept(self, pool, clock):
        """A fault in one job task's schedule is that task's: the tick keeps the others and
        then names it, rather than stopping every job in the process."""
        from taskpool.ticker import TickFailed

        broken = job(pool, timeout={"in_progress": 60})
        kept = job(pool, timeout={"in_progress": 60})
        for task in (broken, kept):
            pool.post_response(device_id="a", parent_id=task["id"], status="progress")
        clock.advance(61)
        pool.transition = transition_failing_for(pool, broken["id"])
        with pytest.raises(TickFailed) as failed:
            tick(pool, registered_devices=[])
        assert [line["parent_id"] for line in failed.value.written] == [kept["id"]]
        assert [task_id for task_id, _error in failed.value.failures] == [broken["id"]]
        assert broken["id"] in str(failed.value)
        assert statuses(pool, kept["id"]) == {"a": "timed_out"}
        assert statuses(pool, broken["id"]) == {"a": "progress"}
        del pool.transition  # mended: its line is written at the next tick
        (late,) = tick(pool, registered_devices=[])
        assert late["parent_id"] == broken["id"] and late["meta"]["status"] == "timed_out"

    # Aborts ----------------------------------------------------------------------

    def test_an_abort_cancels_only_the_executions_not_started(self, pool, clock):
        task = job(
            pool,
            "device:[a,b,c,d,e]",
            abort={"failure_percentage": 50, "min_executed": 2, "on": ["failed"]},
        )
        pool.post_response(device_id="a", parent_id=task["id"], status="progress")
        pool.post_response(device_id="b", parent_id=task["id"], status="failed")
        assert tick(pool, registered_devices=[]) == []  # one finished: under min_executed
        pool.post_response(device_id="c", parent_id=task["id"], status="failed")
        (aborted,) = tick(pool, registered_devices=[])
        assert aborted["meta"]["status"] == "aborted"
        assert "2 of 2 finished executions failed" in aborted["meta"]["reason"]
        assert statuses(pool, task["id"]) == {
            "a": "progress",
            "b": "failed",
            "c": "failed",
            "d": "cancelled",
            "e": "cancelled",
        }
        assert pending(pool, "d") == [] and pending(pool, "e") == []
        with pytest.raises(TaskClosed, match="aborted"):
            pool.post_response(device_id="d", parent_id=task["id"], status="done")
        assert [t["id"] for t in pending(pool, "a")] == [task["id"]]  # running: it finishes
        pool.post_response(device_id="a", parent_id=task["id"], status="done")
        assert tick(pool, registered_devices=[]) == []
        # Closed now: d never answered, and is not told it did.
        with pytest.raises(AlreadyAnswered, match="or the job's abort cancelled it") as closed:
            pool.post_response(device_id="d", parent_id=task["id"], status="done")
        assert "has already answered" not in str(closed.value)

    # Scheduled starts ----------------------------------------------------------

    def test_a_scheduled_task_is_pending_for_no_one_before_its_start(self, pool, clock):
        start = datetime.fromtimestamp(clock() + 120, UTC)
        task = job(pool, "device:[a,b]", not_before=start)
        assert task["meta"]["not_before"] == start.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert pending(pool, "a") == [] and pool.pending_counts(["a"]) == {"a": 0}
        assert statuses(pool, task["id"]) == {"a": "scheduled", "b": "scheduled"}
        with pytest.raises(NotStarted, match="does not start before"):
            pool.post_response(device_id="a", parent_id=task["id"], status="done")
        assert tick(pool, registered_devices=[]) == []
        clock.advance(120)
        assert [t["id"] for t in pending(pool, "a")] == [task["id"]]
        (opened,) = tick(pool, registered_devices=[])
        assert opened["meta"]["status"] == "opened"
        assert tick(pool, registered_devices=[]) == []

    def test_a_scheduled_broadcast_starts_for_everyone(self, pool, clock):
        start = datetime.fromtimestamp(clock() + 60, UTC)
        task = job(pool, "device:*", not_before=start)
        assert pending(pool, "z") == []
        clock.advance(60)
        assert [t["id"] for t in pending(pool, "z")] == [task["id"]]

    def test_a_start_at_or_after_the_expiry_is_refused_and_one_before_it_is_not(self, pool, clock):
        start = datetime.fromtimestamp(clock() + 60, UTC)
        for expiry in ({"ttl": 60}, {"ttl": 30}, {"expires_at": start}):
            with pytest.raises(InvalidMessage, match="never offered") as refused:
                job(pool, not_before=start, **expiry)
            assert refused.value.field == "not_before"
        assert stored(pool) == []
        task = job(pool, not_before=start, ttl=61)
        clock.advance(60)
        assert [t["id"] for t in pending(pool, "a")] == [task["id"]]

    # Refusals ----------------------------------------------------------------------

    @pytest.mark.parametrize(
        "options, field",
        [
            ({"retries": {"max_attempts": 0}}, "retries"),
            ({"retries": {"max_attempts": 11}}, "retries"),
            ({"retries": {"max_attempts": 2, "on": ["rejected"]}}, "retries"),
            ({"retries": {"max_attempts": 2, "on": []}}, "retries"),
            ({"retries": {"max_attempts": 2, "backoff": -1}}, "retries"),
            ({"retries": {"max_attempts": True}}, "retries"),
            ({"retries": {"max_attempts": 2, "wait": 1}}, "retries"),
            ({"retries": [2]}, "retries"),
            ({"timeout": {"in_progress": 0}}, "timeout"),
            ({"timeout": {"in_progress": "60"}}, "timeout"),
            ({"timeout": {}}, "timeout"),
            ({"rollout": {"max_per_minute": 0}}, "rollout"),
            ({"rollout": {"max_per_minute": 1001}}, "rollout"),
            (
                {"rollout": {"base_per_minute": 10, "increment_factor": 1.0, "after_succeeded": 1}},
                "rollout",
            ),
            ({"rollout": {"base_per_minute": 10}}, "rollout"),
            ({"abort": {"failure_percentage": 0, "min_executed": 1}}, "abort"),
            ({"abort": {"failure_percentage": 101, "min_executed": 1}}, "abort"),
            ({"abort": {"failure_percentage": 10, "min_executed": 1, "on": ["done"]}}, "abort"),
            ({"not_before": datetime(2099, 1, 1, tzinfo=UTC)}, "not_before"),
            ({"mode": "any", "retries": {"max_attempts": 2}}, "retries"),
            ({"mode": "any", "rollout": {"max_per_minute": 5}}, "rollout"),
            ({"meta": {"retries": {"max_attempts": 2}}}, "meta"),
            ({"meta": {"attempt": 5}}, "meta"),
        ],
    )
    def test_malformed_job_options_are_refused_and_store_nothing(self, pool, options, field):
        with pytest.raises(InvalidMessage) as refused:
            job(pool, **options)
        assert refused.value.field == field
        assert stored(pool) == []

    @pytest.mark.parametrize("meta", [{"attempt": 0}, {"attempt": "1"}, {"step_timeout": -5}])
    def test_malformed_attempts_and_step_timeouts_are_refused(self, pool, meta):
        task = job(pool, timeout={"in_progress": 60})
        with pytest.raises(InvalidMessage):
            pool.post_response(device_id="a", parent_id=task["id"], status="progress", meta=meta)
        assert len(stored(pool)) == 1

    def test_an_answer_to_a_plain_task_may_name_only_its_one_attempt(self, pool):
        """As for a job without retries: there is no attempt 7 to end."""
        task = pool.post_task(sender="user:ops", to="device:[a,b]", title="t").message
        with pytest.raises(AttemptEnded, match="not retried"):
            pool.post_response(
                device_id="a", parent_id=task["id"], status="done", meta={"attempt": 7}
            )
        assert len(stored(pool)) == 1
        named = pool.post_response(
            device_id="b", parent_id=task["id"], status="done", meta={"attempt": 1}
        )
        assert named.message["meta"]["attempt"] == 1

    def test_jobs_survive_a_restart(self, pool, clock):
        task = job(
            pool,
            "device:[a,b]",
            retries={"max_attempts": 2, "backoff": 10},
            timeout={"in_progress": 50},
        )
        pool.post_response(device_id="a", parent_id=task["id"], status="failed")
        pool.post_response(device_id="b", parent_id=task["id"], status="progress")
        fresh = self.restarted(pool)
        try:
            clock.advance(11)  # the backoff, from the end of the failure's second
            (retry,) = tick(fresh, registered_devices=[])
            assert retry["meta"]["device"] == "a"
            clock.advance(40)
            (timed_out,) = tick(fresh, registered_devices=[])
            assert (timed_out["meta"]["status"], timed_out["meta"]["device"]) == ("timed_out", "b")
            assert statuses(fresh, task["id"]) == {"a": "pending", "b": "retrying"}
        finally:
            fresh.close()
