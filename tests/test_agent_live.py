"""The device agent, as a real process, against the demo site served by uvicorn.

Each test runs ``python -m taskpool_agent`` (what the ``taskpool-agent`` command
runs) with short intervals, as one device of the pool, with handlers that are
small shell scripts; it posts tasks as a master and reads what the device
answered through the API.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socketserver
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from taskpool_agent import __version__
from taskpool_agent import agent as agent_module
from taskpool_agent.agent import Agent, Options
from taskpool_agent.cli import parser
from taskpool_agent.clock import boot_id
from taskpool_agent.config import DEFAULT_PATH, Config, load
from taskpool_agent.journal import Journal, attempt_key
from taskpool_agent.runner import HandlerProcess
from tests.live import ROOT, LivePool
from tests.support import free_port

pytestmark = pytest.mark.slow

HANDLERS = {
    "hello": 'echo "hello $*"; head -c 60 ; echo',
    "fail": 'i=0; while [ $i -lt 60 ]; do echo "noise line $i ................"; i=$((i+1)); done; echo "the last line"; exit 3',
    "refuse": 'echo "not for me" >&2; exit 65',
    # Starts a child that would outlive it, and notes both pids (in the file named by $1).
    "sleepy": 'sleep 60 & echo "$$ $!" > "$1"; wait',
    # The second line comes past the one-a-second limit, and well before the end.
    "report": 'echo "progress: half way"; sleep 1.3; echo "progress: nearly"; sleep 1; echo end',
    # Fails its first run and succeeds at its second (runs noted in $1).
    "flaky": 'echo run >> "$1"; [ "$(wc -l < "$1")" -ge 2 ] || exit 3; echo fine',
    # Asks for more time for its next step, reports it, then takes a while.
    "stepper": 'echo "step-timeout: 30"; echo "progress: flashing"; sleep 1.5; echo flashed',
    # Notes each run (in $1), then takes its time.
    "slow": 'echo run >> "$1"; sleep "${2:-3}"; echo slept',
    # Uses its working directory as its own: empties it, and writes files named as the
    # agent's own; notes its run (in $1), then takes its time and fails.
    "tidy": 'rm -rf ./* ./.[!.]*; echo 0 > status; echo mine > output; echo run >> "$1"; sleep "${2:-3}"; echo tidied; exit 3',
    # Notes its run (in $1), then waits until the file named by $2 is there.
    "gated": 'echo run >> "$1"; while [ ! -e "$2" ]; do sleep 0.1; done; echo slept',
    # Notes its run (in $1), then reports progress for a few seconds.
    "ticker": 'echo run >> "$1"; i=0; while [ $i -lt 15 ]; do echo "progress: step $i"; i=$((i+1)); sleep 0.3; done; echo ticked',
    # Much more output than an answer carries.
    "chatty": "head -c 200000 /dev/zero | tr '\\0' z; echo; echo done",
    # Prints until the disk its output is on is full.
    "flood": 'yes "flooding the disk"',
    # A NUL in its output, which the server refuses in an answer's text.
    "nul": "printf 'a\\000b\\n'",
    # Bytes that are not UTF-8, then text.
    "latin": "printf '\\377\\376 bad\\n'",
}


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Iterator[LivePool]:
    # The server writes jobs' retries and timeouts itself, as production servers do, and
    # takes messages of up to 1 MiB, as a site that raised the limit does.
    live = LivePool(
        tmp_path_factory.mktemp("agent"),
        extra_environment={
            "TASKPOOL_TEST_SERVER_TICK_INTERVAL": "0.2",
            "TASKPOOL_TEST_SERVER_MAX_MESSAGE_BYTES": str(1 << 20),
        },
    )
    live.provision()
    live.start_server()
    yield live
    live.stop()


@pytest.fixture
def handlers(tmp_path) -> Path:
    directory = tmp_path / "handlers"
    directory.mkdir()
    for name, script in HANDLERS.items():
        path = directory / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(0o755)
    return directory


class AgentProcess:
    """``python -m taskpool_agent run`` for one device, with its config, state and log."""

    def __init__(self, directory: Path, server: str, device_id: str, token: str, handlers: Path):
        self.directory = directory
        self.config = directory / "config.toml"
        self.config.write_text(
            f'server = "{server}/pool/"\ndevice_id = "{device_id}"\ntoken = "{token}"\n'
        )
        self.handlers = handlers
        self.log = directory / "agent.log"
        self.process: subprocess.Popen | None = None

    def start(self, *extra: str, environment: dict[str, str] | None = None) -> AgentProcess:
        command = [
            sys.executable, "-m", "taskpool_agent", "--config", str(self.config),
            "--backoff-max", "0.5", "--log-level", "DEBUG",
            "run", "--handlers", str(self.handlers), "--state-dir", str(self.directory / "state"),
            "--wait", "2", "--heartbeat-interval", "1", "--check-interval", "0.3",
            "--kill-grace", "0.5", *extra,
        ]  # fmt: skip
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                command, cwd=ROOT, stderr=log, stdout=log, env={**os.environ, **(environment or {})}
            )
        return self

    def stop(self) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=15)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def agent(tmp_path, pool, handlers) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(
        device_id: str,
        *extra: str,
        server: str | None = None,
        environment: dict[str, str] | None = None,
    ) -> AgentProcess:
        process = AgentProcess(
            tmp_path, server or pool.servers[0], device_id, pool.devices[device_id], handlers
        ).start(*extra, environment=environment)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.process is not None and process.process.poll() is None:
            process.kill()


def post_task(
    pool: LivePool, device_id: str, title: str, server: str | None = None, fields=None, **meta
):
    answer = httpx.post(
        f"{server or pool.servers[0]}/pool/task",
        json={"to": f"device:{device_id}", "title": title, "meta": meta, **(fields or {})},
        headers=pool.bearer("ops"),
    )
    assert answer.status_code == 201, answer.text
    return answer.json()["id"]


def responses(pool: LivePool, task_id: str, server: str | None = None) -> list[dict]:
    answer = httpx.get(
        f"{server or pool.servers[0]}/pool/tasks/{task_id}", headers=pool.bearer("ops")
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["responses"]


def wait_for(condition: Callable[[], object], seconds: float = 20, what: str = "") -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what}")


def final_answer(pool: LivePool, task_id: str, seconds: float = 20, **kwargs) -> dict:
    def answered():
        return [
            r
            for r in responses(pool, task_id, **kwargs)
            if r["meta"]["status"] in ("done", "failed", "rejected")
        ]

    found = wait_for(answered, seconds, f"an answer to {task_id}")
    return found[0]


def new_device(pool: LivePool, device_id: str) -> str:
    """Register (or give a new token to) a validated device of the tests' own; its token."""
    token = pool.django("taskpool_device", device_id, "--validate", "--token").splitlines()[-1]
    pool.devices[device_id] = token
    return token


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has been killed; only its parent has not collected it yet.
    with open(f"/proc/{pid}/stat") as stat_file:
        return stat_file.read().split(")")[-1].split()[0] != "Z"


# Enrollment ---------------------------------------------------------------------------


def enroll_command(pool: LivePool, config: Path, device_id: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "taskpool_agent", "--config", str(config), "--backoff-max", "0.5",
        "enroll", "--server", f"{pool.servers[0]}/pool/", "--device-id", device_id,
        "--kind", "raspberry-pi", "--poll-interval", "0.3", *extra,
    ]  # fmt: skip


