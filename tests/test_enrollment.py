"""Enrollment: a device asks to join, staff validate it, the device collects its token once.

And every refusal: enrollment off, a wrong key, an id already registered, a wrong
secret, a token asked for twice, too many requests from one address.
"""

from __future__ import annotations

import io
import re
from datetime import timedelta

import pytest
from django.contrib.admin.models import DELETION, LogEntry
from django.core.cache import cache
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from taskpool.enrollment import RECOLLECT_SECONDS
from taskpool.models import DeviceUser
from taskpool.tokens import DeviceToken
from tests.conftest import client_with

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_throttle():
    """The throttle counts in Django's cache, which outlives a test: start each one at zero."""
    cache.clear()
    yield
    cache.clear()


def enroll(client: APIClient, body: dict, **headers: str):
    return client.post("/pool/enroll", body, format="json", headers=headers)


def ask_token(client: APIClient, device_id: str, secret: str | None):
    headers = {} if secret is None else {"Enrollment-Secret": secret}
    return client.get(f"/pool/enroll/{device_id}", headers=headers)


def test_enroll_wait_approve_collect_once():
    client = APIClient()
    answer = enroll(client, {"device_id": "pi-new", "kind": "raspberry-pi", "meta": {"os": "12"}})
    assert answer.status_code == 202, answer.content
    assert answer.json()["device_id"] == "pi-new"
    assert answer["Cache-Control"] == "no-store"  # it carries the secret
    secret = answer.json()["enrollment_secret"]
    device = DeviceUser.objects.get(pk="pi-new")
    assert (device.validated, device.kind, device.enrollment_meta) == (
        False,
        "raspberry-pi",
        {"os": "12"},
    )
    assert device.awaiting_approval
    assert secret not in device.enrollment_secret_hash  # only its hash is kept

    waiting = ask_token(client, "pi-new", secret)
    assert waiting.status_code == 202
    assert waiting.json() == {"device_id": "pi-new", "status": "waiting"}
    assert waiting["Retry-After"]

    said = io.StringIO()
    call_command("taskpool_device", "pi-new", "--validate", stdout=said)
    assert "collects its token at its next ask" in said.getvalue()
    collected = ask_token(client, "pi-new", secret)
    assert collected.status_code == 200
    assert collected["Cache-Control"] == "no-store"
    token = collected.json()["token"]
    assert client_with(token).get("/pool/pending").status_code == 200

    # The answer may have been lost on the way: asked again soon after, a new token,
    # and the one before stops working.
    again = ask_token(client, "pi-new", secret)
    assert again.status_code == 200
    assert client_with(again.json()["token"]).get("/pool/pending").status_code == 200
    assert client_with(token).get("/pool/pending").status_code == 401

    handed_out = DeviceUser.objects.get(pk="pi-new").token_collected_at
    later = handed_out - timedelta(seconds=RECOLLECT_SECONDS + 1)
    DeviceUser.objects.filter(pk="pi-new").update(token_collected_at=later)
    gone = ask_token(client, "pi-new", secret)
    assert gone.status_code == 410
    assert "handed out" in gone.json()["detail"]


def test_once_staff_issue_a_token_the_enrollment_secret_collects_none():
    """Else whoever holds the secret takes the device back from the token staff issued."""
    client = APIClient()
    secret = enroll(client, {"device_id": "pi-new"}).json()["enrollment_secret"]
    call_command("taskpool_device", "pi-new", "--validate", stdout=io.StringIO())
    assert ask_token(client, "pi-new", secret).status_code == 200
    issued = io.StringIO()
    call_command("taskpool_device", "pi-new", "--token", stdout=issued)
    staff_token = issued.getvalue().splitlines()[-1]
    refused = ask_token(client, "pi-new", secret)
    assert refused.status_code == 403
    assert client_with(staff_token).get("/pool/pending").status_code == 200


