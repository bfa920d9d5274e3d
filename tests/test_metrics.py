"""``GET /pool/metrics``: Prometheus's text format for admins and the metrics token; the
figures move with the requests, and several worker processes add up."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from taskpool.realtime.longpoll import wait_for_pending_in_thread
from tests.conftest import client_with, post_json
from tests.live import LivePool, start_uvicorn

pytestmark = pytest.mark.every_store

METRICS_TOKEN = "scrape-me-0123456789abcdef"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def scrape(client) -> dict:
    response = client.get("/pool/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def test_admins_read_the_metrics_and_others_are_refused(
    admin_client_api, master_client, device_client, client
):
    assert admin_client_api.get("/pool/metrics").status_code == 200
    anonymous = client_with(None).get("/pool/metrics")
    assert anonymous.status_code == 401
    assert anonymous.has_header("WWW-Authenticate")
    assert master_client.get("/pool/metrics").status_code == 403
    assert device_client.get("/pool/metrics").status_code == 403
    assert client_with("not-a-token").get("/pool/metrics").status_code == 401


def test_an_admins_session_reads_the_metrics(make_user, client):
    user, _token = make_user("boss", role="admin")
    client.force_login(user)
    assert client.get("/pool/metrics").status_code == 200


def test_the_metrics_token_reads_the_metrics_and_nothing_else(settings, db):
    settings.TASKPOOL = {**settings.TASKPOOL, "METRICS_TOKEN": METRICS_TOKEN}
    scraper = client_with(METRICS_TOKEN)
    assert scraper.get("/pool/metrics").status_code == 200
    assert scraper.get("/pool/log").status_code in (401, 403)
    assert client_with(METRICS_TOKEN + "x").get("/pool/metrics").status_code == 401
    assert client_with(METRICS_TOKEN[:-1]).get("/pool/metrics").status_code == 401


def test_the_metrics_move_with_requests(admin_client_api, master_client, device_client, store_kind):
    before = scrape(admin_client_api)
    task = post_json(master_client, "/pool/task", {"to": "device:pi-1", "title": "t"})
    assert task.status_code == 201
    assert device_client.get("/pool/pending").status_code == 200
    assert post_json(device_client, "/pool/heartbeat", {}).status_code == 201
    after = scrape(admin_client_api)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("taskpool_requests_total", endpoint="task", method="POST", status="201") == 1
    assert moved("taskpool_requests_total", endpoint="pending", method="GET", status="200") == 1
    assert moved("taskpool_requests_total", endpoint="metrics", method="GET", status="200") == 1
    assert moved("taskpool_messages_appended_total", type="task") == 1
    assert moved("taskpool_messages_appended_total", type="heartbeat") == 1
    assert moved("taskpool_append_seconds_count", type="task") == 1
    # The task was decided; the heartbeat, which reads nothing of the pool, decided nothing.
    assert moved("taskpool_decision_seconds_count") == 1
    assert moved("taskpool_append_seconds_count", type="heartbeat") == 1
    assert value(after, "taskpool_tasks_pending") == 1
    assert value(after, "taskpool_devices") == 1
    assert value(after, "taskpool_devices_online") == 1
    day_files = ("taskpool_data_dir_free_bytes", frozenset()) in after
    assert day_files == (store_kind == "jsonl")
    if day_files:
        assert value(after, "taskpool_data_dir_free_bytes") > 0
        assert ("taskpool_index_lag_bytes", frozenset()) in after


def test_the_job_tickers_looks_that_write_nothing_are_no_decisions(
    admin_client_api, master_client, make_device
):
    """The ticker looks at every open job every second: counted, they were most of the
    figure, and a slow answer hardly moved it."""
    from taskpool.ticker import tick

    make_device("pi-1")
    job = {"to": "device:pi-1", "title": "t", "timeout": {"in_progress": 600}}
    assert post_json(master_client, "/pool/task", job).status_code == 201
    before = scrape(admin_client_api)
    for _ in range(5):
        assert tick() == []  # nothing due: five looks at the open job
    after = scrape(admin_client_api)
    count = ("taskpool_decision_seconds_count", frozenset())
    assert after[count] == before[count]


@pytest.mark.day_files_only
def test_index_lag_counts_what_the_index_has_not_read(admin_client_api, store, pool_dir):
    store.pending_for("pi-1")
    (pool_dir / "2020-01-01.jsonl").write_bytes(b"{}\n")  # outside the horizon: not counted
    line = b'{"not": "read yet"}\n'
    name = time.strftime("%Y-%m-%d.jsonl", time.gmtime(store.now()))
    with open(pool_dir / name, "ab") as file:
        file.write(line)
    assert store.figures().index_lag_bytes == len(line)
    assert store.figures().index_lag_bytes == 0  # asking caught up


@pytest.mark.day_files_only
def test_waiting_long_polls_are_counted_while_they_wait(admin_client_api, store):
    answered = []
    waiter = threading.Thread(
        target=lambda: answered.append(
            wait_for_pending_in_thread(store, "pi-1", limit=10, seconds=10)
        )
    )
    waiter.start()
    deadline = time.monotonic() + 10
    while value(scrape(admin_client_api), "taskpool_waiting_requests", kind="long_poll") != 1:
        assert time.monotonic() < deadline, "the long-poll was never counted"
        time.sleep(0.05)
    store.post_task(sender="backend", to="device:pi-1", title="wake")
    waiter.join(15)
    assert answered and answered[0][0]["title"] == "wake"
    assert value(scrape(admin_client_api), "taskpool_waiting_requests", kind="long_poll") == 0


def test_a_worker_that_ended_while_requests_waited_leaves_no_waiting_count(
    admin_client_api, tmp_path, monkeypatch
):
    directory = tmp_path / "prometheus"
    directory.mkdir()
    # A worker killed with two long-polls waiting: they are never counted down.
    worker = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os\n"
            "from taskpool import metrics\n"
            "metrics.WAITING.labels('long_poll').inc(2)\n"
            "metrics.count_request('pending', 'GET', 200)\n"
            "os._exit(0)\n",
        ],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)},
        check=True,
    )
    assert worker.returncode == 0
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    found = scrape(admin_client_api)
    assert value(found, "taskpool_waiting_requests", kind="long_poll") == 0
    # What it answered still counts: totals never go back.
    assert (
        value(found, "taskpool_requests_total", endpoint="pending", method="GET", status="200") == 1
    )


# Two worker processes ---------------------------------------------------------------------


def worker_values(directory: Path) -> dict[str, float]:
    """Each worker's own count of heartbeats answered, read from its own files alone."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.multiprocess import MultiProcessCollector

    counts = {}
    for path in directory.glob("counter_*.db"):
        alone = directory.parent / f"alone-{path.stem}"
        alone.mkdir()
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(alone))
        counts[path.stem] = sum(
            sample.value
            for family in registry.collect()
            for sample in family.samples
            if sample.name == "taskpool_requests_total" and sample.labels["endpoint"] == "heartbeat"
        )
        shutil.rmtree(alone)
    return {pid: count for pid, count in counts.items() if count}


