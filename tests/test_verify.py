"""``taskpool_verify``: each planted defect found with its file and line, a sound pool passes."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from taskpool.messages import encode_line
from tests.support import append_messages, append_raw, days_ago, message, noon


def verify(*args: str) -> tuple[int, str]:
    out = StringIO()
    try:
        call_command("taskpool_verify", *args, "--no-progress", stdout=out)
    except CommandError as error:
        return error.returncode, out.getvalue()
    return 0, out.getvalue()


def a_sound_pool(pool_dir):
    """Two days: tasks, their answers, a heartbeat; every line in order. Returns the tasks."""
    first = message(ts=noon(days_ago(2)), title="one")
    second = message(ts=noon(days_ago(1)), title="two", to="device:*")
    append_messages(
        pool_dir,
        first,
        message(
            kind="response",
            sender="device:pi-1",
            to="user:ops@example.com",
            ts=noon(days_ago(2)).replace("12:00", "12:05"),
            parent_id=first["id"],
            meta={"status": "done"},
        ),
        second,
        message(
            kind="heartbeat",
            sender="device:pi-1",
            to="backend",
            ts=noon(days_ago(1)).replace("12:00", "12:01"),
        ),
    )
    return first, second


def test_a_sound_pool_passes(pool_dir):
    a_sound_pool(pool_dir)
    code, out = verify()
    assert code == 0, out
    assert out.strip().endswith("4 messages: sound.")


def test_each_planted_defect_is_found_with_its_line(pool_dir):
    first, second = a_sound_pool(pool_dir)
    day = days_ago(1)
    name = f"{day.isoformat()}.jsonl"
    # Lines 1 and 2 of yesterday's file are sound (the task and the heartbeat).
    torn = encode_line(message(ts=noon(day).replace("12:00", "12:02"), title="cut"))[:40] + b"\n"
    append_raw(pool_dir, day, torn)  # line 3
    append_raw(pool_dir, day, b"this is not json\n")  # line 4
    append_raw(pool_dir, day, encode_line(second))  # line 5: the same id again
    orphan = message(
        kind="response",
        sender="device:pi-1",
        to="user:ops@example.com",
        ts=noon(day).replace("12:00", "12:03"),
        parent_id="msg_" + "0" * 32,
        meta={"status": "done"},
    )
    append_raw(pool_dir, day, encode_line(orphan))  # line 6
    append_raw(pool_dir, day, b'{"id": "msg_x", "ts": 5}\n')  # line 7: JSON, not a message
    early = message(ts=noon(day).replace("12:00", "11:00"), title="early")
    append_raw(pool_dir, day, encode_line(early))  # line 8: stamped before line 6
    append_raw(pool_dir, day, encode_line(message(ts=noon(day), title="end"))[:30])  # line 9

    code, out = verify("--json")
    assert code == 1
    report = json.loads(out)
    found = {(problem["file"], problem["line"], problem["kind"]) for problem in report["problems"]}
    assert found == {
        (name, 3, "torn"),
        (name, 4, "bad_json"),
        (name, 5, "duplicate_id"),
        (name, 6, "unknown_task"),
        (name, 7, "invalid"),
        (name, 8, "out_of_order"),
        (name, 9, "torn"),
    }, report["problems"]
    assert report["sound"] is False
    duplicate = next(p for p in report["problems"] if p["kind"] == "duplicate_id")
    assert f"{name} line 1" in duplicate["detail"]

    code, text = verify()
    assert code == 1
    assert f"{name}:6: unknown_task: answers msg_{'0' * 32}" in text
    assert "NOT sound" in text.splitlines()[-1]


def test_since_judges_later_days_and_knows_earlier_tasks(pool_dir):
    task = message(ts=noon(days_ago(3)), title="old")
    answer = message(
        kind="response",
        sender="device:pi-1",
        to="user:ops@example.com",
        ts=noon(days_ago(1)),
        parent_id=task["id"],
        meta={"status": "done"},
    )
    append_messages(pool_dir, task, answer)
    append_raw(pool_dir, days_ago(4), b"garbage before --since\n")
    code, out = verify("--since", days_ago(1).isoformat())
    assert code == 0, out
    assert verify()[0] == 1  # the garbage, judged without --since


@pytest.mark.every_store
def test_the_database_store_refuses_with_its_reason(store_kind, store):
    if store_kind == "jsonl":
        assert verify()[0] == 0
        return
    with pytest.raises(CommandError, match="keeps no day files"):
        call_command("taskpool_verify", "--no-progress", stdout=StringIO())
    out = StringIO()  # a script asked for JSON: it gets JSON, saying why
    with pytest.raises(CommandError):
        call_command("taskpool_verify", "--no-progress", "--json", stdout=out)
    assert "keeps no day files" in json.loads(out.getvalue())["error"]


def test_another_directory_is_verified_too(tmp_path):
    elsewhere = tmp_path / "export"
    elsewhere.mkdir()
    append_raw(elsewhere, days_ago(1), b"{}\n")
    code, out = verify("--directory", str(elsewhere))
    assert code == 1
    assert ":1: invalid:" in out


def test_answers_to_tasks_of_pruned_days_are_not_taken_for_unknown_ones(pool_dir):
    """A task posted late on a day, answered after midnight: once the task's day is
    pruned, its answer names a task no file shows, and the pool is still sound."""
    old, kept = days_ago(20), days_ago(19)
    task = message(ts=f"{old.isoformat()}T23:50:00Z", title="late")
    answer = message(
        kind="response",
        sender="device:pi-1",
        to="user:ops@example.com",
        ts=f"{kept.isoformat()}T00:05:00Z",
        parent_id=task["id"],
        meta={"status": "done"},
    )
    append_messages(pool_dir, task, answer)
    assert verify()[0] == 0
    call_command("taskpool_prune", "--before", kept.isoformat(), "--delete", stdout=StringIO())
    assert not (pool_dir / f"{old.isoformat()}.jsonl").exists()
    code, out = verify()
    assert code == 0, out
    # Far enough after the cut, an answer to no task is still one.
    orphan = message(
        kind="response",
        sender="device:pi-1",
        to="user:ops@example.com",
        ts=noon(days_ago(1)),
        parent_id="msg_" + "0" * 32,
        meta={"status": "done"},
    )
    append_messages(pool_dir, orphan)
    code, out = verify()
    assert code == 1 and "unknown_task" in out


def test_a_ts_that_is_no_timestamp_is_invalid_not_out_of_order(pool_dir):
    a_sound_pool(pool_dir)
    day = days_ago(1)
    append_raw(pool_dir, day, encode_line(message(ts=f"{day.isoformat()} 23:00", title="hand")))
    code, out = verify("--json")
    (problem,) = json.loads(out)["problems"]
    assert (code, problem["kind"]) == (1, "invalid")
    assert "not a UTC timestamp" in problem["detail"]


def test_skew_passes_lines_stamped_that_little_before_the_line_ahead_and_no_more(pool_dir):
    """An export of the database store: its hosts stamp a line before the database gives it
    its place, so a line may follow one stamped a second or two later."""
    day = days_ago(1)
    stamped = [noon(day).replace("12:00:00", f"12:00:{second:02d}") for second in (5, 3, 9, 1)]
    append_messages(
        pool_dir,
        *(message(kind="heartbeat", sender="device:pi-1", to="backend", ts=ts) for ts in stamped),
    )
    code, out = verify()
    assert code == 1
    assert out.count(": out_of_order:") == 2  # 3 after 5, 1 after 9
    code, out = verify("--skew", "2")
    assert code == 1
    assert out.count(": out_of_order:") == 1
    assert f":4: out_of_order: stamped {stamped[3]}, after a line stamped {stamped[2]}" in out
    code, out = verify("--skew", "8")
    assert code == 0, out
    assert out.strip().endswith("4 messages: sound.")


def test_a_line_stamped_for_a_later_day_is_the_one_problem_not_every_line_after_it(pool_dir):
    """One host's clock jumped a day ahead for one line: the lines after it, each in order
    with the one before it, are not out of order."""
    day = days_ago(2)
    beats = [
        message(
            kind="heartbeat",
            sender="device:pi-1",
            to="backend",
            ts=noon(day).replace("12:00", f"12:{minute:02d}"),
        )
        for minute in range(5)
    ]
    beats[2] = {**beats[2], "ts": noon(days_ago(1)).replace("12:00", "23:00")}
    for beat in beats:  # all in the day's file, as the host that stamped them wrote them
        append_raw(pool_dir, day, encode_line(beat))
    later = message(kind="heartbeat", sender="device:pi-1", to="backend", ts=noon(days_ago(1)))
    append_messages(pool_dir, later)
    code, out = verify()
    assert code == 1
    assert out.count(": out_of_order:") == 1, out
    assert f":3: out_of_order: stamped {beats[2]['ts']}, in the file of {day}" in out


@pytest.mark.parametrize("value", ["-1", "x", "nan", "inf", "90000"])
def test_a_skew_that_is_not_seconds_up_to_a_day_is_refused(pool_dir, value):
    with pytest.raises(CommandError, match="--skew: takes whole seconds from 0 to 86400"):
        call_command("taskpool_verify", "--skew", value, "--no-progress", stdout=StringIO())


def test_files_meant_for_day_files_that_are_not_read_as_any_are_named(pool_dir):
    a_sound_pool(pool_dir)
    day = days_ago(1).isoformat()
    for name in (f"{day}.JSONL", "2026-02-30.jsonl", f"{day}.jsonl.bak", f"{day}.jsonl.gz"):
        (pool_dir / name).write_bytes(b"")
    code, out = verify()
    assert code == 0, out  # said, not problems of the files read
    assert out.splitlines()[:4] == [
        "2026-02-30.jsonl: not read: not a day file's name (YYYY-MM-DD.jsonl)",
        f"{day}.JSONL: not read: not a day file's name (YYYY-MM-DD.jsonl)",
        f"{day}.jsonl.bak: not read: not a day file's name (YYYY-MM-DD.jsonl)",
        f"{day}.jsonl.gz: not read: an archived day (gunzip it to read it)",
    ]
    code, out = verify("--json")
    assert json.loads(out)["not_read"][0].startswith("2026-02-30.jsonl: not read")