def test_enroll_waits_for_approval_and_saves_the_token_0600(pool, tmp_path):
    config = tmp_path / "etc" / "config.toml"
    process = subprocess.Popen(
        enroll_command(pool, config, "pi-enrolled"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "waiting for staff to approve" in process.stdout.readline()
        assert stat.S_IMODE(config.stat().st_mode) == 0o600  # the secret is in it already
        time.sleep(1)
        assert process.poll() is None  # still waiting
        pool.django("taskpool_device", "pi-enrolled", "--validate")
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
    assert "Approved" in process.stdout.read()
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    saved = config.read_text()
    assert "enrollment_secret" not in saved
    token = saved.split('token = "')[1].split('"')[0]
    again = subprocess.run(
        enroll_command(pool, config, "pi-enrolled"), cwd=ROOT, capture_output=True, text=True
    )
    assert again.returncode == 0 and "enrolled already" in again.stdout
    assert config.read_text() == saved
    answer = httpx.get(
        f"{pool.servers[0]}/pool/pending", headers={"Authorization": f"Bearer {token}"}
    )
    assert answer.status_code == 200


def test_enrolling_keeps_the_handlers_and_state_directory_the_config_file_names(pool, tmp_path):
    """The config file written before enrolling (or kept, its token line removed, to enroll
    again) names where the handlers and the journal are: enrolling keeps them."""
    config = tmp_path / "config.toml"
    config.write_text(
        f'server = "{pool.servers[0]}/pool/"\ndevice_id = "pi-configured"\n'
        'handlers = "/etc/taskpool-agent/handlers"\nstate_dir = "/var/lib/taskpool-agent"\n'
    )
    process = subprocess.Popen(
        enroll_command(pool, config, "pi-configured"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "waiting for staff to approve" in process.stdout.readline()
        pool.django("taskpool_device", "pi-configured", "--validate")
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
    saved = load(config)
    assert saved.token
    assert (saved.handlers, saved.state_dir) == (
        "/etc/taskpool-agent/handlers",
        "/var/lib/taskpool-agent",
    )


def test_an_enrollment_whose_answers_were_lost_goes_on_without_staff(pool, tmp_path):
    """Both answers lost on the way, as a bad network loses them: the server acted on each
    request, the agent never heard. The config holds what the agent had saved then."""
    server = f"{pool.servers[0]}/pool/"
    config = tmp_path / "config.toml"
    key = "lost-answer-" + "k" * 32
    sent = httpx.post(
        f"{server}enroll", json={"device_id": "pi-lossy", "kind": "raspberry-pi",
        "meta": {"agent": "taskpool-agent"}}, headers={"Idempotency-Key": key},
    )  # fmt: skip
    assert sent.status_code == 202, sent.text
    config.write_text(
        f'server = "{server}"\ndevice_id = "pi-lossy"\nenrollment_request = "{key}"\n'
    )
    process = subprocess.Popen(
        enroll_command(pool, config, "pi-lossy"), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert "waiting for staff to approve" in process.stdout.readline()
        secret = config.read_text().split('enrollment_secret = "')[1].split('"')[0]
        assert secret == sent.json()["enrollment_secret"]  # the same request, the same secret
        process.kill()
        process.wait(timeout=10)
    finally:
        process.kill()
    pool.django("taskpool_device", "pi-lossy", "--validate")
    lost = httpx.get(f"{server}enroll/pi-lossy", headers={"Enrollment-Secret": secret})
    assert lost.status_code == 200  # handed out, and lost on the way
    again = subprocess.run(
        enroll_command(pool, config, "pi-lossy"), cwd=ROOT, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    saved = config.read_text()
    assert "enrollment_secret" not in saved and "enrollment_request" not in saved
    token = saved.split('token = "')[1].split('"')[0]
    for used, works in ((token, 200), (lost.json()["token"], 401)):
        answer = httpx.get(f"{server}pending", headers={"Authorization": f"Bearer {used}"})
        assert answer.status_code == works


def test_an_approval_never_collected_and_ended_by_the_cron_says_staff_give_the_token(
    pool, tmp_path
):
    """The device was off while staff approved it, and ``--forget-enrollments`` ended the
    approval before it came back: its secret is right but collects nothing, and the agent
    says its token now comes from staff, not that its secret is wrong."""
    config = tmp_path / "config.toml"
    process = subprocess.Popen(
        enroll_command(pool, config, "pi-approved-long-ago"), cwd=ROOT, stdout=subprocess.PIPE
    )
    try:
        assert b"waiting for staff to approve" in process.stdout.readline()
    finally:
        process.kill()
        process.wait()
    pool.django(
        "shell", "-c", "from datetime import timedelta; from django.utils import timezone; "
        "from taskpool.models import DeviceUser; "
        "DeviceUser.objects.filter(pk='pi-approved-long-ago').update(validated=True, "
        "updated_at=timezone.now() - timedelta(days=40))",
    )  # fmt: skip
    assert "ended 1 approved enrollment" in pool.django(
        "taskpool_device", "--forget-enrollments", "30d"
    )
    again = subprocess.run(
        enroll_command(pool, config, "pi-approved-long-ago"),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert again.returncode == 1
    assert "Wrong Enrollment-Secret" not in again.stderr
    assert "enrollment of pi-approved-long-ago has ended" in again.stderr, again.stderr
    assert "staff" in again.stderr


def test_a_request_the_server_forgot_ends_the_wait_and_enroll_asks_anew(pool, tmp_path):
    """Staff refused the request, or it waited too long (``--forget-enrollments``): the
    waiting agent says so and forgets it, and ``enroll`` run again asks anew."""
    config = tmp_path / "config.toml"
    process = subprocess.Popen(
        enroll_command(pool, config, "pi-forgotten"),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "waiting for staff to approve" in process.stdout.readline()
        old_secret = config.read_text().split('enrollment_secret = "')[1].split('"')[0]
        pool.django(
            "shell", "-c", "from taskpool.models import DeviceUser; "
            "DeviceUser.objects.filter(pk='pi-forgotten').delete()",
        )  # fmt: skip
        assert process.wait(timeout=20) == 1
    finally:
        process.kill()
    said = process.stderr.read()
    assert "no longer has the enrollment request of pi-forgotten" in said, said
    assert "run enroll again" in said
    assert "enrollment_secret" not in config.read_text()
    again = subprocess.Popen(
        enroll_command(pool, config, "pi-forgotten"), cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert "Asked to join as pi-forgotten" in again.stdout.readline()
        new_secret = config.read_text().split('enrollment_secret = "')[1].split('"')[0]
        assert new_secret != old_secret
        pool.django("taskpool_device", "pi-forgotten", "--validate")
        assert again.wait(timeout=20) == 0
    finally:
        again.kill()
    assert 'token = "' in config.read_text()


def test_enrolling_a_registered_id_fails_with_the_servers_reason(pool, tmp_path):
    config = tmp_path / "config.toml"
    done = subprocess.run(
        enroll_command(pool, config, "pi-9"), cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    assert "409" in done.stderr and "already registered" in done.stderr
    assert not config.exists()
    waiting = 'server = "https://elsewhere.example/pool/"\ndevice_id = "other"\n'
    config.write_text(waiting + 'enrollment_request = "r"\n')  # another enrollment's, waiting
    kept = config.read_text()
    again = subprocess.run(
        enroll_command(pool, config, "pi-9"), cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert again.returncode == 1 and "409" in again.stderr
    assert config.read_text() == kept  # a refusal leaves it as it was
    config.write_text(waiting + 'token = "t"\n')  # one that holds its token: not even asked
    kept = config.read_text()
    holding = subprocess.run(
        enroll_command(pool, config, "pi-9"), cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert holding.returncode == 78 and "holds the token of other" in holding.stderr
    assert config.read_text() == kept


@pytest.mark.parametrize("server", ["/", "/pool/docs/"], ids=["the-site", "under-the-pool"])
def test_enrolling_at_the_sites_url_rather_than_the_pools_says_so_in_one_line(
    pool, tmp_path, server
):
    """The site's root answers with a page; a URL under the pool's, in the pool's words."""
    config = tmp_path / "config.toml"
    command = enroll_command(pool, config, "pi-lost")
    command[command.index("--server") + 1] = f"{pool.servers[0]}{server}"
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode == 1 and not config.exists()
    said = done.stderr.strip()
    assert "\n" not in said and "<" not in said
    assert said.startswith("taskpool-agent: the server refused: 404: not the pool (the server ")


def test_enrolling_with_a_wrong_key_fails_and_the_right_key_joins(tmp_path):
    keyed = LivePool(tmp_path / "keyed", {"TASKPOOL_TEST_SERVER_ENROLLMENT_KEY": "fleet-key"})
    keyed.provision()
    keyed.start_server()
    try:
        config = tmp_path / "config.toml"
        wrong = subprocess.run(
            [*enroll_command(keyed, config, "pi-keyed"), "--enrollment-key", "guess"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert wrong.returncode == 1
        assert "403" in wrong.stderr and "Enrollment-Key" in wrong.stderr
        assert not config.exists()
        right = subprocess.Popen(
            [*enroll_command(keyed, config, "pi-keyed"), "--enrollment-key", "fleet-key"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert "waiting for staff to approve" in right.stdout.readline()
            keyed.django("taskpool_device", "pi-keyed", "--validate")
            assert right.wait(timeout=20) == 0
        finally:
            right.kill()
    finally:
        keyed.stop()


# Running tasks ------------------------------------------------------------------------


def test_handlers_answer_done_failed_and_rejected(pool, agent):
    agent("pi-1")
    hello = post_task(pool, "pi-1", "hello world", args=["a", "b c"])
    failing = post_task(pool, "pi-1", "fail now")
    refusing = post_task(pool, "pi-1", "something", handler="refuse")
    unknown = post_task(pool, "pi-1", "nosuch thing")
    not_a_list = post_task(pool, "pi-1", "hello", args="a b")

    answer = final_answer(pool, hello)
    assert answer["meta"]["status"] == "done"
    assert answer["meta"]["exit_code"] == 0
    assert answer["body"].startswith("hello a b c\n")
    assert f'{{"id": "{hello}"' in answer["body"]  # the task, on stdin

    answer = final_answer(pool, failing)
    assert (answer["meta"]["status"], answer["meta"]["exit_code"]) == ("failed", 3)
    assert answer["body"].endswith("the last line\n")
    assert len(answer["body"].encode()) <= 1024
    assert not answer["body"].startswith("noise line 0 ")  # the tail, not the head

    answer = final_answer(pool, refusing)
    assert (answer["meta"]["status"], answer["body"]) == ("rejected", "not for me\n")

    answer = final_answer(pool, unknown)
    assert (answer["meta"]["status"], answer["title"]) == ("rejected", "no handler")
    assert "No handler named nosuch" in answer["body"]
    assert "nosuch" in answer["meta"]["reason"]

    answer = final_answer(pool, not_a_list)
    assert (answer["meta"]["status"], answer["title"]) == ("rejected", "bad arguments")
    assert "meta.args" in answer["body"]

    log = httpx.get(f"{pool.servers[0]}/pool/log", headers=pool.bearer("boss")).json()
    beats = [m for m in log if m["type"] == "heartbeat" and m["from"] == "device:pi-1"]
    assert beats and beats[0]["meta"]["agent"] == __version__
    assert {"uptime", "load"} <= set(beats[0]["meta"])


def test_a_handler_over_its_timeout_is_killed_with_its_children(pool, agent, tmp_path):
    agent("pi-2")
    pids = tmp_path / "pids"
    task = post_task(pool, "pi-2", "sleepy", args=[str(pids)], handler_timeout=1)
    answer = final_answer(pool, task)
    assert answer["meta"]["status"] == "failed"
    assert "timed out after 1 s" in answer["meta"]["reason"]
    assert answer["meta"]["exit_code"] in (143, 137)  # SIGTERM, or SIGKILL after the grace
    assert answer["meta"]["duration"] >= 1
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not alive(pid), 5, f"pid {pid} gone")


def test_a_handler_timeout_that_is_no_number_of_seconds_is_said_in_the_log(pool, agent):
    """Given as a string (or misspelled as a bool), it cannot be used: the log says what
    the handler has instead, rather than an hour going by without a word."""
    new_device(pool, "pi-bad-timeout")
    running = agent("pi-bad-timeout")
    task = post_task(pool, "pi-bad-timeout", "hello", handler_timeout="2")
    assert final_answer(pool, task)["meta"]["status"] == "done"
    said = f"task {task}: meta.handler_timeout '2' is not a number of seconds above 0"
    wait_for(lambda: said in running.log.read_text(), 10, "the unusable timeout in the log")


#: A ``sync`` for the handler's wrapper that, asked to sync the exit status it is writing,
#: says so (a file ``syncing`` beside it) and holds the wrapper there until a SIGTERM comes:
#: the handler has ended, with its own status, and the agent stops it now.
SYNC_UNTIL_STOPPED = f"""#!{sys.executable}
import pathlib, signal, sys, time
if sys.argv[1:] and sys.argv[-1].endswith("status.tmp"):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pathlib.Path(sys.argv[-1]).with_name("syncing").touch()
    time.sleep(60)
"""


@pytest.mark.parametrize("stop", ["timeout", "SIGTERM"])
def test_a_handler_that_ended_as_it_was_stopped_is_answered_by_its_own_status(
    pool, agent, tmp_path, stop
):
    """The handler has ended (exit 65), and its wrapper is writing its status, when its time
    is up or the agent is stopped: the answer is what the handler said, not ``failed``."""
    device_id = f"pi-ended-{stop.lower()}"
    new_device(pool, device_id)
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "sync").write_text(SYNC_UNTIL_STOPPED)
    (tools / "sync").chmod(0o755)
    running = agent(
        device_id,
        "--kill-grace",
        "10",
        environment={"PATH": f"{tools}:{os.environ['PATH']}"},
    )
    timeout = 1 if stop == "timeout" else 600
    task = post_task(pool, device_id, "refuse", handler_timeout=timeout)
    if stop == "SIGTERM":
        wait_for(lambda: list((tmp_path / "state").glob("tasks/*/syncing")), 20, "the sync")
        running.process.send_signal(signal.SIGTERM)
    answer = final_answer(pool, task)
    assert (answer["meta"]["status"], answer["title"]) == ("rejected", "exit 65")
    assert answer["meta"]["exit_code"] == 65 and "reason" not in answer["meta"]
    assert answer["body"] == "not for me\n"
    assert list((tmp_path / "state").glob("tasks/*/syncing"))  # it was stopped just there
    if stop == "SIGTERM":
        # Already stopping: a second SIGTERM could meet it past the point where Python
        # has given the signal back its default action, on its way out.
        assert running.process.wait(timeout=15) == 0
    else:
        assert running.stop() == 0


def test_a_jobs_timeout_is_the_servers_to_call_and_stops_the_handler(pool, agent, tmp_path):
    """The server's ``timed_out`` (which retries and aborts count), not the agent's own
    ``failed``: the agent starts the server's clock with a progress answer, and stops the
    handler when it sees the line."""
    agent("pi-8")
    pids = tmp_path / "pids"
    task = post_task(
        pool, "pi-8", "sleepy", fields={"timeout": {"in_progress": 1}}, args=[str(pids)]
    )

    def timed_out():
        return [r for r in responses(pool, task) if r["meta"]["status"] == "timed_out"]

    (line,) = wait_for(timed_out, 20, "the server's timed_out line")
    assert (line["from"], line["meta"]["device"], line["meta"]["attempt"]) == ("backend", "pi-8", 1)
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not alive(pid), 10, f"pid {pid} gone")
    time.sleep(1)
    from_device = [r["meta"]["status"] for r in responses(pool, task) if r["from"] == "device:pi-8"]
    assert from_device == ["progress"]  # "started", and no answer of its own after the line
    assert [r["body"] for r in responses(pool, task) if r["from"] == "device:pi-8"] == ["started"]


def test_a_cancelled_task_stops_its_handler_and_is_not_answered(pool, agent, tmp_path):
    agent("pi-3", "--no-stream")  # seen by the check of its pending tasks
    pids = tmp_path / "pids"
    task = post_task(pool, "pi-3", "sleepy", args=[str(pids)])
    wait_for(pids.exists, 20, "the handler started")
    cancelled = httpx.post(
        f"{pool.servers[0]}/pool/tasks/{task}/cancel", json={}, headers=pool.bearer("ops")
    )
    assert cancelled.status_code == 201
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not alive(pid), 10, f"pid {pid} gone")
    time.sleep(1)
    assert [r["from"] for r in responses(pool, task)] == ["user:ops"]


def test_a_cancel_on_the_stream_stops_the_handler_at_once(pool, agent, tmp_path):
    agent("pi-9", "--check-interval", "60")  # the pending check would come a minute later
    pids = tmp_path / "pids"
    task = post_task(pool, "pi-9", "sleepy", args=[str(pids)])
    wait_for(pids.exists, 20, "the handler started")
    time.sleep(0.5)  # the stream opens
    began = time.monotonic()
    cancelled = httpx.post(
        f"{pool.servers[0]}/pool/tasks/{task}/cancel", json={}, headers=pool.bearer("ops")
    )
    assert cancelled.status_code == 201
    for pid in map(int, pids.read_text().split()):
        wait_for(lambda pid=pid: not alive(pid), 10, f"pid {pid} gone")
    assert time.monotonic() - began < 10
    time.sleep(1)
    assert [r["from"] for r in responses(pool, task)] == ["user:ops"]


def test_progress_lines_become_progress_answers(pool, agent):
    agent("pi-4")
    task = post_task(pool, "pi-4", "report")
    answer = final_answer(pool, task)
    assert answer["meta"]["status"] == "done"
    progress = [r["body"] for r in responses(pool, task) if r["meta"]["status"] == "progress"]
    assert progress == ["half way", "nearly"]


def test_a_failed_attempt_is_run_again_as_the_next_and_answered_as_it(pool, agent, tmp_path):
    agent("pi-10")
    runs = tmp_path / "runs"
    retries = {"retries": {"max_attempts": 2, "backoff": 0}}
    task = post_task(pool, "pi-10", "flaky", fields=retries, args=[str(runs)])

    def both_attempts():
        answers = [r for r in responses(pool, task) if r["from"] == "device:pi-10"]
        return answers if any(r["meta"]["status"] == "done" for r in answers) else None

    answers = wait_for(both_attempts, 30, "the second attempt done")
    assert [(r["meta"]["status"], r["meta"]["attempt"]) for r in answers] == [
        ("failed", 1),
        ("done", 2),
    ]
    assert runs.read_text().splitlines() == ["run", "run"]


def test_a_step_timeout_line_asks_the_server_for_more_time(pool, agent):
    agent("pi-11")
    task = post_task(pool, "pi-11", "stepper", fields={"timeout": {"in_progress": 60}})
    assert final_answer(pool, task)["meta"]["status"] == "done"
    progress = [r for r in responses(pool, task) if r["meta"]["status"] == "progress"]
    reported = [(r["body"], r["meta"].get("step_timeout")) for r in progress]
    assert reported[0] == ("started", None)  # the job's clock starts with the handler
    assert ("flashing", 30) in reported


def test_a_job_with_an_abort_is_told_its_quiet_handler_started(pool, agent, tmp_path):
    """An abort cancels the devices that have not started: a handler that says nothing for
    a while looked so, and was stopped half-way, an update say."""
    new_device(pool, "pi-quiet")
    agent("pi-quiet")
    abort = {"failure_percentage": 50, "min_executed": 1}
    task = post_task(
        pool, "pi-quiet", "slow", fields={"abort": abort}, args=[str(tmp_path / "r"), "1"]
    )
    assert final_answer(pool, task)["meta"]["status"] == "done"
    said = [(r["meta"]["status"], r["body"]) for r in responses(pool, task)]
    assert said == [("progress", "started"), ("done", "slept\n")]


def test_a_handler_adopted_after_a_restart_is_not_said_to_start_again(pool, agent, tmp_path):
    new_device(pool, "pi-adopt")
    runs = tmp_path / "runs"
    first = agent("pi-adopt")
    task = post_task(
        pool, "pi-adopt", "slow", fields={"timeout": {"in_progress": 60}}, args=[str(runs), "3"]
    )
    wait_for(runs.exists, 20, "the handler started")
    first.kill()
    first.start()
    assert final_answer(pool, task)["meta"]["status"] == "done"
    started = [r for r in responses(pool, task) if r["body"] == "started"]
    assert len(started) == 1


def test_an_agent_killed_mid_task_answers_once_after_restart(pool, agent, tmp_path):
    runs = tmp_path / "runs"
    first = agent("pi-5")
    task = post_task(pool, "pi-5", "slow", args=[str(runs), "2"])
    wait_for(runs.exists, 20, "the handler started")
    first.kill()  # SIGKILL: no chance to clean up; the handler lives on
    time.sleep(4)  # the handler ends while no agent runs
    first.start()
    answer = final_answer(pool, task)
    assert answer["meta"]["status"] == "done"
    assert answer["body"] == "slept\n"
    # To its end, not to the agent's return. The end is the status file's mtime, which the
    # kernel stamps from its coarse clock (a tick, up to 10 ms, behind time.time()).
    assert 1.99 <= answer["meta"]["duration"] < 3.5
    time.sleep(1.5)
    assert runs.read_text() == "run\n"  # it ran once
    answers = [r for r in responses(pool, task) if r["from"] == "device:pi-5"]
    assert len(answers) == 1
    first.stop()


def test_a_handler_that_fills_and_empties_its_working_directory_is_answered_once_as_it_ended(
    pool, agent, tmp_path
):
    """Its working directory is its own: the agent's journal of it is elsewhere, so neither
    its files nor its cleaning make a restarted agent run it again or take its end for 0."""
    new_device(pool, "pi-tidy")
    runs = tmp_path / "runs"
    first = agent("pi-tidy")
    task = post_task(pool, "pi-tidy", "tidy", args=[str(runs), "3"])
    wait_for(runs.exists, 20, "the handler started")
    first.kill()  # SIGKILL: the handler lives on
    first.start()  # at once: the handler is still running
    answer = final_answer(pool, task)
    assert (answer["meta"]["status"], answer["meta"]["exit_code"]) == ("failed", 3)
    assert answer["body"] == "tidied\n"
    time.sleep(1.5)  # a second run, had there been one, would have noted itself by now
    assert runs.read_text() == "run\n"
    first.stop()


def journaled_as_started(pool: LivePool, tmp_path: Path, device_id: str, runs: Path):
    """A task's start journaled as an agent journals it, and no more: the agent was stopped
    before it could journal the handler's pid. The task's journal directory, and the task."""
    task_id = post_task(pool, device_id, "slow", args=[str(runs), "1"])
    (task,) = httpx.get(f"{pool.servers[0]}/pool/pending", headers=pool.bearer(device_id)).json()
    assert task["id"] == task_id
    journal = Journal(tmp_path / "state")  # where the agent fixture keeps its state
    key = attempt_key(task)
    journal.write(key, {"state": "started", "task": task, "started_at": time.time()})
    return journal.directory(key), task_id


@pytest.mark.parametrize(
    "before",
    ["nothing", "its output opened", "a run to its end", "a handler still running"],
)
def test_an_agent_stopped_before_it_journaled_its_handlers_pid_runs_it_once(
    pool, agent, tmp_path, handlers, before
):
    device_id = f"pi-pidless-{before.split()[-1]}"
    new_device(pool, device_id)
    runs = tmp_path / "runs"
    directory, task = journaled_as_started(pool, tmp_path, device_id, runs)
    if before == "its output opened":  # as the agent opens it, just before the handler
        (directory / "output").touch()
    elif before == "a run to its end":  # the handler ran while no agent did
        (directory / "output").write_text("ran alone\n")
        (directory / "status").write_text("0\n")
        runs.write_text("run\n")
    elif before == "a handler still running":  # started, as the agent starts it, and left
        HandlerProcess.start(directory, handlers / "slow", [str(runs), "2"], {"id": task})
        wait_for(runs.exists, 20, "the handler started")
    agent(device_id)
    answer = final_answer(pool, task)
    body = {"nothing": "slept\n", "a run to its end": "ran alone\n"}.get(before, "slept\n")
    assert (answer["meta"]["status"], answer["body"]) == ("done", body)
    time.sleep(1.5)  # a second run, had there been one, would have noted itself by now
    assert runs.read_text() == "run\n"  # never twice, and never not at all


def test_a_task_cancelled_before_its_handler_started_is_not_started_after_a_restart(
    pool, agent, tmp_path
):
    """The agent was stopped after journaling a start and before the handler ran; the task
    was cancelled while no agent ran. The restarted agent does not start it."""
    new_device(pool, "pi-cancelled-unstarted")
    runs = tmp_path / "runs"
    _directory, task = journaled_as_started(pool, tmp_path, "pi-cancelled-unstarted", runs)
    cancelled = httpx.post(
        f"{pool.servers[0]}/pool/tasks/{task}/cancel", json={}, headers=pool.bearer("ops")
    )
    assert cancelled.status_code == 201
    agent("pi-cancelled-unstarted")
    after = post_task(pool, "pi-cancelled-unstarted", "hello")  # served once recovery is over
    assert final_answer(pool, after)["meta"]["status"] == "done"
    assert not runs.exists()  # the cancelled task's handler never ran
    assert [r["from"] for r in responses(pool, task)] == ["user:ops"]


def test_an_agent_restarted_while_its_handler_still_runs_waits_for_it(pool, agent, tmp_path):
    runs = tmp_path / "runs"
    first = agent("pi-6")
    task = post_task(pool, "pi-6", "slow", args=[str(runs), "3"])
    wait_for(runs.exists, 20, "the handler started")
    first.kill()
    first.start()  # at once: the handler is still running
    answer = final_answer(pool, task)
    assert (answer["meta"]["status"], answer["body"]) == ("done", "slept\n")
    assert runs.read_text() == "run\n"
    first.stop()


@pytest.mark.parametrize("journaled", ["at an earlier boot", "for a process that ended"])
def test_a_journaled_pid_that_is_now_another_handler_is_not_taken_for_this_one(
    pool, agent, tmp_path, handlers, journaled
):
    """The journal names the pid of this attempt's handler, which ended while no agent ran,
    leaving no exit status; that pid is now another agent's handler (after a reboot, or
    reused on a host running several agents). The restarted agent neither waits for it nor
    stops it at its timeout: the attempt is answered as one that ended unseen."""
    device_id = f"pi-pid-{journaled.split()[-1]}"
    new_device(pool, device_id)
    elsewhere = tmp_path / "another-agent"
    elsewhere.mkdir()
    others = tmp_path / "others"
    other = HandlerProcess.start(elsewhere, handlers / "slow", [str(others), "60"], {"id": "x"})
    wait_for(others.exists, 20, "the other agent's handler started")
    runs = tmp_path / "runs"
    directory, task = journaled_as_started(pool, tmp_path, device_id, runs)
    journal = Journal(tmp_path / "state")
    entry = journal.read(directory.name)
    assert entry is not None
    entry["pid"] = other.pid
    if journaled == "at an earlier boot":
        entry.update(boot_id="an-earlier-boot", started_monotonic=1.0)
    else:  # this boot, a process that started at another time than the pid's process now
        entry.update(boot_id=boot_id(), started_monotonic=time.monotonic(), pid_started=1)
    entry["task"]["meta"]["handler_timeout"] = 1
    journal.write(directory.name, entry)
    (directory / "status.started").touch()  # the handler ran, and left no exit status
    try:
        running = agent(device_id)
        answer = final_answer(pool, task)
        assert (answer["meta"]["status"], answer["title"]) == ("failed", "interrupted")
        assert other.poll() is False and alive(other.pid)  # neither waited for nor stopped
        assert not runs.exists() and others.read_text() == "run\n"
        assert running.stop() == 0
    finally:
        other.kill(0.5)


#: libfaketime, which gives one process a wall clock of its own (the machine's is shared).
LIBFAKETIME = next(iter(sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))), None)
needs_faketime = pytest.mark.skipif(
    LIBFAKETIME is None, reason="libfaketime is not installed (apt-get install faketime)"
)


def wall_clock(**faketime: str) -> dict[str, str]:
    """The environment of a process whose wall clock is set by libfaketime (``FAKETIME``, or
    a ``FAKETIME_TIMESTAMP_FILE`` read at each call) while its monotonic clock is the
    machine's: a clock NTP steps, as a device's is."""
    return {
        "LD_PRELOAD": str(LIBFAKETIME),
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "FAKETIME_NO_CACHE": "1",
        **{
            f"FAKETIME{'_' if name else ''}{name.upper()}": value
            for name, value in faketime.items()
        },
    }


@needs_faketime
@pytest.mark.parametrize("step", ["forward", "back"])
def test_a_handler_adopted_after_the_clock_stepped_keeps_its_timeout(pool, agent, tmp_path, step):
    """The handler started while the device's clock was days behind (a Raspberry Pi booted
    with fake-hwclock's time) or a year ahead; then NTP stepped the clock and the agent
    restarted. Its timeout still counts from the handler's start: it is neither killed
    at once nor left to run for ever."""
    device_id = f"pi-clock-{step}"
    new_device(pool, device_id)
    runs = tmp_path / "runs"
    first = agent(
        device_id, environment=wall_clock(**{"": "-3d" if step == "forward" else "+365d"})
    )
    if step == "forward":  # 3 s of work, well within its 15 s
        task = post_task(pool, device_id, "slow", args=[str(runs), "3"], handler_timeout=15)
    else:  # a minute of work, over its 3 s
        task = post_task(pool, device_id, "slow", args=[str(runs), "60"], handler_timeout=3)
    wait_for(runs.exists, 20, "the handler started")
    first.kill()
    first.start()  # with the machine's clock: the step
    answer = final_answer(pool, task, 15)
    if step == "forward":
        assert (answer["meta"]["status"], answer["body"]) == ("done", "slept\n")
    else:
        assert answer["meta"]["status"] == "failed"
        assert "timed out after 3 s" in answer["meta"]["reason"]
        assert 3 <= answer["meta"]["duration"] < 10
    assert runs.read_text() == "run\n"
    first.stop()


@needs_faketime
def test_a_clock_stepped_while_the_handler_runs_is_not_its_duration(pool, agent, tmp_path):
    """NTP steps the clock a year forward while the handler runs: it is not timed out, and
    its answer says how long it ran, not a year."""
    new_device(pool, "pi-clock-running")
    clock = tmp_path / "clock"
    clock.write_text("+0\n")
    first = agent("pi-clock-running", environment=wall_clock(timestamp_file=str(clock)))
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    task = post_task(
        pool, "pi-clock-running", "gated", args=[str(runs), str(gate)], handler_timeout=30
    )
    wait_for(runs.exists, 20, "the handler started")
    clock.write_text("+365d\n")
    time.sleep(1.5)  # the agent's watch goes round a few times in the new year
    gate.touch()
    answer = final_answer(pool, task)
    assert (answer["meta"]["status"], answer["body"]) == ("done", "slept\n")
    assert 1.5 <= answer["meta"]["duration"] < 10
    first.stop()


def test_a_restarted_agent_goes_on_reporting_progress_and_answers(pool, agent, tmp_path):
    """The restarted agent's progress answers are new ones, not retries of the first's."""
    new_device(pool, "pi-ticker")
    runs = tmp_path / "runs"
    first = agent("pi-ticker")
    task = post_task(pool, "pi-ticker", "ticker", args=[str(runs)])

    def reported():
        return [r["body"] for r in responses(pool, task) if r["meta"]["status"] == "progress"]

    wait_for(reported, 20, "a progress answer")
    first.kill()
    first.start()  # the handler still runs, and goes on printing progress
    answer = final_answer(pool, task, 30)
    assert (answer["meta"]["status"], answer["body"].splitlines()[-1]) == ("done", "ticked")
    assert runs.read_text() == "run\n"
    assert len(reported()) >= 2
    first.stop()


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """The agent fixture's state directory on a file system of its own, 1 MiB: an SD card
    to fill, or to remount read-only as the kernel does after an error (root only)."""
    state = tmp_path / "state"
    state.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(state)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {mounted.stderr.decode().strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=True)


def fill(directory: Path) -> Path:
    """Fill the file system ``directory`` is on, with one file; that file."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as file, contextlib.suppress(OSError):
        while True:
            file.write(b"x" * 4096)
    return filler


def test_a_full_state_directory_is_said_and_no_answer_is_lost(pool, agent, tmp_path, small_disk):
    """The disk fills while a handler runs: its answer still goes, and the agent stays up
    (heartbeats, answers), saying why in its log, and starts no task it could not journal
    (it might run twice) until there is room again."""
    new_device(pool, "pi-full")
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    running = agent("pi-full")
    first = post_task(pool, "pi-full", "gated", args=[str(runs), str(gate)])
    wait_for(runs.exists, 20, "the handler started")
    filler = fill(small_disk)
    gate.touch()
    answer = final_answer(pool, first)
    assert answer["meta"]["status"] in ("done", "failed")  # its last line may not fit
    said = f"cannot write the journal in {small_disk} (No space left on device)"
    wait_for(lambda: said in running.log.read_text(), 10, "the full disk said in the log")
    second = post_task(pool, "pi-full", "slow", args=[str(runs), "0"])
    time.sleep(3)
    assert running.process.poll() is None  # still serving, not crash-looping
    assert runs.read_text() == "run\n"  # the second task did not start without its entry
    assert [r for r in responses(pool, second) if r["from"] == "device:pi-full"] == []
    filler.unlink()
    assert final_answer(pool, second)["meta"]["status"] == "done"
    assert runs.read_text() == "run\nrun\n"
    assert f"the journal in {small_disk} can be written again" in running.log.read_text()
    assert "Traceback" not in running.log.read_text()
    running.stop()


def test_a_handler_whose_output_fills_the_disk_leaves_room_once_answered(
    pool, agent, tmp_path, small_disk
):
    """The handler's output (kept in the state directory) is what fills the disk: once its
    answer is stored the output is cut to its tail, and the next task runs."""
    new_device(pool, "pi-flood")
    running = agent("pi-flood")
    flood = post_task(pool, "pi-flood", "flood")
    answer = final_answer(pool, flood)
    assert (answer["meta"]["status"], answer["meta"]["exit_code"]) == ("failed", 1)
    runs = tmp_path / "runs"
    after = post_task(pool, "pi-flood", "slow", args=[str(runs), "0"])
    assert final_answer(pool, after)["meta"]["status"] == "done"
    assert runs.read_text() == "run\n"
    running.stop()


def test_an_any_one_task_is_not_claimed_while_the_disk_is_full(pool, agent, tmp_path, small_disk):
    """A claim the agent could not journal the start of would hold the task from the other
    devices and not run it: the agent claims nothing while its disk is full."""
    new_device(pool, "pi-any-full")
    new_device(pool, "pi-any-other")
    running = agent("pi-any-full")
    wait_for(lambda: "for pi-any-full" in running.log.read_text(), 10, "the agent started")
    filler = fill(small_disk)
    posted = httpx.post(
        f"{pool.servers[0]}/pool/task",
        json={"to": "device:[pi-any-full,pi-any-other]", "title": "hello", "mode": "any"},
        headers=pool.bearer("ops"),
    )
    assert posted.status_code == 201, posted.text
    task_id = posted.json()["id"]
    said = f"cannot write the journal in {small_disk} (No space left on device)"
    wait_for(lambda: said in running.log.read_text(), 10, "the full disk said in the log")
    time.sleep(1)
    assert [r for r in responses(pool, task_id) if r["from"] == "device:pi-any-full"] == []
    filler.unlink()
    answer = final_answer(pool, task_id)
    assert (answer["from"], answer["meta"]["status"]) == ("device:pi-any-full", "done")
    running.stop()


@pytest.mark.parametrize("disk", ["Read-only file system", "No space left on device"])
def test_a_state_directory_read_only_or_full_still_sends_the_answers_it_holds(
    pool, agent, tmp_path, small_disk, disk
):
    """Remounted read-only (after a file system error), or full, with an answer not sent
    yet: the agent starts, sends it, and says in its log that it starts no task."""
    device_id = "pi-readonly" if disk.startswith("Read") else "pi-full-at-start"
    new_device(pool, device_id)
    task_id = post_task(pool, device_id, "hello")
    (task,) = httpx.get(f"{pool.servers[0]}/pool/pending", headers=pool.bearer(device_id)).json()
    journal = Journal(small_disk)
    answer = {"status": "done", "title": "exit 0", "body": "kept\n", "meta": {"exit_code": 0}}
    journal.write(attempt_key(task), {"state": "finished", "task": task, "answer": answer})
    if disk.startswith("Read"):
        (small_disk / "agent.lock").write_text("4242\n")  # as the agent that ran before left it
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    else:  # not even room for the pid in its lock file
        fill(small_disk)
    running = agent(device_id)
    assert final_answer(pool, task_id)["body"] == "kept\n"
    said = f"cannot write the journal in {small_disk} ({disk})"
    wait_for(lambda: said in running.log.read_text(), 10, "the read-only disk said in the log")
    assert running.process.poll() is None
    running.stop()


def test_an_answered_task_still_pending_is_not_forgotten_after_a_clock_step(pool, agent, tmp_path):
    """The server refused the answer for good, so the task stays pending (until it expires);
    then NTP stepped the clock forward past the journal's keeping time, and the agent
    restarted. The entry is not forgotten as old: its task would run a second time."""
    new_device(pool, "pi-forgetful")
    runs = tmp_path / "runs"
    task_id = post_task(pool, "pi-forgetful", "slow", args=[str(runs), "0"])
    (task,) = httpx.get(
        f"{pool.servers[0]}/pool/pending", headers=pool.bearer("pi-forgetful")
    ).json()
    journal = Journal(tmp_path / "state")
    key = attempt_key(task)
    journal.write(key, {"state": "answered", "task": task, "refused": "422 the answer"})
    entry = journal.directory(key) / "entry.json"
    written = json.loads(entry.read_text())
    written["updated_at"] -= 9 * 24 * 3600  # as old as the stepped clock takes it for
    entry.write_text(json.dumps(written))
    running = agent("pi-forgetful")
    time.sleep(4)
    assert not runs.exists()  # not run again
    assert journal.read(key)["state"] == "answered"
    assert [r for r in responses(pool, task_id) if r["from"] == "device:pi-forgetful"] == []
    running.stop()


def test_a_long_running_agent_lets_go_of_old_entries_as_it_goes(
    pool, tmp_path, handlers, monkeypatch
):
    """An agent runs for months: the entries of answered tasks (each with up to 64 KiB of
    output) are let go as they get old while it runs, not only at its start, or they fill
    the device's SD card. (The interval, an hour, is made nothing here.)"""
    new_device(pool, "pi-months")
    config = Config(
        server=f"{pool.servers[0]}/pool/", device_id="pi-months", token=pool.devices["pi-months"]
    )
    options = Options(handlers=handlers, state_dir=tmp_path / "state", wait=0.1, stream=False)
    running = Agent(config, options)
    journal = running.journal

    def answered_long_ago(key: str) -> None:
        journal.write(key, {"state": "answered", "task": {"id": key, "meta": {}}})
        entry = journal.directory(key) / "entry.json"
        written = json.loads(entry.read_text())
        written["updated_at"] -= 9 * 24 * 3600
        entry.write_text(json.dumps(written))

    answered_long_ago("msg_first.1")
    running.serve_once()
    assert journal.read("msg_first.1") is None
    answered_long_ago("msg_later.1")  # it got old while the agent ran
    monkeypatch.setattr(agent_module, "FORGET_INTERVAL_SECONDS", 0)
    running.serve_once()
    assert journal.read("msg_later.1") is None
    running.stop.set()


def test_an_answer_refused_for_its_token_waits_for_a_new_one(pool, agent, tmp_path):
    old_token = new_device(pool, "pi-rotated")
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    running = agent("pi-rotated")
    task = post_task(pool, "pi-rotated", "gated", args=[str(runs), str(gate)])
    wait_for(runs.exists, 20, "the handler started")
    token = new_device(pool, "pi-rotated")  # revokes the token the agent has
    assert running.process.wait(timeout=30) == 78
    assert [r for r in responses(pool, task) if r["from"] == "device:pi-rotated"] == []
    gate.touch()  # the handler ends, with no agent to answer for it
    running.config.write_text(running.config.read_text().replace(old_token, token))
    running.start()
    answer = final_answer(pool, task)
    assert (answer["meta"]["status"], answer["body"]) == ("done", "slept\n")
    assert runs.read_text() == "run\n"
    running.stop()


def test_a_revoked_token_stops_the_agent_while_its_handler_runs_on(pool, agent, tmp_path):
    """The heartbeat meets the 401 first: the agent exits 78 in seconds, not when a long
    handler ends; the handler is left to run, as if the agent had crashed."""
    new_device(pool, "pi-revoked-busy")
    running = agent("pi-revoked-busy")
    pids = tmp_path / "pids"
    post_task(pool, "pi-revoked-busy", "sleepy", args=[str(pids)])  # a minute long
    wait_for(pids.exists, 20, "the handler started")
    began = time.monotonic()
    new_device(pool, "pi-revoked-busy")
    assert running.process.wait(timeout=30) == 78
    assert time.monotonic() - began < 20
    assert all(alive(int(pid)) for pid in pids.read_text().split())


def test_a_revoked_token_stops_an_idle_agent_within_its_heartbeat_not_its_long_poll(pool, agent):
    new_device(pool, "pi-revoked-idle")
    running = agent("pi-revoked-idle", "--wait", "60")  # a long-poll that would hold it a minute
    wait_for(lambda: "taskpool-agent" in running.log.read_text(), 20, "the agent started")
    time.sleep(1.5)  # its long-poll is waiting by now
    began = time.monotonic()
    new_device(pool, "pi-revoked-idle")
    assert running.process.wait(timeout=60) == 78
    assert time.monotonic() - began < 10  # the heartbeat's interval is 1 s
    assert "The server refuses the device's token" in running.log.read_text()


def test_an_answer_refused_while_the_device_is_invalidated_goes_once_it_is_validated(
    pool, agent, tmp_path
):
    """403 because the device is refused, not the answer: it waits in the journal, and
    goes without a restart once staff validate the device again."""
    new_device(pool, "pi-paused")
    runs, gate = tmp_path / "runs", tmp_path / "gate"
    running = agent("pi-paused")
    task = post_task(pool, "pi-paused", "gated", args=[str(runs), str(gate)])
    wait_for(runs.exists, 20, "the handler started")
    pool.django("taskpool_device", "pi-paused", "--invalidate")
    gate.touch()  # the handler ends once the device is refused, however slow the machine
    log = running.log

    def kept() -> bool:
        return "until the device is validated again" in log.read_text()

    wait_for(kept, 30, "the answer kept in the journal")
    assert [r for r in responses(pool, task) if r["from"] == "device:pi-paused"] == []
    pool.django("taskpool_device", "pi-paused", "--validate")
    answer = final_answer(pool, task, 60)  # the agent asks pending again after its backoff
    assert (answer["meta"]["status"], answer["body"]) == ("done", "slept\n")
    assert running.process.poll() is None  # it waited, and never stopped
    running.stop()


def test_a_nul_in_output_or_arguments_still_gets_an_answer(pool, agent):
    new_device(pool, "pi-nul")
    running = agent("pi-nul")
    printed = post_task(pool, "pi-nul", "nul")
    argued = post_task(pool, "pi-nul", "hello", args=["a\0b"])
    not_utf8 = post_task(pool, "pi-nul", "latin")
    answer = final_answer(pool, printed)
    assert (answer["meta"]["status"], answer["body"]) == ("done", "a\ufffdb\n")
    answer = final_answer(pool, not_utf8)  # said, as a progress answer says them
    assert (answer["meta"]["status"], answer["body"]) == ("done", "\ufffd\ufffd bad\n")
    answer = final_answer(pool, argued)
    assert answer["meta"]["status"] == "rejected"
    assert "NUL" in answer["body"]
    assert running.process.poll() is None
    running.stop()


def test_arguments_too_long_for_any_program_are_answered_once_not_retried(pool, agent, tmp_path):
    """Linux takes no argument over 128 KiB (E2BIG at exec): the handler cannot be started,
    now or ever. The task is rejected once, as arguments with a NUL are, and the agent goes on."""
    new_device(pool, "pi-e2big")
    running = agent("pi-e2big")
    runs = tmp_path / "runs"
    task = post_task(pool, "pi-e2big", "slow", args=[str(runs), "x" * (200 * 1024)])
    answer = final_answer(pool, task)
    assert (answer["meta"]["status"], answer["title"]) == ("rejected", "bad arguments")
    assert "too long" in answer["meta"]["reason"]
    after = post_task(pool, "pi-e2big", "hello")
    assert final_answer(pool, after)["meta"]["status"] == "done"
    answers = [r for r in responses(pool, task) if r["from"] == "device:pi-e2big"]
    assert len(answers) == 1 and not runs.exists()
    assert running.stop() == 0
    assert "tried again" not in running.log.read_text()


def test_an_answered_handlers_output_is_kept_only_as_its_tail(pool, agent, tmp_path):
    new_device(pool, "pi-chatty")
    running = agent("pi-chatty")
    task = post_task(pool, "pi-chatty", "chatty")
    answer = final_answer(pool, task)
    assert (answer["meta"]["status"], answer["body"][-6:]) == ("done", "\ndone\n")
    output = tmp_path / "state" / "tasks" / f"{task}.1" / "output"
    wait_for(lambda: output.stat().st_size == 1 << 16, 10, "the output cut to its tail")
    assert output.read_bytes().endswith(b"z\ndone\n")
    running.stop()


def test_a_server_that_is_not_the_pool_is_said_in_the_log_and_asked_again(pool, tmp_path, handlers):
    """The site's own 404 page for pending: a config to mend, or a proxy's page while the
    site is down for work. An agent that stopped there would stay stopped under systemd."""
    token = new_device(pool, "pi-misplaced")
    config = tmp_path / "config.toml"
    config.write_text(
        f'server = "{pool.servers[0]}/"\ndevice_id = "pi-misplaced"\ntoken = "{token}"\n'
    )
    log = tmp_path / "agent.log"
    with log.open("w") as output:
        running = subprocess.Popen(
            [sys.executable, "-m", "taskpool_agent", "--config", str(config),
             "--backoff-max", "0.5", "run", "--handlers", str(handlers),
             "--state-dir", str(tmp_path / "state")],
            cwd=ROOT, stdout=output, stderr=output,
        )  # fmt: skip
    try:
        said = "wait=30: 404 not the pool (the server must be the pool's URL"
        deadline = time.monotonic() + 30
        while log.read_text().count(said) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert log.read_text().count(said) >= 2, log.read_text()  # asked again, still running
        assert running.poll() is None
    finally:
        running.send_signal(signal.SIGTERM)
        assert running.wait(timeout=15) == 0


def test_a_task_answered_in_vain_does_not_slow_the_next_one(pool, agent, tmp_path):
    """A task whose answer the server refused for good stays pending there: the long-poll
    answers at once with it. The agent waits on the stream instead of polling slowly."""
    from taskpool_agent.journal import ANSWERED, Journal

    new_device(pool, "pi-stuck")
    stuck = post_task(pool, "pi-stuck", "hello")
    task = {"id": stuck, "meta": {}}
    Journal(tmp_path / "state").write(
        f"{stuck}.1", {"state": ANSWERED, "task": task, "refused": "400: as if"}
    )
    running = agent("pi-stuck", "--check-interval", "60", "--wait", "20")
    time.sleep(2)  # it has polled, seen only the stuck task, and waits
    began = time.monotonic()
    fresh = post_task(pool, "pi-stuck", "hello")
    assert final_answer(pool, fresh, 15)["meta"]["status"] == "done"
    assert time.monotonic() - began < 15  # not the minute a poll every check would take
    assert [r for r in responses(pool, stuck) if r["from"] == "device:pi-stuck"] == []
    running.stop()


def test_an_any_one_task_held_elsewhere_is_claimed_when_it_comes_back(pool, handlers, tmp_path):
    """The agent itself, in this process: it loses the claim, then takes the task once free."""
    from taskpool_agent.agent import Agent, Options
    from taskpool_agent.client import Backoff
    from taskpool_agent.config import Config
    from taskpool_agent.journal import attempt_key

    server = pool.servers[0]
    token = new_device(pool, "pi-second")
    holder = {"Authorization": f"Bearer {new_device(pool, 'pi-first')}"}
    posted = httpx.post(
        f"{server}/pool/task",
        json={"to": "device:[pi-first,pi-second]", "title": "hello", "mode": "any"},
        headers=pool.bearer("ops"),
    )
    assert posted.status_code == 201, posted.text
    task = posted.json()
    claimed = httpx.post(f"{server}/pool/claim", json={"parent_id": task["id"]}, headers=holder)
    assert claimed.status_code == 201, claimed.text

    options = Options(
        handlers=handlers,
        state_dir=tmp_path / "state",
        wait=1,
        check_interval=0.05,
        stream=False,
        backoff=Backoff(0.01, 0.05),
    )
    device = Agent(Config(f"{server}/pool/", "pi-second", token), options)
    assert device.claim(attempt_key(task), task) is False
    assert device.journal.read(attempt_key(task)) is None  # not given up for good
    rejected = httpx.post(
        f"{server}/pool/response",
        json={"parent_id": task["id"], "status": "rejected"},
        headers=holder,
    )
    assert rejected.status_code == 201, rejected.text
    time.sleep(0.1)
    device.serve_once()
    assert device.held_elsewhere == {}  # a lost claim is remembered for a moment, not for ever
    answers = [r for r in responses(pool, task["id"]) if r["from"] == "device:pi-second"]
    assert [r["meta"]["status"] for r in answers] == ["claimed", "done"]


class SlowClaims(socketserver.BaseRequestHandler):
    """A proxy to ``upstream`` that holds each claim ``delay`` seconds before passing it on
    (a slow link), setting ``asked`` as one comes."""

    upstream: tuple[str, int] = ("127.0.0.1", 0)
    delay = 2.0
    asked = threading.Event()

    def handle(self):
        import socket

        first = self.request.recv(65536)
        if first.startswith(b"POST /pool/claim"):
            SlowClaims.asked.set()
            time.sleep(SlowClaims.delay)
        with socket.create_connection(SlowClaims.upstream) as upstream:
            upstream.sendall(first)

            def back():
                with contextlib.suppress(OSError):
                    while chunk := upstream.recv(65536):
                        self.request.sendall(chunk)
                with contextlib.suppress(OSError):
                    self.request.shutdown(socket.SHUT_WR)

            answering = threading.Thread(target=back, daemon=True)
            answering.start()
            with contextlib.suppress(OSError):
                while chunk := self.request.recv(65536):
                    upstream.sendall(chunk)
            answering.join(timeout=60)


def test_an_agent_stopped_while_it_claims_a_task_does_not_start_it(pool, agent, tmp_path):
    """SIGTERM comes while the claim of an any-one task is on its way, and its answer comes
    after: the handler is not started (to be stopped at once, and its task failed for
    every device); the restarted agent runs it, once."""
    new_device(pool, "pi-claim-stopped")
    new_device(pool, "pi-claim-other")
    host, port = pool.servers[0].removeprefix("http://").split(":")
    SlowClaims.upstream, SlowClaims.delay = (host, int(port)), 2.0
    SlowClaims.asked.clear()
    proxy = socketserver.ThreadingTCPServer(("127.0.0.1", 0), SlowClaims)
    proxy.daemon_threads = True
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        running = agent("pi-claim-stopped", server=f"http://127.0.0.1:{proxy.server_address[1]}")
        runs = tmp_path / "runs"
        posted = httpx.post(
            f"{pool.servers[0]}/pool/task",
            json={
                "to": "device:[pi-claim-stopped,pi-claim-other]",
                "title": "slow",
                "mode": "any",
                "meta": {"args": [str(runs), "0"]},
            },
            headers=pool.bearer("ops"),
        )
        assert posted.status_code == 201, posted.text
        task = posted.json()["id"]
        assert SlowClaims.asked.wait(20), "the claim asked"
        assert running.stop() == 0
        assert not runs.exists()  # not started once the agent was asked to stop
        statuses = [r["meta"]["status"] for r in responses(pool, task)]
        assert "failed" not in statuses
        SlowClaims.delay = 0
        running.start()
        assert final_answer(pool, task)["meta"]["status"] == "done"
        assert runs.read_text() == "run\n"
        running.stop()
    finally:
        proxy.shutdown()
        proxy.server_close()


def test_relative_directories_are_found_from_where_the_agent_starts(pool, tmp_path, handlers):
    """``--state-dir state`` from the working directory, handlers by default next to
    ``--config config.toml``: the handler runs elsewhere, and still is found."""
    token = new_device(pool, "pi-relative")
    (tmp_path / "config.toml").write_text(
        f'server = "{pool.servers[0]}/pool/"\ndevice_id = "pi-relative"\ntoken = "{token}"\n'
    )
    command = [
        sys.executable, "-m", "taskpool_agent", "--config", "config.toml", "--backoff-max", "0.5",
        "run", "--state-dir", "state", "--wait", "2", "--heartbeat-interval", "1",
        "--check-interval", "0.3",
    ]  # fmt: skip
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    with (tmp_path / "agent.log").open("a") as log:
        process = subprocess.Popen(command, cwd=tmp_path, env=environment, stdout=log, stderr=log)
    try:
        task = post_task(pool, "pi-relative", "hello world")
        answer = final_answer(pool, task)
        assert (answer["meta"]["status"], answer["body"][:6]) == ("done", "hello ")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)


def test_sigterm_stops_the_agent_and_its_handler_in_seconds(pool, agent, tmp_path):
    pids = tmp_path / "pids"
    running = agent("pi-7")
    task = post_task(pool, "pi-7", "sleepy", args=[str(pids)])
    wait_for(pids.exists, 20, "the handler started")
    began = time.monotonic()
    assert running.stop() == 0
    assert time.monotonic() - began < 5
    for pid in map(int, pids.read_text().split()):
        assert not alive(pid)
    answer = final_answer(pool, task, 5)
    assert (answer["meta"]["status"], answer["title"]) == ("failed", "stopped")
    assert answer["meta"]["exit_code"] in (143, 137) and "duration" in answer["meta"]


def test_the_agent_recovers_when_the_server_comes_back(tmp_path, handlers):
    live = LivePool(tmp_path / "restarting")
    live.provision()
    port = free_port()
    try:
        server = live.start_server(port=port)
        running = AgentProcess(tmp_path, server, "pi-1", live.devices["pi-1"], handlers).start()
        first = post_task(live, "pi-1", "hello", server=server)
        assert final_answer(live, first, server=server)["meta"]["status"] == "done"
        live.stop()
        live.servers.clear()
        time.sleep(2)  # the agent's polls fail meanwhile
        assert running.process.poll() is None
        live.start_server(port=port)
        second = post_task(live, "pi-1", "hello", server=server)
        assert final_answer(live, second, server=server)["meta"]["status"] == "done"
        assert running.stop() == 0
    finally:
        live.stop()
    log = (tmp_path / "agent.log").read_text()
    assert "again in" in log  # it retried, with backoff


class Outage(socketserver.StreamRequestHandler):
    """A server that is down while ``down``: each request's connection closed unanswered,
    or with ``refusal``, the pool's 503 for a database that does not answer. It counts the
    heartbeats asked, and answers them once it is up."""

    down = True
    refusal = False
    heartbeats = 0

    def handle(self):
        line = self.rfile.readline()
        if not line.startswith(b"POST /pool/heartbeat "):
            return  # a long-poll: dropped, down or not
        Outage.heartbeats += 1
        while self.rfile.readline() not in (b"\r\n", b""):
            pass
        if not Outage.down:
            self.answer(b"201 Created", b'{"id": "msg_heartbeat"}')
        elif Outage.refusal:
            self.answer(b"503 Service Unavailable", b'{"detail": "The database is down."}')

    def answer(self, status: bytes, body: bytes) -> None:
        self.wfile.write(
            b"HTTP/1.1 %s\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)
        )


@pytest.mark.parametrize("refusal", [False, True], ids=["connection-closed", "503"])
def test_heartbeats_back_off_through_an_outage_and_log_it_once(tmp_path, handlers, refusal):
    """Not a burst of retries every beat, for ever: each failed beat waits longer."""
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Outage)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Outage.down, Outage.refusal, Outage.heartbeats = True, refusal, 0
    url = f"http://127.0.0.1:{server.server_address[1]}"
    running = AgentProcess(tmp_path, url, "pi-1", "t", handlers)
    try:
        running.start("--heartbeat-interval", "0.2", "--backoff-max", "2")
        time.sleep(6)
        # A beat every 0.2 s was 30 heartbeats and as many warnings; now one, then 1-2 s apart.
        assert 2 <= Outage.heartbeats <= 8
        log = running.log.read_text()
        assert log.count("heartbeat not sent") == 1
        assert "heartbeats back off until the server answers" in log
        if refusal:  # the server's sentence, then the agent's: one sentence
            assert "The database is down; heartbeats back off" in log
        Outage.down = False
        wait_for(lambda: "the server answers again" in running.log.read_text(), 10, "the end")
        assert running.stop() == 0
    finally:
        if running.process.poll() is None:
            running.kill()
        server.shutdown()
        server.server_close()
    log = running.log.read_text()
    assert log.count("heartbeat not sent") == 1
    assert log.count("heartbeat sent: the server answers again, after") == 1


def test_the_agent_runs_without_site_packages(pool, tmp_path):
    """A copy of the package and a bare interpreter (no site-packages: no Django, no httpx)
    enroll a device: what a device gets from the agent's own distribution."""
    shutil.copytree(ROOT / "taskpool_agent", tmp_path / "taskpool_agent")
    config = tmp_path / "config.toml"
    command = [sys.executable, "-S", *enroll_command(pool, config, "pi-bare")[1:]]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        assert "waiting for staff to approve" in process.stdout.readline()
        pool.django("taskpool_device", "pi-bare", "--validate")
        assert process.wait(timeout=20) == 0
    finally:
        process.kill()
    assert 'token = "' in config.read_text()


def test_the_agent_needs_no_django():
    """The agent's modules import nothing of Django (a device need not install it)."""
    code = (
        "import sys, taskpool_agent.cli, taskpool_agent.agent, taskpool_agent.enroll;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('django', 'rest_framework', 'taskpool'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", "import json;" + code], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_systemd_units_command_line_is_one_the_agent_takes():
    unit = (ROOT / "deploy" / "taskpool-agent.service").read_text()
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    program, *arguments = line.removeprefix("ExecStart=").split()
    assert program.endswith("/taskpool-agent")
    parsed = parser().parse_args(arguments)
    assert parsed.command == "run"
    assert str(parsed.config) == "/etc/taskpool-agent/config.toml"
    assert "RestartPreventExitStatus=78" in unit  # the agent's exit status for a refused token


def test_the_systemd_unit_lets_the_agent_save_a_renewed_token():
    """The agent saves each renewed token as a new config file beside the old one. Under
    ``ProtectSystem=full`` (or ``strict``) systemd mounts /etc read-only for the service, and
    only ``ReadWritePaths`` opens a directory of it again: without that, no renewal is ever
    saved, and once the enrolled token expires the restarted agent is refused for good."""
    unit = (ROOT / "deploy" / "taskpool-agent.service").read_text()
    settings = [line.split("=", 1) for line in unit.splitlines() if "=" in line]
    arguments = next(value for key, value in settings if key == "ExecStart").split()[1:]
    config_directory = Path(str(parser().parse_args(arguments).config)).parent
    protect = next((value for key, value in settings if key == "ProtectSystem"), "no")
    read_only = {"full": ["/usr", "/boot", "/efi", "/etc"], "strict": ["/"]}.get(protect, [])
    writable = [
        Path(path) for key, value in settings if key == "ReadWritePaths" for path in value.split()
    ]
    if any(config_directory.is_relative_to(path) for path in read_only):
        assert any(config_directory.is_relative_to(path) for path in writable), (
            f"{config_directory} is read-only under ProtectSystem={protect}"
        )


@pytest.mark.parametrize("command", ["enroll", "run"])
def test_the_shared_options_go_before_or_after_the_command(command):
    """Written after the command, as people type them, or before, as the systemd unit does."""
    required = ["--server", "http://127.0.0.1:1/pool/", "--device-id", "pi"] * (command == "enroll")
    shared = ["--config", "/etc/x.toml", "--log-level", "DEBUG", "--backoff-max", "5"]
    for arguments in ([*shared, command, *required], [command, *required, *shared]):
        parsed = parser().parse_args(arguments)
        assert (str(parsed.config), parsed.log_level, parsed.backoff_max) == (
            "/etc/x.toml",
            "DEBUG",
            5.0,
        )
    # Given before only, the command's own copies of the options leave them alone;
    # given on both sides, the later one counts.
    parsed = parser().parse_args(["--config", "/a.toml", command, *required])
    assert str(parsed.config) == "/a.toml" and parsed.log_level == "INFO"
    parsed = parser().parse_args(["--config", "/a.toml", command, *required, "--config", "/b.toml"])
    assert str(parsed.config) == "/b.toml"
    default = parser().parse_args([command, *required])
    assert default.config == DEFAULT_PATH and default.backoff_max == 60.0


def test_a_second_agent_on_the_same_state_directory_stops_at_once(pool, tmp_path, handlers):
    """Two would both take each task, and both run it."""
    token = new_device(pool, "pi-twice")
    first = AgentProcess(tmp_path, pool.servers[0], "pi-twice", token, handlers).start()
    wait_for(lambda: (tmp_path / "state" / "agent.lock").exists(), what="the first agent's lock")
    second = AgentProcess(tmp_path, pool.servers[0], "pi-twice", token, handlers).start()
    try:
        assert second.process.wait(timeout=30) == 75  # EX_TEMPFAIL: systemd tries again later
        assert f"another taskpool-agent (pid {first.process.pid})" in first.log.read_text()
        assert first.process.poll() is None  # the first goes on
        task = post_task(pool, "pi-twice", "hello once")
        assert final_answer(pool, task)["meta"]["status"] == "done"
    finally:
        first.stop()


def test_a_second_agent_with_the_same_config_stops_at_once_whatever_its_state_directory(
    pool, tmp_path, handlers
):
    """The service names its state directory; started by hand with the same config, the
    agent took the default one, kept a journal of its own, and ran each task again."""
    token = new_device(pool, "pi-twice")
    first = AgentProcess(tmp_path, pool.servers[0], "pi-twice", token, handlers).start()
    second = AgentProcess(tmp_path, pool.servers[0], "pi-twice", token, handlers)
    try:
        wait_for(lambda: (tmp_path / ".config.toml.lock").exists(), what="the first's lock")
        second.start("--state-dir", str(tmp_path / "another-state"))
        assert second.process.wait(timeout=30) == 75
        said = second.log.read_text()
        assert f"runs with the config {tmp_path / 'config.toml'}" in said
        assert first.process.poll() is None
    finally:
        first.stop()


# The token's renewal ------------------------------------------------------------------


def claims_of(token: str) -> dict:
    import jwt

    return jwt.decode(token, options={"verify_signature": False})


def test_an_agent_renews_its_token_past_half_its_life_and_goes_on(tmp_path, handlers):
    """On a server whose device tokens live 12 s, the agent renews its token every 6 s or
    so, saves each in its config file, and answers tasks long after the first expired;
    the token it renews keeps working meanwhile (the same session)."""
    lifetime = 12
    short = LivePool(
        tmp_path / "short",
        {"TASKPOOL_TEST_SERVER_DEVICE_TOKEN_LIFETIME": str(lifetime)},
    )
    short.provision()
    server = short.start_server()
    try:
        first = new_device(short, "pi-renewing")
        running = AgentProcess(tmp_path, server, "pi-renewing", first, handlers).start(
            "--token-check-interval", "0.5"
        )

        def saved() -> str:
            return running.config.read_text().split('token = "')[1].split('"')[0]

        second = wait_for(lambda: saved() != first and saved(), lifetime, "a renewed token")
        assert claims_of(second)["sid"] == claims_of(first)["sid"]
        assert claims_of(second)["exp"] - claims_of(second)["iat"] == lifetime
        assert stat.S_IMODE(running.config.stat().st_mode) == 0o600
        # The renewed token and the one it renewed both work.
        for token in (first, second):
            answer = httpx.get(
                f"{server}/pool/pending", headers={"Authorization": f"Bearer {token}"}
            )
            assert answer.status_code == 200, answer.text
        third = wait_for(lambda: saved() not in (first, second) and saved(), 2 * lifetime)
        assert claims_of(third)["sid"] == claims_of(first)["sid"]
        wait_for(lambda: claims_of(first)["exp"] < time.time() - 1, 2 * lifetime)
        answer = httpx.get(f"{server}/pool/pending", headers={"Authorization": f"Bearer {first}"})
        assert answer.status_code == 401  # the first token has expired: the agent does not use it
        task = post_task(short, "pi-renewing", "hello again")
        assert final_answer(short, task)["meta"]["status"] == "done"
        assert running.process.poll() is None
        assert running.stop() == 0
        log = running.log.read_text()
        assert "token renewed" in log
        assert not any(token in log for token in (first, second, third, saved()))
    finally:
        short.stop()


@needs_faketime
def test_a_device_clock_days_ahead_renews_each_token_only_past_half_its_life(tmp_path, handlers):
    """A device that booted with its clock 20 days ahead (no real-time clock, no NTP yet)
    does not take each token it gets for one past half its life, to renew at every look:
    it counts on the server's clock, as the server's answers say it, which is the clock
    the token's times are on. So each token is renewed once half its 12 s are gone."""
    lifetime = 12
    short = LivePool(
        tmp_path / "short",
        {"TASKPOOL_TEST_SERVER_DEVICE_TOKEN_LIFETIME": str(lifetime)},
    )
    short.provision()
    server = short.start_server()
    running = None
    try:
        first = new_device(short, "pi-ahead")
        running = AgentProcess(tmp_path, server, "pi-ahead", first, handlers).start(
            "--token-check-interval", "0.2", environment=wall_clock(**{"": "+20d"})
        )
        seen = [first]

        def renewed_twice() -> bool:
            saved = running.config.read_text().split('token = "')[1].split('"')[0]
            if saved != seen[-1]:
                seen.append(saved)
            return len(seen) >= 3

        wait_for(renewed_twice, 3 * lifetime, "two renewals")
        issued = [claims_of(token)["iat"] for token in seen]
        # Issued at whole seconds, and renewed by a clock read at whole seconds.
        assert all(
            later - earlier >= lifetime / 2 - 1 for earlier, later in itertools.pairwise(issued)
        )
        task = post_task(short, "pi-ahead", "hello")
        assert final_answer(short, task)["meta"]["status"] == "done"
        assert running.stop() == 0
        assert running.log.read_text().count("token renewed") < 4
    finally:
        if running is not None and running.process.poll() is None:
            running.kill()
        short.stop()


def test_a_claim_refused_while_the_device_is_invalidated_is_tried_again(pool, handlers, tmp_path):
    """403 because the device is refused, not the task: the claim is not given up for good,
    and once staff validate the device again it claims the task and runs it."""
    from taskpool_agent.agent import Agent, Options
    from taskpool_agent.client import Backoff
    from taskpool_agent.config import Config
    from taskpool_agent.journal import attempt_key

    server = pool.servers[0]
    token = new_device(pool, "pi-claim-paused")
    new_device(pool, "pi-claim-peer")
    posted = httpx.post(
        f"{server}/pool/task",
        json={"to": "device:[pi-claim-paused,pi-claim-peer]", "title": "hello", "mode": "any"},
        headers=pool.bearer("ops"),
    )
    assert posted.status_code == 201, posted.text
    task = posted.json()
    options = Options(
        handlers=handlers,
        state_dir=tmp_path / "state",
        wait=1,
        check_interval=0.05,
        stream=False,
        backoff=Backoff(0.01, 0.05),
    )
    device = Agent(Config(f"{server}/pool/", "pi-claim-paused", token), options)
    pool.django("taskpool_device", "pi-claim-paused", "--invalidate")
    assert device.claim(attempt_key(task), task) is False
    assert device.journal.read(attempt_key(task)) is None  # not given up for good
    pool.django("taskpool_device", "pi-claim-paused", "--validate")
    device.serve_once()
    answers = [r for r in responses(pool, task["id"]) if r["from"] == "device:pi-claim-paused"]
    assert [r["meta"]["status"] for r in answers] == ["claimed", "done"]
