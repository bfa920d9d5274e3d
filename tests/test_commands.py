"""The provisioning commands, ``taskpool_device`` and ``taskpool_role``, as scripts use them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path

import jwt
import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from taskpool.models import DeviceUser, UserRole
from tests.conftest import client_with, post_json

ROOT = Path(__file__).resolve().parent.parent


def run(command: str, *args: str) -> list[str]:
    out = StringIO()
    call_command(command, *args, stdout=out)
    return out.getvalue().splitlines()


# taskpool_device -----------------------------------------------------------------------


def test_a_new_device_starts_unvalidated(db):
    run("taskpool_device", "pi-1")
    device = DeviceUser.objects.get(pk="pi-1")
    assert (device.validated, device.kind) == (False, "")


def test_validate_invalidate_and_kind(db):
    run("taskpool_device", "pi-1", "--validate", "--kind", "raspberry-pi")
    device = DeviceUser.objects.get(pk="pi-1")
    assert (device.validated, device.kind) == (True, "raspberry-pi")
    run("taskpool_device", "pi-1")  # no flags: nothing changes
    device.refresh_from_db()
    assert (device.validated, device.kind) == (True, "raspberry-pi")
    run("taskpool_device", "pi-1", "--invalidate", "--kind", "phone")
    device.refresh_from_db()
    assert (device.validated, device.kind) == (False, "phone")


def test_token_prints_a_working_token_as_the_last_line(db):
    lines = run("taskpool_device", "pi-1", "--validate", "--token")
    assert len(lines) >= 2
    token = lines[-1]
    response = client_with(token).get("/pool/pending")
    assert response.status_code == 200
    assert response.json() == []
    assert post_json(client_with(token), "/pool/heartbeat", {}).json()["from"] == "device:pi-1"


def test_a_device_token_lives_device_token_lifetime(db, settings):
    claims = jwt.decode(
        run("taskpool_device", "pi-1", "--token")[-1], options={"verify_signature": False}
    )
    assert claims["exp"] - claims["iat"] == 30 * 86400  # the default: 30 days
    assert (claims["token_type"], claims["device_id"]) == ("device", "pi-1")
    assert claims["sid"] == DeviceUser.objects.get(pk="pi-1").user_session
    settings.TASKPOOL = {**settings.TASKPOOL, "DEVICE_TOKEN_LIFETIME": 3600}
    claims = jwt.decode(
        run("taskpool_device", "pi-1", "--token")[-1], options={"verify_signature": False}
    )
    assert claims["exp"] - claims["iat"] == 3600


def test_a_token_for_an_unvalidated_device_authenticates_and_is_refused(db):
    token = run("taskpool_device", "pi-1", "--token")[-1]
    assert client_with(token).get("/pool/pending").status_code == 403
    run("taskpool_device", "pi-1", "--validate")  # validating does not revoke the token
    assert client_with(token).get("/pool/pending").status_code == 200


def test_a_new_token_revokes_the_old_one(db):
    first = run("taskpool_device", "pi-1", "--validate", "--token")[-1]
    second = run("taskpool_device", "pi-1", "--token")[-1]
    assert client_with(first).get("/pool/pending").status_code == 401
    assert client_with(second).get("/pool/pending").status_code == 200


def test_without_token_nothing_is_revoked(db):
    token = run("taskpool_device", "pi-1", "--validate", "--token")[-1]
    run("taskpool_device", "pi-1", "--kind", "phone")
    assert client_with(token).get("/pool/pending").status_code == 200


@pytest.mark.parametrize("device_id", ["bad id", "_pi", ".pi", "", "x" * 65, "pi/1", "pi:1", "pï"])
def test_a_bad_device_id_is_refused(db, device_id):
    with pytest.raises(CommandError):
        run("taskpool_device", device_id)
    assert not DeviceUser.objects.exists()


def test_validate_and_invalidate_together_are_refused(db):
    with pytest.raises(CommandError):
        run("taskpool_device", "pi-1", "--validate", "--invalidate")
    assert not DeviceUser.objects.exists()


# taskpool_role -------------------------------------------------------------------------


def login(username: str, password):
    return post_json(
        client_with(None), "/pool/auth/token", {"username": username, "password": password}
    )


@pytest.mark.parametrize("role", ["admin", "master", "user"])
def test_role_creates_the_user_and_sets_the_role(db, role):
    run("taskpool_role", "alice", role)
    user = get_user_model().objects.get(username="alice")
    assert UserRole.objects.get(user=user).role == role
    assert not user.has_usable_password()


def test_role_changes_an_existing_users_role(db):
    run("taskpool_role", "alice", "user")
    run("taskpool_role", "alice", "admin")
    assert UserRole.objects.get(user__username="alice").role == "admin"
    assert get_user_model().objects.filter(username="alice").count() == 1
    assert UserRole.objects.count() == 1


def test_a_password_lets_the_user_log_in_and_use_the_role(db, make_device):
    make_device("pi-1")
    run("taskpool_role", "alice", "master", "--password", "s3cret-enough")
    response = login("alice", "s3cret-enough")
    assert response.status_code == 200
    client = client_with(response.json()["access"])
    assert post_json(client, "/pool/task", {"to": "device:pi-1", "title": "t"}).status_code == 201
    assert client.get("/pool/log").status_code == 403  # master, not admin


def test_a_user_without_a_password_cannot_log_in(db):
    run("taskpool_role", "alice", "admin")
    assert login("alice", "").status_code == 400
    assert login("alice", "anything").status_code == 401


def test_changing_the_role_keeps_the_password(db):
    run("taskpool_role", "alice", "user", "--password", "s3cret-enough")
    run("taskpool_role", "alice", "admin")
    response = login("alice", "s3cret-enough")
    assert response.status_code == 200
    assert client_with(response.json()["access"]).get("/pool/log").status_code == 200


@pytest.mark.parametrize("password", [5, None, ["s3cret-enough"], {"p": 1}, True])
def test_login_with_a_non_string_password_is_400(db, password):
    run("taskpool_role", "alice", "admin", "--password", "s3cret-enough")
    response = login("alice", password)
    assert response.status_code == 400
    assert "password" in response.json()["errors"]


def test_an_unknown_role_is_refused(db):
    with pytest.raises(CommandError):
        run("taskpool_role", "alice", "root")
    assert not get_user_model().objects.exists()


def test_an_email_that_is_the_login_is_not_changed_by_email(db, monkeypatch):
    """On a site that logs in by email, --email would change the login the user was named by."""
    user_model = get_user_model()
    monkeypatch.setattr(user_model, "EMAIL_FIELD", user_model.USERNAME_FIELD)
    with pytest.raises(CommandError, match="The email is the login"):
        run("taskpool_role", "erin@example.com", "master", "--email", "erin2@example.com")
    assert not user_model.objects.exists()
    run("taskpool_role", "erin@example.com", "master", "--email", "erin@example.com")
    assert list(user_model.objects.values_list("username", flat=True)) == ["erin@example.com"]


def test_an_email_makes_the_users_address(db, make_device):
    make_device("pi-1")
    run(
        "taskpool_role",
        "alice",
        "master",
        "--password",
        "s3cret-enough",
        "--email",
        "a@example.com",
    )
    token = login("alice", "s3cret-enough").json()["access"]
    sent = post_json(client_with(token), "/pool/task", {"to": "device:pi-1", "title": "t"})
    assert sent.json()["from"] == "user:a@example.com"


@pytest.mark.parametrize("role, staff", [("admin", True), ("master", True), ("user", False)])
def test_taskpool_role_gives_admin_access_to_admins_and_masters(db, role, staff):
    call_command("taskpool_role", f"someone-{role}", role, stdout=StringIO())
    assert get_user_model().objects.get(username=f"someone-{role}").is_staff is staff


# One pool identity per user ------------------------------------------------------------


def test_a_role_is_refused_to_a_user_whose_email_another_pool_user_has(db):
    run("taskpool_role", "alice", "master", "--email", "ops@example.com")
    for email in ("ops@example.com", "OPS@example.com"):
        with pytest.raises(CommandError) as refusal:
            run("taskpool_role", "bob", "master", "--email", email)
        assert "user:ops@example.com" in str(refusal.value) and "alice" in str(refusal.value)
    assert not get_user_model().objects.filter(username="bob").exists()
    run("taskpool_role", "alice", "admin")  # alice's own identity is hers
    assert UserRole.objects.get(user__username="alice").role == "admin"


def test_an_identity_is_a_username_where_there_is_no_email(db):
    run("taskpool_role", "alice", "master")
    with pytest.raises(CommandError):
        run("taskpool_role", "bob", "user", "--email", "alice")
    get_user_model().objects.create_user("carol", email="alice")  # no pool role yet
    with pytest.raises(CommandError):
        run("taskpool_role", "carol", "master")
    assert not UserRole.objects.filter(user__username="carol").exists()


def test_a_superuser_holds_its_identity_and_users_without_a_role_do_not(db):
    get_user_model().objects.create_superuser("root", email="root@example.com", password="x")
    with pytest.raises(CommandError):
        run("taskpool_role", "alice", "master", "--email", "root@example.com")
    get_user_model().objects.create_user("dave", email="shared@example.com")
    run("taskpool_role", "erin", "master", "--email", "shared@example.com")


def test_the_role_admin_refuses_a_shared_identity_too(db):
    from django.test import Client

    root = get_user_model().objects.create_superuser("root", email="root@example.com", password="x")
    admin = Client()
    admin.force_login(root)
    run("taskpool_role", "alice", "master", "--email", "ops@example.com")
    bob = get_user_model().objects.create_user("bob", email="ops@example.com")
    added = admin.post("/admin/taskpool/userrole/add/", {"user": bob.pk, "role": "master"})
    assert added.status_code == 200
    assert "user:ops@example.com" in " ".join(added.context["adminform"].form.non_field_errors())
    assert not UserRole.objects.filter(user=bob).exists()

    # On a user's page: an email changed to another pool user's, with the role inline.
    carol = get_user_model().objects.create_user("carol", email="carol@example.com")
    UserRole.objects.create(user=carol, role="master")
    page = admin.get(f"/admin/auth/user/{carol.pk}/change/")
    form = page.context["adminform"].form
    data = {
        **{name: value for name, value in form.initial.items() if value is not None},
        "username": "carol",
        "email": "ops@example.com",
        "date_joined_0": "2026-01-01",
        "date_joined_1": "00:00:00",
        "taskpool_role-TOTAL_FORMS": "1",
        "taskpool_role-INITIAL_FORMS": "1",
        "taskpool_role-MIN_NUM_FORMS": "0",
        "taskpool_role-MAX_NUM_FORMS": "1",
        "taskpool_role-0-id": str(carol.taskpool_role.pk),
        "taskpool_role-0-user": str(carol.pk),
        "taskpool_role-0-role": "master",
    }
    for name in ("groups", "user_permissions", "last_login", "password"):
        data.pop(name, None)
    changed = admin.post(f"/admin/auth/user/{carol.pk}/change/", data)
    assert changed.status_code == 200, changed.get("Location")
    assert changed.context["adminform"].form.errors == {}
    (inline,) = changed.context["inline_admin_formsets"]
    assert "while alice is user:ops@example.com" in str(inline.formset.non_form_errors()) + str(
        [form.non_field_errors() for form in inline.formset.forms]
    )
    carol.refresh_from_db()
    assert carol.email == "carol@example.com"


# Passwords -----------------------------------------------------------------------------

VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
]


@pytest.mark.parametrize(
    ("password", "says"),
    [("abc", "too short"), ("password", "too common"), ("alice1234", "too similar")],
)
def test_a_password_goes_through_the_sites_validators(db, settings, password, says):
    settings.AUTH_PASSWORD_VALIDATORS = VALIDATORS
    with pytest.raises(CommandError) as refusal:
        run("taskpool_role", "alice", "admin", "--password", password)
    assert says in str(refusal.value)
    assert not get_user_model().objects.filter(username="alice").exists()
    run("taskpool_role", "alice", "admin", "--password", "a-good-long-one-9")
    assert login("alice", "a-good-long-one-9").status_code == 200


# Operators' mistakes: a clear message and nothing changed --------------------------------


def test_a_refused_device_is_not_made(db):
    with pytest.raises(CommandError, match="64 characters"):
        run("taskpool_device", "pi-9", "--kind", "k" * 300)
    assert not DeviceUser.objects.filter(pk="pi-9").exists()


@pytest.mark.parametrize("username", ["a" * 151, "a b/c", ""])
def test_a_username_the_user_model_refuses_is_refused(db, username):
    with pytest.raises(CommandError):
        run("taskpool_role", username, "user")
    assert not get_user_model().objects.filter(username=username).exists()


@pytest.mark.parametrize(
    "command",
    [
        ["taskpool_prune", "--before", "2026-02-30", "--delete"],
        ["taskpool_export", "/tmp/x", "--since", "20260101"],
        ["taskpool_verify", "--since", "yesterday"],
        ["taskpool_tick", "--every", "-1"],
        ["taskpool_tick", "--every", "nan"],
        ["taskpool_tick", "--every", "inf"],
        ["taskpool_tick", "--every", "1e10"],  # sleep() refused it, after the first tick
    ],
)
def test_bad_values_are_usage_errors_with_no_traceback(command):
    """From the command line: argparse's usage and message, exit 2, no Python traceback."""
    done = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"},
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error:" in done.stderr


