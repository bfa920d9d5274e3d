"""The real device agent on a bad network, with power cuts: does every task still run once?

    python -m bench.agent_chaos [--agents 4] [--duration 600] [--seed 1] [--port 8890]

It serves a throwaway demo site (uvicorn, the day-file store, in a temporary
directory, as ``bench.fleet --serve`` builds it) and runs ``--agents`` real
``taskpool-agent`` processes, each a device with its own state directory. Each
agent reaches the server through a chaos proxy of its own (loopback), which
picks a share (``--fault-rate``) of the connections and, at random: delays the
request; resets the connection before the request is forwarded; resets it once
the server has answered, the answer unsent (the server stored it, the agent
never heard); sends half of the answer and closes; stalls a long-poll's or
a stream's answer; answers in the server's stead with a proxy's own HTML error
page (401, 403 or 404: a 404 not for the pending tasks, which before the pool
has answered an agent once says its server URL is wrong, on purpose); or
redirects the request to where it was going. Every ``--cut-every`` seconds or so an agent loses power
(SIGKILL to it and to its handlers' process groups) and is started again after
a short pause with the same state directory; one time in five it is stopped
cleanly (SIGTERM) instead, and a share of the times (``--crash-share``, one in
five) the agent alone is killed, as a bug or the OOM killer would: its
handlers run on, and the agent started again adopts them.

A master posts a mix of tasks meanwhile: to one device, to a list, to
``device:*``, any-one tasks, tasks whose handler outlives its timeout, jobs with
a timeout the server keeps, jobs with retries, and tasks cancelled while they
run. The handler notes ``<task id> <attempt> <pid> start`` (and ``end``) in its
device's execution log, synced, sleeps, and exits as the task says.

Then the chaos stops and the agents catch up (``--drain``), and the run checks,
from the pool's task details and the execution logs:

- no attempt of a task started twice on a device (a power cut may leave a start
  without an end: that attempt must be answered, not run again);
- every addressed device's execution ends in a final status, and every attempt
  a handler started is answered (or cancelled, or timed out by the server);
- an attempt whose handler never ended is not answered ``done``;
- an any-one task ran on one device only;
- no device stored two final answers to one attempt;
- no agent ended by itself, nor logged a traceback; a clean stop exits 0.

A report follows (tasks by kind, faults by kind, power cuts, crashes and clean stops,
each violation with its task); the exit status is 1 if there is any violation.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.fleet import descendants, provision, serve, stop_server
from bench.server import ROOT

#: A handler's arguments: the execution log, seconds to sleep, how to exit (a status, or
#: ``until:N``: 3 for attempts before N, then 0). It runs in ``work/`` of the attempt's
#: journal directory, whose name is the attempt's key.
HANDLER = """#!/bin/sh
key=$(basename "$(dirname "$PWD")")
note() { echo "${key%.*} ${key##*.} $$ $1" >> "$CHAOS_LOG"; sync "$CHAOS_LOG" 2>/dev/null; }
note start
sleep "$1"
note end
case "$2" in
  until:*) [ "${key##*.}" -ge "${2#until:}" ] || exit 3; exit 0 ;;
  *) exit "$2" ;;