@pytest.mark.parametrize("collected_before", [False, True])
def test_staff_acting_while_the_secret_collects_a_token_keep_the_device(collected_before):
    """Staff issue a token just as the device's secret is being checked: the staff's token
    is the one that works, whichever ask (the first, or one again) it races."""
    client = APIClient()
    secret = enroll(client, {"device_id": "pi-new"}).json()["enrollment_secret"]
    call_command("taskpool_device", "pi-new", "--validate", stdout=io.StringIO())
    if collected_before:
        assert ask_token(client, "pi-new", secret).status_code == 200
    staff: list[str] = []

    def staff_act_first(execute, sql, params, many, context):
        # Just before the ask's own write: the secret was read and found right.
        if not staff and sql.lstrip().upper().startswith("UPDATE"):
            device = DeviceUser.objects.get(pk="pi-new")
            staff.append("")  # before: the staff's own UPDATE comes through here too
            device.revoke_tokens()
            staff[0] = str(DeviceToken.for_device(device))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(staff_act_first):
        raced = ask_token(client, "pi-new", secret)
    assert staff and raced.status_code == 403
    assert client_with(staff[0]).get("/pool/pending").status_code == 200


def test_two_asks_at_once_for_a_token_both_get_one_and_the_last_counts():
    """Not a 410 "handed out already" for the one that lost the race, inside the minutes."""
    from taskpool.enrollment import collect_token

    client = APIClient()
    secret = enroll(client, {"device_id": "pi-new"}).json()["enrollment_secret"]
    call_command("taskpool_device", "pi-new", "--validate", stdout=io.StringIO())
    other: list[str] = []

    def other_ask_first(execute, sql, params, many, context):
        if not other and sql.lstrip().upper().startswith("UPDATE"):
            other.append("")  # before: the other ask's own UPDATE comes through here too
            other[0] = str(collect_token("pi-new", secret).token)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(other_ask_first):
        raced = ask_token(client, "pi-new", secret)
    assert other and raced.status_code == 200
    assert client_with(raced.json()["token"]).get("/pool/pending").status_code == 200
    assert client_with(other[0]).get("/pool/pending").status_code == 401  # the last counts


def test_a_wrong_secret_is_403_before_and_after_approval():
    client = APIClient()
    enroll(client, {"device_id": "pi-new"})
    assert ask_token(client, "pi-new", "not-the-secret").status_code == 403
    DeviceUser.objects.filter(pk="pi-new").update(validated=True)
    refused = ask_token(client, "pi-new", "not-the-secret")
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Wrong Enrollment-Secret for this device."}
    assert DeviceUser.objects.get(pk="pi-new").token_collected_at is None


def test_a_device_made_by_staff_has_no_secret_to_guess(make_device):
    make_device("pi-1")
    assert ask_token(APIClient(), "pi-1", "").status_code == 400
    assert ask_token(APIClient(), "pi-1", "anything").status_code == 403


def test_asking_without_the_secret_or_for_no_device():
    client = APIClient()
    missing = ask_token(client, "pi-x", None)
    assert missing.status_code == 400
    assert "Enrollment-Secret" in missing.json()["errors"]
    assert ask_token(client, "pi-x", "s").status_code == 404
    no_id = ask_token(client, "pi\x00", "s")  # PostgreSQL will not even look one up
    assert no_id.status_code == 404 and no_id["Content-Type"] == "application/json"


@pytest.mark.parametrize("validated", [True, False], ids=["validated", "unvalidated"])
def test_a_registered_id_cannot_be_taken_over(make_device, validated):
    device, _ = make_device("pi-1", validated=validated)
    session = device.user_session
    refused = enroll(APIClient(), {"device_id": "pi-1", "kind": "evil"})
    assert refused.status_code == 409
    assert "already registered" in refused.json()["detail"]
    device.refresh_from_db()
    assert (device.kind, device.validated, device.user_session) == ("pi", validated, session)
    assert device.enrollment_secret_hash == ""


def test_enrolling_twice_is_409_and_keeps_the_first_secret():
    client = APIClient()
    first = enroll(client, {"device_id": "pi-new"}).json()["enrollment_secret"]
    assert enroll(client, {"device_id": "pi-new"}).status_code == 409
    assert ask_token(client, "pi-new", first).status_code == 202


