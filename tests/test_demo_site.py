"""The demo site as a new user meets it: migrate, demo_setup, uvicorn, and the printed curl
walk-through run as printed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import free_port

pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Variables of the test run that must not leak into the demo site.
FOREIGN = (
    "DJANGO_SETTINGS_MODULE",
    "DATABASE_URL",
    "TASKPOOL_DATA_DIR",
    "DJANGO_SECRET_KEY",
    "DJANGO_DEBUG",
)


@pytest.fixture
def site_env(tmp_path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    env["TASKPOOL_VAR_DIR"] = str(tmp_path / "var")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def wait_until_listening(
    server: subprocess.Popen, port: int, log: Path, deadline_seconds: float = 60
) -> None:
    """Return once the port accepts connections; fail if the server exits first."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited with {server.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listened on port {port} within {deadline_seconds} s")


@pytest.fixture
def server(site_env, tmp_path) -> Iterator[int]:
    """uvicorn serving the demo site on a free port (after migrate and demo_setup)."""
    port = free_port()
    manage(site_env, "migrate", "--noinput")
    manage(site_env, "demo_setup", "--url", f"http://127.0.0.1:{port}")
    log = tmp_path / "uvicorn.log"
    with open(log, "wb") as output:  # the server keeps its own descriptor
        process = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "project.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPOSITORY,
            env=site_env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_listening(process, port, log)
        yield port
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def walkthrough(var_dir: Path) -> str:
    """Everything from the line starting with ``# 1.`` in var/demo-login.txt."""
    text = (var_dir / "demo-login.txt").read_text()
    lines = text.splitlines(keepends=True)
    (start,) = [number for number, line in enumerate(lines) if line.startswith("# 1.")]
    return "".join(lines[start:])


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="the walk-through needs curl, which is not installed"
)
def test_the_printed_curl_walkthrough_works_as_printed(server, site_env, tmp_path):
    var_dir = tmp_path / "var"
    script = walkthrough(var_dir)
    assert f"http://127.0.0.1:{server}/pool/task" in script

    done = subprocess.run(
        ["bash"],
        input=script,
        cwd=tmp_path,
        env=site_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    output = done.stdout.splitlines()
    assert len(output) == 4, done.stdout

    posted = re.fullmatch(r"posted (msg_[0-9a-f]{32})", output[0])
    assert posted, output[0]
    task_id = posted.group(1)

    pending = json.loads(output[1])
    assert [task["id"] for task in pending] == [task_id]
    assert pending[0]["to"] == "device:demo-pi"

    response = json.loads(output[2])
    assert response["parent_id"] == task_id
    assert response["meta"]["status"] == "done"
    assert response["from"] == "device:demo-pi"

    log = json.loads(output[3])
    assert [m["id"] for m in log] == [task_id, response["id"]]
    assert log[1]["meta"]["status"] == "done"

    # The day file holds the same two lines.
    (day_file,) = (var_dir / "pool").glob("*.jsonl")
    stored = [json.loads(line) for line in day_file.read_text().splitlines()]
    assert stored == log


def test_demo_setup_runs_once(site_env, tmp_path):
    manage(site_env, "migrate", "--noinput")
    first = manage(site_env, "demo_setup", "--url", "http://127.0.0.1:8123")
    notes = tmp_path / "var" / "demo-login.txt"
    assert "# 1." in first and notes.exists()
    assert oct(notes.stat().st_mode & 0o777) == "0o600"
    written = notes.read_bytes()
    again = manage(site_env, "demo_setup", "--url", "http://127.0.0.1:8123")
    assert "demo-login.txt" in again and "# 1." not in again
    assert notes.read_bytes() == written
