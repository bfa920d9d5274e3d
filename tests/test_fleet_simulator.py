"""The fleet simulator runs end to end: a small fleet against the demo site it serves.

Figures are not judged here (they belong to the benchmark's report); what is:
every task posted is answered as the master asked, through real sockets, and
nothing is counted as an error, also when requests are dropped on purpose.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.live import ROOT

pytestmark = pytest.mark.slow


def test_a_small_fleet_answers_every_task(tmp_path):
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "bench.fleet", "--serve", "--workers", "1",
        "--devices", "20", "--ramp", "1", "--duration", "3", "--rate", "10",
        "--heartbeat", "1", "--drain", "10", "--every", "1",
        "--fail-rate", "0.2", "--reject-rate", "0.2", "--drop-rate", "0.05",
        "--task-seconds", "0,0.2", "--json", str(report),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "polling" in done.stdout  # the live lines
    figures = json.loads(report.read_text())
    assert figures["tasks_posted"] > 0
    assert sum(figures["answered"].values()) >= figures["tasks_posted"]
    assert figures["unanswered"] == 0
    assert figures["errors"] == {}
    assert set(figures["answered"]) <= {"done", "failed", "rejected"}
    assert figures["latency_post_to_answer_stored"]["count"] >= figures["tasks_posted"]
    assert figures["requests_whole_run"]["heartbeat"] > 0
    assert "server_cpu_percent" in figures and "simulator_cpu_percent" in figures


@pytest.mark.django_db
def test_the_masters_token_outlasts_a_run_longer_than_the_sites_tokens():
    """A soak longer than the site's access tokens: its master must not stop posting halfway."""
    import time

    from rest_framework_simplejwt.tokens import AccessToken

    from bench.fleet import provision

    lasting = AccessToken(provision(2, seconds=7200)["master"])
    assert lasting["exp"] >= time.time() + 7200 - 60
    short = AccessToken(provision(2, seconds=10)["master"])
    assert short["exp"] < time.time() + 7200  # the site's own lifetime, when it is longer


def test_streams_broadcasts_and_offline_devices(tmp_path):
    """Every online device answers every broadcast once, through a poll or a resumed stream."""
    report = tmp_path / "report.json"
    command = [
        sys.executable, "-m", "bench.fleet", "--serve", "--workers", "1",
        "--devices", "20", "--ramp", "1", "--duration", "4", "--rate", "5",
        "--heartbeat", "1", "--drain", "45", "--every", "1",
        "--streams", "6", "--broadcast-every", "1", "--offline", "0.2",
        "--drop-rate", "0.2", "--task-seconds", "0,0.1", "--json", str(report),
    ]  # fmt: skip
    # The drain ends as soon as every broadcast is answered; its length is room for a device
    # whose requests were dropped several times in a row to back off and come back.
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(report.read_text())
    assert figures["offline_devices"] == 4
    assert figures["streaming_devices"] == 6
    assert figures["broadcasts_posted"] >= 3
    # Exactly once each: a stream resumed over an answered task does not answer it again.
    owed = figures["broadcasts_unanswered_by"]  # device -> broadcasts it did not answer
    assert figures["broadcast_answers"] == figures["broadcasts_posted"] * 16, owed
    assert figures["broadcast_answers_missing"] == 0
    assert figures["unanswered"] == 0
    assert figures["errors"] == {}


def test_the_share_of_offline_devices_is_checked():
    command = [sys.executable, "-m", "bench.fleet", "--serve", "--offline", "1"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "a share from 0 up to (not including) 1" in done.stderr


# A stream opened without Last-Event-ID starts at the pool's end: the simulated device must ask
# for what is already pending, as the agent does, or a task posted while it had no stream (before
# its first one, or after a drop that came before any event) is never answered.
_FRESH_STREAM = """
import asyncio, json, os, sys, tempfile
from pathlib import Path
from bench import fleet

async def follow_once(options, tokens):
    run = fleet.Run(options, tokens, None)
    await run.post_task([], "sim-00000")  # posted while the device has no stream
    device = fleet.Device(0, "sim-00000", tokens["devices"]["sim-00000"], run)
    following = asyncio.create_task(device.follow())
    for _ in range(100):
        if run.figures.finished:
            break
        await asyncio.sleep(0.1)
    run.stopping.set()
    following.cancel()
    return {"posted": run.figures.posted, "answered": len(run.figures.finished)}

with tempfile.TemporaryDirectory() as directory:
    os.environ["TASKPOOL_VAR_DIR"] = directory
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    tokens = fleet.provision(1, seconds=600)
    process, url = fleet.serve(Path(directory), 1)
    try:
        options = fleet.parser().parse_args(["--server", url, "--devices", "1", "--streams", "1"])
        print(json.dumps(asyncio.run(follow_once(options, tokens))))
    finally:
        fleet.stop_server(process)
"""


def test_a_streaming_device_answers_what_was_posted_before_its_stream_opened():
    done = subprocess.run(
        [sys.executable, "-c", _FRESH_STREAM], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.splitlines()[-1]) == {"posted": 1, "answered": 1}