REQUEST_KEY = "k" * 32


def test_a_request_asked_again_with_its_key_gets_the_same_secret():
    """What a device does when the answer to its request was lost on the way."""
    client = APIClient()
    body = {"device_id": "pi-new", "kind": "raspberry-pi", "meta": {"os": "12"}}
    first = enroll(client, body, **{"Idempotency-Key": REQUEST_KEY})
    assert first.status_code == 202, first.content
    again = enroll(client, body, **{"Idempotency-Key": REQUEST_KEY})
    assert again.status_code == 202, again.content
    secret = first.json()["enrollment_secret"]
    assert again.json()["enrollment_secret"] == secret
    assert DeviceUser.objects.filter(pk="pi-new").count() == 1

    other = enroll(client, body, **{"Idempotency-Key": "o" * 32})
    assert other.status_code == 409  # another requester: no take-over
    changed = enroll(client, {**body, "kind": "phone"}, **{"Idempotency-Key": REQUEST_KEY})
    assert changed.status_code == 422

    call_command("taskpool_device", "pi-new", "--validate", stdout=io.StringIO())
    assert enroll(client, body, **{"Idempotency-Key": REQUEST_KEY}).status_code == 202
    assert ask_token(client, "pi-new", secret).status_code == 200
    collected = enroll(client, body, **{"Idempotency-Key": REQUEST_KEY})
    assert collected.status_code == 409  # enrolled: the request is over


def test_a_request_key_must_be_as_hard_to_guess_as_a_secret():
    refused = enroll(APIClient(), {"device_id": "pi-new"}, **{"Idempotency-Key": "short"})
    assert refused.status_code == 400
    assert "Idempotency-Key" in refused.json()["errors"]
    assert not DeviceUser.objects.filter(pk="pi-new").exists()


def test_a_registered_id_is_not_taken_over_with_a_request_key(make_device):
    device, _ = make_device("pi-1", validated=False)
    refused = enroll(APIClient(), {"device_id": "pi-1"}, **{"Idempotency-Key": REQUEST_KEY})
    assert refused.status_code == 409
    device.refresh_from_db()
    assert device.enrollment_secret_hash == ""


def test_an_unvalidated_device_asking_again_after_its_token_waits(make_device):
    client = APIClient()
    secret = enroll(client, {"device_id": "pi-new"}).json()["enrollment_secret"]
    call_command("taskpool_device", "pi-new", "--validate", stdout=io.StringIO())
    assert ask_token(client, "pi-new", secret).status_code == 200
    call_command("taskpool_device", "pi-new", "--invalidate", stdout=io.StringIO())
    assert ask_token(client, "pi-new", secret).status_code == 202


def test_the_enrollment_key(settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "ENROLLMENT_KEY": "fleet-key-1"}
    client = APIClient()
    for headers in ({}, {"Enrollment-Key": "wrong"}):
        refused = enroll(client, {"device_id": "pi-new"}, **headers)
        assert refused.status_code == 403
        assert refused.json() == {"detail": "Wrong or missing Enrollment-Key."}
    assert not DeviceUser.objects.filter(pk="pi-new").exists()
    assert (
        enroll(client, {"device_id": "pi-new"}, **{"Enrollment-Key": "fleet-key-1"}).status_code
        == 202
    )


def test_enrollment_turned_off(settings):
    settings.TASKPOOL = {**settings.TASKPOOL, "ENROLLMENT": False}
    refused = enroll(APIClient(), {"device_id": "pi-new"})
    assert refused.status_code == 403
    assert refused.json() == {"detail": "Enrollment is turned off on this server."}
    assert not DeviceUser.objects.exists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "device_id"),
        ({"device_id": "bad id!"}, "device_id"),
        ({"device_id": 5}, "device_id"),
        ({"device_id": "pi-new", "kind": 3}, "kind"),
        ({"device_id": "pi-new", "meta": []}, "meta"),
        ({"device_id": "pi-new", "meta": {"note": "a\x00b"}}, "meta"),
        ({"device_id": "pi-new", "meta": {"deep": [{"\x00": 1}]}}, "meta"),
        ({"device_id": "pi-new", "kind": "pi\x00"}, "kind"),
        ({"device_id": "pi-new", "token": "x"}, "token"),
    ],
)
def test_bad_bodies_are_400_and_record_nothing(body, field):
    refused = enroll(APIClient(), body)
    assert refused.status_code == 400
    assert field in refused.json()["errors"]
    assert not DeviceUser.objects.exists()


