"""Moving a pool between stores: ``taskpool_export`` writes day files, ``taskpool_import``
loads them into the database store, and the pool goes on living there."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import orjson
import pytest
from django.core.management import CommandError, call_command

from taskpool.exceptions import AlreadyAnswered
from taskpool.stores import get_store
from taskpool.stores.jsonl import JsonlStore
from tests.contract.support import DAY, Clock, stored

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(
        not os.environ.get("TASKPOOL_TEST_POSTGRES"), reason="TASKPOOL_TEST_POSTGRES is not set"
    ),
    pytest.mark.django_db(transaction=True, databases=["default", "pool"]),
]


@pytest.fixture
def on_database(settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "STORE": "taskpool.stores.database.DatabaseStore"}
    return get_store()


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, "--no-progress", stdout=out)
    return out.getvalue()


def run_failing(*args: str) -> tuple[int, str]:
    """A command that ends in an error: its exit code and what it printed before."""
    out = io.StringIO()
    with pytest.raises(CommandError) as failure:
        call_command(*args, "--no-progress", stdout=out)
    return failure.value.returncode, out.getvalue() + str(failure.value)


def files_of(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.glob("*.jsonl"))}


def a_week_of_day_files(directory: Path) -> JsonlStore:
    """Day files as a JSON Lines store writes them: tasks, answers, claims, cancels, keys."""
    clock = Clock(time.time() - 3 * DAY)  # inside the horizon of a store on the real clock
    pool = JsonlStore(directory, fsync=False, clock=clock)
    for day in range(3):
        listed = pool.post_task(
            sender="user:ops", to="device:[a,b]", title=f"job {day}", idempotency_key=f"k{day}"
        ).message
        anyone = pool.post_task(sender="user:ops", to="device:*", title="any", mode="any").message
        pool.post_response(device_id="a", parent_id=listed["id"], status="done", body="é\u2028")
        pool.claim(device_id="b", parent_id=anyone["id"])
        pool.post_heartbeat(device_id="a", meta={"load": 0.5})
        doomed = pool.post_task(sender="user:ops", to="device:c", title="never").message
        pool.cancel(sender="user:ops", task_id=doomed["id"], reason="wrong")
        clock.advance(DAY)
    pool.close()
    return pool


def test_export_then_import_round_trips_a_pool_byte_for_byte(on_database, tmp_path):
    source = tmp_path / "source"
    a_week_of_day_files(source)
    original = files_of(source)
    assert len(original) == 3

    out = run("taskpool_import", str(source))
    assert out.strip().startswith("Imported 21 messages from 3 day files")
    run("taskpool_export", str(tmp_path / "first"))
    assert files_of(tmp_path / "first") == original

    again = run("taskpool_import", str(tmp_path / "first"))  # nothing new
    assert "Imported 0 messages" in again and "21 already stored" in again
    run("taskpool_export", str(tmp_path / "second"))
    assert files_of(tmp_path / "second") == original
    since = sorted(original)[1][:10]
    run("taskpool_export", str(tmp_path / "later"), "--since", since)
    assert files_of(tmp_path / "later") == {n: b for n, b in original.items() if n[:10] >= since}


def test_an_imported_pool_is_live(on_database, tmp_path):
    source = tmp_path / "source"
    a_week_of_day_files(source)
    run("taskpool_import", str(source))
    store = on_database
    messages = stored(store)
    first = next(m for m in messages if m["title"] == "job 0")
    with pytest.raises(AlreadyAnswered):
        store.post_response(device_id="a", parent_id=first["id"], status="done")
    replay = store.post_task(
        sender="user:ops", to="device:[a,b]", title="job 0", idempotency_key="k0"
    )
    assert replay.created is False and replay.message == first
    # b holds each day's any-one task (it claimed them) and has not answered the lists.
    assert [t["title"] for t in store.pending_for("b")] == [
        "job 0",
        "any",
        "job 1",
        "any",
        "job 2",
        "any",
    ]
    assert [t["title"] for t in store.pending_for("a")] == []  # its answers and b's claims
    assert store.pending_for("c") == []  # cancelled


def test_an_older_day_imported_after_a_newer_one_leaves_each_devices_latest_times(
    on_database, tmp_path
):
    source = tmp_path / "source"
    a_week_of_day_files(source)
    days = sorted(source.glob("*.jsonl"))
    newest, older = tmp_path / "newest", tmp_path / "older"
    for directory, files in ((newest, days[-1:]), (older, days[:-1])):
        directory.mkdir()
        for path in files:
            (directory / path.name).write_bytes(path.read_bytes())
    run("taskpool_import", str(newest))
    run("taskpool_import", str(older))
    heard = [m for m in stored(on_database) if m["from"] == "device:a"]
    latest = max(m["ts"] for m in heard)
    latest_beat = max(m["ts"] for m in heard if m["type"] == "heartbeat")
    activity = on_database.device_activity(["a"])["a"]
    assert (activity.last_message, activity.last_heartbeat) == (latest, latest_beat)


def test_lines_that_are_not_messages_are_counted_and_left_out(on_database, tmp_path):
    source = tmp_path / "source"
    a_week_of_day_files(source)
    first = sorted(source.glob("*.jsonl"))[0]
    with open(first, "ab") as file:
        file.write(b'not json\n{"torn')
    (source / "notes.jsonl").write_bytes(b"ignored: not a day file\n")
    code, out = run_failing("taskpool_import", str(source))
    assert "Imported 21 messages" in out and "1 line that is not a message" in out
    assert "1 unfinished last line left out" in out  # the torn one
    assert code == 1 and "2 lines were left out" in out
    assert len(stored(on_database)) == 21


def test_an_import_that_leaves_nothing_out_exits_0_and_again_stores_nothing(on_database, tmp_path):
    source = tmp_path / "source"
    a_week_of_day_files(source)
    assert "Imported 21 messages" in run("taskpool_import", str(source))
    assert "Imported 0 messages" in run("taskpool_import", str(source))


def test_lines_the_pool_would_never_write_are_left_out_of_an_import(on_database, tmp_path):
    """Each would have broken the API or the admin once loaded: a meta deeper than JSON's
    encoder goes (a 500 on every list that shows it), an id the API cannot name (never
    cancelled), a body over MAX_MESSAGE_BYTES, a type or address that does not read."""
    source = tmp_path / "source"
    a_week_of_day_files(source)
    first = sorted(source.glob("*.jsonl"))[0]
    good = orjson.loads(first.read_bytes().splitlines()[0])
    day = first.stem

    def line(**changes) -> bytes:
        return orjson.dumps({**good, "id": "msg_" + os.urandom(16).hex(), **changes}) + b"\n"

    # Deeper than orjson writes (it reads up to 1,024): written by hand.
    deep = line(meta={"deep": "here"}).replace(b'"here"', b"[" * 300 + b"]" * 300)
    bad = [
        deep,
        line(id="msg_XYZ"),
        line(body="b" * 70_000),
        line(type="bogus"),
        line(**{"from": "nobody"}),
        line(to="garbage address"),
        line(ts=f"{day} 01:03"),
        line(title="a\x00b"),  # the API refuses a NUL there; PostgreSQL cannot keep one
        line(meta={**good["meta"], "idempotency_key": "a\x00b"}),
        line(parent_id="zzz"),
        line(parent_id="msg_\x00"),
    ]
    with open(first, "ab") as file:
        file.writelines(bad)
    import_code, out = run_failing("taskpool_import", str(source))
    assert "Imported 21 messages" in out and f"{len(bad)} lines that are not messages" in out
    assert import_code == 1
    code, report = 0, io.StringIO()
    try:
        call_command("taskpool_verify", "--directory", str(source), "--json", stdout=report)
    except CommandError as error:
        code = error.returncode
    problems = orjson.loads(report.getvalue())["problems"]
    assert code == 1 and [p["kind"] for p in problems] == ["invalid"] * len(bad)


def test_an_export_range_that_ends_before_it_starts_is_refused(on_database, tmp_path):
    with pytest.raises(CommandError, match="after --until"):
        run(
            "taskpool_export",
            str(tmp_path / "out"),
            "--since",
            "2026-06-05",
            "--until",
            "2026-06-01",
        )


def test_a_day_file_that_is_no_file_stops_the_import_before_anything_is_stored(
    on_database, tmp_path
):
    source = tmp_path / "source"
    a_week_of_day_files(source)
    # Read last (a later day), after the real days would have been stored.
    (source / "2099-01-01.jsonl").symlink_to(tmp_path / "nowhere")
    with pytest.raises(CommandError, match="not a file"):
        run("taskpool_import", str(source))
    assert stored(on_database) == []


def test_import_needs_a_store_that_imports(settings, tmp_path):
    with pytest.raises(CommandError, match="day files already"):
        run("taskpool_import", str(tmp_path))


def test_an_import_names_the_files_it_does_not_read(on_database, tmp_path):
    source = tmp_path / "source"
    a_week_of_day_files(source)
    first = sorted(source.glob("*.jsonl"))[0]
    (source / f"{first.name}.gz").write_bytes(b"")  # an archived day beside the day files
    (source / "2026-02-30.jsonl").write_bytes(first.read_bytes())
    errors = io.StringIO()
    call_command(
        "taskpool_import", str(source), "--no-progress", stdout=io.StringIO(), stderr=errors
    )
    assert errors.getvalue().splitlines() == [
        "2026-02-30.jsonl: not read: not a day file's name (YYYY-MM-DD.jsonl)",
        f"{first.name}.gz: not read: an archived day (gunzip it to read it)",
    ]