def command_process(tmp_path: Path, *args: str, **environment: str) -> subprocess.Popen[str]:
    """``manage.py ARGS`` in a process of its own, on a pool in ``tmp_path / "pool"``."""
    pool = tmp_path / "pool"
    (tmp_path / "stopped_settings.py").write_text(
        f"from tests.settings import *  # noqa\nTASKPOOL = {{**TASKPOOL, 'DATA_DIR': {str(pool)!r}}}\n"
    )
    return subprocess.Popen(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "stopped_settings",
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
            **environment,
        },
    )


@pytest.mark.parametrize(
    ("stop", "code", "word"),
    [(signal.SIGINT, 130, "Interrupted"), (signal.SIGTERM, 143, "Terminated")],
    ids=["ctrl-c", "sigterm"],
)
def test_a_stop_ends_the_ticker_with_one_line(tmp_path, stop, code, word):
    """``taskpool_tick --every 1`` runs until stopped: Ctrl-C on a terminal, SIGTERM from
    systemd or a container's stop."""
    process = command_process(tmp_path, "taskpool_tick", "--every", "1")
    ticking = tmp_path / "pool" / ".index-checkpoint.lock"  # there once the pool was read
    try:
        for _ in range(600):
            if ticking.exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        process.send_signal(stop)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert process.returncode == code, err
    assert err.splitlines() == [f"CommandError: {word}: stopped ticking."]


