"""``JsonlStore`` on its own: pending and the day files, on a clock we drive."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, timedelta

import pytest

from taskpool.days import day_of
from taskpool.exceptions import AlreadyAnswered, InvalidMessage, NotAddressed, UnknownTask
from taskpool.messages import encode_line, parse_timestamp
from taskpool.stores.jsonl import JsonlStore
from taskpool.stores.results import TaskQuery
from tests.support import (
    ManualClock,
    append_messages,
    append_raw,
    day_path,
    ids,
    message,
    read_day,
    store_at,
)

MASTER = "user:ops@example.com"
JUNE_2 = date(2026, 6, 2)
JUNE_3 = date(2026, 6, 3)


@pytest.fixture
def clock():
    return ManualClock("2026-06-03T12:00:00Z")


@pytest.fixture
def pool(pool_dir, clock):
    store = store_at(pool_dir, clock)
    yield store
    store.close()


def task(pool, to="device:pi-1", **fields):
    return pool.post_task(sender=MASTER, to=to, title=fields.pop("title", "t"), **fields).message


def answer(pool, device_id, parent, status):
    return pool.post_response(device_id=device_id, parent_id=parent["id"], status=status).message


# Who a task is pending for ---------------------------------------------------


def test_a_direct_task_is_pending_for_its_device_only(pool):
    sent = task(pool, "device:pi-1")
    assert pool.pending_for("pi-1") == [sent]
    assert pool.pending_for("pi-2") == []


def test_a_broadcast_is_pending_for_every_device(pool):
    sent = task(pool, "device:*")
    for device_id in ("pi-1", "pi-2", "never-registered"):
        assert pool.pending_for(device_id) == [sent]


@pytest.mark.parametrize(
    "to",
    [
        "device:[pi-1,pi-2]",
        "device:[ pi-1 , pi-2 ]",
        'device:["pi-1", "pi-2"]',
        'device:[pi-1, "pi-2"]',
    ],
)
def test_a_list_task_is_pending_for_the_listed_devices(pool, to):
    sent = task(pool, to)
    assert ids(pool.pending_for("pi-1")) == ids(pool.pending_for("pi-2")) == [sent["id"]]
    assert pool.pending_for("pi-3") == []
    assert pool.pending_for("pi") == []


def test_progress_keeps_a_task_pending(pool):
    sent = task(pool)
    answer(pool, "pi-1", sent, "progress")
    answer(pool, "pi-1", sent, "progress")
    assert ids(pool.pending_for("pi-1")) == [sent["id"]]


@pytest.mark.parametrize("status", ["done", "failed", "rejected"])
def test_a_terminal_answer_ends_the_task_for_that_device(pool, status):
    sent = task(pool)
    answer(pool, "pi-1", sent, "progress")
    answer(pool, "pi-1", sent, status)
    assert pool.pending_for("pi-1") == []


@pytest.mark.parametrize("status", ["done", "failed", "rejected"])
@pytest.mark.parametrize("to", ["device:*", "device:[pi-1,pi-2,pi-3]"])
def test_an_answer_ends_a_shared_task_for_the_answering_device_only(pool, status, to):
    sent = task(pool, to)
    answer(pool, "pi-1", sent, status)
    assert pool.pending_for("pi-1") == []
    assert ids(pool.pending_for("pi-2")) == [sent["id"]]
    assert ids(pool.pending_for("pi-3")) == [sent["id"]]
    answer(pool, "pi-2", sent, "done")
    assert pool.pending_for("pi-2") == []
    assert ids(pool.pending_for("pi-3")) == [sent["id"]]


def test_a_terminal_answer_is_final(pool):
    sent = task(pool)
    answer(pool, "pi-1", sent, "done")
    for status in ("done", "failed", "rejected", "progress"):
        with pytest.raises(AlreadyAnswered):
            answer(pool, "pi-1", sent, status)
    assert len(read_day(pool.directory, JUNE_3)) == 2


def test_answers_to_unknown_or_foreign_tasks_are_refused(pool):
    sent = task(pool, "device:[pi-1,pi-2]")
    with pytest.raises(UnknownTask):
        pool.post_response(device_id="pi-1", parent_id="msg_" + "0" * 32, status="done")
    with pytest.raises(NotAddressed):
        answer(pool, "pi-3", sent, "done")
    with pytest.raises(InvalidMessage):
        pool.post_task(sender=MASTER, to="user:someone", title="t")
    assert read_day(pool.directory, JUNE_3) == [sent]


@pytest.mark.parametrize("status", ["claimed", "cancelled", "DONE", "", "finished"])
def test_the_store_refuses_a_status_a_device_may_not_send(pool, status):
    sent = task(pool)
    with pytest.raises(InvalidMessage):
        pool.post_response(device_id="pi-1", parent_id=sent["id"], status=status)
    assert read_day(pool.directory, JUNE_3) == [sent]
    assert ids(pool.pending_for("pi-1")) == [sent["id"]]


def test_pending_is_oldest_first_and_limited(pool, clock):
    sent = []
    for number in range(5):
        sent.append(task(pool, "device:*" if number % 2 else "device:pi-1", title=str(number)))
        clock.advance(1)
    assert ids(pool.pending_for("pi-1")) == ids(sent)
    assert ids(pool.pending_for("pi-1", limit=3)) == ids(sent[:3])
    answer(pool, "pi-1", sent[1], "done")
    assert ids(pool.pending_for("pi-1", limit=3)) == ids([sent[0], sent[2], sent[3]])


def test_pending_is_oldest_first_across_day_files(pool, clock):
    clock.set("2026-06-01T23:00:00Z")
    first = task(pool, "device:*")
    clock.set("2026-06-02T08:00:00Z")
    second = task(pool)
    clock.set("2026-06-03T01:00:00Z")
    third = task(pool, "device:*")
    fourth = task(pool)
    assert sorted(p.name for p in pool.directory.glob("*.jsonl")) == [
        "2026-06-01.jsonl",
        "2026-06-02.jsonl",
        "2026-06-03.jsonl",
    ]
    assert ids(pool.pending_for("pi-1")) == ids([first, second, third, fourth])
    # A process starting now builds the same order from the files.
    fresh = store_at(pool.directory, clock)
    assert ids(fresh.pending_for("pi-1")) == ids([first, second, third, fourth])


def test_file_order_is_pool_order_even_if_a_hand_written_ts_is_older(pool_dir, clock):
    later = message(ts="2026-06-03T11:00:00Z", title="appended first")
    earlier = message(ts="2026-06-03T09:00:00Z", title="appended second")
    append_messages(pool_dir, later, earlier)
    assert ids(store_at(pool_dir, clock).pending_for("pi-1")) == [later["id"], earlier["id"]]


# Time: yesterday, the TTL horizon, midnight ----------------------------------


def test_yesterdays_unanswered_task_is_still_pending(pool_dir, clock):
    clock.set("2026-06-02T10:00:00Z")
    store = store_at(pool_dir, clock)
    sent = task(store)
    clock.set("2026-06-03T09:00:00Z")
    assert ids(store.pending_for("pi-1")) == [sent["id"]]
    restarted = store_at(pool_dir, clock)
    assert ids(restarted.pending_for("pi-1")) == [sent["id"]]
    answer(restarted, "pi-1", sent, "done")
    assert restarted.pending_for("pi-1") == []
    assert store.pending_for("pi-1") == []
    # The answer went to today's file; the task's file is unchanged.
    assert [item["id"] for item in read_day(pool_dir, JUNE_2)] == [sent["id"]]
    assert read_day(pool_dir, JUNE_3)[0]["parent_id"] == sent["id"]


def test_a_task_expires_after_the_ttl(pool_dir, clock):
    store = store_at(pool_dir, clock, task_ttl=3600)
    sent = task(store)
    clock.advance(3599)
    assert ids(store.pending_for("pi-1")) == [sent["id"]]
    clock.advance(1)
    assert store.pending_for("pi-1") == []


def test_day_files_before_the_ttl_horizon_are_not_read(pool_dir, clock):
    # Hand-written tasks that claim to expire in the future: only the file's day decides.
    clock.set("2026-06-10T12:00:00Z")
    far_future = {"expires_at": "2030-01-01T00:00:00Z"}
    outside = message(ts="2026-06-02T23:59:59Z", meta=far_future, title="8 days ago")
    inside = message(ts="2026-06-03T00:00:00Z", meta=far_future, title="7 days ago")
    append_messages(pool_dir, outside, inside)

    store = store_at(pool_dir, clock)  # TASK_TTL: 7 days
    assert ids(store.pending_for("pi-1")) == [inside["id"]]
    assert store.stats()["lines"] == 1
    assert store.days() == [JUNE_2, JUNE_3]  # the log can still show the old day
    assert ids(store.day_messages(JUNE_2)) == [outside["id"]]


def test_a_day_leaving_the_horizon_is_forgotten_by_a_running_store(pool_dir, clock):
    far_future = {"expires_at": "2030-01-01T00:00:00Z"}
    old = message(ts="2026-06-03T10:00:00Z", meta=far_future)
    append_messages(pool_dir, old)
    store = store_at(pool_dir, clock, task_ttl=86400)
    assert ids(store.pending_for("pi-1")) == [old["id"]]
    clock.set("2026-06-04T23:59:59Z")
    assert ids(store.pending_for("pi-1")) == [old["id"]]
    clock.set("2026-06-05T00:00:00Z")
    assert store.pending_for("pi-1") == []


def test_a_day_file_copied_in_later_joins_the_pool_in_file_order(pool_dir, clock):
    store = store_at(pool_dir, clock)
    today = task(store, title="today")
    assert ids(store.pending_for("pi-1")) == [today["id"]]

    copied = message(ts="2026-06-02T15:00:00Z", title="copied in")
    staging = pool_dir.parent / "staging.jsonl"
    staging.write_bytes(encode_line(copied))
    subprocess.run(["cp", str(staging), str(day_path(pool_dir, JUNE_2))], check=True)

    assert ids(store.pending_for("pi-1")) == [copied["id"], today["id"]]
    answer(store, "pi-1", copied, "done")
    assert ids(store.pending_for("pi-1")) == [today["id"]]


def test_a_ticking_clock_across_midnight_keeps_file_order_and_time_order(pool_dir):
    # Every reading of the clock moves it on by 0.3 s: a store that read the
    # time twice for one message could stamp one day and write to the other.
    clock = ManualClock("2026-06-02T23:59:55Z", tick=0.3)
    store = store_at(pool_dir, clock)
    sent = [task(store, "device:*", title=str(number)) for number in range(20)]

    days = sorted(pool_dir.glob("*.jsonl"))
    assert [p.name for p in days] == ["2026-06-02.jsonl", "2026-06-03.jsonl"]
    in_file_order = []
    for day in (JUNE_2, JUNE_3):
        lines = read_day(pool_dir, day)
        assert lines, f"no messages on {day}"
        for item in lines:
            assert day_of(parse_timestamp(item["ts"])) == day
        in_file_order.extend(lines)
    assert ids(in_file_order) == ids(sent)
    stamps = [item["ts"] for item in in_file_order]
    assert stamps == sorted(stamps)
    assert ids(store.pending_for("pi-1", limit=1000)) == ids(sent)


def test_a_day_that_ended_is_held_compact_and_its_tasks_answer_as_before(pool_dir):
    clock = ManualClock("2026-06-02T23:00:00Z")
    store = store_at(pool_dir, clock)
    yesterday = [task(store, title=f"before midnight {number}") for number in range(5)]
    answer(store, "pi-1", yesterday[0], "done")
    clock.advance(3600)
    today = task(store, title="after midnight")
    store.pending_for("pi-1")  # a read after the day ended compacts its tasks
    registry = store._index.days[JUNE_2.toordinal()].tasks
    assert registry._recent == {} and len(registry) == 5
    with pytest.raises(AlreadyAnswered):
        answer(store, "pi-1", yesterday[0], "failed")
    answer(store, "pi-1", yesterday[1], "done")
    assert ids(store.pending_for("pi-1")) == [*ids(yesterday[2:]), today["id"]]
    assert [row["status"] for row in store.task_detail(yesterday[1]["id"]).executions([], 0)] == [
        "done"
    ]
    newest_first = [today, *reversed(yesterday)]
    listed = store.recent_tasks(TaskQuery(), limit=100).results
    assert [summary.task["id"] for summary in listed] == ids(newest_first)
    # Another process reads the same files into the same views.
    other = store_at(pool_dir, clock)
    assert ids(other.pending_for("pi-1")) == ids(store.pending_for("pi-1"))
    assert other.recent_tasks(TaskQuery(), limit=100).results == listed
    with pytest.raises(AlreadyAnswered):
        answer(other, "pi-1", yesterday[1], "failed")


def test_the_day_being_written_moves_its_tasks_as_it_goes_and_they_answer_as_before(
    pool_dir, clock, monkeypatch
):
    from taskpool.stores.jsonl import task_registry

    monkeypatch.setattr(task_registry, "FLUSH_AT", 4)  # four tasks a move, not thousands
    monkeypatch.setattr(task_registry, "ONE_SHARD_MAX", 8)  # and split 256 ways past 8
    store = store_at(pool_dir, clock)
    sent = [task(store, title=f"task {number}") for number in range(23)]
    answer(store, "pi-1", sent[0], "done")
    store.pending_for("pi-1")  # a read moves the dict's tasks once it holds four
    registry = store._index.days[JUNE_3.toordinal()].tasks
    assert len(registry._recent) < 4 and len(registry._sorted) == 256 and len(registry) == 23
    with pytest.raises(AlreadyAnswered):
        answer(store, "pi-1", sent[0], "failed")
    answer(store, "pi-1", sent[5], "done")
    open_ids = [item["id"] for number, item in enumerate(sent) if number not in (0, 5)]
    assert ids(store.pending_for("pi-1", limit=100)) == open_ids
    listed = store.recent_tasks(TaskQuery(), limit=100).results
    assert [summary.task["id"] for summary in listed] == ids(sent[::-1])
    # Another process reads the same file into the same views.
    other = store_at(pool_dir, clock)
    assert ids(other.pending_for("pi-1", limit=100)) == open_ids
    assert other.recent_tasks(TaskQuery(), limit=100).results == listed
    with pytest.raises(AlreadyAnswered):
        answer(other, "pi-1", sent[5], "failed")


def test_a_clock_stepped_back_across_midnight_stamps_the_newer_day_and_loses_nothing(
    pool, pool_dir, clock
):
    """Lines stamped with the day before would go to its file, behind the cursors already
    handed out for the newer one: a stream reading on from there would never send them."""
    clock.set("2026-06-03T00:00:20Z")
    before = task(pool, title="before the step")
    cursor = pool.end_cursor()
    clock.set("2026-06-02T23:59:50Z")  # stepped back half a minute, across midnight
    after = task(pool, title="after the step")
    pool.post_heartbeat(device_id="pi-1")
    assert not day_path(pool_dir, JUNE_2).exists()
    written = read_day(pool_dir, JUNE_3)
    assert ids(written[:2]) == [before["id"], after["id"]]
    assert [item["ts"] for item in written[1:]] == ["2026-06-03T00:00:00Z"] * 2
    assert ids(pool.messages_after(cursor, limit=10).results) == ids(written[1:])
    assert ids(pool.pending_for("pi-1")) == [before["id"], after["id"]]


def test_a_day_file_far_ahead_of_the_clock_does_not_hold_the_pools_time(pool, pool_dir, clock):
    """A day file two days ahead (copied in, or from a clock that ran days fast) is not
    taken as the time: the pool would stamp its first second until the clock got there."""
    append_messages(pool_dir, message(ts="2026-06-05T09:00:00Z", title="far ahead"))
    sent = task(pool, title="now")
    assert sent["ts"] == "2026-06-03T12:00:00Z"
    assert ids(read_day(pool_dir, JUNE_3)) == [sent["id"]]


# Lines written by others -----------------------------------------------------


def test_a_line_appended_by_hand_is_seen_by_the_next_read(pool, pool_dir):
    mine = task(pool)
    assert ids(pool.pending_for("pi-1")) == [mine["id"]]
    by_hand = message(ts="2026-06-03T12:00:00Z", to="device:pi-1")
    append_messages(pool_dir, by_hand)
    assert ids(pool.pending_for("pi-1")) == [mine["id"], by_hand["id"]]
    hand_answer = message(
        kind="response",
        sender="device:pi-1",
        to=MASTER,
        ts="2026-06-03T12:00:00Z",
        parent_id=mine["id"],
        meta={"status": "done"},
    )
    append_messages(pool_dir, hand_answer)
    assert ids(pool.pending_for("pi-1")) == [by_hand["id"]]
    with pytest.raises(AlreadyAnswered):
        answer(pool, "pi-1", mine, "done")


def test_a_line_appended_by_another_process_is_seen_by_the_next_read(pool_dir):
    store = JsonlStore(pool_dir, fsync=False)  # the real clock, as the other process has
    mine = store.post_task(sender=MASTER, to="device:pi-1", title="mine").message
    assert ids(store.pending_for("pi-1")) == [mine["id"]]
    script = (
        "import sys\n"
        "from taskpool.stores.jsonl import JsonlStore\n"
        "store = JsonlStore(sys.argv[1], fsync=True)\n"
        "print(store.post_task(sender='backend', to='device:pi-1', title='other').message['id'])\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", script, str(pool_dir)], capture_output=True, text=True, check=True
    )
    assert ids(store.pending_for("pi-1")) == [mine["id"], other.stdout.strip()]


def test_a_torn_line_is_skipped_counted_and_does_not_hide_the_next_task(pool, pool_dir):
    first = task(pool, title="before the tear")
    whole = encode_line(message(ts="2026-06-03T12:00:00Z", title="torn"))
    append_raw(pool_dir, JUNE_3, whole[: len(whole) // 2])  # a crash mid-write: no newline

    assert ids(pool.pending_for("pi-1")) == [first["id"]]
    assert pool.stats()["skipped_lines"] == 0  # not a line yet: the reader waits for its end

    after = task(pool, title="after the tear")
    data = day_path(pool_dir, JUNE_3).read_bytes()
    assert data.endswith(encode_line(after))
    assert data.count(b"\n") == 3  # first, the ended torn line, after
    assert ids(pool.pending_for("pi-1")) == [first["id"], after["id"]]
    assert pool.stats()["skipped_lines"] == 1
    fresh = store_at(pool_dir, ManualClock("2026-06-03T12:00:00Z"))
    assert ids(fresh.pending_for("pi-1")) == [first["id"], after["id"]]
    assert fresh.stats() == {"lines": 2, "skipped_lines": 1, "open_tasks": 2}


def test_lines_that_are_not_messages_are_skipped_and_counted(pool_dir, clock):
    good = message(ts="2026-06-03T10:00:00Z")
    append_raw(pool_dir, JUNE_3, b"garbage\n")
    append_raw(pool_dir, JUNE_3, b'{"id": "msg_x"}\n')  # JSON, but not a message
    append_raw(pool_dir, JUNE_3, b"\n")  # a blank line is no line at all
    append_messages(pool_dir, good)
    store = store_at(pool_dir, clock)
    assert ids(store.pending_for("pi-1")) == [good["id"]]
    assert store.stats()["skipped_lines"] == 2
    assert ids(store.day_messages(JUNE_3)) == [good["id"]]


def test_a_line_appended_twice_counts_once(pool_dir, clock):
    twice = message(ts="2026-06-03T10:00:00Z")
    append_messages(pool_dir, twice, twice)  # e.g. an operator's cat ran twice
    store = store_at(pool_dir, clock)
    assert ids(store.pending_for("pi-1")) == [twice["id"]]
    answer(store, "pi-1", twice, "done")
    assert store.pending_for("pi-1") == []


def test_a_replaced_day_file_is_read_again(pool, pool_dir):
    kept = task(pool, title="kept")
    task(pool, title="dropped by the operator")
    path = day_path(pool_dir, JUNE_3)
    replacement = pool_dir / "replacement.tmp"
    replacement.write_bytes(encode_line(kept))
    replacement.replace(path)  # a rewrite through rename, as an operator's editor does
    assert ids(pool.pending_for("pi-1")) == [kept["id"]]


@pytest.mark.parametrize("how", ["moved", "deleted"])
def test_a_day_file_taken_away_while_serving_is_not_written_to_where_no_one_reads(
    pool, pool_dir, clock, how
):
    """What the process goes on acknowledging must be what a restart reads."""
    task(pool, title="before")
    path = day_path(pool_dir, JUNE_3)
    if how == "moved":
        path.rename(pool_dir / "kept-aside.txt")
    else:
        path.unlink()
    after = task(pool, title="after")
    assert ids(pool.pending_for("pi-1")) == [after["id"]]
    assert path.read_bytes() == encode_line(after)  # in the day file, where it is read
    assert ids(store_at(pool_dir, clock).pending_for("pi-1")) == [after["id"]]


@pytest.fixture
def read_only_later(tmp_path):
    """A real file system of its own, to be made read-only: a tmpfs, mounted as root."""
    mount = tmp_path / "mounted"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")

    def read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)

    yield mount, read_only
    subprocess.run(["umount", str(mount)], check=True)


def test_a_read_only_data_dir_refuses_writes_as_the_store_cannot_take_them(read_only_later, clock):
    from taskpool.exceptions import StoreUnavailable

    mount, read_only = read_only_later
    first = JsonlStore(mount / "pool", clock=clock)
    kept = task(first)
    first.close()
    read_only()
    store = JsonlStore(mount / "pool", clock=clock)  # a worker started after: no lock yet
    with pytest.raises(StoreUnavailable, match="Read-only file system"):
        task(store, title="refused")
    assert ids(store.pending_for("pi-1")) == [kept["id"]]  # reads go on
    store.close()
    with pytest.raises(StoreUnavailable, match="Read-only file system"):
        JsonlStore(mount / "never-made", clock=clock)  # a DATA_DIR it cannot make


def test_a_checkpoint_that_cannot_be_written_is_said_once_in_the_log(
    read_only_later, clock, caplog
):
    """Else every start would replay the week, and nothing would say why."""

    class Eager(JsonlStore):
        checkpoint_lines = 1

    mount, read_only = read_only_later
    first = JsonlStore(mount / "pool", clock=clock)
    task(first)
    first.close()
    read_only()
    store = Eager(mount / "pool", clock=clock)
    store.pending_for("pi-1")
    said = [
        r.getMessage() for r in caplog.records if "checkpoint was not written" in r.getMessage()
    ]
    assert len(said) == 1 and "Read-only file system" in said[0]
    store.close()


def test_the_store_refuses_a_relative_data_dir():
    from taskpool.exceptions import StoreImproperlyConfigured

    with pytest.raises(StoreImproperlyConfigured):
        JsonlStore("relative/pool")


def test_heartbeats_and_answers_record_device_activity(pool, clock):
    sent = task(pool)
    clock.advance(10)
    answer(pool, "pi-1", sent, "progress")
    clock.advance(10)
    beat = pool.post_heartbeat(device_id="pi-2", body="ok", meta={"load": 0.5})
    activity = pool.device_activity(["pi-1", "pi-2", "pi-3"])
    assert activity["pi-1"].last_message == "2026-06-03T12:00:10Z"
    assert activity["pi-1"].last_heartbeat is None
    assert activity["pi-2"].last_message == activity["pi-2"].last_heartbeat == beat["ts"]
    assert activity["pi-3"].last_message is None
    assert pool.pending_counts(["pi-1", "pi-2"]) == {"pi-1": 1, "pi-2": 0}
    assert beat["ts"] == "2026-06-03T12:00:20Z"


def test_day_messages_are_the_days_lines_in_file_order(pool, clock):
    first = task(pool)
    second = answer(pool, "pi-1", first, "done")
    clock.set("2026-06-04T00:00:00Z")
    third = task(pool)
    assert pool.day_messages(JUNE_3) == [first, second]
    assert pool.day_messages(JUNE_3 + timedelta(days=1)) == [third]
    assert pool.day_messages(date(2026, 1, 1)) == []


# Who held an any-one task, for streams resumed after it ------------------------


def test_holder_before_reads_the_day_from_the_task_on_not_the_lines_before_it(
    pool_dir, clock, monkeypatch
):
    """A stream resumed after a fleet's claims asks, for each task, who held it before the
    first answer it meets. The lines before the task cannot answer it: reading the day
    from its start made each lookup cost the whole day file (a page of a resumed device's
    stream took seconds on a day of tens of megabytes, fractions of a second before)."""
    earlier = encode_line(message(ts="2026-06-03T08:00:00Z", body="x" * 1_000))
    before_the_tasks = len(earlier) * 500
    append_raw(pool_dir, JUNE_3, earlier * 500)
    store = store_at(pool_dir, clock)
    try:
        tasks = [task(store, "device:[pi-1,pi-2]", mode="any") for _ in range(40)]
        claims = [store.claim(device_id="pi-2", parent_id=t["id"]).claim for t in tasks]
        progress = [answer(store, "pi-2", t, "progress") for t in tasks]
        read_from = []
        naming = store._files.messages_naming

        def reading(day, text, *, start=0):
            read_from.append(start)
            return naming(day, text, start=start)

        monkeypatch.setattr(store._files, "messages_naming", reading)
        holders = [
            (store.holder_before(t["id"], c["id"]), store.holder_before(t["id"], p["id"]))
            for t, c, p in zip(tasks, claims, progress, strict=True)
        ]
    finally:
        store.close()
    assert holders == [(None, "pi-2")] * 40
    assert len(read_from) == 80
    assert min(read_from) >= before_the_tasks, "a lookup read the lines before its task"


# Idempotency keys, kept by hash ------------------------------------------------


def test_keys_of_older_days_still_find_their_message_live_and_after_a_restart(pool_dir, clock):
    """A day's keys are kept compactly once a newer day exists: still found, in the
    process that wrote them and in one that read the files again."""
    store = store_at(pool_dir, clock)
    first = store.post_task(sender=MASTER, to="device:pi-1", title="t", idempotency_key="k1")
    clock.advance(2 * 86400)
    later = store.post_task(sender=MASTER, to="device:pi-1", title="u", idempotency_key="k2")
    again = store.post_task(sender=MASTER, to="device:pi-1", title="t", idempotency_key="k1")
    store.close()
    assert again.message == first.message and not again.created
    restarted = store_at(pool_dir, clock)
    try:
        for sent in (first, later):
            title = sent.message["title"]
            key = sent.message["meta"]["idempotency_key"]
            replayed = restarted.post_task(
                sender=MASTER, to="device:pi-1", title=title, idempotency_key=key
            )
            assert replayed.message == sent.message and not replayed.created
        other = restarted.post_task(
            sender="user:other", to="device:pi-1", title="t", idempotency_key="k1"
        )
        assert other.created  # a key is its sender's
    finally:
        restarted.close()


def test_two_keys_that_share_a_hash_do_not_answer_for_each_other(pool, monkeypatch):
    """The index keeps 64 bits of each key: the line found is checked, so another key
    with the same bits is a new request, not a replay of the first (nor a conflict)."""
    from taskpool.stores.jsonl import index

    monkeypatch.setattr(index, "key_hash", lambda sender, key: 7)
    first = pool.post_task(sender=MASTER, to="device:pi-1", title="t", idempotency_key="a")
    second = pool.post_task(sender=MASTER, to="device:pi-1", title="u", idempotency_key="b")
    assert second.created and second.message["id"] != first.message["id"]
    again = pool.post_task(sender=MASTER, to="device:pi-1", title="t", idempotency_key="a")
    assert again.message == first.message and not again.created


def test_a_cursor_past_the_end_of_its_day_file_is_refused_as_such(pool):
    """Not "not at the end of a line": the file has no such offset at all."""
    from taskpool.exceptions import InvalidCursor

    task(pool)
    end = pool.end_cursor()
    day, offset = end.split("-")
    past = f"{day}-{int(offset) + 1000:0{len(offset)}d}"
    with pytest.raises(InvalidCursor, match="past the end of its day file"):
        pool.messages_after(past, limit=1)
    middle = f"{day}-{int(offset) - 2:0{len(offset)}d}"
    with pytest.raises(InvalidCursor, match="not at the end of a line"):
        pool.messages_after(middle, limit=1)


def test_a_line_glued_to_a_hand_append_in_progress_is_written_again_whole(pool, pool_dir, clock):
    """``cat >>`` takes no lock and writes in pieces that may end mid-line: one that lands
    between the store's look at the file's end and its write had the store's line glued to
    its half-line, unreadable, though the post was acknowledged."""
    from taskpool.stores.jsonl.appender import Appender

    by_hand = encode_line(message(ts="2026-06-03T12:00:00Z", title="by hand"))
    pieces = [by_hand[:40]]  # what lands first: half a line

    class HandAppendInBetween(Appender):
        def _write(self, writer, line):
            if pieces:
                append_raw(pool_dir, JUNE_3, pieces.pop())
            return super()._write(writer, line)

    task(pool)  # today's file exists, and the store has looked at it
    pool._appender = HandAppendInBetween(pool._files, fsync=False)
    posted = task(pool, title="acknowledged")
    append_raw(pool_dir, JUNE_3, by_hand[40:])  # the rest of the hand's line
    assert pieces == []
    restarted = store_at(pool_dir, clock)
    for reader in (pool, restarted):
        assert reader.find_task(posted["id"]) == posted
        assert ids(reader.pending_for("pi-1")).count(posted["id"]) == 1
    restarted.close()


def test_a_day_file_mended_in_place_is_read_again_by_a_running_store(pool, pool_dir):
    """An editor that writes the file back over itself keeps its inode: the lines the
    index read move, and it reads them again rather than from the middle of one."""
    first = task(pool, title="first")
    path = day_path(pool_dir, JUNE_3)
    torn = b'{"id":"msg_torn'
    append_raw(pool_dir, JUNE_3, torn + b"\n")
    last = task(pool, title="last")
    assert ids(pool.pending_for("pi-1")) == [first["id"], last["id"]]
    mended = message(ts="2026-06-03T12:00:00Z", title="mended, and longer than the torn line")
    data = path.read_bytes().replace(torn + b"\n", encode_line(mended))
    inode = path.stat().st_ino
    with open(path, "r+b") as file:  # in place, as an editor saving over the file
        file.write(data)
    assert path.stat().st_ino == inode
    assert ids(pool.pending_for("pi-1")) == [first["id"], mended["id"], last["id"]]
