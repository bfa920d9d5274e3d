from tests.conftest import post_json


def test_task_is_pending_then_done(device_client, master_client, snapshot):
    task = post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "hello"})
    assert task.status_code == 201, task.json()
    pending = device_client.get("/pool/pending").json()
    assert [t["id"] for t in pending] == [task.json()["id"]]
    done = post_json(device_client, "/pool/response", {"parent_id": task.json()["id"], "status": "done"})
    assert done.status_code == 201, done.json()
    assert device_client.get("/pool/pending").json() == []
    before = snapshot()
    again = post_json(device_client, "/pool/response", {"parent_id": task.json()["id"], "status": "done"})
    assert again.status_code == 409
    assert snapshot() == before