@pytest.mark.slow
@pytest.mark.day_files_only
def test_two_worker_processes_add_up(tmp_path):
    pool = LivePool(tmp_path / "live")
    pool.provision()
    directory = tmp_path / "prometheus"
    directory.mkdir()
    environment = {**pool.environment(), "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    url, server = start_uvicorn("project.asgi:application", environment, workers=2)
    try:
        before = samples(httpx.get(f"{url}/pool/metrics", headers=pool.bearer("boss")).text)
        for kind in ("long_poll", "stream"):
            # Shown at 0 before anything waited, so dashboards have a series from the start.
            assert before[("taskpool_waiting_requests", frozenset({("kind", kind)}))] == 0
        sent = 0
        deadline = time.monotonic() + 60
        # A new connection each time, so that the kernel hands them to either worker.
        while len(worker_values(directory)) < 2 or sent < 20:
            assert time.monotonic() < deadline, f"one worker took all {sent} requests"
            answer = httpx.post(f"{url}/pool/heartbeat", json={}, headers=pool.bearer("pi-1"))
            assert answer.status_code == 201
            sent += 1
        per_worker = worker_values(directory)
        text = httpx.get(f"{url}/pool/metrics", headers=pool.bearer("boss")).text
        found = samples(text)
        total = value(
            found, "taskpool_requests_total", endpoint="heartbeat", method="POST", status="201"
        )
        assert total == sent == sum(per_worker.values())
        assert len(per_worker) == 2 and all(count < sent for count in per_worker.values())
        assert value(found, "taskpool_messages_appended_total", type="heartbeat") == sent
    finally:
        server.terminate()
        server.wait(timeout=15)
        pool.stop()


def test_prometheus_multiproc_dir_is_not_set_for_in_process_tests():
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
