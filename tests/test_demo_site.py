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
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port, manage_py

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


@dataclass(frozen=True)
class Site:
    """The demo site under test: where it listens and where its var/ is."""

    port: int
    var_dir: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def manage(env: dict[str, str], *args: str) -> str:
    done = manage_py(*args, env=env)
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


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    """The demo site set up as ``make run`` does, served by uvicorn on a free port."""
    root = tmp_path_factory.mktemp("demo")
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    env["TASKPOOL_VAR_DIR"] = str(root / "var")
    site = Site(free_port(), root / "var", env)
    manage(env, "migrate", "--noinput")
    manage(env, "demo_setup", "--url", site.url)
    log = root / "uvicorn.log"
    with open(log, "wb") as output:  # the server keeps its own descriptor
        process = subprocess.Popen(
            [
                str(BIN / "uvicorn"),
                "project.asgi:application",
                "--host",
                "127.0.0.1",
                "--port",
                str(site.port),
            ],
            cwd=REPOSITORY,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until_listening(process, site.port, log)
        yield site
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def fetch(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str, bytes]:
    """Status, content type and body of one request, error statuses included."""
    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    opener = urllib.request.build_opener(NoRedirects)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


class NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer to check, not to follow


def walkthrough(var_dir: Path) -> str:
    """Everything from the line starting with ``# 1.`` in var/demo-login.txt."""
    text = (var_dir / "demo-login.txt").read_text()
    lines = text.splitlines(keepends=True)
    (start,) = [number for number, line in enumerate(lines) if line.startswith("# 1.")]
    return "".join(lines[start:])


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="the walk-through needs curl, which is not installed"
)
def test_the_printed_curl_walkthrough_works_as_printed(site, tmp_path):
    var_dir = site.var_dir
    script = walkthrough(var_dir)
    assert f"{site.url}/pool/task" in script

    done = subprocess.run(
        ["bash"],
        input=script,
        cwd=tmp_path,
        env=site.env,
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


def test_demo_setup_runs_once(site):
    notes = site.var_dir / "demo-login.txt"
    assert oct(notes.stat().st_mode & 0o777) == "0o600"
    # The database, the pool and the key are in it: read by its owner alone.
    assert oct(site.var_dir.stat().st_mode & 0o777) == "0o700"
    written = notes.read_bytes()
    again = manage(site.env, "demo_setup", "--url", site.url)
    assert "demo-login.txt" in again and "# 1." not in again
    assert notes.read_bytes() == written


def test_a_var_directory_made_before_is_made_its_owners_alone(tmp_path):
    var = tmp_path / "var"
    var.mkdir(mode=0o755)
    var.chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in FOREIGN}
    manage({**env, "TASKPOOL_VAR_DIR": str(var)}, "check")
    assert oct(var.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/pool/pending/"),
        ("POST", "/pool/task/"),
        ("GET", "/pool/nothing"),
        ("POST", "/pool/response/"),
    ],
)
def test_the_served_site_answers_a_wrong_path_with_a_json_404(site, method, path):
    status, content_type, body = fetch(site.url + path, method, b"{}" if method == "POST" else None)
    assert (status, content_type) == (404, "application/json")
    assert json.loads(body) == {"detail": "Not found."}


def test_the_served_site_has_its_schema_and_docs(site):
    status, _, body = fetch(site.url + "/pool/schema")
    assert status == 200 and body.startswith(b"openapi: 3.")
    status, content_type, _ = fetch(site.url + "/pool/docs")
    assert status == 200 and content_type.startswith("text/html")
    status, _, body = fetch(site.url + "/pool/pending")
    assert status == 401 and json.loads(body)["detail"]


def test_another_address_rewrites_the_demo_login_file(site):
    notes = site.var_dir / "demo-login.txt"
    first = notes.read_text()
    elsewhere = f"http://127.0.0.1:{free_port()}"
    try:
        said = manage(site.env, "demo_setup", "--url", elsewhere)
        text = notes.read_text()
        assert elsewhere in said and str(notes) in said
        assert site.url not in text and f"{elsewhere}/pool/task" in text
        assert oct(notes.stat().st_mode & 0o777) == "0o600"
        # The same logins: only the address changed.
        assert text == first.replace(site.url, elsewhere)
    finally:
        manage(site.env, "demo_setup", "--url", site.url)
    assert notes.read_text() == first


def test_a_demo_token_that_no_longer_works_is_replaced(site):
    notes = site.var_dir / "demo-login.txt"
    first = notes.read_text()
    old_token = re.search(r"\n(eyJ\S+)\n", first).group(1)
    manage(site.env, "taskpool_device", "demo-pi", "--token")  # revokes the demo's token
    manage(site.env, "demo_setup", "--url", site.url)
    new_token = re.search(r"\n(eyJ\S+)\n", notes.read_text()).group(1)
    assert new_token != old_token
    status, _, _ = fetch_with(site.url + "/pool/pending", new_token)
    assert status == 200


def fetch_with(url: str, token: str) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="the walk-through needs curl, which is not installed"
)
def test_the_walkthrough_says_what_went_wrong_when_nothing_answers(site, tmp_path):
    nowhere = f"http://127.0.0.1:{free_port()}"
    script = walkthrough(site.var_dir).replace(site.url, nowhere)
    done = subprocess.run(
        ["bash"],
        input=script,
        cwd=tmp_path,
        env=site.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr and "JSONDecodeError" not in done.stderr
    assert f"No answer from {nowhere}" in done.stderr, done.stderr


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="the walk-through needs curl, which is not installed"
)
def test_the_walkthrough_says_what_went_wrong_when_the_login_fails(site, tmp_path):
    script = re.sub(r'"password": "[^"]*"', '"password": "wrong"', walkthrough(site.var_dir))
    done = subprocess.run(
        ["bash"],
        input=script,
        cwd=tmp_path,
        env=site.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in done.stderr
    assert "No active account found with the given credentials" in done.stderr, done.stderr


@pytest.mark.skipif(
    shutil.which("curl") is None, reason="the walk-through needs curl, which is not installed"
)
def test_served_on_every_address_the_walkthrough_names_one_the_site_answers(site, tmp_path):
    # `make run HOST=0.0.0.0` asks for the walk-through at http://0.0.0.0:PORT, a Host that
    # ALLOWED_HOSTS refuses: every step of it was Django's 400.
    notes = site.var_dir / "demo-login.txt"
    first = notes.read_text()
    try:
        said = manage(site.env, "demo_setup", "--url", f"http://0.0.0.0:{site.port}")
        text = notes.read_text()
        assert "0.0.0.0" not in text and f"{site.url}/pool/task" in text
        assert site.url in said
        done = subprocess.run(
            ["bash"],
            input=walkthrough(site.var_dir),
            cwd=tmp_path,
            env=site.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[2])["meta"]["status"] == "done"
    finally:
        manage(site.env, "demo_setup", "--url", site.url)
    assert notes.read_text() == first
