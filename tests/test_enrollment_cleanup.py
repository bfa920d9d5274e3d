"""Enrollments nobody acts on: ``taskpool_device --forget-enrollments AGE [--dry-run]``.

A request staff never validated is forgotten once it has waited longer than
the age, unless the pool has something of the device; an approved
enrollment whose token was never collected is ended (the device stays). A
device whose request was forgotten may ask again. Run on every store: the
command asks the pool what it has of each device.
"""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.messages import get_messages
from django.core.cache import cache
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from taskpool import enrollment
from taskpool.admin import devices as admin_devices
from taskpool.management.commands import taskpool_device
from taskpool.models import DeviceUser
from taskpool.stores import get_store
from taskpool.tokens import DeviceToken
from tests.conftest import client_with, post_json

pytestmark = pytest.mark.every_store

REQUEST_KEY = "k" * 40


@pytest.fixture(autouse=True)
def fresh_throttle():
    cache.clear()
    yield
    cache.clear()


def enroll(device_id: str, *, request_key: str | None = None) -> str:
    headers = {} if request_key is None else {"Idempotency-Key": request_key}
    answer = APIClient().post(
        "/pool/enroll",
        {"device_id": device_id, "kind": "pi", "meta": {}},
        format="json",
        headers=headers,
    )
    assert answer.status_code == 202, answer.json()
    return answer.json()["enrollment_secret"]


def ask_token(device_id: str, secret: str):
    return APIClient().get(f"/pool/enroll/{device_id}", headers={"Enrollment-Secret": secret})


def age(device_id: str, days: int, *, changed_days: int | None = None) -> None:
    """Make ``device_id`` have asked ``days`` ago, and last changed ``changed_days`` ago."""
    now = timezone.now()
    DeviceUser.objects.filter(pk=device_id).update(
        enrolled_at=now - timedelta(days=days),
        updated_at=now - timedelta(days=days if changed_days is None else changed_days),
    )


def forget(*args: str) -> list[str]:
    out = io.StringIO()
    call_command("taskpool_device", "--forget-enrollments", *args, stdout=out)
    return out.getvalue().splitlines()


def ids() -> list[str]:
    return list(DeviceUser.objects.order_by("id").values_list("id", flat=True))


@pytest.fixture
def fleet(make_device, master_client):
    """Old and new enrollments in every state, and devices staff made."""
    enroll("old-waiting")
    age("old-waiting", 40)
    enroll("new-waiting")
    age("new-waiting", 10)
    enroll("old-but-touched")  # asked long ago, staff changed it lately
    age("old-but-touched", 40, changed_days=2)
    enroll("old-broadcast-only")  # a task to every device names no one
    age("old-broadcast-only", 40)
    enroll("old-named-by-a-task")  # a master addressed it before approving it
    assert (
        post_json(
            master_client, "/pool/task", {"to": "device:old-named-by-a-task", "title": "setup"}
        ).status_code
        == 201
    )
    assert (
        post_json(master_client, "/pool/task", {"to": "device:*", "title": "all"}).status_code
        == 201
    )
    age("old-named-by-a-task", 40)
    enroll("old-given-a-token")  # staff issued it a token without validating it
    DeviceUser.objects.get(pk="old-given-a-token").revoke_tokens()
    age("old-given-a-token", 40)
    approved_secret = enroll("old-approved")  # approved long ago, never collected
    DeviceUser.objects.filter(pk="old-approved").update(validated=True)
    age("old-approved", 40, changed_days=35)
    enroll("new-approved")  # approved lately: it may still come for its token
    DeviceUser.objects.filter(pk="new-approved").update(validated=True)
    age("new-approved", 40, changed_days=1)
    collected_secret = enroll("old-joined")
    DeviceUser.objects.filter(pk="old-joined").update(validated=True)
    assert ask_token("old-joined", collected_secret).status_code == 200
    age("old-joined", 40)
    DeviceUser.objects.filter(pk="old-joined").update(
        token_collected_at=timezone.now() - timedelta(days=40)
    )
    secret = enroll("old-invalidated")  # joined, then invalidated: a device, not a request
    DeviceUser.objects.filter(pk="old-invalidated").update(validated=True)
    assert ask_token("old-invalidated", secret).status_code == 200
    DeviceUser.objects.filter(pk="old-invalidated").update(validated=False)
    age("old-invalidated", 40)
    make_device("made-unvalidated", validated=False)
    DeviceUser.objects.filter(pk="made-unvalidated").update(
        updated_at=timezone.now() - timedelta(days=40)
    )
    make_device("made-validated")
    return {"old-approved": approved_secret, "old-joined": collected_secret}


