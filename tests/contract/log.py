"""The ordered log every store keeps: cursors, pages across days, the day browser, raw
lines, and whom new messages concern (what waiters wake on). Run against each store by
``tests/test_store_contract.py``."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import orjson
import pytest

from taskpool.days import day_of
from taskpool.exceptions import InvalidCursor
from taskpool.message_filter import MessageFilter
from taskpool.messages import format_timestamp
from taskpool.stores.base import BaseStore, PageEntry
from tests.contract.support import DAY, stored


def post(pool: BaseStore, to: str = "device:a", **extra) -> dict:
    extra.setdefault("title", "t")
    return pool.post_task(sender="user:ops", to=to, **extra).message


def busy_day(pool: BaseStore) -> list[dict]:
    """A day of tasks, answers and heartbeats, some of them with text to filter on."""
    first = post(pool, "device:pi-1", title="Reboot")
    pool.post_heartbeat(device_id="pi-2", body="ok")
    pool.post_response(device_id="pi-1", parent_id=first["id"], status="progress", title="½ done")
    second = post(pool, "device:[pi-2,pi-3]", title="Update", meta={"version": "Ünïcode 2"})
    post(pool, "device:*", title="Everyone")
    pool.post_response(device_id="pi-1", parent_id=first["id"], status="done")
    pool.post_response(device_id="pi-2", parent_id=second["id"], status="rejected")
    for number in range(5):
        pool.post_heartbeat(device_id="pi-3", body=f"beat {number}")
    return stored(pool)


FILTERS = [
    None,
    MessageFilter(type="task"),
    MessageFilter(type="heartbeat", sender="device:pi-3"),
    MessageFilter(recipient="device:pi-2"),
    MessageFilter(recipient="device:[pi-2,pi-3]"),
    MessageFilter(status="done"),
    MessageFilter(text="ünïcode"),
    MessageFilter(text="½"),
    MessageFilter(text="BEAT 3"),
    MessageFilter(type="info"),
]


def walk_forward(pool, day, where=None, limit=2, scan_limit=None) -> list[PageEntry]:
    entries, after = [], None
    for _ in range(100):
        page = pool.day_page(day, after=after, limit=limit, where=where, scan_limit=scan_limit)
        entries.extend(page.entries)
        if page.next_cursor is None:
            return entries
        after = page.next_cursor
    raise AssertionError("the pages never ended")


def walk_backward(pool, day, where=None, limit=2, scan_limit=None) -> list[PageEntry]:
    page = pool.day_page(day, from_end=True, limit=limit, where=where, scan_limit=scan_limit)
    entries: list[PageEntry] = []
    for _ in range(100):
        entries[:0] = page.entries
        if page.previous_cursor is None:
            return entries
        page = pool.day_page(
            day, before=page.previous_cursor, limit=limit, where=where, scan_limit=scan_limit
        )
    raise AssertionError("the pages never ended")


class LogContract:
    """Subclasses provide the ``pool`` and ``clock`` fixtures, and ``restarted(pool)``."""

    def restarted(self, pool: BaseStore) -> BaseStore:
        raise NotImplementedError

    # Cursors and pages ----------------------------------------------------------

    def test_an_empty_pool_has_no_end_and_no_messages(self, pool):
        assert pool.end_cursor() is None
        page = pool.messages_after(None, limit=10)
        assert (page.results, page.next_cursor, page.has_more) == ([], None, False)
        assert pool.days() == []

    def test_paging_gives_every_message_once_in_order_across_days(self, pool, clock):
        posted = []
        for _day in range(3):
            for _ in range(3):
                posted.append(post(pool)["id"])
            clock.advance(DAY)
        seen, cursor = [], None
        for _ in range(10):
            page = pool.messages_after(cursor, limit=2)
            seen += [m["id"] for m in page.results]
            cursor = page.next_cursor
            if not page.has_more:
                break
        assert seen == posted
        assert cursor == pool.end_cursor()
        again = pool.messages_after(cursor, limit=5)  # nothing new: the same cursor comes back
        assert (again.results, again.next_cursor, again.has_more) == ([], cursor, False)
        later = post(pool)
        assert pool.messages_after(cursor, limit=5).results == [later]

    def test_each_entry_carries_the_cursor_to_resume_after_it(self, pool):
        first, second, third = post(pool), post(pool), post(pool)
        entries = pool.messages_after(None, limit=10).entries
        assert [e.message for e in entries] == [first, second, third]
        assert pool.messages_after(entries[0].cursor, limit=10).results == [second, third]
        assert [pool.message_at(e.cursor) for e in entries] == [first, second, third]
        for entry in entries:
            pool.check_cursor(entry.cursor)
        assert entries[0].cursor < entries[1].cursor < entries[2].cursor  # strings, pool order

    def test_a_cursor_asked_for_in_another_day_names_no_message_there(self, pool, clock):
        first = post(pool)
        clock.advance(DAY)
        post(pool)
        (entry, later) = pool.messages_after(None, limit=10).entries
        today = day_of(pool.now())
        assert pool.message_at(later.cursor, day=today)["id"] == later.message["id"]
        assert pool.message_at(entry.cursor, day=today - timedelta(days=1)) == first
        with pytest.raises(InvalidCursor, match="is not in the day"):
            pool.message_at(entry.cursor, day=today)

    @pytest.mark.parametrize("bad", ["", "x", "20260603-00000000000x", "0" * 40, "../etc"])
    def test_cursors_the_store_did_not_give_are_refused(self, pool, bad):
        post(pool)
        with pytest.raises(InvalidCursor):
            pool.check_cursor(bad)
        with pytest.raises(InvalidCursor):
            pool.messages_after(bad, limit=1)
        with pytest.raises(InvalidCursor):
            pool.message_at(bad)

    def test_a_day_starts_at_its_first_message_and_runs_on(self, pool, clock):
        before = post(pool)
        clock.advance(2 * DAY)
        later = post(pool)
        today = day_of(clock())
        page = pool.messages_from_day(today, limit=10)
        assert page.results == [later]
        empty_day = day_of(clock() - DAY)  # no messages: the next day that has some
        assert pool.messages_from_day(empty_day, limit=10).results == [later]
        after_all = pool.messages_from_day(day_of(clock() + DAY), limit=10)
        assert after_all.results == [] and after_all.next_cursor == pool.end_cursor()
        assert pool.days() == [day_of(clock() - 2 * DAY), today]
        assert pool.day_messages(today) == [later]
        assert pool.day_messages(day_of(clock() - 2 * DAY)) == [before]

    def test_day_lines_are_the_days_messages_as_json_lines(self, pool):
        messages = busy_day(pool)
        day = day_of(pool.now())
        chunks = list(pool.day_lines(day))
        assert chunks and all(chunk.endswith(b"\n") for chunk in chunks)
        assert [orjson.loads(line) for line in b"".join(chunks).splitlines()] == messages
        assert list(pool.day_lines(day_of(pool.now() + DAY))) == []

    # The day browser --------------------------------------------------------------

    @pytest.mark.parametrize("where", FILTERS, ids=repr)
    @pytest.mark.parametrize("scan_limit", [None, 300])
    def test_day_pages_forward_and_backward_give_every_match_once(self, pool, where, scan_limit):
        messages = busy_day(pool)
        day = day_of(pool.now())
        expected = [m for m in messages if where is None or where.matches(m)]
        for limit in (1, 2, 3, 100):
            forward = walk_forward(pool, day, where, limit, scan_limit)
            assert [e.message for e in forward] == expected
            backward = walk_backward(pool, day, where, limit, scan_limit)
            assert [e.message for e in backward] == expected
        assert [pool.message_at(e.cursor) for e in forward] == expected

    def test_the_first_day_page_links_on_and_the_last_back(self, pool):
        messages = busy_day(pool)
        day = day_of(pool.now())
        first = pool.day_page(day, limit=2)
        assert [e.message for e in first.entries] == messages[:2]
        assert first.previous_cursor is None and first.next_cursor is not None
        assert not first.at_end
        last = pool.day_page(day, from_end=True, limit=3)
        assert [e.message for e in last.entries] == messages[-3:]
        assert last.at_end and last.next_cursor is None
        assert last.previous_cursor is not None
        empty = pool.day_page(day_of(pool.now() + DAY))
        assert empty.entries == [] and empty.at_end and empty.previous_cursor is None

    def test_day_summaries_count_messages_by_type(self, pool):
        busy_day(pool)
        day = day_of(pool.now())
        (summary,) = pool.day_summaries([day, day_of(pool.now() + DAY)])
        assert summary.day == day and summary.messages == 12 and summary.complete
        assert summary.types == {"task": 3, "heartbeat": 6, "response": 3}
        assert summary.size > 0

    def test_device_messages_are_what_it_sent_and_what_was_addressed_to_it(self, pool):
        messages = busy_day(pool)
        found = [e.message for e in pool.device_messages("pi-2", limit=20)]
        expected = [
            m
            for m in messages
            if m["from"] == "device:pi-2" or m["to"] in ("device:[pi-2,pi-3]", "device:*")
        ]
        assert found == expected[::-1]
        assert [e.message for e in pool.device_messages("pi-2", limit=2)] == expected[:-3:-1]

    # Reads of the pool's state ----------------------------------------------------

    def test_find_task(self, pool):
        task = post(pool)
        assert pool.find_task(task["id"]) == task
        assert pool.find_task("msg_" + "0" * 32) is None

    def test_pending_counts_agree_with_pending_lists(self, pool):
        broadcast = post(pool, "device:*")
        listed = post(pool, "device:[a,b]")
        post(pool, "device:a")
        anyone = post(pool, "device:*", mode="any")
        pool.post_response(device_id="b", parent_id=broadcast["id"], status="done")
        pool.post_response(device_id="a", parent_id=listed["id"], status="failed")
        pool.claim(device_id="c", parent_id=anyone["id"])
        devices = ["a", "b", "c", "never-seen"]
        counts = pool.pending_counts(devices)
        assert counts == {d: len(pool.pending_for(d, limit=1000)) for d in devices}
        assert counts == {"a": 2, "b": 1, "c": 2, "never-seen": 1}

    def test_pending_for_many_answers_each_as_pending_for_does(self, pool):
        broadcast = post(pool, "device:*")
        post(pool, "device:[a,b]")
        post(pool, "device:a")
        pool.post_response(device_id="b", parent_id=broadcast["id"], status="done")
        asked = [("a", 100), ("b", 100), ("a", 1), ("never-seen", 100), ("b", 0)]
        answers = pool.pending_for_many(asked)
        assert answers == [pool.pending_for(device, limit=limit) for device, limit in asked]
        assert [len(answer) for answer in answers] == [3, 1, 1, 1, 0]

    def test_pending_for_many_gives_each_device_the_broadcasts_it_has_not_seen(self, pool):
        """Devices that looked before some broadcasts, and devices never seen, asked
        together (the database store gives them their broadcasts' rows at once)."""
        first = post(pool, "device:*")
        assert [t["id"] for t in pool.pending_for("a")] == [first["id"]]
        second = post(pool, "device:*")
        listed = post(pool, "device:[b,c]")
        retried = pool.post_task(
            sender="user:x", to="device:c", title="job", retries={"max_attempts": 2}
        ).message
        asked = [("c", 100), ("a", 100), ("b", 1), ("new", 100), ("a", 1)]
        answers = pool.pending_for_many(asked)
        assert [[t["id"] for t in answer] for answer in answers] == [
            [first["id"], second["id"], listed["id"], retried["id"]],
            [first["id"], second["id"]],
            [first["id"]],
            [first["id"], second["id"]],
            [first["id"]],
        ]
        assert answers[0][-1]["meta"]["attempt"] == 1
        assert answers == [pool.pending_for(device, limit=limit) for device, limit in asked]

    def test_device_activity_is_its_last_message_and_heartbeat(self, pool, clock):
        task = post(pool)
        pool.post_heartbeat(device_id="a")
        heartbeat_at = pool.now()
        clock.advance(30)
        pool.post_response(device_id="a", parent_id=task["id"], status="progress")
        activity = pool.device_activity(["a", "z"])
        assert activity["z"].last_message is None and activity["z"].last_heartbeat is None
        assert activity["a"].last_heartbeat == format_timestamp(heartbeat_at)
        assert activity["a"].last_message == format_timestamp(heartbeat_at + 30)

    # Whom new messages concern ---------------------------------------------------

    def test_changes_say_whom_new_messages_concern(self, pool):
        start = pool.changes_since(None)
        assert (start.messages, start.everything) == (0, False)
        task = post(pool, "device:[a,b]")
        changes = pool.changes_since(start.mark)
        assert changes.messages == 1
        assert changes.devices == {"a", "b"} and not changes.all_devices
        assert changes.masters == {"user:ops"}
        pool.post_response(device_id="a", parent_id=task["id"], status="done")
        answered = pool.changes_since(changes.mark)
        assert (answered.devices, answered.masters) == (frozenset(), {"user:ops"})
        pool.cancel(sender="user:ops", task_id=task["id"])
        cancelled = pool.changes_since(answered.mark)
        assert cancelled.devices == {"a", "b"}
        post(pool, "device:*")
        broadcast = pool.changes_since(cancelled.mark)
        assert broadcast.all_devices and broadcast.devices == frozenset()
        quiet = pool.changes_since(broadcast.mark)
        assert (quiet.mark, quiet.messages) == (broadcast.mark, 0)
        assert quiet.through == broadcast.through == pool.end_cursor()

    def test_claims_concern_every_device_the_task_was_offered_to(self, pool):
        task = post(pool, "device:[a,b,c]", mode="any")
        mark = pool.changes_since(None).mark
        pool.claim(device_id="b", parent_id=task["id"])
        assert pool.changes_since(mark).devices == {"a", "b", "c"}

    def test_changes_include_what_other_processes_store(self, pool):
        mark = pool.changes_since(None).mark
        other = self.restarted(pool)
        try:
            post(other, "device:y")
        finally:
            other.close()
        changes = pool.changes_since(mark)
        assert changes.devices == {"y"} and changes.messages == 1

    def test_waiting_for_changes_ends_on_another_process_write_or_times_out(self, pool):
        mark = pool.changes_since(None).mark
        quiet = pool.wait_for_changes(mark, 0.2)
        assert (quiet.mark, quiet.messages) == (mark, 0)
        other = self.restarted(pool)

        def write_soon() -> None:
            time.sleep(0.2)
            post(other, "device:w")

        writer = threading.Thread(target=write_soon)
        started = time.monotonic()
        writer.start()
        try:
            woken = pool.wait_for_changes(mark, 30)
        finally:
            writer.join()
            other.close()
        assert woken.messages == 1 and woken.devices == {"w"}
        assert time.monotonic() - started < 10