esac
"""

FINAL = {"done", "failed", "rejected", "cancelled", "expired", "timed_out"}
ANSWERS = {"done", "failed", "rejected"}  # what a device answers to end its attempt
#: How long systemd waits for the agent after SIGTERM (the unit's TimeoutStopSec).
STOP_SECONDS = 15.0
FAULTS = (
    "delay",
    "reset_before",
    "reset_after",
    "truncate",
    "stall",
    "error_page",
    "redirect",
)


# The chaos proxy --------------------------------------------------------------------------


class ChaosProxy:
    """One agent's way to the server: a TCP proxy that breaks a share of the connections."""

    def __init__(self, upstream: int, rate: float, rng: random.Random, faults: collections.Counter):
        self.upstream, self.rate, self.rng, self.faults = upstream, rate, rng, faults
        self.enabled = True
        self.port = 0

    async def start(self, port: int) -> None:
        server = await asyncio.start_server(self.handle, "127.0.0.1", port)
        self.port = server.sockets[0].getsockname()[1]

    def pick(self, request: bytes) -> str | None:
        if not self.enabled or self.rng.random() >= self.rate:
            return None
        fault = self.rng.choice(FAULTS)
        line = request.split(b"\r\n", 1)[0]
        if fault == "stall" and b"wait=" not in line and b"/stream" not in line:
            fault = "delay"  # only a long-poll's or a stream's answer is stalled
        self.faults[fault] += 1
        return fault

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_writer = None
        try:
            request = await read_request(reader)
            if request is None:
                return
            fault = self.pick(request)
            if fault in ("error_page", "redirect"):
                writer.write(self.answer_in_the_servers_stead(fault, request))
                await writer.drain()
                return
            if fault == "delay":
                await asyncio.sleep(self.rng.uniform(0.2, 3.0))
            if fault == "reset_before":
                reset(writer)
                return
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream
            )
            upstream_writer.write(request)
            await upstream_writer.drain()
            if fault in ("reset_after", "truncate"):
                first = await asyncio.wait_for(upstream_reader.read(1 << 16), 120)
                if fault == "truncate" and len(first) > 1:
                    writer.write(first[: len(first) // 2])
                    await writer.drain()
                    writer.close()
                else:  # the server has answered (it stored the write): the agent never hears
                    reset(writer)
                return
            if fault == "stall":
                first = await asyncio.wait_for(upstream_reader.read(1 << 16), 120)
                # Now and then past the agent's own time limit for the answer (a long-poll's
                # wait and 30 s; 20 s for a stream's next line): it gives up and asks again.
                await asyncio.sleep(self.rng.choice([self.rng.uniform(3, 15), 40.0]))
                writer.write(first)
            await relay(reader, writer, upstream_reader, upstream_writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            for each in (writer, upstream_writer):
                if each is not None:
                    each.close()

    def answer_in_the_servers_stead(self, fault: str, request: bytes) -> bytes:
        """A proxy's own error page, or a redirect to the same place, the server never asked."""
        method, target = request.split(b" ", 2)[:2]
        if fault == "redirect":
            where = f"http://127.0.0.1:{self.port}{target.decode()}"
            return (
                f"HTTP/1.1 301 Moved Permanently\r\nLocation: {where}\r\n"
                "Content-Length: 0\r\nConnection: close\r\n\r\n"
            ).encode()
        codes = [401, 403] if method == b"GET" and b"/pending" in target else [401, 403, 404]
        code = self.rng.choice(codes)
        page = f"<html><head><title>{code}</title></head><body>nginx</body></html>".encode()
        return (
            f"HTTP/1.1 {code} Error\r\nContent-Type: text/html\r\n"
            f"Content-Length: {len(page)}\r\nConnection: close\r\n\r\n"
        ).encode() + page


async def read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One HTTP request, head and body (``Content-Length``), as the agent's urllib sends it."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head + (await reader.readexactly(length) if length else b"")


def reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dropped network path or a NAT does."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def relay(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    upstream_reader: asyncio.StreamReader,
    upstream_writer: asyncio.StreamWriter,
) -> None:
    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        while chunk := await source.read(1 << 16):
            sink.write(chunk)
            await sink.drain()

    pipes = [
        asyncio.ensure_future(pipe(upstream_reader, writer)),
        asyncio.ensure_future(pipe(reader, upstream_writer)),
    ]
    done, pending = await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
    for each in pending:
        each.cancel()
    for each in done:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            each.result()


# The agents -------------------------------------------------------------------------------


@dataclass
class ChaosAgent:
    device_id: str
    directory: Path
    server: str
    token: str
    handlers: Path
    process: subprocess.Popen | None = None
    stopped_by_us: bool = False
    exits: list[str] = field(default_factory=list)  # exits nobody asked for, and bad ones
    stop_seconds: list[float] = field(default_factory=list)  # SIGTERM to its exit, each stop
    orphans: set[int] = field(default_factory=set)  # handlers' groups left by a crash
    starts_before: int = 0  # its log's start lines before the latest start

    @property
    def executions(self) -> Path:
        return self.directory / "executions.log"

    @property
    def log(self) -> Path:
        return self.directory / "agent.log"

    def start(self) -> None:
        config = self.directory / "agent.toml"
        config.write_text(
            f'server = "{self.server}"\ndevice_id = "{self.device_id}"\ntoken = "{self.token}"\n'
        )
        command = [
            sys.executable, "-m", "taskpool_agent", "--config", str(config),
            "--backoff-max", "2", "--log-level", "INFO",
            "run", "--handlers", str(self.handlers), "--state-dir", str(self.directory / "state"),
            "--wait", "5", "--heartbeat-interval", "5", "--check-interval", "1",
            "--kill-grace", "0.5",
        ]  # fmt: skip
        self.starts_before = self.starts_logged()
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                command,
                cwd=ROOT,
                stdout=log,
                stderr=log,
                env={**os.environ, "CHAOS_LOG": str(self.executions)},
            )
        self.stopped_by_us = False

    def starts_logged(self) -> int:
        """How many times the agent has said it started, in its log."""
        if not self.log.exists():
            return 0
        return self.log.read_text(errors="replace").count(" INFO taskpool-agent ")

    def power_cut(self) -> None:
        """SIGKILL to the agent and to every handler it started (their process groups), and
        to those an agent that crashed left running."""
        assert self.process is not None
        self.stopped_by_us = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGSTOP)  # it starts nothing more meanwhile
        for group in self.handler_groups() | self.orphans:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        self.orphans.clear()
        self.process.kill()
        self.process.wait()

    def crash(self) -> None:
        """SIGKILL to the agent alone (a bug, the OOM killer): its handlers run on, and the
        agent started again adopts them."""
        assert self.process is not None
        self.stopped_by_us = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGSTOP)
        self.orphans |= self.handler_groups()
        self.process.kill()
        self.process.wait()

    def handler_groups(self) -> set[int]:
        """The process groups of the handlers the agent runs now (each leads its own)."""
        assert self.process is not None
        groups = set()
        for pid in descendants(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        groups.discard(os.getpgid(self.process.pid))
        return groups

    def clean_stop(self) -> None:
        assert self.process is not None
        self.stopped_by_us = True
        began = time.monotonic()
        self.process.terminate()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.exits.append("did not stop within 30 s of SIGTERM")
            self.power_cut()
            return
        took = time.monotonic() - began
        self.stop_seconds.append(took)
        if code == -signal.SIGTERM and self.starts_logged() == self.starts_before:
            pass  # stopped while Python started, before the agent could catch SIGTERM: clean
        elif code != 0:
            self.exits.append(f"exited {code} after SIGTERM")
        if took > STOP_SECONDS:
            self.exits.append(f"took {took:.1f} s to stop after SIGTERM (its unit waits 15 s)")

    def ended_by_itself(self) -> int | None:
        if self.process is None or self.stopped_by_us:
            return None
        return self.process.poll()


# Tasks ------------------------------------------------------------------------------------

KINDS = {  # kind: weight
    "one": 4,
    "list": 2,
    "broadcast": 1,
    "any": 2,
    "handler_timeout": 1,
    "job_timeout": 1,
    "retries": 2,
    "cancelled": 1,
}


@dataclass
class Posted:
    id: str
    kind: str
    devices: list[str]  # addressed


def task_body(kind: str, devices: list[str], rng: random.Random) -> tuple[dict, list[str]]:
    """What the master posts for a task of ``kind``, and the devices it addresses."""
    sleep = round(rng.uniform(0.1, 2.5), 2)
    outcome = "3" if rng.random() < 0.2 else "0"
    meta: dict[str, Any] = {}
    body: dict[str, Any] = {}
    addressed = [rng.choice(devices)]
    if kind == "list":
        addressed = rng.sample(devices, min(2, len(devices)))
    elif kind == "broadcast":
        addressed = list(devices)
    elif kind == "any":
        addressed, body["mode"] = list(devices), "any"
    elif kind == "handler_timeout":
        sleep, meta["handler_timeout"] = 4.0, 1
    elif kind == "job_timeout":
        addressed = rng.sample(devices, min(2, len(devices)))
        sleep, body["timeout"] = rng.choice([1.0, 5.0]), {"in_progress": 3}
    elif kind == "retries":
        outcome = rng.choice(["until:2", "until:3", "3", "0"])
        body["retries"] = {"max_attempts": 3, "on": ["failed", "timed_out"], "backoff": 1}
    elif kind == "cancelled":
        sleep = round(rng.uniform(3, 8), 2)
    if len(addressed) == len(devices) and kind in ("broadcast", "any"):
        to = "device:*"
    elif len(addressed) == 1:
        to = f"device:{addressed[0]}"
    else:
        to = f"device:[{','.join(addressed)}]"
    meta["args"] = [str(sleep), outcome]
    return {"to": to, "title": f"work {kind}", "meta": meta, **body}, addressed


# The checks -------------------------------------------------------------------------------


def read_executions(agents: list[ChaosAgent]) -> dict[tuple[str, str, int], dict[str, int]]:
    """(task, device, attempt) -> how many ``start`` and ``end`` lines its log has."""
    counts: dict[tuple[str, str, int], dict[str, int]] = collections.defaultdict(
        collections.Counter
    )
    for agent in agents:
        if not agent.executions.exists():
            continue
        for line in agent.executions.read_text().splitlines():
            words = line.split()
            if len(words) == 4:
                counts[(words[0], agent.device_id, int(words[1]))][words[3]] += 1
    return counts


def settled(detail: dict, posted: Posted) -> bool:
    statuses = {execution["status"] for execution in detail["executions"]}
    if posted.kind == "any":
        return bool(statuses & FINAL) and statuses <= FINAL | {"claimed"}
    return {e["device"] for e in detail["executions"]} >= set(posted.devices) and statuses <= FINAL


def attempt_of(response: dict) -> int:
    return int((response.get("meta") or {}).get("attempt") or 1)


def stored_twice(pool: Path) -> list[dict[str, str]]:
    """What the day files themselves hold twice: a device's final answer to one attempt, or
    one sender's idempotency key (the API's view aside)."""
    answers: collections.Counter = collections.Counter()
    keys: collections.Counter = collections.Counter()
    for day in sorted(pool.rglob("*.jsonl")):
        for line in day.read_text().splitlines():
            message = json.loads(line)
            meta = message.get("meta") or {}
            if meta.get("idempotency_key"):
                keys[
                    (message.get("parent_id") or "-", message["from"], meta["idempotency_key"])
                ] += 1
            if message["from"].startswith("device:") and meta.get("status") in ANSWERS:
                answers[(message["parent_id"], message["from"], attempt_of(message))] += 1
    return [
        {
            "task": task,
            "what": f"{sender} attempt {attempt}: {count} final answers in the day files",
        }
        for (task, sender, attempt), count in answers.items()
        if count > 1
    ] + [
        {"task": task, "what": f"{sender}: idempotency key {key} stored {count} times"}
        for (task, sender, key), count in keys.items()
        if count > 1
    ]


def check(
    posted: list[Posted], details: dict[str, dict], agents: list[ChaosAgent], pool: Path
) -> list[dict[str, str]]:
    violations: list[dict[str, str]] = stored_twice(pool)

    def violation(task: str, what: str) -> None:
        violations.append({"task": task, "what": what})

    executions = read_executions(agents)
    by_task: dict[str, list[tuple[str, int, dict[str, int]]]] = collections.defaultdict(list)
    for (task_id, device, attempt), lines in executions.items():
        by_task[task_id].append((device, attempt, lines))
    for task in posted:
        detail = details[task.id]
        if not settled(detail, task):
            states = {e["device"]: e["status"] for e in detail["executions"]}
            violation(task.id, f"{task.kind}: not settled after the drain: {states}")
        answers: dict[tuple[str, int], list[str]] = collections.defaultdict(list)
        closed: set[tuple[Any, int]] = set()  # attempts the server ended (timed out)
        cancelled = False
        for response in detail["responses"]:
            status = (response.get("meta") or {}).get("status")
            sender = response["from"].removeprefix("device:")
            if status in ANSWERS and response["from"].startswith("device:"):
                answers[(sender, attempt_of(response))].append(status)
            elif status == "cancelled":
                cancelled = True
            elif status == "timed_out":
                closed.add(((response.get("meta") or {}).get("device"), attempt_of(response)))
        for (device, attempt), statuses in answers.items():
            if len(statuses) > 1:
                violation(task.id, f"{device} attempt {attempt}: answers stored {statuses}")
        ran_on = set()
        for device, attempt, lines in by_task.get(task.id, []):
            ran_on.add(device)
            if lines["start"] > 1:
                violation(task.id, f"{device} attempt {attempt}: started {lines['start']} times")
            got = answers.get((device, attempt), [])
            if not got and not cancelled and (device, attempt) not in closed:
                violation(task.id, f"{device} attempt {attempt}: started, never answered")
            if lines["end"] == 0 and "done" in got:
                violation(task.id, f"{device} attempt {attempt}: its handler never ended: done")
        if task.kind == "any" and len(ran_on) > 1:
            violation(task.id, f"any-one task ran on {sorted(ran_on)}")
    for agent in agents:
        for exit in agent.exits:
            violation("-", f"{agent.device_id}: {exit}")
        if agent.log.exists() and "Traceback" in agent.log.read_text(errors="replace"):
            violation("-", f"{agent.device_id}: a traceback in its log {agent.log.name}")
    return violations


# The run ----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of chaos")
    parser.add_argument(
        "--drain", type=float, default=120.0, help="seconds without a task settling: given up"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="the server's uvicorn workers")
    parser.add_argument("--post-every", type=float, default=1.0, help="seconds between tasks")
    parser.add_argument("--fault-rate", type=float, default=0.25, help="share of connections")
    parser.add_argument("--cut-every", type=float, default=15.0, help="mean seconds, all agents")
    parser.add_argument(
        "--crash-share",
        type=float,
        default=0.2,
        help="share of the cuts that kill the agent alone (its handlers run on)",
    )
    parser.add_argument(
        "--port", type=int, default=0, help="the server's port; the proxies take the next ones"
    )
    parser.add_argument("--keep", type=Path, help="keep the run's files in this directory")
    parser.add_argument("--json", type=Path, help="also write the report to this file")
    return parser


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    rng = random.Random(options.seed)
    if options.keep:
        options.keep.mkdir(parents=True, exist_ok=True)
        context: Any = contextlib.nullcontext(str(options.keep))
    else:
        context = tempfile.TemporaryDirectory(prefix="taskpool-agent-chaos-")
    with context as temporary:
        report = run(Path(temporary), options, rng)
    text = json.dumps(report, indent=2)
    print(text)
    if options.json:
        options.json.write_text(text + "\n")
    return 1 if report["violations"] else 0


def run(directory: Path, options: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    os.environ["TASKPOOL_VAR_DIR"] = str(directory)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    seconds = options.duration + options.drain + 600
    tokens = provision(options.agents, seconds=seconds)
    server, url = serve(directory, workers=options.workers, port=options.port)
    handlers = directory / "handlers"
    handlers.mkdir(exist_ok=True)
    (handlers / "work").write_text(HANDLER)
    (handlers / "work").chmod(0o755)

    faults: collections.Counter = collections.Counter()
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, name="chaos-proxies", daemon=True).start()
    upstream = int(url.split(":")[2].split("/")[0])
    agents, proxies = [], []
    for number, device_id in enumerate(sorted(tokens["devices"])):
        proxy = ChaosProxy(
            upstream, options.fault_rate, random.Random(options.seed * 1000 + number), faults
        )
        port = options.port + 1 + number if options.port else 0
        asyncio.run_coroutine_threadsafe(proxy.start(port), loop).result()
        proxies.append(proxy)
        agent_directory = directory / device_id
        agent_directory.mkdir(exist_ok=True)
        agents.append(
            ChaosAgent(
                device_id,
                agent_directory,
                f"http://127.0.0.1:{proxy.port}/pool/",
                tokens["devices"][device_id],
                handlers,
            )
        )
    devices = [agent.device_id for agent in agents]
    master = {"Authorization": f"Bearer {tokens['master']}"}
    posted: list[Posted] = []
    kills: collections.Counter = collections.Counter()
    cancels: list[tuple[float, str]] = []
    restarts: list[tuple[float, ChaosAgent]] = []
    try:
        for agent in agents:
            agent.start()
        with httpx.Client(base_url=url, timeout=30, headers=master) as client:
            began = time.monotonic()
            next_post = next_cut = began
            next_cut += rng.expovariate(1 / options.cut_every)
            last_line = began
            while (now := time.monotonic()) < began + options.duration:
                if now >= next_post:
                    kind = rng.choices(list(KINDS), weights=list(KINDS.values()))[0]
                    body, addressed = task_body(kind, devices, rng)
                    task = client.post("task", json=body).raise_for_status().json()
                    posted.append(Posted(task["id"], kind, addressed))
                    if kind == "cancelled":
                        cancels.append((now + rng.uniform(0.5, 6), task["id"]))
                    next_post = now + options.post_every
                for when, task_id in [each for each in cancels if each[0] <= now]:
                    cancels.remove((when, task_id))
                    client.post(f"tasks/{task_id}/cancel", json={"reason": "chaos"})
                if now >= next_cut:
                    victims = [a for a in agents if a not in (r[1] for r in restarts)]
                    if victims:
                        victim = rng.choice(victims)
                        dice = rng.random()
                        if dice < 0.2:
                            victim.clean_stop()
                            kills["clean_stops"] += 1
                        elif dice < 0.2 + options.crash_share:
                            victim.crash()
                            kills["agent_crashes"] += 1
                        else:
                            victim.power_cut()
                            kills["power_cuts"] += 1
                        restarts.append((time.monotonic() + rng.uniform(0.5, 4), victim))
                    next_cut = now + rng.expovariate(1 / options.cut_every)
                for when, agent in [each for each in restarts if each[0] <= now]:
                    restarts.remove((when, agent))
                    agent.start()
                watch_exits(agents)
                if now - last_line >= 30:
                    last_line = now
                    print(
                        f"{now - began:5.0f} s: {len(posted)} tasks, faults {dict(faults)}, "
                        f"{dict(kills)}",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(0.05)
            # The drain: no more faults, every agent up, until every task is settled.
            drain_began, drained_to = time.monotonic(), len(posted) + 1
            for proxy in proxies:
                proxy.enabled = False
            for _, task_id in cancels:
                client.post(f"tasks/{task_id}/cancel", json={"reason": "chaos"})
            for _, agent in restarts:
                agent.start()
            details: dict[str, dict] = {}
            backlog = None
            # A backlog (each agent runs one task at a time) takes as long as it takes: the
            # drain gives up only once no task has settled for ``--drain`` seconds.
            progress_at = time.monotonic()
            while True:
                watch_exits(agents)
                for task in posted:
                    if task.id not in details or not settled(details[task.id], task):
                        details[task.id] = client.get(f"tasks/{task.id}").raise_for_status().json()
                waiting = sum(not settled(details[t.id], t) for t in posted)
                backlog = waiting if backlog is None else backlog
                if waiting < drained_to:
                    progress_at = time.monotonic()
                drained_to = min(drained_to, waiting)
                if not waiting or time.monotonic() - progress_at >= options.drain:
                    break
                time.sleep(2)
            drain_seconds = time.monotonic() - drain_began
            time.sleep(3)  # answers a moment late, or stored twice, show too
            # Stopped before the last look: an answer a clean stop sends shows in it.
            for agent in agents:
                if agent.process is not None and agent.process.poll() is None:
                    agent.clean_stop()
                watch_exits(agents)
            details = {
                task.id: client.get(f"tasks/{task.id}").raise_for_status().json() for task in posted
            }
    finally:
        for agent in agents:
            if agent.process is not None and agent.process.poll() is None:
                agent.power_cut()
        stop_server(server)
        loop.call_soon_threadsafe(loop.stop)
    (directory / "details.json").write_text(
        json.dumps([{"kind": task.kind, **details[task.id]} for task in posted])
    )
    violations = check(posted, details, agents, directory / "pool")
    return {
        "command": "python -m bench.agent_chaos " + " ".join(sys.argv[1:]),
        "tasks": dict(collections.Counter(task.kind for task in posted)),
        "executions_started": sum(lines["start"] for lines in read_executions(agents).values()),
        "faults": dict(faults),
        "kills": dict(kills),
        "unsettled_when_the_chaos_stopped": backlog,
        "drain_s": round(drain_seconds),
        "longest_clean_stop_s": round(
            max((s for a in agents for s in a.stop_seconds), default=0), 1
        ),
        "violations": violations,
    }


def watch_exits(agents: list[ChaosAgent]) -> None:
    """An agent that ended by itself is a violation; it is started again."""
    for agent in agents:
        code = agent.ended_by_itself()
        if code is not None:
            agent.exits.append(f"ended by itself with status {code}")
            agent.start()


if __name__ == "__main__":
    sys.exit(main())
