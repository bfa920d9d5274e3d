"""The device agent's parts on their own, without a server: the config file, handler
lookup, time limits, the journal, backoff, and refusals from a real HTTP server."""

from __future__ import annotations

import base64
import contextlib
import http.server
import json
import os
import shutil
import socket
import socketserver
import ssl
import stat
import subprocess
import sys
import threading
import time

import pytest

from taskpool_agent import cli, client
from taskpool_agent.agent import a_message, ended
from taskpool_agent.client import (
    Backoff,
    PoolClient,
    Refused,
    Stopped,
    Unreachable,
    retry_after,
)
from taskpool_agent.clock import Start, boot_id
from taskpool_agent.config import Config, ConfigError, load, save, token_device
from taskpool_agent.enroll import enroll
from taskpool_agent.journal import (
    ANSWERED,
    DAMAGED,
    FINISHED,
    STARTED,
    Journal,
    JournalInUse,
    attempt_key,
)
from taskpool_agent.renewal import wants_renewal
from taskpool_agent.runner import (
    HandlerProcess,
    NoHandler,
    Progress,
    find_handler,
    outcome_of,
    process_started,
    still_running,
    timed_by_server,
    timeout_of,
)


def test_the_config_round_trips_and_is_0600(tmp_path):
    path = tmp_path / "deep" / "config.toml"
    config = Config(server="http://h/pool/", device_id="pi-1", token='a"b\\c\u2028')
    save(path, config)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert load(path) == config
    path.chmod(0o644)
    save(path, config)  # a rewrite is 0600 again
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_saving_the_config_syncs_its_directory_so_the_token_survives_a_power_cut(
    tmp_path, monkeypatch
):
    """The rename that puts the token in place is in the directory: synced, or a power cut
    just after enrolling may leave the old file and an agent without its token."""
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.path.realpath(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    save(tmp_path / "agent.toml", Config(server="http://127.0.0.1:1/pool/", device_id="pi-1"))
    assert str(tmp_path.resolve()) in synced


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('server = "http://h/"\n', "server and device_id are required"),
        ('server = "http://h/"\ndevice_id = 5\n', "device_id must be a string"),
        ('server = "http://h/"\ndevice_id = "x"\ncolour = "red"\n', "unknown keys colour"),
        ("server = \n", "Cannot read"),
        ('server = "127.0.0.1:8000/pool/"\ndevice_id = "x"\n', "an http:// or https:// URL"),
        ('server = "ftp://h/pool/"\ndevice_id = "x"\n', "an http:// or https:// URL"),
        ('server = "http:///pool/"\ndevice_id = "x"\n', "an http:// or https:// URL"),
        ('server = "http://h/pool/ "\ndevice_id = "x"\n', "an http:// or https:// URL"),
        ('server = "http://h:port/pool/"\ndevice_id = "x"\n', "an http:// or https:// URL"),
    ],
)
def test_a_bad_config_says_what_is_wrong(tmp_path, text, says):
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load(path)
    with pytest.raises(ConfigError, match="run taskpool-agent enroll"):
        load(tmp_path / "missing.toml")


def test_a_config_that_is_not_utf8_says_so(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'server = "http://h/pool/"\ndevice_id = "pi-\xff"\n')
    with pytest.raises(ConfigError, match="Cannot read the config file"):
        load(path)


def a_token_for(device_id: str) -> str:
    """A device token's shape (header, claims, signature), as the server signs them."""

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part({'device_id': device_id, 'sid': 's'})}.c2ln"


def test_a_config_whose_token_is_another_devices_is_refused_at_start(tmp_path, capsys):
    config = tmp_path / "config.toml"
    save(config, Config(server="http://127.0.0.1:9/pool/", device_id="pi-1", token="x"))
    assert token_device(a_token_for("pi-2")) == "pi-2"
    assert token_device("not.a-token") is None and token_device("") is None
    save(
        config,
        Config(server="http://127.0.0.1:9/pool/", device_id="pi-1", token=a_token_for("pi-2")),
    )
    assert cli.main(["--config", str(config), "run"]) == 78
    assert "the token is device pi-2's, but device_id is pi-1" in capsys.readouterr().err


@pytest.mark.parametrize("level", ["debug", "Debug", "DEBUG"])
def test_the_log_level_is_taken_in_any_case(level):
    assert cli.parser().parse_args(["--log-level", level, "run"]).log_level == "DEBUG"
    assert cli.parser().parse_args(["run", "--log-level", level]).log_level == "DEBUG"
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["--log-level", "loud", "run"])


def test_a_state_directory_that_cannot_be_written_is_one_line_and_status_73(tmp_path, capsys):
    config = tmp_path / "config.toml"
    token = a_token_for("pi-1")
    save(config, Config(server="http://127.0.0.1:9/pool/", device_id="pi-1", token=token))
    (tmp_path / "a-file").write_text("")
    state = tmp_path / "a-file" / "state"  # no directory can be made there, root or not
    assert cli.main(["--config", str(config), "run", "--state-dir", str(state)]) == 73
    said = capsys.readouterr().err
    assert said.startswith(f"taskpool-agent: {state}") and "Traceback" not in said
    assert said.count("\n") == 1


def test_one_agent_at_a_time_keeps_a_journal(tmp_path):
    Journal(tmp_path).hold()
    Journal(tmp_path).write("a.1", {"state": STARTED})  # reading and writing: no lock
    with pytest.raises(JournalInUse, match=rf"another taskpool-agent \(pid {os.getpid()}\)"):
        Journal(tmp_path).hold()


def test_a_journal_whose_directory_was_removed_makes_it_again(tmp_path):
    """Removed by hand while the agent ran: it took every task since for a full disk."""
    import shutil

    journal = Journal(tmp_path)
    shutil.rmtree(tmp_path / "tasks")
    assert journal.has_room() is None
    journal.write("a.1", {"state": STARTED})
    written = json.loads((tmp_path / "tasks" / "a.1" / "entry.json").read_text())
    assert written["state"] == STARTED


def test_an_agent_holding_the_journal_is_not_named_by_a_pid_no_process_has(tmp_path):
    """The holder could not write its pid (a read-only disk): the file has an earlier one's."""
    Journal(tmp_path).hold()
    lock = next(path for path in tmp_path.iterdir() if path.read_text().strip() == str(os.getpid()))
    lock.write_text("4194999\n")  # above any pid Linux gives
    with pytest.raises(JournalInUse) as in_use:
        Journal(tmp_path).hold()
    assert "(pid" not in str(in_use.value) and "another taskpool-agent runs" in str(in_use.value)


@pytest.fixture
def handlers(tmp_path):
    directory = tmp_path / "handlers"
    directory.mkdir()
    for name, mode in (("run", 0o755), ("notexec", 0o644), (".hidden", 0o755)):
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(mode)
    (tmp_path / "outside").write_text("#!/bin/sh\n")
    (tmp_path / "outside").chmod(0o755)
    return directory


def test_a_handler_is_named_by_meta_or_the_titles_first_word(handlers):
    assert find_handler(handlers, {"title": "run it now", "meta": {}}) == (handlers / "run", [])
    found = find_handler(handlers, {"title": "x", "meta": {"handler": "run", "args": ["-v"]}})
    assert found == (handlers / "run", ["-v"])