def test_forgets_only_the_requests_that_waited_longer_than_the_age(fleet):
    lines = forget("30d")
    assert ids() == [
        "made-unvalidated",
        "made-validated",
        "new-approved",
        "new-waiting",
        "old-approved",
        "old-but-touched",
        "old-given-a-token",
        "old-invalidated",
        "old-joined",
        "old-named-by-a-task",
    ]
    assert [line.split(":")[0] for line in lines[:-1]] == [
        "forget  old-waiting",
        "forget  old-broadcast-only",
        "keep    old-named-by-a-task",
        "end     old-approved",
    ]
    assert "a task pending for it names it" in "\n".join(lines)
    assert lines[-1] == (
        "Forgot 2 enrollment requests, kept 1; ended 1 approved enrollment whose token "
        "was never collected."
    )


def test_a_list_names_its_devices_and_device_star_names_none(
    db, make_device, master_client, monkeypatch
):
    """With ``device:*`` open something is pending for every request: only a task that names
    the device (here a list) keeps it, and one another device claimed keeps nobody. The pool
    is asked for many devices at a time (two here), never device by device."""
    for device in ("list-a", "list-b", "list-c", "only-all", "claimed-away"):
        enroll(device)
        age(device, 40)
    make_device("pi-x")
    for to, extra in (
        ("device:*", {}),
        ("device:[list-a,list-b,pi-x]", {}),
        ("device:[claimed-away,pi-x]", {"mode": "any"}),
    ):
        posted = post_json(master_client, "/pool/task", {"to": to, "title": "t", **extra})
        assert posted.status_code == 201
    store = get_store()
    store.claim(device_id="pi-x", parent_id=posted.json()["id"])
    monkeypatch.setattr(enrollment, "STATEMENT_IDS", 2)
    monkeypatch.setattr(store, "pending_for", None)  # asked one by one: a TypeError
    lines = forget("30d", "--dry-run")
    assert sorted(line.split(":")[0] for line in lines[:-1]) == [
        "forget  claimed-away",
        "forget  list-c",
        "forget  only-all",
        "keep    list-a",
        "keep    list-b",
    ]


def test_an_approved_enrollment_never_collected_is_ended_and_the_device_stays(fleet):
    forget("30d")
    device = DeviceUser.objects.get(pk="old-approved")
    assert device.validated and device.enrollment_secret_hash == ""
    assert ask_token("old-approved", fleet["old-approved"]).status_code == 403
    # Staff issue it a token, as for any device whose enrollment is over.
    call_command("taskpool_device", "old-approved", "--token", stdout=io.StringIO())
    assert DeviceUser.objects.get(pk="old-approved").validated
    # The one approved lately keeps its secret, and the one that joined its 410.
    assert DeviceUser.objects.get(pk="new-approved").enrollment_secret_hash
    assert ask_token("old-joined", fleet["old-joined"]).status_code == 410


def test_a_dry_run_says_the_same_and_changes_nothing(fleet):
    before = list(DeviceUser.objects.order_by("id").values())
    lines = forget("30d", "--dry-run")
    assert "forget  old-waiting" in "\n".join(lines)
    assert "end     old-approved" in "\n".join(lines)
    assert lines[-1] == (
        "Dry run: would forget 2 enrollment requests, keep 1 and end 1 approved enrollment; "
        "nothing was done."
    )
    assert list(DeviceUser.objects.order_by("id").values()) == before


def test_a_device_whose_request_was_forgotten_enrolls_again(db):
    old_secret = enroll("pi-late", request_key=REQUEST_KEY)
    age("pi-late", 40)
    forget("30d")
    assert ask_token("pi-late", old_secret).status_code == 404
    # Asked again with the same key (an agent that kept it), the same secret; a new ask
    # waits as from now, and is not forgotten at the next run.
    assert enroll("pi-late", request_key=REQUEST_KEY) == old_secret
    assert ask_token("pi-late", old_secret).status_code == 202
    forget("30d")
    assert DeviceUser.objects.get(pk="pi-late").awaiting_approval
    DeviceUser.objects.filter(pk="pi-late").update(validated=True)
    token = ask_token("pi-late", old_secret).json()["token"]
    assert client_with(token).get("/pool/pending").status_code == 200


def test_another_device_may_take_a_forgotten_id(db):
    enroll("pi-squatted")
    age("pi-squatted", 40)
    forget("30d")
    assert enroll("pi-squatted")  # the real pi-squatted, at last


