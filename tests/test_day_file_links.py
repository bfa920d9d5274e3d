"""A day file that is a symbolic link to nothing (its target moved or deleted): the pool says
so, naming it, wherever it would read it; it is never read as a day without messages."""

from __future__ import annotations

import io

import pytest
from django.core import checks
from django.core.management import CommandError, call_command

from taskpool.exceptions import StoreUnavailable
from taskpool.stores.jsonl import JsonlStore
from tests.conftest import post_json
from tests.support import append_messages, days_ago, message, noon


@pytest.fixture
def linked_day(pool_dir, tmp_path):
    """Yesterday's day file, kept elsewhere and linked into the pool; then its target gone."""
    append_messages(pool_dir, message(ts=noon(days_ago(1)), title="yesterday's"))
    name = f"{days_ago(1).isoformat()}.jsonl"
    kept = tmp_path / "elsewhere"
    kept.mkdir()
    (pool_dir / name).rename(kept / name)
    (pool_dir / name).symlink_to(kept / name)
    (kept / name).rename(kept / f"{name}.moved")
    return pool_dir / name, kept / name


def test_a_store_starting_on_it_names_it_and_reads_on_once_it_is_mended(pool_dir, linked_day):
    link, target = linked_day
    store = JsonlStore(pool_dir, fsync=False)
    with pytest.raises(StoreUnavailable, match=link.name):
        store.pending_for("pi-1")
    target.with_name(target.name + ".moved").rename(target)
    assert [task["title"] for task in store.pending_for("pi-1")] == ["yesterday's"]
    store.close()


def pool_files(pool_dir):
    """The pool directory's names, and the bytes of those that can be read."""
    return {
        path.name: None if path.is_symlink() else path.read_bytes()
        for path in pool_dir.iterdir()
        if path.name.endswith(".jsonl")
    }


def test_the_api_answers_a_json_503_naming_it_and_stores_nothing(
    master_client, admin_client_api, device_client, pool_dir, linked_day
):
    link, _target = linked_day
    before = pool_files(pool_dir)
    for response in (
        device_client.get("/pool/pending"),
        post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "x"}),
        admin_client_api.get(f"/pool/log?date={days_ago(1).isoformat()}"),
    ):
        assert response.status_code == 503, response.content
        assert response["Content-Type"] == "application/json"
        assert link.name in response.json()["detail"]
    assert pool_files(pool_dir) == before


def test_the_system_check_warns_of_it(linked_day):
    link, _target = linked_day
    found = [message for message in checks.run_checks() if message.id == "taskpool.W004"]
    assert len(found) == 1 and str(link) in found[0].msg


def test_verify_reports_it_as_missing(linked_day):
    link, _target = linked_day
    out = io.StringIO()
    with pytest.raises(CommandError) as failed:
        call_command("taskpool_verify", "--no-progress", stdout=out)
    assert failed.value.returncode == 1
    assert f"{link.name}:0: missing: a symbolic link to " in out.getvalue()
    assert "NOT sound (1 missing)" in out.getvalue()


def test_export_refuses_it_and_writes_nothing(linked_day, tmp_path, db):
    link, _target = linked_day
    with pytest.raises(CommandError, match=link.name):
        call_command("taskpool_export", str(tmp_path / "copy"), "--no-progress")
    assert not any((tmp_path / "copy").iterdir())


def test_a_heartbeat_is_still_taken(device_client, linked_day):
    """A heartbeat decides nothing from the pool: it does not read the days."""
    assert post_json(device_client, "/pool/heartbeat", {}).status_code == 201


def test_the_admin_lists_the_other_days_and_names_it(client, make_user, pool_dir, linked_day):
    link, _target = linked_day
    append_messages(pool_dir, message(ts=noon(days_ago(2)), title="the day before"))
    user, _ = make_user("boss", role="admin", superuser=True)
    client.force_login(user)
    page = client.get("/admin/taskpool/dayfile/")
    assert page.status_code == 200
    text = page.content.decode()
    assert link.name in text and "does not exist" in text
    assert days_ago(2).isoformat() in text


@pytest.mark.parametrize(
    "page", ["/admin/taskpool/dashboard/", "/admin/taskpool/task/", "/admin/taskpool/deviceuser/"]
)
def test_the_admin_pages_that_read_the_pool_name_it_in_a_503(client, make_user, linked_day, page):
    link, _target = linked_day
    user, _ = make_user("boss", role="admin", superuser=True)
    client.force_login(user)
    answer = client.get(page)
    assert answer.status_code == 503
    text = answer.content.decode()
    assert link.name in text and 'id="unavailable"' in text
    assert 'id="site-name"' in text  # in the admin's frame, not a bare error page


def test_a_dry_run_of_prune_refuses_an_old_day_linked_to_nothing_as_the_run_does(
    pool_dir, tmp_path, db
):
    old = f"{days_ago(20).isoformat()}.jsonl"
    (pool_dir / old).symlink_to(tmp_path / "gone.jsonl")
    for dry in (["--dry-run"], []):
        with pytest.raises(CommandError, match=old):
            call_command(
                "taskpool_prune", "--before", days_ago(10).isoformat(), "--archive",
                str(tmp_path / "archive"), "--no-progress", *dry, stdout=io.StringIO(),
            )  # fmt: skip
    assert (pool_dir / old).is_symlink()


@pytest.mark.parametrize("served_before", [True, False], ids=["while serving", "at a start"])
def test_health_fails_its_read_check_naming_it_as_every_request_does(
    pool_dir, tmp_path, db, served_before
):
    """A load balancer must not keep sending devices to a server that refuses every read."""
    from rest_framework.test import APIClient

    from taskpool.stores import get_store

    append_messages(pool_dir, message(ts=noon(days_ago(1)), title="yesterday's"))
    store = get_store()
    if served_before:
        store.pending_for("pi-1")
    name = f"{days_ago(1).isoformat()}.jsonl"
    (pool_dir / name).rename(tmp_path / name)
    (pool_dir / name).symlink_to(tmp_path / "gone.jsonl")
    for query in ("", "?ready"):
        answer = APIClient().get(f"/pool/health{query}")
        assert answer.status_code == 503, answer.content
        assert name in answer.json()["checks"]["read"]
    (pool_dir / name).unlink()
    (tmp_path / name).rename(pool_dir / name)
    assert APIClient().get("/pool/health").status_code == 200