def test_sigterm_ends_a_command_stuck_reading_with_one_line(tmp_path):
    """A verify waiting on a day file that never ends (a FIFO no one writes) is stopped too."""
    days = tmp_path / "days"
    days.mkdir()
    os.mkfifo(days / "2026-06-03.jsonl")
    process = command_process(tmp_path, "taskpool_verify", "--directory", str(days))
    try:
        for _ in range(600):  # blocked in the FIFO's open once the process has a reader on it
            if process.poll() is not None or _reads_a_fifo(process.pid):
                break
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert err.splitlines() == ["CommandError: Terminated."]


def _reads_a_fifo(pid: int) -> bool:
    """Whether the process is blocked opening a FIFO (its kernel wait channel says so)."""
    try:
        return "fifo" in Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return False


def test_sigterm_lets_a_unit_of_work_finish(db):
    """A SIGTERM during a day's prune or export, or a tick, stops the command after it."""
    from taskpool.management.base import PoolCommand

    done = []

    class Working(PoolCommand):
        def handle(self, *args, **options):
            with self.unit_of_work():
                os.kill(os.getpid(), signal.SIGTERM)
                done.append("the unit")
            done.append("after it")

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(CommandError) as stopped:
        call_command(Working())
    assert stopped.value.returncode == 143 and str(stopped.value) == "Terminated."
    assert done == ["the unit"]
    assert signal.getsignal(signal.SIGTERM) is before  # the process's own again