@pytest.mark.parametrize(
    ("task", "says"),
    [
        ({"title": "notexec", "meta": {}}, r"notexec is not executable .* \(chmod \+x it\)"),
        ({"title": "missing", "meta": {}}, "No handler named missing"),
        ({"title": ".hidden", "meta": {}}, "not a handler name"),
        ({"title": "x", "meta": {"handler": "../outside"}}, "not a handler name"),
        ({"title": "x", "meta": {"handler": 3}}, "not a handler name"),
        ({"title": "", "meta": {}}, "not a handler name"),
        ({"title": "run", "meta": {"args": "a b"}}, "meta.args must be a list of strings"),
        ({"title": "run", "meta": {"args": [1]}}, "meta.args must be a list of strings"),
    ],
)
def test_no_handler_outside_the_directory_or_not_executable(handlers, task, says):
    with pytest.raises(NoHandler, match=says):
        find_handler(handlers, task)


def test_the_time_limit():
    assert timeout_of({"meta": {}}, 60) == 60
    assert timeout_of({"meta": {"handler_timeout": 5}}, 60) == 5
    assert timeout_of({"meta": {"timeout": {"in_progress": 30}}}, 60) == 30
    both = {"handler_timeout": 5, "timeout": {"in_progress": 30}}
    assert timeout_of({"meta": both}, 60) == 5
    for bad in (0, -1, True, "5", None):
        assert timeout_of({"meta": {"handler_timeout": bad}}, 60) == 60
    # Whose limit it is: the server's (a job timeout alone), or the agent's.
    assert timed_by_server({"meta": {"timeout": {"in_progress": 30}}})
    assert not timed_by_server({"meta": both})
    assert not timed_by_server({"meta": {}})
    assert not timed_by_server({"meta": {"timeout": {"in_progress": 0}}})
    assert not timed_by_server({"meta": {"timeout": 30}})  # not a job's, which is an object
    assert timed_by_server({"meta": {"timeout": {"in_progress": 30}, "handler_timeout": True}})


@pytest.mark.parametrize(
    "line, report",
    [
        (b"progress: half way ", Progress(text="half way")),
        (b"progress:", Progress(text="")),
        (b"step-timeout: 90", Progress(step_timeout=90.0)),
        (b"step-timeout:2.5", Progress(step_timeout=2.5)),
        (b"step-timeout: soon", None),
        (b"step-timeout: 0", None),
        (b"step-timeout: -3", None),
        (b"step-timeout: inf", None),
        (b"step-timeout: nan", None),
        (b"almost progress: no", None),
    ],
)
def test_what_a_line_of_output_reports(line, report):
    assert Progress.parse(line) == report


def test_exit_statuses():
    assert outcome_of(0, "ok", 1.0).status == "done"
    assert outcome_of(65, "", 1.0).status == "rejected"
    assert outcome_of(1, "", 1.0).status == "failed"
    assert outcome_of(137, "", 1.0).status == "failed"
    interrupted = outcome_of(None, "half", 1.0)
    assert (interrupted.status, interrupted.title) == ("failed", "interrupted")


def test_the_journal(tmp_path):
    journal = Journal(tmp_path)
    task = {"id": "msg_" + "a" * 32, "meta": {"attempt": 2}}
    key = attempt_key(task)
    assert key == "msg_" + "a" * 32 + ".2"
    assert attempt_key({"id": "../../etc", "meta": {}}) == ".._.._etc.1"
    assert journal.read(key) is None
    journal.write(key, {"state": STARTED, "task": task, "started_at": 2.0})
    answer = {"status": "done", "title": "exit 0", "body": "", "meta": {}}
    journal.write("other.1", {"state": FINISHED, "task": task, "started_at": 1.0, "answer": answer})
    journal.write("done.1", {"state": ANSWERED, "task": task, "started_at": 0.5})
    assert [k for k, _ in journal.unanswered()] == ["other.1", key]
    assert journal.forget_old(now=time.time()) == 0
    assert journal.forget_old(now=time.time() + 9 * 24 * 3600, keep={"done.1"}) == 0
    assert journal.forget_old(now=time.time() + 9 * 24 * 3600) == 1
    assert journal.read("done.1") is None and journal.read(key)["state"] == STARTED


def test_a_new_attempts_entry_is_synced_in_its_parents_so_a_power_cut_keeps_it(
    tmp_path, monkeypatch
):
    """The entry written before a handler starts is in a directory made for it: the name of
    that directory (and of the journal's, made at the first start) is synced in its parent,
    or a power cut while the handler runs may lose the entry, and the task would run again."""
    synced = []
    real_fsync = os.fsync

    def fsync(descriptor: int) -> None:
        synced.append(os.path.realpath(f"/proc/self/fd/{descriptor}"))
        real_fsync(descriptor)

    monkeypatch.setattr(os, "fsync", fsync)
    state = tmp_path / "state"
    journal = Journal(state)
    journal.write("msg_a.1", {"state": STARTED, "task": {"id": "msg_a"}, "started_at": 1.0})
    assert str(state.resolve()) in synced  # the journal's directory, made at the first start
    assert str((state / "tasks").resolve()) in synced  # the attempt's directory, made now
    synced.clear()
    journal.write("msg_a.1", {"state": STARTED, "task": {"id": "msg_a"}, "started_at": 1.0})
    assert str((state / "tasks").resolve()) not in synced  # once is enough


def test_an_entry_is_replaced_whole_once_its_bytes_are_on_disk(tmp_path, monkeypatch):
    """A power cut at any moment leaves the old entry or the new one, never a torn or empty
    one (which the agent would take for damaged: the task neither run again nor answered)."""
    journal = Journal(tmp_path / "state")
    journal.write("msg_a.1", {"state": STARTED, "task": {"id": "msg_a"}, "started_at": 1.0})
    entry = journal.directory("msg_a.1") / "entry.json"
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(descriptor: int) -> None:
        events.append(("fsync", os.path.realpath(f"/proc/self/fd/{descriptor}")))
        real_fsync(descriptor)

    def replace(source, target) -> None:
        # What a power cut just before the rename would leave in the entry's place.
        with open(target, encoding="utf-8") as left:
            events.append(("replace", str(source), str(target), left.read()))
        real_replace(source, target)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    journal.write(
        "msg_a.1", {"state": FINISHED, "task": {"id": "msg_a"}, "started_at": 1.0, "status": 0}
    )
    renames = [event for event in events if event[0] == "replace"]
    assert len(renames) == 1
    _, source, target, left_before = renames[0]
    assert target == str(entry) and source != target
    assert json.loads(left_before)["state"] == STARTED  # the old entry, whole, until then
    synced = [event[1] for event in events[: events.index(renames[0])] if event[0] == "fsync"]
    assert os.path.realpath(source) in synced  # the new bytes on disk before the rename
    assert json.loads(entry.read_text())["state"] == FINISHED


def test_backoff_doubles_with_jitter_up_to_its_most():
    backoff = Backoff(first=1, most=8)
    for failures, step in ((0, 1), (1, 2), (2, 4), (3, 8), (10, 8)):
        delays = {backoff.delay(failures) for _ in range(50)}
        assert all(step / 2 <= delay <= step for delay in delays)
        assert len(delays) > 1  # jittered


GARBLED, CUT_SHORT, HEADERS_ONLY, REFUSAL_CUT_SHORT, PORTAL, NGINX = -1, -2, -3, -4, -5, -6
MOVED, PROXY_404, PROXY_401 = -7, -8, -9  # a redirect, and a proxy's own error pages