def test_enrollment_requests_are_throttled_per_address():
    client = APIClient()
    answers = [enroll(client, {"device_id": f"pi-{n}"}).status_code for n in range(40)]
    assert answers[:10] == [202] * 10  # the default lets at least 10 a minute through
    assert 429 in answers
    throttled = enroll(client, {"device_id": "pi-late"})
    assert throttled.status_code == 429
    assert throttled["Retry-After"]
    assert "detail" in throttled.json()
    assert not DeviceUser.objects.filter(pk="pi-late").exists()


def test_the_throttle_rate_is_a_drf_setting(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"taskpool_enroll": "2/min"},
    }
    client = APIClient()
    answers = [enroll(client, {"device_id": f"pi-{n}"}).status_code for n in range(3)]
    assert answers == [202, 202, 429]


def test_a_forwarded_for_header_the_client_writes_does_not_dodge_the_throttle(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"taskpool_enroll": "2/min"},
    }
    client = APIClient()
    answers = [
        enroll(client, {"device_id": f"pi-{n}"}, **{"X-Forwarded-For": f"10.0.0.{n}"}).status_code
        for n in range(3)
    ]
    assert answers == [202, 202, 429]


def test_behind_a_proxy_named_by_num_proxies_each_client_is_throttled_alone(settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"taskpool_enroll": "1/min"},
        "NUM_PROXIES": 1,
    }
    client = APIClient()
    # The proxy appends the address it saw: the last one is the client's.
    first, second, again = (
        enroll(client, {"device_id": f"pi-{n}"}, **{"X-Forwarded-For": f"6.6.6.6, {address}"})
        for n, address in enumerate(("10.0.0.1", "10.0.0.2", "10.0.0.1"))
    )
    assert (first.status_code, second.status_code, again.status_code) == (202, 202, 429)


# The admin: the waiting list, the approve action and the approve page -------------


