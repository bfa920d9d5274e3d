"""The JSON Lines store's log: byte-offset cursors, torn and hand-written lines, raw day
files, and the changes they cause. (What every store does is in ``tests/contract``.)"""

from __future__ import annotations

import os
import threading
import time
from datetime import date, timedelta
from pathlib import Path

import orjson
import pytest

from taskpool.exceptions import InvalidCursor
from taskpool.messages import decode_line, encode_line, format_timestamp, new_message_id
from taskpool.stores.jsonl import JsonlStore
from taskpool.stores.jsonl.cursors import Cursor

DAY_ONE = date(2026, 6, 3)
NOON = 1780488000.0  # 2026-06-03T12:00:00Z


class Clock:
    """A store clock the test moves by hand, to write on chosen days."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(NOON)


@pytest.fixture
def day_store(pool_dir: Path, clock: Clock) -> JsonlStore:
    store = JsonlStore(pool_dir, fsync=False, clock=clock)
    yield store
    store.close()


def file_messages(path: Path) -> list[dict]:
    return [decode_line(line) for line in path.read_bytes().splitlines() if line]


def post(store: JsonlStore, to: str = "device:a", **extra) -> dict:
    return store.post_task(sender="user:ops", to=to, title="t", **extra).message


def hand_line(to: str = "device:a", ts: float = NOON) -> bytes:
    message = {
        "id": new_message_id(),
        "ts": format_timestamp(ts),
        "from": "user:ops",
        "to": to,
        "type": "task",
        "title": "by hand",
        "body": "",
        "parent_id": None,
        "meta": {},
    }
    return encode_line(message)


# Cursors --------------------------------------------------------------------


def test_an_empty_pool_has_no_end_and_reads_nothing(day_store):
    assert day_store.end_cursor() is None
    page = day_store.messages_after(None, limit=10)
    assert (page.results, page.next_cursor, page.has_more) == ([], None, False)


def test_end_cursor_is_just_past_the_last_complete_line(day_store, pool_dir):
    post(day_store)
    path = pool_dir / "2026-06-03.jsonl"
    size = path.stat().st_size
    assert day_store.end_cursor() == str(Cursor(DAY_ONE, size))
    with open(path, "ab") as file:
        file.write(b'{"torn":')
    assert day_store.end_cursor() == str(Cursor(DAY_ONE, size))


def test_check_cursor_takes_line_ends_and_the_start_of_an_existing_day(day_store, pool_dir):
    post(day_store)
    post(day_store)
    lines = (pool_dir / "2026-06-03.jsonl").read_bytes().splitlines(keepends=True)
    first_end = len(lines[0])
    for good in (
        str(Cursor(DAY_ONE, 0)),
        str(Cursor(DAY_ONE, first_end)),
        str(Cursor(DAY_ONE, first_end + len(lines[1]))),
    ):
        day_store.check_cursor(good)
    for bad in (
        str(Cursor(DAY_ONE, first_end - 1)),  # inside a line
        str(Cursor(DAY_ONE, first_end + 1)),
        str(Cursor(DAY_ONE, 10**9)),  # past the end
        str(Cursor(DAY_ONE + timedelta(days=1), 0)),  # no such day file
    ):
        with pytest.raises(InvalidCursor):
            day_store.check_cursor(bad)
        with pytest.raises(InvalidCursor):
            day_store.messages_after(bad, limit=10)


# Pages ----------------------------------------------------------------------


def test_paging_a_day_gives_the_day_file_in_order(day_store, pool_dir):
    posted = [post(day_store)["id"] for _ in range(7)]
    seen: list[str] = []
    page = day_store.messages_from_day(DAY_ONE, limit=3)
    pages = 1
    while True:
        seen.extend(message["id"] for message in page.results)
        if not page.has_more:
            break
        page = day_store.messages_after(page.next_cursor, limit=3)
        pages += 1
    assert seen == posted == [m["id"] for m in file_messages(pool_dir / "2026-06-03.jsonl")]
    assert pages == 3
    end = str(Cursor(DAY_ONE, (pool_dir / "2026-06-03.jsonl").stat().st_size))
    assert page.next_cursor == end
    # Nothing new: the same cursor comes back.
    again = day_store.messages_after(end, limit=3)
    assert (again.results, again.next_cursor, again.has_more) == ([], end, False)


def test_each_entry_carries_the_cursor_just_past_its_line(day_store, pool_dir):
    post(day_store)
    post(day_store)
    lines = (pool_dir / "2026-06-03.jsonl").read_bytes().splitlines(keepends=True)
    page = day_store.messages_after(None, limit=10)
    assert [entry.cursor for entry in page.entries] == [
        str(Cursor(DAY_ONE, len(lines[0]))),
        str(Cursor(DAY_ONE, len(lines[0]) + len(lines[1]))),
    ]
    after_first = day_store.messages_after(page.entries[0].cursor, limit=10)
    assert after_first.results == page.results[1:]


def test_pages_run_on_into_later_days(day_store, clock):
    first = post(day_store)
    clock.now += 86400
    second = post(day_store)
    clock.now += 2 * 86400  # a day without a file in between
    third = post(day_store)
    end_of_day_one = day_store.messages_from_day(DAY_ONE, limit=1)
    assert end_of_day_one.results == [first] and end_of_day_one.has_more
    rest = day_store.messages_after(end_of_day_one.next_cursor, limit=10)
    assert rest.results == [second, third]
    assert Cursor.parse(rest.next_cursor).day == DAY_ONE + timedelta(days=3)
    # A day without messages starts at the next day that has some.
    assert day_store.messages_from_day(DAY_ONE + timedelta(days=2), limit=10).results == [third]


def test_a_day_after_the_last_one_answers_the_end_of_the_pool(day_store):
    post(day_store)
    page = day_store.messages_from_day(DAY_ONE + timedelta(days=5), limit=10)
    assert (page.results, page.next_cursor, page.has_more) == ([], day_store.end_cursor(), False)


def test_pages_step_over_lines_that_are_not_messages_and_stop_before_a_torn_one(
    day_store, pool_dir
):
    post(day_store)
    path = pool_dir / "2026-06-03.jsonl"
    with open(path, "ab") as file:
        file.write(b"not json\n\n")
    after_garbage = path.stat().st_size
    with open(path, "ab") as file:
        file.write(b'{"torn": ')
    page = day_store.messages_after(None, limit=10)
    assert len(page.results) == 1
    assert page.next_cursor == str(Cursor(DAY_ONE, after_garbage))
    # The next writer ends the torn line; the message after it is read.
    second = post(day_store)
    assert day_store.messages_after(page.next_cursor, limit=10).results == [second]


def test_has_more_only_when_a_message_follows(day_store, pool_dir):
    post(day_store)
    post(day_store)
    with open(pool_dir / "2026-06-03.jsonl", "ab") as file:
        file.write(b"garbage\n")
    page = day_store.messages_after(None, limit=2)
    assert len(page.results) == 2 and page.has_more is False


# Raw lines ------------------------------------------------------------------


def test_day_lines_are_the_day_file_up_to_its_last_complete_line(day_store, pool_dir):
    for _ in range(5):
        post(day_store, body="é\u2028x")
    path = pool_dir / "2026-06-03.jsonl"
    whole = path.read_bytes()
    with open(path, "ab") as file:
        file.write(b'{"torn"')
    chunks = list(day_store.day_lines(DAY_ONE))
    assert b"".join(chunks) == whole
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert list(day_store.day_lines(DAY_ONE + timedelta(days=1))) == []


def test_day_lines_come_in_chunks_that_end_at_line_ends(day_store, pool_dir):
    path = pool_dir / "2026-06-03.jsonl"
    path.write_bytes(b"".join(hand_line() for _ in range(6000)))  # over 1 MiB: several chunks
    chunks = list(day_store.day_lines(DAY_ONE))
    assert len(chunks) > 1
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert b"".join(chunks) == path.read_bytes()


# Changes --------------------------------------------------------------------


def test_changes_include_lines_written_by_hand_and_by_other_stores(day_store, pool_dir, clock):
    mark = day_store.changes_since(None).mark
    with open(pool_dir / "2026-06-03.jsonl", "ab") as file:
        file.write(hand_line("device:z"))
    other = JsonlStore(pool_dir, fsync=False, clock=clock)
    try:
        post(other, to="device:y")
    finally:
        other.close()
    changes = day_store.changes_since(mark)
    assert changes.devices == {"y", "z"} and changes.messages == 2


def test_a_rebuilt_index_reports_everything(day_store, pool_dir):
    post(day_store)
    mark = day_store.changes_since(None).mark
    path = pool_dir / "2026-06-03.jsonl"
    path.write_bytes(hand_line("device:q"))  # a replaced file: the index starts over
    assert day_store.changes_since(mark).everything


def test_waiting_for_changes_ends_when_a_day_file_grows_or_times_out(day_store, pool_dir):
    mark = day_store.changes_since(None).mark
    quiet = day_store.wait_for_changes(mark, 0.2)  # nothing written: the timeout ends it
    assert (quiet.mark, quiet.messages) == (mark, 0)

    def write_by_hand_soon() -> None:
        time.sleep(0.2)
        with open(pool_dir / "2026-06-03.jsonl", "ab") as file:
            file.write(hand_line("device:w"))

    writer = threading.Thread(target=write_by_hand_soon)
    writer.start()
    try:
        woken = day_store.wait_for_changes(mark, 30)
    finally:
        writer.join()
    assert woken.messages == 1 and woken.devices == {"w"}


def test_a_hand_written_line_round_trips_through_pages(day_store, pool_dir):
    line = hand_line()
    with open(pool_dir / "2026-06-03.jsonl", "ab") as file:
        file.write(line)
    assert day_store.messages_after(None, limit=1).results == [orjson.loads(line)]
    assert os.path.getsize(pool_dir / "2026-06-03.jsonl") == len(line)
