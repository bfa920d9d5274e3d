"""Task lifecycle through the HTTP API: task detail and list, cancel, expiry,
any-one claims, Idempotency-Key. Every refusal is checked to append nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from tests.conftest import client_with, post_json

pytestmark = pytest.mark.every_store

MISSING = "msg_" + "f" * 32


@pytest.fixture
def devices(make_device):
    """Validated a, b (clients) and an unvalidated c."""
    a = client_with(make_device("a")[1])
    b = client_with(make_device("b")[1])
    make_device("c", validated=False)
    return a, b


def post_task(client, **data):
    data.setdefault("title", "job")
    response = post_json(client, "/pool/task", data)
    assert response.status_code == 201, response.json()
    return response.json()


def answer(client, task_id, status="done", **extra):
    return post_json(client, "/pool/response", {"parent_id": task_id, "status": status}, **extra)


# Task detail ------------------------------------------------------------------


def test_task_detail_for_master_and_addressed_device(master_client, devices):
    a, b = devices
    task = post_task(master_client, to="device:[a,b]")
    assert answer(a, task["id"], "progress").status_code == 201
    assert answer(b, task["id"], "failed", body="disk full").status_code == 201
    detail = master_client.get(f"/pool/tasks/{task['id']}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["task"] == task
    assert [(r["from"], r["meta"]["status"]) for r in body["responses"]] == [
        ("device:a", "progress"),
        ("device:b", "failed"),
    ]
    assert [(e["device"], e["status"]) for e in body["executions"]] == [
        ("a", "progress"),
        ("b", "failed"),
    ]
    assert all(e["updated"].endswith("Z") for e in body["executions"])
    assert body["claimed_by"] is None
    # A device reads its own part: not what another device answered, nor who else is asked.
    assert b.get(f"/pool/tasks/{task['id']}").json() == {
        **body,
        "responses": [body["responses"][1]],
        "executions": [body["executions"][1]],
    }
    master_client.post(f"/pool/tasks/{task['id']}/cancel", {"reason": "enough"}, format="json")
    seen_by_a = a.get(f"/pool/tasks/{task['id']}").json()
    assert [(r["from"], r["meta"]["status"]) for r in seen_by_a["responses"]] == [
        ("device:a", "progress"),
        ("user:master", "cancelled"),
    ]
    assert [e["device"] for e in seen_by_a["executions"]] == ["a"]


def test_a_broadcasts_detail_names_no_other_device_to_a_device(master_client, devices):
    a, b = devices
    task = post_task(master_client, to="device:*")
    assert answer(b, task["id"], "done", body="wifi_psk=hunter2").status_code == 201
    seen = a.get(f"/pool/tasks/{task['id']}").json()
    assert seen["responses"] == []
    assert [(e["device"], e["status"]) for e in seen["executions"]] == [("a", "pending")]


def test_task_detail_refusals(master_client, devices, make_device, make_user):
    a, b = devices
    task = post_task(master_client, to="device:a")
    assert b.get(f"/pool/tasks/{task['id']}").status_code == 403
    assert master_client.get(f"/pool/tasks/{MISSING}").status_code == 404
    assert (
        client_with(make_user("viewer", role="user")[1])
        .get(f"/pool/tasks/{task['id']}")
        .status_code
        == 403
    )
    unvalidated = client_with(make_device("c", validated=False)[1])
    assert unvalidated.get(f"/pool/tasks/{task['id']}").status_code == 403
    assert client_with(None).get(f"/pool/tasks/{task['id']}").status_code == 401


def test_broadcast_detail_lists_validated_devices_and_those_that_answered(master_client, devices):
    a, _b = devices
    task = post_task(master_client, to="device:*")
    answer(a, task["id"])
    executions = master_client.get(f"/pool/tasks/{task['id']}").json()["executions"]
    assert {e["device"]: e["status"] for e in executions} == {"a": "done", "b": "pending"}


# Task list --------------------------------------------------------------------


def test_task_list_newest_first_filtered_and_paged(master_client, devices, make_user):
    a, _b = devices
    first = post_task(master_client, to="device:a", title="update firmware")
    second = post_task(master_client, to="device:b", title="reboot")
    third = post_task(master_client, to="device:[a,b]", title="collect logs")
    answer(a, first["id"], "failed")

    listed = master_client.get("/pool/tasks").json()
    assert [row["task"]["id"] for row in listed["results"]] == [
        third["id"],
        second["id"],
        first["id"],
    ]
    assert listed["results"][2]["statuses"] == ["failed"]
    assert listed["has_more"] is False

    page = master_client.get("/pool/tasks", {"limit": 2}).json()
    assert [row["task"]["id"] for row in page["results"]] == [third["id"], second["id"]]
    assert page["has_more"] is True
    rest = master_client.get("/pool/tasks", {"limit": 2, "before": page["next_cursor"]}).json()
    assert [row["task"]["id"] for row in rest["results"]] == [first["id"]]

    def ids(**params):
        response = master_client.get("/pool/tasks", params)
        assert response.status_code == 200, response.json()
        return [row["task"]["id"] for row in response.json()["results"]]

    assert ids(status="failed") == [first["id"]]
    assert ids(status="pending") == [third["id"], second["id"]]
    assert ids(to="device:a") == [third["id"], first["id"]]
    assert ids(q="FIRMWARE") == [first["id"]]
    assert ids(**{"from": "user:master"}) == [third["id"], second["id"], first["id"]]
    assert ids(**{"from": "user:someone-else"}) == []
    assert ids(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []


@pytest.mark.parametrize(
    "params, field",
    [
        ({"status": "finished"}, "status"),
        ({"to": "robot:1"}, "to"),
        ({"since": "yesterday"}, "since"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1e3"}, "limit"),
        ({"before": "not-a-cursor"}, "before"),
    ],
)
def test_task_list_bad_parameters(master_client, params, field):
    response = master_client.get("/pool/tasks", params)
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_task_list_is_for_masters(devices, make_user):
    a, _b = devices
    assert a.get("/pool/tasks").status_code == 403
    assert client_with(make_user("viewer", role="user")[1]).get("/pool/tasks").status_code == 403


# Cancel ---------------------------------------------------------------------------


def test_cancel_then_answers_and_second_cancel_get_409(master_client, devices, snapshot):
    a, b = devices
    task = post_task(master_client, to="device:[a,b]")
    cancelled = post_json(
        master_client, f"/pool/tasks/{task['id']}/cancel", {"reason": "wrong batch"}
    )
    assert cancelled.status_code == 201
    assert cancelled.json()["meta"]["status"] == "cancelled"
    assert cancelled.json()["body"] == "wrong batch"
    assert a.get("/pool/pending").json() == [] and b.get("/pool/pending").json() == []
    before = snapshot()
    assert answer(a, task["id"]).status_code == 409
    again = post_json(master_client, f"/pool/tasks/{task['id']}/cancel", {})
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]
    assert snapshot() == before
    statuses = {
        e["status"] for e in master_client.get(f"/pool/tasks/{task['id']}").json()["executions"]
    }
    assert statuses == {"cancelled"}


@pytest.mark.parametrize(
    "body, status",
    [
        ({"reason": 5}, 400),
        ({"why": "x"}, 400),
        (b"{not json", 400),
    ],
)
def test_cancel_bad_bodies(master_client, devices, snapshot, body, status):
    task = post_task(master_client, to="device:a")
    before = snapshot()
    assert post_json(master_client, f"/pool/tasks/{task['id']}/cancel", body).status_code == status
    assert snapshot() == before


def test_cancel_refusals(master_client, devices, make_user, snapshot):
    a, _b = devices
    task = post_task(master_client, to="device:a")
    before = snapshot()
    assert post_json(master_client, f"/pool/tasks/{MISSING}/cancel", {}).status_code == 404
    assert post_json(a, f"/pool/tasks/{task['id']}/cancel", {}).status_code == 403
    viewer = client_with(make_user("viewer", role="user")[1])
    assert post_json(viewer, f"/pool/tasks/{task['id']}/cancel", {}).status_code == 403
    assert snapshot() == before


# Expiry and rejected ----------------------------------------------------------------


def test_ttl_and_expires_at_are_written_as_meta_expires_at(master_client, devices, store):
    with_ttl = post_task(master_client, to="device:a", ttl=600)
    assert with_ttl["meta"]["expires_at"] > with_ttl["ts"]
    in_an_hour = datetime.fromtimestamp(store.now() + 3600, UTC).replace(microsecond=0)
    at = post_task(master_client, to="device:a", expires_at=in_an_hour.isoformat())
    assert at["meta"]["expires_at"] == in_an_hour.strftime("%Y-%m-%dT%H:%M:%SZ")
    paris = in_an_hour.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert post_task(master_client, to="device:a", expires_at=paris)["meta"] == {**at["meta"]}


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"ttl": "60"}, "ttl"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": 1.5}, "ttl"),
        ({"ttl": 10**9}, "ttl"),
        ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"expires_at": "tomorrow"}, "expires_at"),
        ({"expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"expires_at": 1893456000}, "expires_at"),
        ({"mode": "all"}, "mode"),
        ({"mode": 1}, "mode"),
        ({"meta": {"mode": "any"}}, "meta"),
    ],
)
def test_bad_expiry_and_mode_get_400(master_client, devices, snapshot, extra, field):
    before = snapshot()
    response = post_json(master_client, "/pool/task", {"to": "device:a", "title": "x", **extra})
    assert response.status_code == 400, response.json()
    assert field in response.json()["errors"]
    assert snapshot() == before


def test_expired_task_leaves_pending_and_answers_get_409(master_client, devices, store, snapshot):
    a, _b = devices
    task = post_task(master_client, to="device:a", ttl=30)
    assert [t["id"] for t in a.get("/pool/pending").json()] == [task["id"]]
    real_clock = store._clock
    store._clock = lambda: real_clock() + 31
    assert a.get("/pool/pending").json() == []
    before = snapshot()
    refused = answer(a, task["id"])
    assert refused.status_code == 409 and "expired" in refused.json()["detail"]
    assert snapshot() == before
    executions = master_client.get(f"/pool/tasks/{task['id']}").json()["executions"]
    assert executions[0]["status"] == "expired"


def test_rejected_through_the_api(master_client, devices):
    a, b = devices
    task = post_task(master_client, to="device:*")
    assert answer(a, task["id"], "rejected").status_code == 201
    assert a.get("/pool/pending").json() == []
    assert [t["id"] for t in b.get("/pool/pending").json()] == [task["id"]]
    assert answer(a, task["id"], "done").status_code == 409


# Claims ---------------------------------------------------------------------------------


def test_claim_flow(master_client, devices, snapshot):
    a, b = devices
    assert post_json(a, "/pool/claim", {}).status_code == 204
    task = post_task(master_client, to="device:[a,b]", mode="any")
    assert task["meta"]["mode"] == "any"
    claimed = post_json(a, "/pool/claim", {})
    assert claimed.status_code == 201
    assert claimed.json()["task"] == task
    assert claimed.json()["claim"]["meta"]["status"] == "claimed"
    assert b.get("/pool/pending").json() == []
    before = snapshot()
    held = post_json(b, "/pool/claim", {"parent_id": task["id"]})
    assert held.status_code == 409 and "held by device a" in held.json()["detail"]
    assert answer(b, task["id"], "progress").status_code == 409
    repeat = post_json(a, "/pool/claim", {"parent_id": task["id"]})
    assert repeat.status_code == 200 and repeat.json()["claim"] == claimed.json()["claim"]
    assert snapshot() == before
    assert master_client.get(f"/pool/tasks/{task['id']}").json()["claimed_by"] == "a"


def test_claim_refusals(master_client, devices, snapshot):
    a, b = devices
    plain = post_task(master_client, to="device:a")
    only_a = post_task(master_client, to="device:a", mode="any")
    before = snapshot()
    assert post_json(a, "/pool/claim", {"parent_id": plain["id"]}).status_code == 400
    assert post_json(a, "/pool/claim", {"parent_id": MISSING}).status_code == 404
    assert post_json(b, "/pool/claim", {"parent_id": only_a["id"]}).status_code == 403
    assert post_json(a, "/pool/claim", {"parent_id": 5}).status_code == 400
    assert post_json(a, "/pool/claim", {"task": only_a["id"]}).status_code == 400
    assert post_json(master_client, "/pool/claim", {}).status_code == 403
    assert snapshot() == before


# Idempotency-Key ----------------------------------------------------------------------------


def test_idempotent_task_response_claim_and_cancel(master_client, devices, snapshot):
    a, _b = devices
    key = {"HTTP_IDEMPOTENCY_KEY": "create-1"}
    first = post_json(
        master_client, "/pool/task", {"to": "device:[a,b]", "title": "x", "mode": "any"}, **key
    )
    again = post_json(
        master_client, "/pool/task", {"to": "device:[a,b]", "title": "x", "mode": "any"}, **key
    )
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == first.json()
    task_id = first.json()["id"]

    claim = post_json(a, "/pool/claim", {}, HTTP_IDEMPOTENCY_KEY="claim-1")
    claim_again = post_json(a, "/pool/claim", {}, HTTP_IDEMPOTENCY_KEY="claim-1")
    assert (claim.status_code, claim_again.status_code) == (201, 200)
    assert claim_again.json() == claim.json()

    done = answer(a, task_id, HTTP_IDEMPOTENCY_KEY="done-1")
    done_again = answer(a, task_id, HTTP_IDEMPOTENCY_KEY="done-1")
    assert (done.status_code, done_again.status_code) == (201, 200)
    assert done_again.json() == done.json()

    other = post_task(master_client, to="device:b")
    cancel = post_json(
        master_client, f"/pool/tasks/{other['id']}/cancel", {}, HTTP_IDEMPOTENCY_KEY="c"
    )
    cancel_again = post_json(
        master_client, f"/pool/tasks/{other['id']}/cancel", {}, HTTP_IDEMPOTENCY_KEY="c"
    )
    assert (cancel.status_code, cancel_again.status_code) == (201, 200)

    before = snapshot()
    conflict = post_json(master_client, "/pool/task", {"to": "device:a", "title": "other"}, **key)
    assert conflict.status_code == 422
    assert answer(a, task_id, "failed", HTTP_IDEMPOTENCY_KEY="done-1").status_code == 422
    assert snapshot() == before


@pytest.mark.parametrize("joined", ["a,b", "a, b", "create-1,create-1"])
def test_an_idempotency_key_sent_twice_is_400_and_stores_nothing(
    master_client, devices, snapshot, joined
):
    """A server gives a header sent twice to Django joined with a comma: not one key "a,b"."""
    a, _b = devices
    task = post_task(master_client, to="device:a")
    before = snapshot()
    for client, path, body in [
        (master_client, "/pool/task", {"to": "device:a", "title": "x"}),
        (a, "/pool/response", {"parent_id": task["id"], "status": "done"}),
        (a, "/pool/claim", {}),
        (master_client, f"/pool/tasks/{task['id']}/cancel", {}),
    ]:
        response = post_json(client, path, body, HTTP_IDEMPOTENCY_KEY=joined)
        assert response.status_code == 400, (path, response.json())
        assert response["Content-Type"] == "application/json"
        assert response.json()["errors"]["Idempotency-Key"][0].startswith("Given more than once")
    assert snapshot() == before


@pytest.mark.parametrize("key", ["", "x" * 129, "has space", "caf\u00e9", "tab\tkey"])
def test_bad_idempotency_keys_get_400(master_client, devices, snapshot, key):
    before = snapshot()
    response = post_json(
        master_client, "/pool/task", {"to": "device:a", "title": "x"}, HTTP_IDEMPOTENCY_KEY=key
    )
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["errors"]
    assert snapshot() == before