class Answers(http.server.BaseHTTPRequestHandler):
    """A real HTTP server that answers from a script: (status, body) per request."""

    script: list[tuple[int, dict]] = []
    seen: list[dict] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        Answers.seen.append(
            {
                "method": self.command,
                "key": self.headers["Idempotency-Key"],
                "body": json.loads(self.rfile.read(length)) if length else None,
            }
        )
        status, body = Answers.script.pop(0)
        if status == MOVED:  # the site moved to https, say
            self.send_response(301)
            self.send_header("Location", "http://127.0.0.1:9/pool/response")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if status in (PROXY_404, PROXY_401):
            code = 404 if status == PROXY_404 else 401
            page = f"<html><head><title>{code}</title></head><body>nginx</body></html>".encode()
            self.send_response(code)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if status == GARBLED:  # a status line that is not HTTP
            self.wfile.write(b"GARBAGE\r\n\r\n")
            self.close_connection = True
            return
        data = json.dumps(body).encode()
        if status == HEADERS_ONLY:  # cut after its headers: http.client reads a 200, empty
            self.send_response(200)
            self.end_headers()
            self.close_connection = True
            return
        if status == PORTAL:  # a captive portal's page, or the site where the pool was meant
            page = b"<html>\n  <body>Log in to the hotel's Wi-Fi</body>\n</html>\n"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if status == NGINX:  # a proxy in front of a server that is down
            page = (
                b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                b"<center><h1>502 Bad Gateway</h1></center>\r\n"
                b"<hr><center>nginx/1.24.0</center>\r\n</body>\r\n</html>\r\n"
            )
            self.send_response(502)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)
            return
        if status == REFUSAL_CUT_SHORT:  # a proxy's 502 whose page stops short
            self.send_response(502)
            self.send_header("Content-Length", "200")
            self.end_headers()
            self.wfile.write(b"<html>Bad Gate")
            self.close_connection = True
            return
        if status == CUT_SHORT:  # the body stops before its announced length
            self.send_response(201)
            self.send_header("Content-Length", str(len(data) + 10))
            self.end_headers()
            self.wfile.write(data)
            self.close_connection = True
            return
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST

    def log_message(self, *args):
        pass


@pytest.fixture
def scripted():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Answers.seen = []
    yield server
    server.shutdown()


def client_for(server) -> PoolClient:
    return PoolClient(
        f"http://127.0.0.1:{server.server_address[1]}/pool/", "t", Backoff(0.01, 0.02)
    )


def test_5xx_is_retried_with_the_same_key_and_4xx_is_final(scripted):
    Answers.script = [(503, {"detail": "busy"}), (500, {}), (201, {"id": "msg_1"})]
    answer = client_for(scripted).call("POST", "response", {"a": 1}, idempotency_key="k1")
    assert answer.status == 201 and answer.data == {"id": "msg_1"}
    assert [seen["key"] for seen in Answers.seen] == ["k1", "k1", "k1"]

    Answers.script = [(409, {"detail": "Already answered."})]
    with pytest.raises(Refused) as refused:
        client_for(scripted).call("POST", "response", {}, idempotency_key="k2")
    assert (refused.value.status, refused.value.detail) == (409, "Already answered.")
    assert len(Answers.seen) == 4  # once: a 409 is not asked again


def test_a_redirect_is_not_followed_but_said_and_asked_again(scripted, caplog):
    """urllib would send the answer on as a GET, and the agent would take it for refused."""
    Answers.script = [(MOVED, {}), (201, {"id": "msg_1"})]
    answer = client_for(scripted).call("POST", "response", {"a": 1}, idempotency_key="k1")
    assert answer.status == 201
    assert [(seen["method"], seen["key"]) for seen in Answers.seen] == [("POST", "k1")] * 2
    assert (
        "POST response: 301: the server redirects to http://127.0.0.1:9/pool/response: "
        "set the config's server to the pool's URL there; again in "
    ) in caplog.text


def test_a_proxys_own_404_or_401_is_asked_again_and_only_the_pools_refusal_is_final(
    scripted, caplog
):
    Answers.script = [(PROXY_404, {}), (PROXY_401, {}), (201, {"id": "msg_1"})]
    answer = client_for(scripted).call("POST", "response", {"a": 1}, idempotency_key="k1")
    assert answer.status == 201 and len(Answers.seen) == 3
    assert "401 401 nginx (not the pool's answer: is the config's server" in caplog.text
    Answers.script = [(404, {"detail": "No task msg_x."})]
    with pytest.raises(Refused) as refused:
        client_for(scripted).call("POST", "response", {}, idempotency_key="k2")
    assert (refused.value.status, refused.value.detail) == (404, "No task msg_x.")
    # Where the caller says a page is final (at its first contact, or when enrolling).
    Answers.script = [(PROXY_404, {})]
    with pytest.raises(Refused) as refused:
        client_for(scripted).call("GET", "pending", page_refuses=frozenset({404}))
    assert refused.value.detail.startswith("not the pool (the server must be the pool's URL")


def test_a_proxys_401_on_a_heartbeat_leaves_the_token_alone(scripted, tmp_path):
    from taskpool_agent.agent import Agent, Options

    Answers.script = [(PROXY_401, {}), (201, {"id": "msg_1"})]
    agent = Agent(
        Config(server=client_for(scripted).base_url, device_id="pi-1", token="t"),
        Options(tmp_path / "handlers", tmp_path / "state", backoff=Backoff(0.01, 0.02)),
    )
    agent.client.call("POST", "heartbeat", {}, idempotency_key="h1")
    assert not agent.token_refused.is_set() and len(Answers.seen) == 2


def test_a_retry_is_logged_as_one_sentence(scripted, caplog):
    Answers.script = [
        (503, {"detail": "The database does not answer now; retry in 5 s (Retry-After)."}),
        (201, {"id": "msg_1"}),
    ]
    client_for(scripted).call("POST", "response", {"a": 1}, idempotency_key="k1")
    assert "retry in 5 s (Retry-After); again in " in caplog.text


def test_a_retried_answer_names_its_task_in_the_log(scripted, tmp_path, caplog):
    from taskpool_agent.agent import Agent, Options
    from taskpool_agent.runner import Outcome

    Answers.script = [(503, {"detail": "busy"}), (201, {"id": "msg_1"})]
    agent = Agent(
        Config(server=client_for(scripted).base_url, device_id="pi-1", token="t"),
        Options(tmp_path / "handlers", tmp_path / "state", backoff=Backoff(0.01, 0.02)),
    )
    task = {"id": "msg_t", "meta": {}}
    agent.answer("msg_t.1", task, Outcome("done", "done", "", {}))
    assert "msg_t.1: POST response: 503 busy; again in " in caplog.text


def test_a_proxys_error_page_is_quoted_once(scripted, caplog):
    Answers.script = [(NGINX, {}), (201, {"id": "msg_1"})]
    client_for(scripted).call("POST", "response", {"a": 1}, idempotency_key="k1")
    assert "POST response: 502 Bad Gateway nginx/1.24.0; again in " in caplog.text


def test_retries_end_when_their_time_is_up():
    closed = PoolClient("http://127.0.0.1:9/pool/", "t", Backoff(0.01, 0.02))  # discard port
    with pytest.raises(Unreachable):
        closed.call("POST", "heartbeat", {}, retry_for=0.2)


def test_an_answer_garbled_or_cut_short_on_the_way_is_retried(scripted):
    Answers.script = [
        (GARBLED, {}),
        (CUT_SHORT, {"id": "msg_1"}),
        (HEADERS_ONLY, {}),
        (REFUSAL_CUT_SHORT, {}),
        (201, {"id": "msg_1"}),
    ]
    answer = client_for(scripted).call("POST", "response", {"a": 1}, idempotency_key="k1")
    assert answer.data == {"id": "msg_1"}
    assert [seen["key"] for seen in Answers.seen] == ["k1"] * 5


def test_an_answer_that_is_not_json_is_retried_saying_where_to_look(scripted, caplog):
    Answers.script = [(PORTAL, {}), (201, {"id": "msg_1"})]
    answer = client_for(scripted).call("POST", "response", {"a": 1}, idempotency_key="k1")
    assert answer.data == {"id": "msg_1"}
    assert "the answer is not JSON (is the config's server the pool's URL" in caplog.text