def test_commands_leave_no_metric_files_behind(tmp_path):
    """A cron job that inherits PROMETHEUS_MULTIPROC_DIR: each run of a command, one that
    writes lines (a tick) or not, left files of its own there (named by its pid)."""
    from taskpool.stores.jsonl import JsonlStore
    from tests.contract.support import Clock

    pool = JsonlStore(tmp_path / "pool", fsync=False, clock=Clock(time.time() - 60))
    task = pool.post_task(
        sender="user:ops", to="device:a", title="job", timeout={"in_progress": 1}
    ).message
    pool.post_response(device_id="a", parent_id=task["id"], status="progress")
    pool.close()
    metrics = tmp_path / "prometheus"
    metrics.mkdir()
    said = {}
    for command in ("taskpool_tick", "taskpool_verify", "check", "help"):
        process = command_process(tmp_path, command, PROMETHEUS_MULTIPROC_DIR=str(metrics))
        said[command], err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert [path.name for path in metrics.iterdir()] == [], command
    assert said["taskpool_tick"].strip() == "Wrote 1 line (timed_out)."


def test_export_into_a_path_that_cannot_be_a_directory_says_so(db, tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(CommandError, match="Cannot make"):
        run("taskpool_export", str(a_file))


@pytest.fixture
def a_day_that_cannot_be_read(pool_dir, other_process):
    """An old day, and a day file the command cannot read: a directory in its place (a file
    of root's, read by the server's user, fails the same way)."""
    from tests.support import days_ago, message, noon

    other_process(message(ts=noon(days_ago(30)), title="old"))
    (pool_dir / f"{days_ago(20).isoformat()}.jsonl").mkdir()
    return days_ago(20)


def test_export_of_a_day_it_cannot_read_says_which_with_no_traceback(
    db, a_day_that_cannot_be_read, tmp_path
):
    with pytest.raises(CommandError, match="Cannot export: Is a directory"):
        run("taskpool_export", str(tmp_path / "copy"), "--no-progress")
    assert not any((tmp_path / "copy").iterdir())


def test_a_day_pruned_while_it_is_exported_fails_the_export_not_written_empty(
    db, pool_dir, tmp_path, monkeypatch
):
    """Written empty, the day would stand for itself in a pool restored from the copy."""
    from taskpool.stores import get_store
    from tests.support import append_messages, days_ago, message, noon

    for age in (3, 2):
        append_messages(pool_dir, message(ts=noon(days_ago(age)), title=f"{age} days ago"))
    store = get_store()
    reading = store.day_lines

    def pruned_first(day):
        if day == days_ago(2):
            (pool_dir / f"{day.isoformat()}.jsonl").unlink()  # a prune, just then
        return reading(day)

    monkeypatch.setattr(store, "day_lines", pruned_first)
    with pytest.raises(CommandError, match=f"Cannot export {days_ago(2)}: it left the pool"):
        run("taskpool_export", str(tmp_path / "copy"), "--no-progress")
    assert [path.name for path in (tmp_path / "copy").glob("*.jsonl")] == [
        f"{days_ago(3).isoformat()}.jsonl"
    ]


def test_export_with_crossed_dates_makes_no_directory(db, tmp_path):
    with pytest.raises(CommandError, match="is after --until"):
        run(
            "taskpool_export",
            str(tmp_path / "copy"),
            "--since",
            "2026-06-03",
            "--until",
            "2026-06-02",
        )
    assert not (tmp_path / "copy").exists()


def bytes_read_by_this_process() -> int:
    """What the kernel counts as read by this process so far (``rchar``: read and pread)."""
    io_counts = Path("/proc/self/io").read_text().split()
    return int(io_counts[io_counts.index("rchar:") + 1])


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux's /proc/self/io")
def test_export_reads_each_day_once_and_writes_it_byte_for_byte(db, pool_dir, tmp_path):
    """A year of history is read once, not once to size the progress bar and again to write."""
    from django.core.cache import cache

    from tests.support import append_messages, days_ago, message, noon

    pad = "x" * 2000
    for age in (3, 2, 1):
        append_messages(
            pool_dir, *(message(ts=noon(days_ago(age)), title="t", body=pad) for _ in range(1000))
        )
    original = {path.name: path.read_bytes() for path in pool_dir.glob("*.jsonl")}
    size = sum(len(data) for data in original.values())
    cache.clear()  # no count of the days kept from before
    before = bytes_read_by_this_process()
    run("taskpool_export", str(tmp_path / "copy"), "--no-progress")
    read = bytes_read_by_this_process() - before
    assert {
        path.name: path.read_bytes() for path in (tmp_path / "copy").glob("*.jsonl")
    } == original
    assert size <= read < 1.5 * size, (read, size)


def test_prune_of_a_day_it_cannot_read_leaves_it_and_says_which(
    db, a_day_that_cannot_be_read, pool_dir, tmp_path
):
    from tests.support import days_ago, today

    day = a_day_that_cannot_be_read
    archive = tmp_path / "archive"
    with pytest.raises(
        CommandError, match=f"Cannot archive {day}: Is a directory.*left in the pool"
    ):
        run("taskpool_prune", "--before", today().isoformat(), "--archive", str(archive))
    assert (archive / f"{days_ago(30)}.jsonl.gz").exists()  # the day before it went
    assert (pool_dir / f"{day}.jsonl").is_dir()  # this one is left as it was
    assert not any(archive.glob(f"*{day}*"))


def test_a_database_error_is_one_line_that_says_what_to_do(db):
    """Not Django's traceback: the database's own words, and migrate for a missing table."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE taskpool_userrole")  # as a database never migrated
    with pytest.raises(CommandError) as refused:
        call_command("taskpool_role", "ops", "master", stdout=StringIO())
    assert str(refused.value) == (
        "The database has no table taskpool_userrole: run manage.py migrate."
    )


def test_an_api_request_that_meets_a_missing_table_is_told_which_migrate_to_run(db, device_client):
    """SQLite says so with an OperationalError: not an outage to retry, and JSON."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE taskpool_deviceuser")
    refused = device_client.get("/pool/pending")
    assert refused.status_code == 500 and not refused.has_header("Retry-After")
    assert refused.json() == {
        "detail": "The database has no table taskpool_deviceuser: run manage.py migrate."
    }


def test_a_tick_that_cannot_keep_one_task_writes_the_others_and_names_it(store, monkeypatch):
    from tests.contract.support import Clock, transition_failing_for

    clock = Clock(time.time())
    monkeypatch.setattr(store, "now", clock)
    monkeypatch.setattr(store, "_clock", clock, raising=False)
    broken, kept = (
        store.post_task(
            sender="user:ops", to="device:a", title="job", timeout={"in_progress": 1}
        ).message
        for _ in range(2)
    )
    for task in (broken, kept):
        store.post_response(device_id="a", parent_id=task["id"], status="progress")
    clock.advance(2)
    monkeypatch.setattr(store, "transition", transition_failing_for(store, broken["id"]))
    out = StringIO()
    with pytest.raises(CommandError, match=f"Keeping time failed for 1 job task.*{broken['id']}"):
        call_command("taskpool_tick", stdout=out)
    assert out.getvalue().strip() == "Wrote 1 line (timed_out)."
