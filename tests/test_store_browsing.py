"""The store's day-browsing methods (the admin's): summaries, pages, one message, a device's
messages, the raw lines. Checked against a plain reading of the whole file."""

from __future__ import annotations

import os
from datetime import date

import pytest

from taskpool.exceptions import InvalidCursor, InvalidMessage
from taskpool.message_filter import MessageFilter
from taskpool.messages import decode_line
from taskpool.stores.base import PageEntry
from taskpool.stores.jsonl import day_reading
from taskpool.stores.jsonl.cursors import Cursor


def all_entries(path) -> list[PageEntry]:
    """Every message of a day file with the cursor just past it, read the plain way."""
    day = date.fromisoformat(path.name[:10])
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    entries, offset = [], 0
    for line in data.split(b"\n")[:-1]:
        offset += len(line) + 1
        try:
            entries.append(PageEntry(str(Cursor(day, offset)), decode_line(line)))
        except InvalidMessage:
            continue
    return entries


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks of a few bytes, so every line crosses chunk boundaries."""
    monkeypatch.setattr(day_reading, "FIRST_CHUNK_BYTES", 37)
    monkeypatch.setattr(day_reading, "MAX_CHUNK_BYTES", 101)


@pytest.fixture
def busy_day(store, pool_dir):
    """A day with tasks, responses, heartbeats, a torn line and a blank line."""
    first = store.post_task(sender="user:ops@example.com", to="device:pi-1", title="Reboot").message
    store.post_heartbeat(device_id="pi-2", body="ok")
    store.post_response(device_id="pi-1", parent_id=first["id"], status="progress", title="½ done")
    second = store.post_task(
        sender="user:boss", to="device:[pi-2,pi-3]", title="Update", meta={"version": "Ünïcode 2"}
    ).message
    (path,) = pool_dir.glob("*.jsonl")
    with open(path, "ab") as file:
        file.write(b'{"id": "msg_torn", "ts": \n\n')  # a torn line, then a blank one
    store.post_task(sender="user:ops@example.com", to="device:*", title="Everyone")
    store.post_response(device_id="pi-1", parent_id=first["id"], status="done")
    store.post_response(device_id="pi-2", parent_id=second["id"], status="rejected")
    for number in range(5):
        store.post_heartbeat(device_id="pi-3", body=f"beat {number}")
    return path


def day_of_file(path) -> date:
    return date.fromisoformat(path.name[:10])


def walk_forward(store, day, where=None, limit=2, scan_limit=None) -> list[PageEntry]:
    entries, after, pages = [], None, 0
    while True:
        page = store.day_page(day, after=after, limit=limit, where=where, scan_limit=scan_limit)
        entries.extend(page.entries)
        pages += 1
        assert pages < 100
        if page.next_cursor is None:
            return entries
        after = page.next_cursor


def walk_backward(store, day, where=None, limit=2, scan_limit=None) -> list[PageEntry]:
    entries, page = (
        [],
        store.day_page(day, from_end=True, limit=limit, where=where, scan_limit=scan_limit),
    )
    pages = 1
    while True:
        entries[:0] = page.entries
        if page.previous_cursor is None:
            return entries
        page = store.day_page(
            day, before=page.previous_cursor, limit=limit, where=where, scan_limit=scan_limit
        )
        pages += 1
        assert pages < 100


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


@pytest.mark.parametrize("where", FILTERS, ids=repr)
@pytest.mark.parametrize("scan_limit", [None, 50])
def test_pages_forward_and_backward_give_every_match_once(
    store, busy_day, tiny_chunks, where, scan_limit
):
    expected = [e for e in all_entries(busy_day) if where is None or where.matches(e.message)]
    day = day_of_file(busy_day)
    assert walk_forward(store, day, where, scan_limit=scan_limit) == expected
    assert walk_backward(store, day, where, scan_limit=scan_limit) == expected


def test_filters_select_what_they_say(store, busy_day):
    day = day_of_file(busy_day)

    def titles(**conditions):
        page = store.day_page(day, limit=100, where=MessageFilter(**conditions))
        return [(e.message["type"], e.message["title"] or e.message["body"]) for e in page.entries]

    assert titles(type="task") == [("task", "Reboot"), ("task", "Update"), ("task", "Everyone")]
    # A device's address also takes the lists and the broadcasts that name it.
    assert titles(recipient="device:pi-3") == [("task", "Update"), ("task", "Everyone")]
    assert titles(recipient="device:[pi-2,pi-3]") == [("task", "Update")]
    assert titles(sender="device:pi-1") == [("response", "½ done"), ("response", "")]
    assert titles(status="rejected", sender="device:pi-2") == [("response", "")]
    assert titles(text="ÜNÏCODE") == [("task", "Update")]  # meta strings, any case
    assert titles(text="beat 4") == [("heartbeat", "beat 4")]
    assert titles(type="heartbeat", text="nothing like this") == []


def test_first_page_reads_only_what_it_needs(store, busy_day):
    day = day_of_file(busy_day)
    page = store.day_page(day, limit=2)
    everything = all_entries(busy_day)
    assert page.entries == everything[:2]
    assert page.span == (0, Cursor.parse(everything[1].cursor).offset)
    assert page.previous_cursor is None
    assert page.next_cursor == everything[1].cursor
    last = store.day_page(day, from_end=True, limit=3)
    assert last.entries == everything[-3:]
    assert last.at_end and last.next_cursor is None
    assert last.previous_cursor == everything[-4].cursor


def test_a_scan_limit_gives_a_short_page_that_moves_on(store, busy_day, tiny_chunks):
    day = day_of_file(busy_day)
    where = MessageFilter(type="info")  # nothing matches
    page = store.day_page(day, limit=10, where=where, scan_limit=100)
    assert page.entries == []
    assert page.next_cursor is not None
    stop = page.span[1]
    assert Cursor.parse(page.next_cursor).offset == stop
    assert 100 <= stop < busy_day.stat().st_size
    assert busy_day.read_bytes()[stop - 1 : stop] == b"\n"


def test_cursors_that_name_no_line_start_are_refused(store, busy_day):
    day = day_of_file(busy_day)
    with pytest.raises(InvalidCursor):
        store.day_page(day, after=str(Cursor(day, 5)))
    with pytest.raises(InvalidCursor):
        store.day_page(day, before=str(Cursor(day, busy_day.stat().st_size + 100)))
    with pytest.raises(InvalidCursor):
        store.day_page(day, after=str(Cursor(date(2001, 1, 1), 0)))
    with pytest.raises(InvalidCursor):
        store.message_at(str(Cursor(day, 0)))
    with pytest.raises(InvalidCursor):
        store.message_at(str(Cursor(day, 7)))


def test_a_day_without_a_file_is_an_empty_page(store):
    page = store.day_page(date(2001, 1, 1))
    assert page.entries == [] and page.at_end and page.previous_cursor is None


def test_message_at_reads_the_line_before_the_cursor(store, busy_day, tiny_chunks):
    for entry in all_entries(busy_day):
        assert store.message_at(entry.cursor) == entry.message
    data = busy_day.read_bytes()
    torn_end = data.index(b'"ts": \n') + len(b'"ts": \n')
    with pytest.raises(InvalidMessage):
        store.message_at(str(Cursor(day_of_file(busy_day), torn_end)))


def test_summaries_count_types_and_torn_lines(store, busy_day, pool_dir):
    day = day_of_file(busy_day)
    (summary,) = store.day_summaries([day, date(2001, 1, 1)])
    assert summary.day == day
    assert summary.size == busy_day.stat().st_size
    assert summary.types == {"heartbeat": 6, "response": 3, "task": 3}
    assert (summary.messages, summary.torn, summary.lines) == (12, 1, 13)


def test_summaries_count_only_what_was_appended_and_notice_a_rewrite(store, busy_day, monkeypatch):
    day = day_of_file(busy_day)
    store.day_summaries([day])
    decoded = []
    real = day_reading.read_forward

    def counting_read(descriptor, start, end, chunk_test=None):
        decoded.append((start, end))
        return real(descriptor, start, end, chunk_test)

    monkeypatch.setattr("taskpool.stores.jsonl.day_summaries.read_forward", counting_read)
    before = busy_day.stat().st_size
    (unchanged,) = store.day_summaries([day])
    assert decoded == [] and unchanged.messages == 12

    with open(busy_day, "ab") as file:
        file.write(b'{"half a line')
    (torn_tail,) = store.day_summaries([day])
    assert decoded == [] and torn_tail.torn == 2  # the unfinished last line counts as torn

    store.post_heartbeat(device_id="pi-9")  # ends the torn line, then appends its own
    (grown,) = store.day_summaries([day])
    assert decoded == [(before, busy_day.stat().st_size)]
    assert (grown.messages, grown.torn, grown.types["heartbeat"]) == (13, 2, 7)

    # Rewritten in place with other bytes of the same length: counted afresh.
    data = busy_day.read_bytes()
    busy_day.write_bytes(data.replace(b'"type":"heartbeat"', b'"type":"heartbeaT"'))
    (rewritten,) = store.day_summaries([day])
    assert rewritten.types.get("heartbeat") is None and rewritten.types["heartbeaT"] == 7


def test_device_messages_are_newest_first_and_name_the_device(store, busy_day):
    found = store.device_messages("pi-2", limit=10)
    summary = [(e.message["type"], e.message["from"], e.message["to"]) for e in found]
    assert summary == [
        ("response", "device:pi-2", "user:boss"),
        ("task", "user:ops@example.com", "device:*"),
        ("task", "user:boss", "device:[pi-2,pi-3]"),
        ("heartbeat", "device:pi-2", "backend"),
    ]
    assert [store.message_at(e.cursor) for e in found] == [e.message for e in found]
    assert len(store.device_messages("pi-3", limit=2)) == 2
    # A prefix of other ids is not a match; a broadcast names every device.
    assert [e.message["title"] for e in store.device_messages("pi", limit=10)] == ["Everyone"]


def test_day_lines_are_the_complete_lines_as_stored(store, busy_day, tiny_chunks, monkeypatch):
    monkeypatch.setattr("taskpool.stores.jsonl.day_files.DUMP_CHUNK_BYTES", 64)
    with open(busy_day, "ab") as file:
        file.write(b'{"unfinished')
    chunks = list(store.day_lines(day_of_file(busy_day)))
    data = busy_day.read_bytes()
    assert b"".join(chunks) == data[: data.rfind(b"\n") + 1]
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert list(store.day_lines(date(2001, 1, 1))) == []


def test_could_match_never_refuses_a_match(busy_day):
    lines = [line for line in busy_day.read_bytes().split(b"\n") if line]
    for where in FILTERS[1:]:
        for line in lines:
            try:
                message = decode_line(line)
            except InvalidMessage:
                continue
            if where.matches(message):
                assert where.could_match(line), (where, line)


def test_escaped_lines_are_still_found(store, pool_dir):
    store.post_heartbeat(device_id="pi-1")
    (path,) = pool_dir.glob("*.jsonl")
    # A hand-written line spelling "task" with an escape, and spaces after the colons.
    line = (
        b'{"id": "msg_hand", "ts": "2026-06-03T00:00:00Z", "from": "backend", "to": "device:pi-1",'
        b' "type": "t\\u0061sk", "title": "by hand", "body": "", "parent_id": null, "meta": {}}\n'
    )
    with open(path, "ab") as file:
        file.write(line)
    page = store.day_page(day_of_file(path), where=MessageFilter(type="task"))
    assert [e.message["id"] for e in page.entries] == ["msg_hand"]
    assert os.path.getsize(path) == page.span[1]


def test_a_count_limit_spreads_the_counting_over_calls(store, busy_day, pool_dir, tiny_chunks):
    day = day_of_file(busy_day)
    older = date(2001, 1, 1)
    (pool_dir / f"{older.isoformat()}.jsonl").write_bytes(busy_day.read_bytes())
    calls = 0
    while True:
        calls += 1
        assert calls < 200
        summaries = store.day_summaries([day, older], count_limit=150)
        if all(summary.complete for summary in summaries):
            break
        first, second = summaries
        assert first.counted < first.size or second.counted < second.size
        assert second.counted == 0 or first.complete  # the days are counted in the order given
    assert calls > 10
    counted = {
        summary.day: (summary.messages, summary.torn, summary.types) for summary in summaries
    }
    expected = (12, 1, {"heartbeat": 6, "response": 3, "task": 3})
    assert counted == {day: expected, older: expected}


@pytest.mark.parametrize("text", ["00010101-000000000000", "99991231-000000000042"])
def test_a_cursor_reads_back_as_it_was_written_at_either_end_of_the_calendar(text):
    assert str(Cursor.parse(text)) == text