def test_a_success_that_is_not_the_pools_answer_is_retried(scripted):
    """A portal's or proxy's JSON on a 200: taken for the answer stored, it was lost."""
    Answers.script = [(200, {"portal": "ok"}), (201, {"id": "msg_1", "type": "response"})]
    answer = client_for(scripted).call(
        "POST", "response", {"a": 1}, idempotency_key="k1", expect=a_message
    )
    assert answer.data["id"] == "msg_1"
    assert [seen["key"] for seen in Answers.seen] == ["k1", "k1"]


class Enrollment(http.server.BaseHTTPRequestHandler):
    """A server that takes an enrollment, then answers "waiting" with a given Retry-After."""

    retry_after = "0"
    asked = 0

    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self._json(202, {"device_id": "pi-1", "enrollment_secret": "s" * 32})

    def do_GET(self):
        Enrollment.asked += 1
        self._json(202, {"device_id": "pi-1", "status": "waiting"}, Enrollment.retry_after)

    def _json(self, status, body, retry_after=None):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if retry_after is not None:
            self.send_header("Retry-After", retry_after)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("retry_after", ["0", "garbage"])
def test_enrollment_waits_for_approval_within_the_retry_after_bounds(tmp_path, retry_after):
    """As every call does: at least a second between asks, whatever the server says."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Enrollment)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Enrollment.retry_after, Enrollment.asked = retry_after, 0
    stop = threading.Event()
    threading.Timer(1.5, stop.set).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/pool/"
    try:
        with pytest.raises(KeyboardInterrupt):  # how enroll ends when stopped
            enroll(tmp_path / "config.toml", server=url, device_id="pi-1", stop=stop)
    finally:
        server.shutdown()
    assert 1 <= Enrollment.asked <= 2  # once at once, then at least a second apart


def test_enrolling_again_with_the_same_server_written_otherwise_keeps_the_token(tmp_path):
    config = tmp_path / "config.toml"
    save(config, Config(server="http://127.0.0.1:9/pool/", device_id="pi-1", token="kept"))
    before = config.read_bytes()
    same = enroll(config, server="http://127.0.0.1:9/pool", device_id="pi-1")
    assert same.token == "kept" and config.read_bytes() == before
    # Another device, or another server: refused before the file is touched.
    for server, device in (
        ("http://127.0.0.1:9/pool", "pi-2"),
        ("http://127.0.0.1:8/pool/", "pi-1"),
    ):
        with pytest.raises(
            ConfigError, match="holds the token of pi-1 at http://127.0.0.1:9/pool/"
        ):
            enroll(config, server=server, device_id=device)
        assert config.read_bytes() == before


def test_an_enrollment_answered_by_something_else_is_asked_again(scripted, tmp_path):
    """A 200 JSON that is not the pool's (a portal's) was a traceback: KeyError."""
    Answers.script = [
        (200, {"ok": True}),
        (202, {"device_id": "pi-1", "enrollment_secret": "s"}),
        (200, {"ok": True}),
        (200, {"device_id": "pi-1", "token": "the-token"}),
    ]
    backoff = Backoff(0.01, 0.02)
    url = client_for(scripted).base_url
    done = enroll(tmp_path / "config.toml", server=url, device_id="pi-1", backoff=backoff)
    assert done.token == "the-token" and len(Answers.seen) == 4
    assert [seen["method"] for seen in Answers.seen] == ["POST", "POST", "GET", "GET"]


def test_once_stopping_the_last_try_waits_only_a_few_seconds(monkeypatch):
    """systemd gives the whole stop 15 s: a server that does not answer must not take 30."""
    monkeypatch.setattr(client, "STOPPING_TIMEOUT", 0.3)
    silent = socket.create_server(("127.0.0.1", 0))  # connects, never answers
    stop = threading.Event()
    stop.set()
    port = silent.getsockname()[1]
    stopping = PoolClient(f"http://127.0.0.1:{port}/pool/", "t", Backoff(0.01, 0.02), stop)
    began = time.monotonic()
    try:
        with pytest.raises(Stopped):
            stopping.call("POST", "response", {}, idempotency_key="k", timeout=30)
    finally:
        silent.close()
    assert time.monotonic() - began < 5


def test_a_try_under_way_when_the_agent_stops_is_given_up_after_the_grace(monkeypatch):
    monkeypatch.setattr(client, "STOPPING_TIMEOUT", 0.3)
    silent = socket.create_server(("127.0.0.1", 0))  # connects, never answers
    stop = threading.Event()
    port = silent.getsockname()[1]
    sending = PoolClient(f"http://127.0.0.1:{port}/pool/", "t", Backoff(0.01, 0.02), stop)
    threading.Timer(0.5, stop.set).start()  # SIGTERM, while the answer waits for its reply
    began = time.monotonic()
    try:
        with pytest.raises(Stopped):
            sending.call("POST", "response", {}, idempotency_key="k", timeout=30)
    finally:
        silent.close()
    assert time.monotonic() - began < 3  # not the 30 s of its own timeout


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        ("2.5", 2.5),
        ("0", 1.0),  # obeyed, but never sooner than a second: a fleet must not hammer it
        ("0.001", 1.0),
        ("86400", 300.0),
        ("-1", None),  # not a delay: the backoff's own
        ("nan", None),
        ("inf", None),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),
        ("", None),
    ],
)
def testretry_after_is_obeyed_within_bounds(header, seconds):
    assert retry_after({"Retry-After": header}) == seconds


def test_a_nul_in_a_handler_name_or_its_arguments_is_no_handler(handlers):
    for meta in ({"handler": "echo\0"}, {"args": ["a\0b"]}):
        with pytest.raises(NoHandler, match="NUL|not a handler name"):
            find_handler(handlers, {"title": "echo", "meta": meta})


def test_handler_output_of_any_size_is_read_in_bounded_pieces(tmp_path, monkeypatch):
    from taskpool_agent import runner

    monkeypatch.setattr(runner, "READ_BUDGET", 4 * runner.READ_CHUNK)
    process = HandlerProcess(tmp_path, 0)
    noise = b"y" * (3 * runner.READ_CHUNK)  # one line longer than a chunk
    (tmp_path / "output").write_bytes(
        b"progress: one\n" + noise + b"\nstep-timeout: 30\nprogress: two\n" + noise + b"\n"
        + b"progress: three\n"
    )  # fmt: skip
    first = process.progress_lines()
    assert first == [Progress(text="two"), Progress(step_timeout=30.0)]  # the latest of each
    assert len(process._partial) <= 4096  # a long line is not kept whole
    assert process.progress_lines() == [Progress(text="three")]  # the rest, at the next look
    assert process.progress_lines() == []


def test_a_long_progress_line_read_in_pieces_is_still_a_report(tmp_path):
    """Its start, which says it is a report, is what is kept of it until its end comes."""
    process = HandlerProcess(tmp_path, 0)
    output = tmp_path / "output"
    output.write_bytes(b"progress: HEAD-" + b"z" * 5000)  # flushed, not ended yet
    assert process.progress_lines() == []
    with output.open("ab") as more:
        more.write(b"-END\n")
    (report,) = process.progress_lines()
    assert report.text is not None and report.text.startswith("HEAD-zzz")


@pytest.mark.parametrize(
    "text",
    [
        b"{not json",
        b"\xff\xfe",
        b"[1, 2]",
        b'{"state": "started"}',
        b'{"state": "finished", "task": {"id": "msg_1"}, "updated_at": 1}',
        b'{"state": "finished", "task": {"id": "msg_1"}, "updated_at": 1, "answer": {"x": 1}}',
        b'{"state": "started", "task": {"id": "msg_1"}, "updated_at": 1}',
        b'{"state": "sent", "task": {"id": "msg_1"}, "updated_at": 1}',
        b'{"state": "started", "task": {"id": "msg_1"}, "updated_at": 1, "started_at": 1, '
        b'"pid": "abc"}',
        b'{"state": "finished", "task": {"id": "msg_1"}, "updated_at": 1, "answer": '
        b'{"status": "done", "title": 5, "body": "", "meta": {}}}',
        b'{"state": "finished", "task": {"id": "msg_1"}, "updated_at": 1, "answer": '
        b'{"status": "done", "title": "exit 0", "body": null, "meta": {}}}',
        b'{"state": "finished", "task": {"id": "msg_1"}, "updated_at": 1, "answer": '
        b'{"status": "done", "title": "exit 0", "body": "", "meta": [1]}}',
        b'{"state": "started", "task": {"id": "msg_1", "meta": []}, "updated_at": 1, '
        b'"started_at": 1}',
    ],
)
def test_a_damaged_entry_is_never_run_again_nor_stops_the_agent(tmp_path, text, caplog):
    journal = Journal(tmp_path)
    task = {"id": "msg_" + "b" * 32, "meta": {}}
    key = attempt_key(task)
    journal.write(key, {"state": STARTED, "task": task, "started_at": 1.0, "pid": 5})
    (journal.directory(key) / "entry.json").write_bytes(text)
    assert journal.read(key) == {"state": DAMAGED}  # known: an agent does not take it again
    assert journal.read(key) == {"state": DAMAGED}
    assert list(journal.unanswered()) == []  # nothing to answer from it
    assert journal.forget_old(now=10**12) == 0  # and it stays, to be looked at
    warnings = [r for r in caplog.records if "damaged" in r.getMessage()]
    assert len(warnings) == 1 and str(journal.root / key / "entry.json") in warnings[0].getMessage()


@pytest.mark.parametrize(
    "task",
    [
        {"title": "echo", "meta": {"handler": "x" * 300}},
        {"title": "y" * 256 + " now", "meta": {}},
        {"title": "echo", "meta": {"handler": "é" * 128}},  # 256 bytes
    ],
)
def test_a_handler_name_longer_than_a_file_name_is_no_handler(handlers, task):
    with pytest.raises(NoHandler, match="not a handler name"):
        find_handler(handlers, task)


def test_a_handler_adopted_then_stopped_gets_the_status_of_its_signal(tmp_path):
    handler = tmp_path / "sleeper"
    handler.write_text("#!/bin/sh\nsleep 30\n")
    handler.chmod(0o755)
    directory = tmp_path / "attempt"
    directory.mkdir()
    started = HandlerProcess.start(directory, handler, [], {"id": "msg_1"})
    adopted = HandlerProcess.adopt(directory, started.pid)  # as a restarted agent does
    adopted.kill(grace=2)
    assert adopted.exit_code() == 143  # SIGTERM, as sh would say
    assert started.wait(5)


def test_a_pid_is_a_journaled_handler_only_while_its_process_started_then_runs(tmp_path):
    """A pid names the handler the journal noted only while the process started at the
    time noted, at the boot noted, runs it; not an unrelated process, nor a later handler."""
    handler = tmp_path / "sleeper"
    handler.write_text("#!/bin/sh\nsleep 30\n")
    handler.chmod(0o755)
    directory = tmp_path / "attempt"
    directory.mkdir()
    process = HandlerProcess.start(directory, handler, [], {"id": "msg_1"})
    unrelated = subprocess.Popen(["sleep", "30"])
    try:
        started, boot = process.started, boot_id()
        assert started is not None and started == process_started(process.pid)
        assert still_running(process.pid, boot, started)
        assert not still_running(process.pid, boot, started + 1)  # a later process
        assert not still_running(process.pid, "an-earlier-boot", started)
        assert not still_running(unrelated.pid, boot, process_started(unrelated.pid))
        assert still_running(process.pid, None, None)  # an entry of an older agent
    finally:
        unrelated.kill()
        unrelated.wait()
        process.kill(grace=2)
    assert not still_running(process.pid, boot, started)


def test_only_the_tail_of_the_output_is_kept_once_answered(tmp_path):
    from taskpool_agent.runner import KEPT_OUTPUT_BYTES, keep_output_tail

    output = bytes(range(256)) * (3 * KEPT_OUTPUT_BYTES // 256) + b"the end\n"
    (tmp_path / "output").write_bytes(output)
    keep_output_tail(tmp_path)
    assert (tmp_path / "output").read_bytes() == output[-KEPT_OUTPUT_BYTES:]
    keep_output_tail(tmp_path)  # already short: left as it is
    assert (tmp_path / "output").read_bytes() == output[-KEPT_OUTPUT_BYTES:]
    keep_output_tail(tmp_path / "nothing")  # no output at all


class GarbledStream(http.server.BaseHTTPRequestHandler):
    """A stream whose first event is not the pool's, then the task's cancel."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        cancel = {"parent_id": "msg_t", "meta": {"status": "cancelled"}}
        self.wfile.write(b"event: response\ndata: [1, 2]\n\n")
        self.wfile.write(b"event: response\ndata: " + json.dumps(cancel).encode() + b"\n\n")
        self.close_connection = True

    def log_message(self, *args):
        pass