@pytest.mark.parametrize(
    "args, says",
    [
        (["--forget-enrollments", "30"], "is not an age"),
        (["--forget-enrollments", "0d"], "is not an age"),
        (["--forget-enrollments", "3w"], "is not an age"),
        # Older than the calendar: a usage error, not an OverflowError's traceback.
        (["--forget-enrollments", "1000000d"], "is not an age"),
        (["--forget-enrollments", "9999999999d"], "is not an age"),
        (["pi-1", "--forget-enrollments", "30d"], "takes no device id"),
        (["--forget-enrollments", "30d", "--validate"], "takes no device id"),
        (["pi-1", "--dry-run"], "--dry-run goes with --forget-enrollments"),
        ([], "Name a device"),
    ],
)
def test_bad_forget_arguments_are_refused(db, args, says):
    with pytest.raises(CommandError, match=says):
        call_command("taskpool_device", *args, stdout=io.StringIO())


def test_a_device_with_a_token_is_not_a_request_even_unvalidated(db, make_device):
    enroll("pi-tokened")
    device = DeviceUser.objects.get(pk="pi-tokened")
    DeviceToken.for_device(device)  # a token handed out by staff ends the enrollment
    device.revoke_tokens()
    age("pi-tokened", 400)
    forget("1d")
    assert ids() == ["pi-tokened"]


@pytest.mark.day_files_only
def test_the_admin_says_an_ended_enrollment_needs_a_token_from_staff(fleet, admin_client):
    forget("30d")
    page = admin_client.get("/admin/taskpool/deviceuser/?enrollment=approved")
    rows = {device.id: device for device in page.context["cl"].result_list}
    assert sorted(rows) == ["new-approved", "old-approved"]
    html = page.content.decode()
    assert html.count("approved, token not collected") == 1  # new-approved may still collect
    assert html.count("enrollment ended: its token comes from staff") == 1


# Approving while the cron forgets: each acts on what is still so when it writes. ----------


def action_messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def forgetting_before(monkeypatch, module, name: str) -> list[list[str]]:
    """Run ``--forget-enrollments 30d`` at the moment ``module.name`` is called (after the
    admin read the device, before it writes), then the call itself; what the forget said."""
    said: list[list[str]] = []
    original = getattr(module, name)

    def forget_first(*args, **kwargs):
        said.append(forget("30d"))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, forget_first)
    return said


def test_the_approve_action_does_not_report_a_request_forgotten_meanwhile(
    db, admin_client, monkeypatch
):
    enroll("old-waiting")
    age("old-waiting", 40)
    enroll("new-waiting")
    said = forgetting_before(monkeypatch, admin_devices, "approve_devices")
    response = admin_client.post(
        "/admin/taskpool/deviceuser/",
        {"action": "approve", "_selected_action": ["old-waiting", "new-waiting"], "index": "0"},
    )
    assert response.status_code == 302
    assert said[0][0].startswith("forget  old-waiting")
    assert ids() == ["new-waiting"] and DeviceUser.objects.get(pk="new-waiting").validated
    assert action_messages(response) == [
        "1 enrollment request approved: the device collects its token at its next ask. "
        "1 selected device was not waiting for approval."
    ]
    logged = LogEntry.objects.values_list("object_id", flat=True)
    assert list(logged) == ["new-waiting"]


def test_the_approve_page_does_not_report_a_request_forgotten_meanwhile(
    db, admin_client, monkeypatch
):
    enroll("old-waiting")
    age("old-waiting", 40)
    forgetting_before(monkeypatch, admin_devices, "approve_devices")
    response = admin_client.post("/admin/taskpool/deviceuser/old-waiting/approve/")
    assert response.status_code == 302
    assert ids() == []
    assert action_messages(response) == ["Device old-waiting is not waiting for approval."]
    assert not LogEntry.objects.exists()


def test_a_request_approved_after_the_forget_read_it_is_not_deleted(db, admin_client, monkeypatch):
    """The other order: the cron found the request stale, staff approve it, then the cron
    deletes: the delete asks again, and the approved device stays."""
    enroll("old-waiting")
    age("old-waiting", 40)
    original = taskpool_device.forget_enrollments

    def approve_first(found):
        assert [device.pk for device in found.waiting] == ["old-waiting"]
        admin_client.post(
            "/admin/taskpool/deviceuser/",
            {"action": "approve", "_selected_action": ["old-waiting"], "index": "0"},
        )
        return original(found)

    monkeypatch.setattr(taskpool_device, "forget_enrollments", approve_first)
    lines = forget("30d")
    assert DeviceUser.objects.get(pk="old-waiting").validated
    assert lines[-1].startswith("Forgot 0 enrollment requests")