@pytest.fixture
def staff(db):
    """``staff("name", role=..., perms=[...])`` -> a logged-in admin client."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.test import Client

    from taskpool.models import UserRole

    def make(username, *, role=None, perms=()):
        user = get_user_model().objects.create_user(
            username, email=f"{username}@example.com", password="pw", is_staff=True
        )
        if role:
            UserRole.objects.create(user=user, role=role)
        for codename in perms:
            user.user_permissions.add(Permission.objects.get(codename=codename))
        client = Client()
        client.force_login(user)
        return client

    return make


def enrolled(device_id: str) -> str:
    answer = enroll(APIClient(), {"device_id": device_id, "kind": "pi", "meta": {"serial": "ab12"}})
    assert answer.status_code == 202
    return answer.json()["enrollment_secret"]


def test_the_admin_lists_devices_waiting_for_approval(staff, make_device):
    enrolled("pi-asks")
    make_device("pi-made", validated=False)
    boss = staff("boss", role="admin")
    page = boss.get("/admin/taskpool/deviceuser/?enrollment=waiting")
    assert page.status_code == 200
    assert [device.id for device in page.context["cl"].result_list] == ["pi-asks"]
    assert "waiting for approval" in page.content.decode()


def test_the_approve_action_validates_only_waiting_requests(staff, make_device):
    secret = enrolled("pi-asks")
    make_device("pi-made", validated=False)
    boss = staff("boss", role="admin")
    answer = boss.post(
        "/admin/taskpool/deviceuser/",
        {"action": "approve", "_selected_action": ["pi-asks", "pi-made"], "index": "0"},
        follow=True,
    )
    assert answer.status_code == 200
    text = answer.content.decode()
    assert "1 enrollment request approved" in text and "1 selected device was not" in text
    assert DeviceUser.objects.get(pk="pi-asks").validated is True
    assert DeviceUser.objects.get(pk="pi-made").validated is False
    assert ask_token(APIClient(), "pi-asks", secret).status_code == 200


def test_approving_from_the_waiting_filter_counts_what_it_approved(staff):
    """The action runs on the filtered list, which holds none of them once approved."""
    enrolled("pi-asks")
    boss = staff("boss", role="admin")
    answer = boss.post(
        "/admin/taskpool/deviceuser/?validated__exact=0",
        {"action": "approve", "_selected_action": ["pi-asks"], "index": "0"},
        follow=True,
    )
    text = answer.content.decode()
    assert "1 enrollment request approved" in text
    assert "not waiting" not in text


def test_the_approve_page(staff):
    secret = enrolled("pi-asks")
    boss = staff("boss", role="admin")
    change = boss.get("/admin/taskpool/deviceuser/pi-asks/change/")
    assert change.context["can_approve"] is True
    assert "/admin/taskpool/deviceuser/pi-asks/approve/" in change.content.decode()
    page = boss.get("/admin/taskpool/deviceuser/pi-asks/approve/")
    assert page.status_code == 200
    assert "ab12" in page.content.decode()  # what the device said, to judge it by
    approved = boss.post("/admin/taskpool/deviceuser/pi-asks/approve/")
    assert approved.status_code == 302
    assert approved["Location"] == "/admin/taskpool/deviceuser/pi-asks/change/"
    said = [str(m) for m in boss.get(approved["Location"]).context["messages"]]
    # Ids are case-sensitive: the sentence starts with a word the admin may capitalise.
    assert said == ["Device pi-asks is approved: it collects its token at its next ask."]
    assert DeviceUser.objects.get(pk="pi-asks").validated is True
    assert boss.get("/admin/taskpool/deviceuser/pi-asks/change/").context["can_approve"] is False
    assert ask_token(APIClient(), "pi-asks", secret).status_code == 200


@pytest.mark.parametrize(
    ("who", "sentence"),
    [
        ({"role": "master"}, "the pool role admin"),
        ({"perms": ["view_deviceuser"]}, "the pool role admin"),
    ],
    ids=["master", "staff who may only view devices"],
)
def test_approving_is_refused_with_the_admin_page_that_says_why(staff, who, sentence):
    enrolled("pi-asks")
    client = staff("someone", **who)
    for method in (client.get, client.post):
        refused = method("/admin/taskpool/deviceuser/pi-asks/approve/")
        assert refused.status_code == 403
        html = refused.content.decode()
        assert sentence in html and 'class="breadcrumbs"' in html
    client.post(
        "/admin/taskpool/deviceuser/",
        {"action": "approve", "_selected_action": ["pi-asks"], "index": "0"},
    )
    assert DeviceUser.objects.get(pk="pi-asks").validated is False


def test_staff_with_the_change_permission_may_approve(staff):
    enrolled("pi-asks")
    changer = staff("changer", perms=["view_deviceuser", "change_deviceuser"])
    assert changer.post("/admin/taskpool/deviceuser/pi-asks/approve/").status_code == 302
    assert DeviceUser.objects.get(pk="pi-asks").validated is True


def test_the_admin_shows_how_long_each_request_has_waited(staff):
    enrolled("pi-asks")
    enrolled("pi-asked-earlier")
    DeviceUser.objects.filter(pk="pi-asked-earlier").update(
        enrolled_at=timezone.now() - timedelta(days=3, hours=1)
    )
    boss = staff("boss", role="admin")
    page = boss.get("/admin/taskpool/deviceuser/?enrollment=waiting")
    assert page.status_code == 200
    html = page.content.decode()
    assert "waiting for approval" in html
    assert re.search(r"asked <time [^>]*>3 d ago</time>", html)
    # The column sorts by when they asked (here the latest first, not the ids' order).
    page = boss.get("/admin/taskpool/deviceuser/?enrollment=waiting&o=-8")
    assert [device.id for device in page.context["cl"].result_list] == [
        "pi-asks",
        "pi-asked-earlier",
    ]


def test_the_refuse_action_deletes_only_requests_nobody_validated(staff, make_device):
    enrolled("pi-asks")
    make_device("pi-made", validated=False)  # staff made it: not a request
    approved_secret = enrolled("pi-approved")
    DeviceUser.objects.filter(pk="pi-approved").update(validated=True)
    tokened = enrolled("pi-tokened")
    DeviceUser.objects.get(pk="pi-tokened").revoke_tokens()  # staff issued it a token
    boss = staff("boss", role="admin")
    everyone = ["pi-asks", "pi-made", "pi-approved", "pi-tokened"]
    answer = boss.post(
        "/admin/taskpool/deviceuser/",
        {"action": "refuse", "_selected_action": everyone, "index": "0"},
        follow=True,
    )
    text = answer.content.decode()
    assert "1 enrollment request refused" in text
    assert "3 selected devices were not waiting for approval" in text
    assert sorted(DeviceUser.objects.values_list("pk", flat=True)) == sorted(everyone[1:])
    assert ask_token(APIClient(), "pi-approved", approved_secret).status_code == 200
    assert ask_token(APIClient(), "pi-tokened", tokened).status_code == 403
    assert LogEntry.objects.filter(object_id="pi-asks", action_flag=DELETION).exists()
    # Refused is not barred: the device (or another with its id) may ask again.
    assert enroll(APIClient(), {"device_id": "pi-asks"}).status_code == 202


def test_refusing_needs_the_right_to_delete_devices(staff):
    enrolled("pi-asks")
    master = staff("someone", role="master")
    master.post(
        "/admin/taskpool/deviceuser/",
        {"action": "refuse", "_selected_action": ["pi-asks"], "index": "0"},
    )
    assert DeviceUser.objects.filter(pk="pi-asks").exists()
    changer = staff("changer", perms=["view_deviceuser", "change_deviceuser"])
    page = changer.get("/admin/taskpool/deviceuser/")
    assert "refuse" not in dict(page.context["action_form"].fields["action"].choices)


def test_a_device_that_joined_and_was_invalidated_is_not_an_enrollment_request(staff):
    """Staff took it out after it joined: approving is not the word for letting it back in."""
    secret = enrolled("pi-joined")
    DeviceUser.objects.filter(pk="pi-joined").update(validated=True)
    assert ask_token(APIClient(), "pi-joined", secret).status_code == 200
    call_command("taskpool_device", "pi-joined", "--invalidate", stdout=io.StringIO())
    enrolled("pi-asks")
    boss = staff("boss", role="admin")
    waiting = boss.get("/admin/taskpool/deviceuser/?enrollment=waiting")
    assert [device.id for device in waiting.context["cl"].result_list] == ["pi-asks"]
    page = boss.get("/admin/taskpool/deviceuser/?enrollment=joined").content.decode()
    assert "token collected, invalidated" in page
    assert "waiting for approval" not in page
    approve = boss.get("/admin/taskpool/deviceuser/pi-joined/approve/").content.decode()
    assert "is not waiting for approval" in approve


def test_an_enrollments_meta_is_the_same_whatever_form_its_numbers_come_back_in():
    """PostgreSQL's jsonb gives 1e23 back as an integer; a retry sent 1e23 as a float."""
    from taskpool.enrollment import same_json

    assert same_json({"n": 100000000000000000000000, "l": [1, 0.5]}, {"n": 1e23, "l": [1.0, 0.5]})
    assert not same_json({"n": 1}, {"n": True})  # a boolean is not a number
    assert not same_json({"n": 1e23}, {"n": 1e22})
    assert not same_json({"n": [1, 2]}, {"n": [1]}) and not same_json({"a": 1}, {"b": 1})
    assert not same_json({"s": "1"}, {"s": 1})