def test_a_garbled_event_on_the_stream_is_skipped_and_the_cancel_after_it_heard(tmp_path):
    from taskpool_agent.agent import Agent, Options

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GarbledStream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/pool/"
    agent = Agent(
        Config(server=url, device_id="pi-1", token="t"),
        Options(handlers=tmp_path / "handlers", state_dir=tmp_path / "state"),
    )
    closed = threading.Event()
    try:
        never_ends = HandlerProcess(tmp_path, 0)  # as a handler still running
        agent._follow_stream({"id": "msg_t", "meta": {}}, closed, never_ends)
    finally:
        server.shutdown()
    assert closed.is_set()


def test_an_error_page_is_said_on_one_line_of_the_log():
    from taskpool_agent.client import _detail

    page = b"<html>\n  <head><title>403</title></head>\n  <body>Forbidden</body>\n</html>\n" * 20
    said = _detail(page, 403)
    assert "\n" not in said and "<" not in said and said.startswith("403 Forbidden 403")
    assert len(said) <= 200
    assert _detail(b'{"detail": "Too many."}', 429) == "Too many."
    styled = b"<html><head><style>* { padding:0; }</style><script>x()</script></head>"
    assert _detail(styled + b"<body><h1>403 Forbidden</h1></body></html>", 403) == "403 Forbidden"
    odd = b"<!-- a note -->Access &amp; retry &lt;later&gt;<style>* { margin:0 }"  # unclosed
    assert _detail(odd, 503) == "Access & retry <later>"
    # The site's own page where the pool's URL was meant: which is what to mend.
    site = b"<html><head><title>Page not found at /enroll</title></head><body>...</body></html>"
    assert _detail(site, 404) == (
        "not the pool (the server must be the pool's URL, such as https://host/pool/): "
        "Page not found at /enroll ..."
    )
    assert _detail(b'{"detail": "No device pi-9 asked to join."}', 404) == (
        "No device pi-9 asked to join."
    )


class Dripping(socketserver.BaseRequestHandler):
    """A link that passes a byte every so often: each read is quick, the whole is not."""

    reply = b""
    pause = 0.05

    def handle(self):
        self.request.recv(65536)  # the request, all of it on loopback
        with contextlib.suppress(OSError):  # the client gave up and shut the connection
            for byte in self.reply:
                self.request.sendall(bytes([byte]))
                time.sleep(Dripping.pause)


