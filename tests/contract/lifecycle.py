"""The task lifecycle every store keeps: statuses, cancel, expiry, any-one claims,
idempotent retries, the task list. Run against each store by ``tests/test_store_contract.py``,
each test with a store on a clock it controls."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from taskpool.exceptions import (
    AlreadyAnswered,
    ClaimedByOther,
    IdempotencyConflict,
    InvalidMessage,
    NotAddressed,
    NotClaimable,
    TaskClosed,
    UnknownTask,
)
from taskpool.executions import EXECUTION_STATUSES
from taskpool.messages import parse_address, parse_timestamp
from taskpool.stores.base import BaseStore, TaskQuery
from tests.contract.support import DAY, START, stored


def task(pool: BaseStore, to: str = "device:a", **kwargs) -> dict:
    kwargs.setdefault("title", "job")
    return pool.post_task(sender="user:ops@example.com", to=to, **kwargs).message


def statuses(pool: BaseStore, task_id: str, registered: list[str] | None = None) -> dict[str, str]:
    detail = pool.task_detail(task_id)
    return {row["device"]: row["status"] for row in detail.executions(registered or [], pool.now())}


def pending_ids(pool: BaseStore, device_id: str) -> list[str]:
    return [t["id"] for t in pool.pending_for(device_id)]


class LifecycleContract:
    """Subclasses provide the ``pool`` and ``clock`` fixtures, and ``restarted(pool)``:
    another process's store on the same pool."""

    def restarted(self, pool: BaseStore) -> BaseStore:
        raise NotImplementedError

    # Executions -----------------------------------------------------------------

    def test_executions_follow_each_devices_answers(self, pool):
        t = task(pool, "device:[a,b,c,d]")
        assert statuses(pool, t["id"]) == dict.fromkeys("abcd", "pending")
        pool.post_response(device_id="a", parent_id=t["id"], status="progress")
        pool.post_response(device_id="b", parent_id=t["id"], status="done")
        pool.post_response(device_id="c", parent_id=t["id"], status="failed")
        pool.post_response(device_id="d", parent_id=t["id"], status="rejected")
        assert statuses(pool, t["id"]) == {
            "a": "progress",
            "b": "done",
            "c": "failed",
            "d": "rejected",
        }
        assert pending_ids(pool, "a") == [t["id"]]
        assert all(pending_ids(pool, d) == [] for d in "bcd")

    def test_execution_updated_is_the_time_of_the_last_answer(self, pool, clock):
        t = task(pool, "device:a")
        clock.advance(90)
        pool.post_response(device_id="a", parent_id=t["id"], status="progress")
        (row,) = pool.task_detail(t["id"]).executions([], pool.now())
        assert row == {"device": "a", "status": "progress", "updated": "2026-05-28T20:28:10Z"}

    def test_broadcast_executions_are_registered_devices_and_any_that_answered(self, pool):
        t = task(pool, "device:*")
        pool.post_response(device_id="stranger", parent_id=t["id"], status="done")
        assert statuses(pool, t["id"], ["a", "b"]) == {
            "a": "pending",
            "b": "pending",
            "stranger": "done",
        }

    def test_responses_are_listed_in_pool_order(self, pool, clock):
        t = task(pool, "device:[a,b]")
        answers = [("a", "progress"), ("b", "done"), ("a", "done")]
        for device, status in answers:
            clock.advance(1)
            pool.post_response(device_id=device, parent_id=t["id"], status=status)
        detail = pool.task_detail(t["id"])
        assert [(r["from"], r["meta"]["status"]) for r in detail.responses] == [
            (f"device:{d}", s) for d, s in answers
        ]
        assert detail.task == t

    def test_task_status_counts_count_each_tasks_executions(self, pool, clock):
        registered = ["a", "b", "c"]
        open_task = task(pool, "device:*")
        pool.post_response(device_id="a", parent_id=open_task["id"], status="failed")
        pool.post_response(device_id="d", parent_id=open_task["id"], status="progress")
        finished = task(pool, "device:[a,b]")
        pool.post_response(device_id="a", parent_id=finished["id"], status="done")
        pool.post_response(device_id="b", parent_id=finished["id"], status="rejected")
        cancelled = task(pool, "device:c")
        pool.cancel(sender="user:ops@example.com", task_id=cancelled["id"])
        clock.advance(60)
        ids = [open_task["id"], finished["id"], cancelled["id"], "msg_" + "0" * 32]
        counts = pool.task_status_counts(ids, registered, shown=1)
        assert counts == {  # an unknown task is left out
            open_task["id"]: [("failed", 1, ["a"]), ("pending", 2, ["b"]), ("progress", 1, ["d"])],
            finished["id"]: [("done", 1, ["a"]), ("rejected", 1, ["b"])],
            cancelled["id"]: [("cancelled", 1, ["c"])],
        }

    def test_task_detail_of_unknown_task(self, pool):
        with pytest.raises(UnknownTask):
            pool.task_detail("msg_" + "0" * 32)

    # Rejected ---------------------------------------------------------------------

    def test_rejected_is_terminal_for_that_device_only(self, pool):
        t = task(pool, "device:*")
        pool.post_response(device_id="a", parent_id=t["id"], status="rejected")
        assert pending_ids(pool, "a") == []
        assert pending_ids(pool, "b") == [t["id"]]
        with pytest.raises(AlreadyAnswered):
            pool.post_response(device_id="a", parent_id=t["id"], status="done")

    # Cancel -----------------------------------------------------------------------

    def test_cancel_removes_the_task_from_every_pending_list(self, pool):
        t = task(pool, "device:[a,b]")
        pool.post_response(device_id="a", parent_id=t["id"], status="progress")
        cancelled = pool.cancel(
            sender="user:boss", task_id=t["id"], reason="wrong firmware"
        ).message
        assert cancelled["meta"]["status"] == "cancelled"
        assert cancelled["parent_id"] == t["id"]
        assert cancelled["from"] == "user:boss"
        assert cancelled["to"] == "device:[a,b]"
        assert cancelled["body"] == "wrong firmware"
        assert pending_ids(pool, "a") == pending_ids(pool, "b") == []
        assert statuses(pool, t["id"]) == {"a": "cancelled", "b": "cancelled"}

    def test_cancel_keeps_terminal_answers(self, pool):
        t = task(pool, "device:[a,b]")
        pool.post_response(device_id="a", parent_id=t["id"], status="done")
        pool.cancel(sender="user:boss", task_id=t["id"])
        assert statuses(pool, t["id"]) == {"a": "done", "b": "cancelled"}

    def test_answer_after_cancel_and_second_cancel_are_refused(self, pool):
        t = task(pool, "device:a")
        pool.cancel(sender="user:boss", task_id=t["id"])
        before = stored(pool)
        with pytest.raises(TaskClosed, match="cancelled"):
            pool.post_response(device_id="a", parent_id=t["id"], status="done")
        with pytest.raises(TaskClosed, match="cancelled"):
            pool.cancel(sender="user:boss", task_id=t["id"])
        with pytest.raises(TaskClosed, match="cancelled"):
            self.restarted(pool).cancel(sender="user:boss", task_id=t["id"])
        assert stored(pool) == before

    def test_cancel_of_unknown_or_finished_task(self, pool):
        with pytest.raises(UnknownTask):
            pool.cancel(sender="user:boss", task_id="msg_" + "1" * 32)
        t = task(pool, "device:a")
        pool.post_response(device_id="a", parent_id=t["id"], status="done")
        with pytest.raises(TaskClosed, match="finished"):
            pool.cancel(sender="user:boss", task_id=t["id"])

    # Expiry -----------------------------------------------------------------------

    def test_server_always_writes_expires_at(self, pool, clock):
        default = task(pool)
        assert parse_timestamp(default["meta"]["expires_at"]) == int(START) + 7 * DAY
        short = task(pool, ttl=60)
        assert parse_timestamp(short["meta"]["expires_at"]) == int(START) + 60
        moment = datetime.fromtimestamp(START + 3600, UTC)
        explicit = task(pool, expires_at=moment)
        assert explicit["meta"]["expires_at"] == "2026-05-28T21:26:40Z"

    @pytest.mark.parametrize(
        "kwargs, field",
        [
            ({"ttl": 0}, "ttl"),
            ({"ttl": 7 * DAY + 1}, "ttl"),
            ({"expires_at": datetime.fromtimestamp(START - 1, UTC)}, "expires_at"),
            ({"expires_at": datetime.fromtimestamp(START + 8 * DAY, UTC)}, "expires_at"),
            ({"expires_at": datetime(2026, 6, 1, 12, 0)}, "expires_at"),  # naive
            ({"ttl": 60, "expires_at": datetime.fromtimestamp(START + 60, UTC)}, "ttl"),
            ({"mode": "all"}, "mode"),
            ({"meta": {"expires_at": "2026-06-01T00:00:00Z"}}, "meta"),
            ({"meta": {"mode": "any"}}, "meta"),
        ],
    )
    def test_bad_expiry_or_mode_is_refused_and_stores_nothing(self, pool, kwargs, field):
        with pytest.raises(InvalidMessage) as refused:
            task(pool, **kwargs)
        assert refused.value.field == field
        assert stored(pool) == []

    def test_expired_task_leaves_pending_and_refuses_answers(self, pool, clock):
        t = task(pool, "device:[a,b]", ttl=60)
        pool.post_response(device_id="a", parent_id=t["id"], status="progress")
        clock.advance(59)
        assert pending_ids(pool, "b") == [t["id"]]
        clock.advance(1)
        assert pending_ids(pool, "a") == pending_ids(pool, "b") == []
        before = stored(pool)
        with pytest.raises(TaskClosed, match="expire"):
            pool.post_response(device_id="b", parent_id=t["id"], status="done")
        with pytest.raises(TaskClosed, match="expire"):
            pool.cancel(sender="user:boss", task_id=t["id"])
        assert stored(pool) == before
        assert statuses(pool, t["id"]) == {"a": "expired", "b": "expired"}

    def test_history_read_at_start_keeps_answers_to_tasks_expired_since(self, pool, clock):
        t = task(pool, "device:[a,b]", ttl=60)
        pool.post_response(device_id="a", parent_id=t["id"], status="done")
        clock.advance(3600)
        fresh = self.restarted(pool)
        assert statuses(fresh, t["id"]) == {"a": "done", "b": "expired"}
        page = fresh.recent_tasks(TaskQuery(statuses=frozenset({"done"})))
        assert [s.task["id"] for s in page.results] == [t["id"]]
        assert page.results[0].statuses == {"done", "expired"}

    # Any-one tasks ------------------------------------------------------------------

    def test_any_one_task_is_offered_to_all_until_claimed(self, pool):
        t = task(pool, "device:[a,b,c]", mode="any")
        assert t["meta"]["mode"] == "any"
        assert all(pending_ids(pool, d) == [t["id"]] for d in "abc")
        claim = pool.claim(device_id="b", parent_id=t["id"])
        assert claim.created and claim.task == t
        assert claim.claim["meta"]["status"] == "claimed"
        assert claim.claim["parent_id"] == t["id"]
        assert claim.claim["from"] == "device:b"
        assert pending_ids(pool, "b") == [t["id"]]
        assert pending_ids(pool, "a") == pending_ids(pool, "c") == []
        assert statuses(pool, t["id"]) == {"a": "claimed", "b": "claimed", "c": "claimed"}
        with pytest.raises(ClaimedByOther, match="held by device b"):
            pool.claim(device_id="a", parent_id=t["id"])
        with pytest.raises(ClaimedByOther):
            pool.post_response(device_id="c", parent_id=t["id"], status="done")

    def test_claim_without_parent_takes_the_oldest_claimable(self, pool, clock):
        plain = task(pool, "device:a")
        first = task(pool, "device:[a,b]", mode="any")
        second = task(pool, "device:*", mode="any")
        pool.claim(device_id="b", parent_id=first["id"])
        got = pool.claim(device_id="a")
        assert got.task["id"] == second["id"]
        assert pool.claim(device_id="a") is None  # the plain task is not claimable
        assert pending_ids(pool, "a") == [plain["id"], second["id"]]

    def test_claims_without_parent_take_the_claimable_tasks_oldest_first(self, pool, clock):
        """Old work is not starved by new: each claim takes the oldest still claimable."""
        tasks = []
        for _ in range(4):
            tasks.append(task(pool, "device:[a,b,c]", mode="any"))
            clock.advance(1)
        assert pool.claim(device_id="a").task["id"] == tasks[0]["id"]
        assert pool.claim(device_id="b").task["id"] == tasks[1]["id"]
        assert pool.claim(device_id="a").task["id"] == tasks[2]["id"]
        assert pool.claim(device_id="c").task["id"] == tasks[3]["id"]
        assert pool.claim(device_id="b") is None

    def test_first_answer_claims_an_any_one_task(self, pool):
        t = task(pool, "device:[a,b]", mode="any")
        pool.post_response(device_id="a", parent_id=t["id"], status="progress")
        assert pending_ids(pool, "b") == []
        with pytest.raises(ClaimedByOther):
            pool.claim(device_id="b", parent_id=t["id"])
        again = pool.claim(device_id="a", parent_id=t["id"])
        assert not again.created and again.claim["meta"]["status"] == "progress"
        pool.post_response(device_id="a", parent_id=t["id"], status="done")
        assert statuses(pool, t["id"]) == {"a": "done", "b": "claimed"}
        with pytest.raises(TaskClosed, match="finished"):
            self.restarted(pool).post_response(device_id="b", parent_id=t["id"], status="done")

    def test_an_answer_that_claims_keeps_a_nul_character_as_any_answer_does(self, pool):
        """A message's text and meta may hold U+0000; the claim it makes is kept with it."""
        t = task(pool, "device:[a,b]", mode="any")
        meta = {"note": "a\x00b", "\x00": [1, "\x00"]}
        first = pool.post_response(
            device_id="a", parent_id=t["id"], status="progress", body="x\x00y", meta=meta
        ).message
        cancelled = task(pool, "device:[a,b]", mode="any")
        pool.cancel(sender="user:ops@example.com", task_id=cancelled["id"], reason="r\x00")
        for store in (pool, self.restarted(pool)):
            again = store.claim(device_id="a", parent_id=t["id"])
            assert not again.created and again.claim == first
            assert again.claim["meta"]["note"] == "a\x00b" and again.claim["body"] == "x\x00y"
            with pytest.raises(ClaimedByOther):
                store.claim(device_id="b", parent_id=t["id"])
            assert pending_ids(store, "b") == []
            assert statuses(store, cancelled["id"]) == {"a": "cancelled", "b": "cancelled"}

    def test_holder_before_each_answer_is_who_held_the_task_there(self, pool):
        """What a stream resumed after the task asks: the holder as the pool stood just
        before an answer, whatever came after it (here, in another process too)."""
        t = task(pool, "device:[a,b]", mode="any")
        answers = [
            pool.claim(device_id="a", parent_id=t["id"]).claim,
            pool.post_response(device_id="a", parent_id=t["id"], status="progress").message,
            pool.post_response(device_id="a", parent_id=t["id"], status="rejected").message,
            pool.post_response(device_id="b", parent_id=t["id"], status="progress").message,
            pool.post_response(device_id="b", parent_id=t["id"], status="done").message,
        ]
        expected = [None, "a", "a", None, "b"]
        for store in (pool, self.restarted(pool)):
            assert [store.holder_before(t["id"], a["id"]) for a in answers] == expected
        assert pool.holder_before("msg_unknown", answers[0]["id"]) is None

    def test_rejected_leaves_an_any_one_task_claimable(self, pool):
        t = task(pool, "device:[a,b]", mode="any")
        pool.post_response(device_id="a", parent_id=t["id"], status="rejected")
        assert pending_ids(pool, "a") == []
        assert pending_ids(pool, "b") == [t["id"]]
        assert pool.claim(device_id="b").task["id"] == t["id"]

    def test_holder_rejecting_releases_the_claim(self, pool):
        t = task(pool, "device:[a,b,c]", mode="any")
        pool.claim(device_id="a", parent_id=t["id"])
        pool.post_response(device_id="a", parent_id=t["id"], status="rejected")
        assert pending_ids(pool, "b") == pending_ids(pool, "c") == [t["id"]]
        assert pool.claim(device_id="c", parent_id=t["id"]).created
        assert statuses(self.restarted(pool), t["id"]) == {
            "a": "rejected",
            "b": "claimed",
            "c": "claimed",
        }

    def test_claim_refusals(self, pool):
        plain = task(pool, "device:a")
        with pytest.raises(NotClaimable):
            pool.claim(device_id="a", parent_id=plain["id"])
        with pytest.raises(UnknownTask):
            pool.claim(device_id="a", parent_id="msg_" + "2" * 32)
        anyone = task(pool, "device:a", mode="any")
        with pytest.raises(NotAddressed):
            pool.claim(device_id="z", parent_id=anyone["id"])
        assert pool.claim(device_id="z") is None
        assert [line["type"] for line in stored(pool)] == ["task", "task"]

    # Claims from several processes -------------------------------------------------

    def test_a_claim_race_has_one_winner_every_time(self, pool):
        """Each racer is a store of its own (its own index or connection), as processes are."""
        devices = [f"d{i}" for i in range(4)]
        to = "device:[" + ",".join(devices) + "]"
        task_ids = [task(pool, to, mode="any")["id"] for _ in range(10)]
        racers = [self.restarted(pool) for _ in devices]
        winners: dict[str, list[str]] = {task_id: [] for task_id in task_ids}
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(devices))

        def race(store: BaseStore, device_id: str) -> None:
            try:
                barrier.wait()
                for task_id in task_ids:
                    try:
                        store.claim(device_id=device_id, parent_id=task_id)
                        winners[task_id].append(device_id)
                    except ClaimedByOther:
                        pass
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
            finally:
                store.close()

        threads = [
            threading.Thread(target=race, args=(store, device))
            for store, device in zip(racers, devices, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert all(len(found) == 1 for found in winners.values()), winners
        claims = [m for m in stored(pool) if m["meta"].get("status") == "claimed"]
        assert sorted(c["parent_id"] for c in claims) == sorted(task_ids)

    def test_racers_claiming_the_oldest_share_the_tasks_without_overlap(self, pool):
        task_ids = [task(pool, "device:*", mode="any")["id"] for _ in range(20)]
        devices = [f"d{i}" for i in range(3)]
        racers = [self.restarted(pool) for _ in devices]
        claimed: list[str] = []
        errors: list[BaseException] = []
        barrier = threading.Barrier(len(devices))

        def take_all(store: BaseStore, device_id: str) -> None:
            try:
                barrier.wait()
                while (claim := store.claim(device_id=device_id)) is not None:
                    claimed.append(claim.task["id"])
            except BaseException as error:  # noqa: BLE001 - reported below
                errors.append(error)
            finally:
                store.close()

        threads = [
            threading.Thread(target=take_all, args=(store, device))
            for store, device in zip(racers, devices, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert errors == []
        assert sorted(claimed) == sorted(task_ids)

    # Idempotent retries ---------------------------------------------------------------

    def test_repeated_requests_with_a_key_store_once(self, pool):
        t = pool.post_task(sender="user:ops", to="device:a", title="x", idempotency_key="k1")
        again = pool.post_task(sender="user:ops", to="device:a", title="x", idempotency_key="k1")
        assert t.created and not again.created
        assert again.message == t.message
        assert t.message["meta"]["idempotency_key"] == "k1"
        r = pool.post_response(
            device_id="a", parent_id=t.message["id"], status="done", idempotency_key="r1"
        )
        r2 = pool.post_response(
            device_id="a", parent_id=t.message["id"], status="done", idempotency_key="r1"
        )
        assert r.created and not r2.created and r2.message == r.message
        assert len(stored(pool)) == 2

    def test_same_key_with_another_request_is_a_conflict(self, pool):
        pool.post_task(sender="user:ops", to="device:a", title="x", idempotency_key="k1")
        with pytest.raises(IdempotencyConflict):
            pool.post_task(sender="user:ops", to="device:a", title="y", idempotency_key="k1")
        with pytest.raises(IdempotencyConflict):
            pool.post_task(sender="user:ops", to="device:b", title="x", idempotency_key="k1")
        assert len(stored(pool)) == 1

    def test_a_key_compares_numbers_as_json_numbers(self, pool):
        """``2.0`` stored (as an older release stored a job's options) is the ``2`` sent again;
        another number, or ``true`` for ``1``, is another request."""
        first = pool.post_task(
            sender="user:ops", to="device:a", title="x", meta={"n": 1.0, "deep": [{"m": 3.0}]},
            retries={"max_attempts": 3, "backoff": 2.0}, idempotency_key="k1",
        )  # fmt: skip
        again = pool.post_task(
            sender="user:ops", to="device:a", title="x", meta={"n": 1, "deep": [{"m": 3}]},
            retries={"max_attempts": 3, "backoff": 2}, idempotency_key="k1",
        )  # fmt: skip
        assert not again.created and again.message == first.message
        for meta in ({"n": 1.5, "deep": [{"m": 3}]}, {"n": True, "deep": [{"m": 3}]}):
            with pytest.raises(IdempotencyConflict):
                pool.post_task(
                    sender="user:ops", to="device:a", title="x", meta=meta,
                    retries={"max_attempts": 3, "backoff": 2}, idempotency_key="k1",
                )  # fmt: skip
        assert len(stored(pool)) == 1

    def test_keys_belong_to_their_sender(self, pool):
        first = pool.post_task(sender="user:ops", to="device:a", title="x", idempotency_key="k")
        other = pool.post_task(sender="user:other", to="device:a", title="x", idempotency_key="k")
        assert other.created and other.message["id"] != first.message["id"]

    def test_retries_replay_after_a_restart(self, pool, clock):
        t = pool.post_task(
            sender="user:ops", to="device:[a,b]", title="x", mode="any", idempotency_key="t"
        )
        claim = pool.claim(device_id="a", idempotency_key="c")
        done = pool.post_response(
            device_id="a", parent_id=t.message["id"], status="done", idempotency_key="d"
        )
        other = task(pool, "device:b")
        cancel = pool.cancel(sender="user:ops", task_id=other["id"], idempotency_key="x")
        clock.advance(3600)
        fresh = self.restarted(pool)
        count = len(stored(pool))
        assert fresh.post_task(
            sender="user:ops", to="device:[a,b]", title="x", mode="any", idempotency_key="t"
        ) == (t.message, False)
        replayed_claim = fresh.claim(device_id="a", idempotency_key="c")
        assert (replayed_claim.task, replayed_claim.claim, replayed_claim.created) == (
            t.message,
            claim.claim,
            False,
        )
        assert fresh.post_response(
            device_id="a", parent_id=t.message["id"], status="done", idempotency_key="d"
        ) == (done.message, False)
        assert fresh.cancel(sender="user:ops", task_id=other["id"], idempotency_key="x") == (
            cancel.message,
            False,
        )
        with pytest.raises(IdempotencyConflict):
            fresh.post_response(
                device_id="a", parent_id=t.message["id"], status="failed", idempotency_key="d"
            )
        assert len(stored(pool)) == count

    # The task list ------------------------------------------------------------------------

    def test_recent_tasks_newest_first_with_filters_and_pages(self, pool, clock):
        made = []
        for i in range(5):
            clock.advance(DAY / 2)  # spread over several day files
            made.append(
                task(
                    pool,
                    "device:a" if i % 2 else "device:[a,b]",
                    title=f"job {i}",
                    body="Reboot" if i == 3 else "",
                )
            )
        pool.post_response(device_id="a", parent_id=made[1]["id"], status="failed")
        ids = [t["id"] for t in made]

        def page(query=None, **kwargs):
            return pool.recent_tasks(query or TaskQuery(), **kwargs)

        assert [s.task["id"] for s in page().results] == ids[::-1]
        first = page(limit=2)
        assert [s.task["id"] for s in first.results] == ids[:2:-1] and first.has_more
        second = page(limit=2, before=first.next_cursor)
        assert [s.task["id"] for s in second.results] == [ids[2], ids[1]] and second.has_more
        third = page(limit=2, before=second.next_cursor)
        assert [s.task["id"] for s in third.results] == [ids[0]] and not third.has_more
        assert [s.task["id"] for s in page(TaskQuery(statuses=frozenset({"failed"}))).results] == [
            ids[1]
        ]
        assert [s.task["id"] for s in page(TaskQuery(text="reboot")).results] == [ids[3]]
        assert [s.task["id"] for s in page(TaskQuery(sender="user:nobody")).results] == []
        since = datetime.fromtimestamp(parse_timestamp(made[3]["ts"]), UTC)
        assert [s.task["id"] for s in page(TaskQuery(since=since)).results] == [ids[4], ids[3]]
        until = since - timedelta(seconds=1)
        assert [s.task["id"] for s in page(TaskQuery(until=until)).results] == ids[2::-1]
        in_list = page(TaskQuery(to=parse_address("device:b"))).results
        assert [s.task["id"] for s in in_list] == [ids[4], ids[2], ids[0]]
        exact = page(TaskQuery(to=parse_address("device:[a,b]"))).results
        assert [s.task["id"] for s in exact] == [ids[4], ids[2], ids[0]]

    def test_every_execution_status_is_a_known_one(self, pool, clock):
        t = task(pool, "device:[a,b,c,d,e]", ttl=100)
        pool.post_response(device_id="a", parent_id=t["id"], status="done")
        pool.post_response(device_id="b", parent_id=t["id"], status="progress")
        clock.advance(200)
        assert set(statuses(pool, t["id"]).values()) <= set(EXECUTION_STATUSES)
