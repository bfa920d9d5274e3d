"""``taskpool_prune``: days outside TASK_TTL go to the archive (or away), never a day that can
hold a pending task; archived days stay readable in the log and the admin."""

from __future__ import annotations

import gzip
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from taskpool.exceptions import DayInHorizon
from taskpool.messages import encode_line
from tests.support import days_ago, message, noon, today

pytestmark = pytest.mark.every_store


def prune(*args: str) -> str:
    out = StringIO()
    call_command("taskpool_prune", *args, "--no-progress", stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.fixture
def history(other_process):
    """A task on each of six days; the one three days ago is still pending (TASK_TTL is 7 days)."""
    tasks = {
        age: message(ts=noon(days_ago(age)), title=f"{age} days ago")
        for age in (20, 12, 9, 8, 3, 0)
    }
    answers = [
        message(
            kind="response",
            sender="device:pi-1",
            to="user:ops@example.com",
            ts=noon(days_ago(age)).replace("12:00", "12:30"),
            parent_id=tasks[age]["id"],
            meta={"status": "done"},
        )
        for age in (20, 12, 9, 8, 0)
    ]
    other_process(*sorted([*tasks.values(), *answers], key=lambda item: item["ts"]))
    return tasks


def test_days_outside_the_horizon_are_archived_and_the_rest_kept(
    store, history, tmp_path, admin_client_api
):
    archive = tmp_path / "archive"
    before = store.day_messages(days_ago(12))
    pending = store.pending_for("pi-1")
    assert [task["title"] for task in pending] == ["3 days ago"]

    out = prune("--before", today().isoformat(), "--archive", str(archive))

    assert sorted(path.name for path in archive.iterdir()) == [
        f"{days_ago(age).isoformat()}.jsonl.gz" for age in (20, 12, 9, 8)
    ]
    assert store.days() == [days_ago(3), today()]  # within TASK_TTL: kept
    assert f"keep    {days_ago(3)}" in out
    assert [task["title"] for task in store.pending_for("pi-1")] == ["3 days ago"]
    with gzip.open(archive / f"{days_ago(12).isoformat()}.jsonl.gz", "rb") as file:
        assert file.read() == b"".join(encode_line(item) for item in before)


def test_the_horizon_follows_task_ttl(store, history, tmp_path, settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "TASK_TTL": 10 * 86400}
    prune("--before", today().isoformat(), "--archive", str(tmp_path / "archive"))
    from taskpool.stores import get_store

    assert get_store().days() == [days_ago(9), days_ago(8), days_ago(3), today()]


def test_the_day_at_the_horizon_is_kept(store, history, tmp_path, settings):
    """With TASK_TTL of 9 days, a task of the day 9 days ago may still be open at its end."""
    settings.TASKPOOL = {**settings.TASKPOOL, "TASK_TTL": 9 * 86400}
    out = prune("--before", today().isoformat(), "--archive", str(tmp_path / "archive"))
    from taskpool.stores import get_store

    assert get_store().days() == [days_ago(9), days_ago(8), days_ago(3), today()]
    assert f"keep    {days_ago(9)}" in out


def test_before_limits_what_is_taken(store, history, tmp_path):
    prune("--before", days_ago(10).isoformat(), "--archive", str(tmp_path / "archive"))
    assert store.days() == [days_ago(9), days_ago(8), days_ago(3), today()]


def test_a_dry_run_does_nothing_and_says_what_it_would(store, history, tmp_path):
    days = store.days()
    out = prune("--before", today().isoformat(), "--archive", str(tmp_path / "a"), "--dry-run")
    assert store.days() == days
    assert not (tmp_path / "a").exists()
    assert f"archive {days_ago(20)} -> " in out
    assert "would archive 4 days, keep 1 and skip 0" in out


def test_a_dry_run_needs_no_archive_and_says_the_real_run_does(store, history, settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "ARCHIVE_DIR": None}
    days = store.days()
    out = prune("--before", today().isoformat(), "--dry-run")
    assert store.days() == days
    assert f"take {days_ago(20)}\n" in out
    assert "would take 4 days, keep 1 and skip 0; nothing was done." in out
    assert "The real run needs to be told where they go: --archive DIR" in out


def test_delete_keeps_no_copy(store, history, settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "ARCHIVE_DIR": None}
    with pytest.raises(CommandError, match="--delete"):
        prune("--before", today().isoformat())
    from taskpool.stores import get_store

    prune("--before", today().isoformat(), "--delete")
    assert get_store().days() == [days_ago(3), today()]


def test_a_day_in_the_horizon_is_refused_by_the_store(store, history):
    with pytest.raises(DayInHorizon):
        store.remove_day(days_ago(3))
    assert days_ago(3) in store.days()


def test_a_day_archived_already_is_left_in_the_pool(store, history, tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    (archive / f"{days_ago(20).isoformat()}.jsonl.gz").write_bytes(gzip.compress(b""))
    dry = StringIO()
    with pytest.raises(CommandError, match="archived already"):  # foreseen, as the run ends
        call_command(
            "taskpool_prune", "--before", today().isoformat(), "--archive", str(archive),
            "--dry-run", "--no-progress", stdout=dry,
        )  # fmt: skip
    assert f"skip    {days_ago(20)}: " in dry.getvalue() and "and skip 1;" in dry.getvalue()
    with pytest.raises(CommandError, match="archived already"):
        prune("--before", today().isoformat(), "--archive", str(archive))
    assert days_ago(20) in store.days()
    assert days_ago(12) not in store.days()


def test_a_prune_cut_short_after_archiving_a_day_is_finished_by_the_next_run(
    store, history, tmp_path
):
    # Cut short (Ctrl-C, a reboot) between writing a day's archive and taking the day out:
    # the archive holds the day exactly as the pool has it. The next run takes it out.
    archive = tmp_path / "archive"
    archive.mkdir()
    day = days_ago(20)
    (archive / f"{day.isoformat()}.jsonl.gz").write_bytes(
        gzip.compress(b"".join(store.day_lines(day)))
    )
    archived = (archive / f"{day.isoformat()}.jsonl.gz").read_bytes()

    dry = prune("--before", today().isoformat(), "--archive", str(archive), "--dry-run")
    assert f"archive {day} -> " in dry and "would archive 4 days, keep 1 and skip 0" in dry

    out = prune("--before", today().isoformat(), "--archive", str(archive))

    assert f"archive {day}: archived already, as the pool has it (2 lines)" in out
    assert "Pruned: 4 days archived, 1 kept within TASK_TTL, 0 skipped." in out
    assert day not in store.days()
    assert (archive / f"{day.isoformat()}.jsonl.gz").read_bytes() == archived


def test_archived_days_stay_readable_in_the_log_and_the_admin(
    store, history, tmp_path, settings, admin_client_api, client
):
    settings.TASKPOOL = {**settings.TASKPOOL, "ARCHIVE_DIR": str(tmp_path / "archive")}
    from taskpool.stores import get_store

    store = get_store()
    day = days_ago(12)
    before = store.day_messages(day)
    prune("--before", today().isoformat())
    assert day not in store.days()

    log = admin_client_api.get(f"/pool/log?date={day.isoformat()}")
    assert log.status_code == 200
    assert log.json() == before
    raw = admin_client_api.get(f"/pool/log?date={day.isoformat()}&format=jsonl")
    assert b"".join(raw.streaming_content) == b"".join(encode_line(item) for item in before)

    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    listing = client.get("/admin/taskpool/dayfile/")
    assert listing.status_code == 200
    assert day.isoformat() in listing.content.decode() and "archived" in listing.content.decode()
    page = client.get(f"/admin/taskpool/dayfile/{day.isoformat()}/")
    assert page.status_code == 200
    assert "12 days ago" in page.content.decode()
    assert "Archived" in page.content.decode()
    one = client.get(f"/admin/taskpool/dayfile/{day.isoformat()}/L1/")
    assert one.status_code == 200
    assert before[0]["id"] in one.content.decode()
    raw_file = client.get(f"/admin/taskpool/dayfile/{day.isoformat()}/raw/")
    assert b"".join(raw_file.streaming_content) == b"".join(encode_line(i) for i in before)


def test_a_page_of_an_archived_day_is_refused_rather_than_another_days_messages(
    store, history, tmp_path, settings, admin_client_api, snapshot
):
    """Paged, the pool runs on from the first day after the one asked for: for an archived
    day, that is another day's messages read as its own."""
    settings.TASKPOOL = {**settings.TASKPOOL, "ARCHIVE_DIR": str(tmp_path / "archive")}
    prune("--before", today().isoformat())
    day = days_ago(12).isoformat()
    before = snapshot()
    refused = admin_client_api.get(f"/pool/log?date={day}&limit=5")
    assert refused.status_code == 400, refused.content
    assert "pruned" in refused.json()["errors"]["limit"][0]
    assert snapshot() == before
    whole = admin_client_api.get(f"/pool/log?date={day}")
    assert [item["title"] for item in whole.json()] == ["12 days ago", ""]
    # A day the pool never had, and that no archive holds, still pages on from the next.
    never = admin_client_api.get(f"/pool/log?date={days_ago(30).isoformat()}&limit=5")
    assert never.status_code == 200 and never.json()["results"]


def test_an_export_of_a_range_with_archived_days_says_where_they_are(
    store, history, tmp_path, settings
):
    """A backup script that exports the pool alone would otherwise lack them without a word."""
    archive = tmp_path / "archive"
    settings.TASKPOOL = {**settings.TASKPOOL, "ARCHIVE_DIR": str(archive)}
    prune("--before", today().isoformat())
    out = StringIO()
    call_command(
        "taskpool_export", str(tmp_path / "copy"), "--since", days_ago(25).isoformat(),
        "--no-progress", stdout=out,
    )  # fmt: skip
    said = out.getvalue()
    assert (
        f"4 days in the range ({days_ago(20).isoformat()} to {days_ago(8).isoformat()}) are in "
        f"the archive, not in the pool: copy them from {archive}." in said
    )
    assert "Exported 3 lines in 2 day files" in said  # the days still in the pool
    out = StringIO()
    call_command(
        "taskpool_export", str(tmp_path / "recent"), "--since", days_ago(3).isoformat(),
        "--no-progress", stdout=out,
    )  # fmt: skip
    assert "archive" not in out.getvalue()


def test_an_archived_day_cut_short_is_a_503_naming_it_and_the_other_days_stay_listed(
    store, history, tmp_path, settings, admin_client_api, client
):
    """Read as far as it goes, it would pass part of a day for the whole of it."""
    settings.TASKPOOL = {**settings.TASKPOOL, "ARCHIVE_DIR": str(tmp_path / "archive")}
    from taskpool.stores import get_store

    get_store()
    prune("--before", today().isoformat())
    day, sound = days_ago(12), days_ago(20)
    archived = tmp_path / "archive" / f"{day.isoformat()}.jsonl.gz"
    archived.write_bytes(archived.read_bytes()[:-12])  # its end cut off: no gzip trailer
    for query in ("", "&format=jsonl"):
        refused = admin_client_api.get(f"/pool/log?date={day.isoformat()}{query}")
        assert refused.status_code == 503, refused.content
        assert refused["Content-Type"] == "application/json"
        assert f"{day.isoformat()}.jsonl.gz) cannot be read whole" in refused.json()["detail"]
    assert admin_client_api.get(f"/pool/log?date={sound.isoformat()}").status_code == 200

    client.force_login(get_user_model().objects.create_superuser("root", password="pw"))
    listing = client.get("/admin/taskpool/dayfile/")
    assert listing.status_code == 200
    assert "cannot be read whole" in listing.content.decode()
    assert f"{sound.isoformat()}/" in listing.content.decode()  # the others as before
    for page in ("", "raw/"):  # one message that reads whole (L1/) is shown as it is
        answer = client.get(f"/admin/taskpool/dayfile/{day.isoformat()}/{page}")
        assert answer.status_code == 503, (page, answer.status_code)
        assert "cannot be read whole" in answer.content.decode()


def test_import_and_verify_given_only_archives_say_how_to_read_them(store, history, tmp_path):
    archive = tmp_path / "archive"
    prune("--before", today().isoformat(), "--archive", str(archive))
    commands = [["taskpool_verify", "--directory"]]
    if store.supports_import:  # the day-file store imports nothing, and says so first
        commands.append(["taskpool_import"])
    for command in commands:
        with pytest.raises(CommandError, match="archived days .* gunzip"):
            call_command(*command, str(archive), "--no-progress", stdout=StringIO())


def test_an_archive_path_that_cannot_be_a_directory_is_refused_before_anything(
    store, history, tmp_path
):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for archive in (a_file, a_file / "under-a-file"):
        with pytest.raises(CommandError, match="not a directory|Cannot make the archive"):
            prune("--before", today().isoformat(), "--archive", str(archive))
    assert days_ago(20) in store.days()


def test_an_export_notes_where_it_starts_so_that_verify_judges_no_answer_before(
    store, history, tmp_path
):
    prune("--before", days_ago(12).isoformat(), "--delete")
    exported = tmp_path / "export"
    call_command("taskpool_export", str(exported), "--no-progress", stdout=StringIO())
    first = min(path.name for path in exported.glob("*.jsonl"))
    assert (exported / ".pruned-before").read_text().strip() == first.removesuffix(".jsonl")


@pytest.mark.day_files_only
def test_a_day_whose_last_line_is_unfinished_is_left_in_the_pool_not_archived_short(
    store, history, pool_dir, tmp_path
):
    """Its last bytes end no line (a crash's, or a hand edit's): the archive, made of the
    day's lines, would not hold them, and taking the file out would lose them."""
    day = days_ago(12)
    path = pool_dir / f"{day.isoformat()}.jsonl"
    unended = encode_line(message(ts=noon(day), title="no newline after me"))[:-1]
    with path.open("ab") as file:
        file.write(unended)
    before = path.read_bytes()
    archive = tmp_path / "archive"
    dry = StringIO()
    with pytest.raises(CommandError, match="left in the pool"):
        call_command(
            "taskpool_prune", "--before", today().isoformat(), "--archive", str(archive),
            "--dry-run", "--no-progress", stdout=dry,
        )  # fmt: skip
    assert f"skip    {day}: its last {len(unended)} bytes end no line" in dry.getvalue()
    errors = StringIO()
    with pytest.raises(CommandError, match="1 day was left in the pool"):
        call_command(
            "taskpool_prune", "--before", today().isoformat(), "--archive", str(archive),
            "--no-progress", stdout=StringIO(), stderr=errors,
        )  # fmt: skip
    assert "mend the file (taskpool_verify names the line)" in errors.getvalue()
    assert path.read_bytes() == before and not (archive / f"{day}.jsonl.gz").exists()
    assert (archive / f"{days_ago(20)}.jsonl.gz").exists()  # the others went as before