@pytest.fixture
def dripping():
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Dripping)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/pool/"
    server.shutdown()
    server.server_close()


def test_an_answer_that_trickles_in_times_out_as_a_whole(dripping, caplog):
    """A socket's timeout counts each read alone: at a byte a read, 400 bytes took minutes."""
    body = json.dumps([{"id": "msg_1", "title": "x" * 300}]).encode()
    Dripping.reply = (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    slow = PoolClient(dripping, "t", Backoff(0.1, 0.2))
    began = time.monotonic()
    with pytest.raises(Unreachable, match=r"timed out \(no whole answer in 0.6 s\)"):
        slow.call("GET", "pending?limit=1", timeout=0.6, retry_for=1.5)
    assert time.monotonic() - began < 3  # not the 20 s the drip takes
    assert "GET pending?limit=1: timed out (no whole answer in 0.6 s); again in" in caplog.text

    # Its headers whole, its body cut where the deadline shut it: never taken for the answer.
    Dripping.reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n" + body
    with pytest.raises(Unreachable, match="timed out"):
        slow.call("GET", "pending?limit=1", timeout=1.5, retry_for=0.1)


@pytest.fixture
def quicker_drip():
    Dripping.pause = 0.01
    yield
    Dripping.pause = 0.05


def test_a_stream_that_trickles_without_finishing_an_event_times_out(dripping, quicker_drip):
    headers = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n"
    Dripping.reply = headers + b": open\n\n" * 4 + b"event: response\ndata: " + b"1" * 1000
    stream = PoolClient(dripping, "t").events("stream", read_timeout=1)
    began = time.monotonic()
    seen = []
    with pytest.raises(TimeoutError, match="no whole event in 1 s"):
        for event in stream:
            if not seen:
                time.sleep(1.2)  # the reader's own time is not the stream's silence
            seen.append(event)
    assert seen == [("", None)] * 4
    assert time.monotonic() - began < 5  # not the 10 s the drip takes


def test_a_start_counts_on_the_monotonic_clock_whatever_the_wall_clock_says():
    """Kept in a journal entry and read back by a restarted agent (the same boot): a wall
    clock stepped a year either way since the start changes nothing."""
    for step in (365 * 86400, -365 * 86400):
        start = Start(time.time() + step, time.monotonic() - 5, boot_id())
        assert 5 <= Start.of(json.loads(json.dumps(start.as_entry()))).elapsed() < 6
    # An entry of another boot (or written without the monotonic time): the wall clock,
    # never below zero.
    assert Start(time.time() + 3600, time.monotonic(), "another boot").elapsed() == 0
    assert 5 <= Start.of({"started_at": time.time() - 5}).elapsed() < 6


@pytest.mark.parametrize("step", [365 * 86400, -86400])
def test_a_handler_that_ended_across_a_clock_step_did_not_run_that_long(tmp_path, step):
    """Its status file has the wall clock's time at its end: a year later than its start
    once NTP stepped the clock forward (or a day earlier, back). Its duration is never
    more than the time since it started, nor below zero."""
    (tmp_path / "status").write_text("0\n")
    start = Start(time.time() - 2, time.monotonic() - 2, boot_id())
    os.utime(tmp_path / "status", (start.wall + 1 + step, start.wall + 1 + step))
    outcome = ended(HandlerProcess.adopt(tmp_path, 0), start)
    assert outcome.status == "done"
    assert 0 <= outcome.meta["duration"] < 2.5


@pytest.mark.skipif(
    shutil.which("openssl") is None or shutil.which("faketime") is None,
    reason="needs openssl and faketime to make a certificate valid from a later day",
)
def test_a_certificate_not_yet_valid_says_to_look_at_the_devices_clock(tmp_path, monkeypatch):
    """A device whose clock is behind (a Raspberry Pi booted with 1970, or with the time it
    saved at its last shutdown, until NTP sets it) takes the server's certificate for
    one not yet valid: the error says to look at the device's clock."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    # Valid from two days on: as a clock two days behind sees a certificate made today.
    later = ["faketime", "-f", "+2d"]
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    make = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run([*later, *make, *files, *subject], check=True, capture_output=True)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    try:
        client = PoolClient(
            f"https://127.0.0.1:{server.server_address[1]}/pool/", "t", Backoff(0.01, 0.02)
        )
        with pytest.raises(Unreachable) as caught:
            client.call("POST", "response", {}, retry_for=0.05)
    finally:
        server.shutdown()
    said = str(caught.value)
    assert "certificate is not yet valid" in said
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert f"the device's clock says {today}" in said and "NTP" in said


# A ``sync`` first on the wrapper's PATH: it notes what it is asked to sync and what the
# attempt's directory holds at that moment, then does what ``then`` says (the real sync,
# or a refusal of file arguments as a sync without them might).
RECORDING_SYNC = """#!/bin/sh
{{ echo "sync $*"; [ -e "{directory}/status.started" ] && echo started
  [ -s "{directory}/output" ] && echo ran
  for name in status.tmp status; do value=
  [ -e "{directory}/$name" ] && read -r value < "{directory}/$name"
  [ -e "{directory}/$name" ] && echo "$name=$value"; done; }} >> "{log}"
{then}
"""


def run_wrapped(tmp_path, monkeypatch, then: str, exit_status: int = 3):
    """The real wrapper around a handler that exits ``exit_status``, with a recording
    ``sync``; what the sync saw (one list per call), and the attempt's directory."""
    directory = tmp_path / "attempt"
    directory.mkdir()
    tools = tmp_path / "tools"
    tools.mkdir()
    log = tmp_path / "sync.log"
    (tools / "sync").write_text(RECORDING_SYNC.format(directory=directory, log=log, then=then))
    (tools / "sync").chmod(0o755)
    (tools / "mv").symlink_to(shutil.which("mv"))
    monkeypatch.setenv("PATH", str(tools))
    handler = tmp_path / "handler"
    handler.write_text(f"#!/bin/sh\necho did it\nexit {exit_status}\n")
    handler.chmod(0o755)
    process = HandlerProcess.start(directory, handler, [], {"id": "msg_1"})
    assert process.wait(20)
    calls: list[list[str]] = []
    for line in log.read_text().splitlines() if log.exists() else []:
        if line.startswith("sync"):
            calls.append([line])
        else:
            calls[-1].append(line)
    return calls, directory


def test_a_handlers_exit_status_is_synced_whole_before_it_is_renamed_into_place(
    tmp_path, monkeypatch
):
    """A power cut after the handler's end must not lose its status (the agent would answer
    a success ``failed``, interrupted), nor leave one half written: the status is synced
    under its temporary name, renamed into place, and the rename synced in its directory.
    Before all that, the handler's start is marked and synced before it runs: a power cut
    while it ran must not make the next boot run it again."""
    real_sync = shutil.which("sync")
    calls, directory = run_wrapped(tmp_path, monkeypatch, f'exec {real_sync} "$@"')
    assert calls == [
        [f"sync {directory}", "started"],  # the mark made durable, the handler not yet run
        [f"sync {directory}/status.tmp", "started", "ran", "status.tmp=3"],  # not yet in place
        [f"sync {directory}", "started", "ran", "status=3"],  # in place: the rename durable
    ]
    # What a restarted agent reads; the answer's body is the handler's output alone.
    assert HandlerProcess.adopt(directory, 0).exit_code() == 3
    assert (directory / "output").read_text() == "did it\n"
    assert sorted(path.name for path in directory.iterdir()) == [
        "output", "status", "status.started", "task.json", "work",  # work: the handler's own
    ]  # fmt: skip


def test_a_sync_that_takes_no_file_falls_back_to_syncing_everything(tmp_path, monkeypatch):
    """An old BusyBox or coreutils ``sync`` ignores its arguments and syncs everything; one
    that refuses them is asked to sync everything, and what it says stays out of the answer."""
    refusing = 'if [ "$#" -gt 0 ]; then echo "sync: extra operand" >&2; exit 1; fi'
    calls, directory = run_wrapped(tmp_path, monkeypatch, refusing, exit_status=0)
    assert [call[0] for call in calls] == [
        f"sync {directory}", "sync ",
        f"sync {directory}/status.tmp", "sync ", f"sync {directory}", "sync ",
    ]  # fmt: skip
    assert calls[1][1:] == ["started"]  # everything synced before the handler ran
    assert calls[3][1:] == ["started", "ran", "status.tmp=0"]  # and before the rename
    assert HandlerProcess.adopt(directory, 0).exit_code() == 0
    assert (directory / "output").read_text() == "did it\n"


def test_without_a_sync_the_status_is_still_written(tmp_path, monkeypatch):
    calls, directory = run_wrapped(tmp_path, monkeypatch, "exit 127")
    assert HandlerProcess.adopt(directory, 0).exit_code() == 3
    assert (directory / "output").read_text() == "did it\n"


# The token's renewal ---------------------------------------------------------------------


def a_token_with(claims: dict) -> str:
    def part(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    return f"{part({'alg': 'HS256'})}.{part(claims)}.c2ln"


def test_a_token_is_renewed_once_less_than_half_its_life_is_left():
    token = a_token_with({"device_id": "pi-1", "iat": 1_000_000, "exp": 1_000_000 + 3600})
    assert not wants_renewal(token, 1_000_000)
    assert not wants_renewal(token, 1_000_000 + 1799)
    assert wants_renewal(token, 1_000_000 + 1800)
    assert wants_renewal(token, 1_000_000 + 3599)
    # A 30-day token, 16 days on.
    month = a_token_with({"iat": 1_000_000, "exp": 1_000_000 + 30 * 86400})
    assert not wants_renewal(month, 1_000_000 + 14 * 86400)
    assert wants_renewal(month, 1_000_000 + 16 * 86400)
    # Times the server may write as fractions.
    assert wants_renewal(a_token_with({"iat": 10.5, "exp": 20.5}), 15.5)


@pytest.mark.parametrize(
    "claims",
    [
        {"device_id": "pi-1", "sid": "s"},
        {"exp": 2_000_000_000},
        {"iat": 1_000_000},
        {"iat": "1000000", "exp": "2000000"},
        {"iat": True, "exp": 2_000_000_000},
        {"iat": 1_000_000, "exp": None},
        {"iat": 1_000_000, "exp": 1_000_000},
        {"iat": 2_000_000, "exp": 1_000_000},
        [1, 2],
    ],
)
def test_a_token_that_does_not_say_its_times_is_left_alone(claims):
    assert not wants_renewal(a_token_with(claims), 1e12)


@pytest.mark.parametrize("token", ["", "x", "not.a-token", "a.!!!.c", "a.bnVsbA.c"])
def test_something_that_is_no_token_is_left_alone(token):
    assert not wants_renewal(token, 1e12)


class DaysBehind(http.server.BaseHTTPRequestHandler):
    """A real HTTP server whose clock is 20 days behind the device's (whose clock is ahead):
    its ``Date`` says so; ``/refuse`` answers 403."""

    def date_time_string(self, timestamp=None):
        return super().date_time_string(time.time() - 20 * 86400)

    def do_GET(self):
        data = b"[]" if self.path.endswith("pending") else b'{"detail": "No."}'
        self.send_response(200 if self.path.endswith("pending") else 403)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("path", ["pending", "refuse"])
def test_a_tokens_age_is_told_on_the_servers_clock_as_its_answers_say_it(path):
    """A token the server issued a day ago is not past half its life however far ahead the
    device's clock is: its times are compared with the server's, as its answers' Date
    says it (a refusal's too), run on by the device's monotonic clock."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DaysBehind)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        pool = PoolClient(f"http://127.0.0.1:{server.server_address[1]}/pool/")
        assert pool.server_clock.now() is None  # nothing heard yet: nothing to go by
        with contextlib.suppress(Refused):
            pool.call("GET", path)
        server_now = pool.server_clock.now()
        assert server_now is not None
        token = a_token_with(
            {"device_id": "pi-1", "iat": server_now - 86400, "exp": server_now + 29 * 86400}
        )
        assert wants_renewal(token, time.time())  # by the device's clock, 20 days ahead
        assert not wants_renewal(token, server_now)
        assert abs(server_now - (time.time() - 20 * 86400)) < 60
    finally:
        server.shutdown()


class Renewals(http.server.BaseHTTPRequestHandler):
    """A real HTTP server answering ``POST device/token`` from a script: (status, body)."""

    script: list[tuple[int, object]] = []
    seen: list[dict] = []

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        Renewals.seen.append(
            {
                "path": self.path,
                "authorization": self.headers["Authorization"],
                "body": self.rfile.read(length),
            }
        )
        status, body = Renewals.script.pop(0)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def renewing(tmp_path):
    """An agent of pi-1 whose token is past half its life, its config file, and a server."""
    from taskpool_agent.agent import Agent, Options

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Renewals)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Renewals.seen = []
    now = int(time.time())
    old = a_token_with(
        {"device_id": "pi-1", "sid": "s", "iat": now - 20 * 86400, "exp": now + 86400}
    )
    path = tmp_path / "config.toml"
    config = Config(
        server=f"http://127.0.0.1:{server.server_address[1]}/pool/", device_id="pi-1", token=old
    )
    save(path, config)
    agent = Agent(
        config,
        Options(
            tmp_path / "handlers",
            tmp_path / "state",
            backoff=Backoff(0.01, 0.02),
            config_path=path,
        ),
    )
    yield agent, path, old
    server.shutdown()


def test_a_renewed_token_is_saved_and_used_and_never_logged(renewing, caplog):
    agent, path, old = renewing
    # What an operator changed in the file since the agent read it stays.
    save(path, Config(server=agent.config.server, device_id="pi-1", token=old, handlers="/h"))
    new = a_token_with({"device_id": "pi-1", "sid": "s", "iat": 1, "exp": 2})
    Renewals.script = [(200, {"token": new, "expires_at": "2026-12-29T01:00:00Z"})]
    with caplog.at_level("DEBUG"):
        agent.renew_token()
    assert Renewals.seen == [
        {"path": "/pool/device/token", "authorization": f"Bearer {old}", "body": b""}
    ]
    assert (load(path).token, load(path).handlers) == (new, "/h")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert agent.client.token == agent.config.token == new
    assert "token renewed" in caplog.text and "2026-12-29T01:00:00Z" in caplog.text
    assert new not in caplog.text and old not in caplog.text


def test_a_refused_renewal_is_logged_and_the_old_token_kept(renewing, caplog):
    agent, path, old = renewing
    Renewals.script = [(403, {"detail": "No."})]
    agent.renew_token()
    assert len(Renewals.seen) == 1  # a refusal is not asked again at once
    assert load(path).token == agent.client.token == old
    assert "the server refused to renew the token (403: No.)" in caplog.text
    assert not agent.stop.is_set()


def test_a_renewal_refused_with_401_stops_the_agent_as_any_call_would(renewing, caplog):
    """A 401 says the token works nowhere: the agent stops with the usual advice, and
    does not log that it goes on with it."""
    agent, path, old = renewing
    Renewals.script = [(401, {"detail": "Token is expired."})]
    agent.renew_token()
    assert len(Renewals.seen) == 1
    assert load(path).token == old
    assert "the server refuses it (401: Token is expired.)" in caplog.text
    assert "goes on with it" not in caplog.text
    assert agent.token_refused.is_set() and agent.stop.is_set()
    assert agent.refusal is not None and agent.refusal.status == 401


def test_a_server_without_renewal_says_to_upgrade_it(renewing, caplog):
    agent, path, old = renewing
    Renewals.script = [(404, {"detail": "Not found."})]
    agent.renew_token()
    assert load(path).token == agent.client.token == old
    assert "the server has no token renewal (404" in caplog.text


def test_a_renewal_is_retried_until_the_pools_answer_comes(renewing):
    agent, path, _ = renewing
    new = a_token_with({"device_id": "pi-1", "sid": "s", "iat": 1, "exp": 2})
    other_device = a_token_with({"device_id": "pi-2", "sid": "s", "iat": 1, "exp": 2})
    Renewals.script = [
        (503, {"detail": "busy"}),
        (200, {"token": other_device}),  # not an answer for this device: a proxy's, a portal's
        (200, {"access": "x"}),
        (200, {"token": new, "expires_at": "2026-12-29T01:00:00Z"}),
    ]
    agent.renew_token()
    assert len(Renewals.seen) == 4
    assert load(path).token == agent.client.token == new


def test_a_renewed_token_that_cannot_be_saved_is_not_used(renewing, caplog):
    agent, path, old = renewing
    # Where save() writes its temporary file, a directory: the write fails (root or not).
    blocked = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    blocked.mkdir()
    new = a_token_with({"device_id": "pi-1", "sid": "s", "iat": 1, "exp": 2})
    Renewals.script = [(200, {"token": new, "expires_at": "2026-12-29T01:00:00Z"})]
    agent.renew_token()
    assert load(path).token == agent.client.token == old
    assert "the renewed token could not be saved" in caplog.text
    assert new not in caplog.text


def test_a_status_that_cannot_be_written_leaves_none_rather_than_an_empty_one(tmp_path):
    """A full disk (here: a directory where the status is first written) refuses the exit
    status: the agent then finds no status, as after a power cut, never an empty one."""
    from taskpool_agent.runner import WRAPPER

    (tmp_path / "status.tmp").mkdir()
    status = tmp_path / "status"
    done = subprocess.run(
        ["/bin/sh", "-c", WRAPPER, "taskpool-handler", str(status), "/bin/sh", "-c", "exit 3"],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 3
    assert (tmp_path / "status.started").exists() and not status.exists()


def test_a_progress_report_under_way_does_not_hold_up_a_stop(tmp_path):
    """Once stopping, the agent's time is its answer's: it does not wait 2 s for a report
    that a server that does not answer holds."""
    from taskpool_agent.agent import Agent, Options, ProgressReporter
    from taskpool_agent.runner import Progress

    silent = socket.create_server(("127.0.0.1", 0))  # connects, never answers
    agent = Agent(
        Config(
            server=f"http://127.0.0.1:{silent.getsockname()[1]}/pool/", device_id="pi-1", token="t"
        ),
        Options(tmp_path / "handlers", tmp_path / "state", backoff=Backoff(0.01, 0.02)),
    )
    try:
        reporter = ProgressReporter(
            agent, "msg_t.1", {"id": "msg_t", "meta": {}}, threading.Event()
        )
        reporter.report(Progress("half way", None))
        time.sleep(0.3)  # the report is under way, held by the server
        agent.stop.set()
        began = time.monotonic()
        reporter.close()
        assert time.monotonic() - began < 0.5
    finally:
        silent.close()


def test_enrolling_keeps_the_handlers_and_state_dir_of_a_file_that_names_only_those(
    scripted, tmp_path
):
    """A config file prepared before enrolling, with its paths alone."""
    config = tmp_path / "config.toml"
    config.write_text('handlers = "/etc/taskpool-agent/handlers"\nstate_dir = "state"\n')
    Answers.script = [
        (202, {"device_id": "pi-1", "enrollment_secret": "s"}),
        (200, {"device_id": "pi-1", "token": "the-token"}),
    ]
    url = client_for(scripted).base_url
    enroll(config, server=url, device_id="pi-1", backoff=Backoff(0.01, 0.02))
    kept = load(config)
    assert (kept.handlers, kept.state_dir, kept.token) == (
        "/etc/taskpool-agent/handlers",
        "state",
        "the-token",
    )


def test_pending_answered_404_in_json_is_another_apis_url_and_stops_the_agent(scripted, tmp_path):
    """The pool always has pending: a JSON 404 there is another API's (a site's DRF), whose
    URL the config names; a 404 page is asked again (a proxy's, while the site is down)."""
    from taskpool_agent.agent import Agent, NotThePool, Options

    agent = Agent(
        Config(server=client_for(scripted).base_url, device_id="pi-1", token="t"),
        Options(tmp_path / "handlers", tmp_path / "state", backoff=Backoff(0.01, 0.02)),
    )
    Answers.script = [(PROXY_404, {}), (200, [])]
    assert agent.pending() == [] and len(Answers.seen) == 2
    Answers.script = [(404, {"detail": "Not found."})]
    with pytest.raises(NotThePool, match="the config's server must be the pool's URL"):
        agent.pending()


def test_enrolling_at_a_page_that_is_not_the_pools_says_so_whatever_its_status(scripted, tmp_path):
    """--server naming the site's admin: its CSRF page (403) was quoted as the pool's."""
    Answers.script = [(PROXY_401, {})]
    with pytest.raises(Refused) as refused:
        enroll(tmp_path / "config.toml", server=client_for(scripted).base_url, device_id="pi-1")
    assert refused.value.status == 401
    assert refused.value.detail.startswith("not the pool (the server must be the pool's URL")


@pytest.mark.parametrize("given", ["dev1/config.toml", "./dev1/config.toml"])
def test_a_config_given_by_a_relative_path_finds_its_handlers_beside_it(
    tmp_path, monkeypatch, given
):
    """Given as dev1/config.toml, the handlers were looked for in dev1/dev1/handlers."""
    from taskpool_agent.config import Config

    monkeypatch.chdir(tmp_path)
    arguments = cli.parser().parse_args(["--config", given, "run"])
    config = Config(server="http://127.0.0.1:9/pool/", device_id="pi-1", token="t")
    options = cli.run_options(arguments, config, arguments.config, client.Backoff())
    assert options.handlers == tmp_path / "dev1" / "handlers"
    configured = Config(**{**config.__dict__, "handlers": "mine", "state_dir": "state"})
    options = cli.run_options(arguments, configured, arguments.config, client.Backoff())
    assert (options.handlers, options.state_dir) == (
        tmp_path / "dev1/mine",
        tmp_path / "dev1/state",
    )


SIGNAL_WHILE_STOP_IS_BUSY = """
import signal, threading, time
from taskpool_agent.cli import relay_signals

stop = threading.Event()
relay_signals(stop)
with stop._cond:  # where the main thread is in stop.wait(), or in a first signal's set()
    signal.raise_signal(signal.SIGTERM)  # its handler runs here, on this thread
print("stopping" if stop.wait(5) else "not stopped")
"""


def test_a_signal_that_comes_while_the_main_thread_holds_the_stop_events_lock_stops_it():
    """A handler that set the event itself waited for the lock its own thread held: the
    agent hung until systemd's SIGKILL (two quick signals made it likelier)."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_WHILE_STOP_IS_BUSY],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.strip() == "stopping", done.stderr
