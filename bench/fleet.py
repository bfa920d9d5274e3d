"""The fleet simulator: N virtual device agents in one process, against a real server.

    python -m bench.fleet --devices 1000 --serve            # starts the server itself
    python -m bench.fleet --devices 1000 --server http://127.0.0.1:8000/pool/ \\
        --server-pid "$(pgrep -of 'uvicorn project.asgi')"   # a server you started (make run)

Each virtual device does what ``taskpool-agent`` does, in a few lines of
asyncio: it long-polls ``GET pending?wait=30`` on a keep-alive connection of
its own, heartbeats every ``--heartbeat`` seconds, and answers each task it
gets after the task's duration, with an ``Idempotency-Key``; writes go each
on a new connection, as the agent's ``urllib`` makes them, and a failed one
is retried with the same key, with jittered backoff. A master
posts ``--rate`` tasks a second, each to one device picked at random, with
the duration and the outcome (done, failed at ``--fail-rate``, rejected at
``--reject-rate``) the device is to play. ``--drop-rate`` drops that share of
the devices' requests on purpose (the connection closed once the request is
sent, the answer unread), as a flaky network would.

A real fleet's week has more in it, and a soak should too. ``--streams N``
makes N of the devices follow ``GET stream`` instead of long-polling (they
resume with ``Last-Event-ID`` when the connection drops, a stream opened
without one is followed by one ``GET pending`` as the agent does, and
``--drop-rate`` cuts a stream after that share of its events). ``--broadcast-every
S`` has the master post a ``device:*`` task every S seconds, which every
device answers as it answers its own tasks. ``--offline SHARE`` leaves that
share of the devices switched off: they never connect, get no task of their
own, and leave every broadcast open for as long as the pool keeps it.

Devices start over ``--ramp`` seconds (their polls and heartbeats spread
out), then tasks are posted for ``--duration`` seconds; the run waits up to
``--drain`` seconds for the last answers. A summary line is printed every
``--every`` seconds, and a final report: tasks posted and answered, latency
from the moment the master starts posting a task to the moment the device's
answer is stored (its 201 received), errors by kind, and the CPU of the
server (with ``--serve`` or ``--server-pid``: its processes, from /proc) and
of the simulator itself, over the posting window.

``--serve`` builds a throwaway demo site (SQLite and a pool directory in a
temporary directory) and serves it with the production command: uvicorn,
``--workers 2``. Against ``--server``, the devices (``sim-00000`` ...) and a
master are created in the database of the demo site's settings in this
process's environment (``TASKPOOL_VAR_DIR``, ``DATABASE_URL``), which must be
the server's. The simulator shares the machine with the server; it runs on uvloop
(installed with the demo site's server), which spends a third less CPU than
asyncio's own loop on the same devices.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import random
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bench.realtime_load import Connection, summary
from bench.server import ROOT, start_uvicorn

Result = TypeVar("Result")

POLL_WAIT = 30
REQUEST_TIMEOUT = 30.0  # any request but a long-poll


# The figures ------------------------------------------------------------------------


@dataclass
class Figures:
    posted: int = 0
    answered: collections.Counter = field(default_factory=collections.Counter)
    latency: list[float] = field(default_factory=list)  # post -> done stored, seconds
    latency_window: list[float] = field(default_factory=list)  # since the last summary line
    errors: collections.Counter = field(default_factory=collections.Counter)
    requests: collections.Counter = field(default_factory=collections.Counter)
    drops: int = 0
    polling: int = 0  # devices whose long-poll is open now
    outstanding: set[str] = field(default_factory=set)  # tasks posted, not answered yet
    finished: set[str] = field(default_factory=set)  # tasks answered
    broadcasts: int = 0  # device:* tasks posted
    broadcast_answers: int = 0  # answers to them stored, all devices together
    broadcast_latency: list[float] = field(default_factory=list)  # post -> each answer stored
    streaming: int = 0  # devices whose event stream is open now
    stream_resumes: int = 0  # streams reopened with Last-Event-ID
    broadcast_ids: list[str] = field(default_factory=list)  # device:* tasks posted, in order
    broadcasts_answered_by: collections.defaultdict = field(
        default_factory=lambda: collections.defaultdict(set)
    )  # device -> the broadcasts it answered

    def error(self, kind: str) -> None:
        self.errors[kind] += 1


# One virtual device ---------------------------------------------------------------------


class Device:
    def __init__(self, number: int, device_id: str, token: str, run: Run) -> None:
        self.number, self.id, self.token, self.run = number, device_id, token, run
        self.poll = Connection(run.port, run.host)
        self.answered: set[str] = set()
        self.streams = number < run.options.streams
        self.last_event_id: str | None = None

    async def live(self) -> None:
        await asyncio.sleep(random.uniform(0, self.run.options.ramp))
        heartbeat = asyncio.create_task(self.heartbeats())
        try:
            await (self.follow() if self.streams else self.work())
        finally:
            heartbeat.cancel()
            self.poll.close()

    async def work(self) -> None:
        run, failures = self.run, 0
        while not run.stopping.is_set():
            run.figures.polling += 1
            try:
                status, content = await self.request_polling()
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
                run.figures.polling -= 1
                self.poll.close()
                self.poll.writer = None
                if not isinstance(error, _Dropped):
                    run.figures.error(f"poll {type(error).__name__}")
                failures += 1
                await asyncio.sleep(backoff(failures))
                continue
            run.figures.polling -= 1
            run.figures.requests["poll"] += 1
            if status != 200:
                run.figures.error(f"poll {status}")
                failures += 1
                await asyncio.sleep(backoff(failures))
                continue
            failures = 0
            for task in json.loads(content):
                if task["id"] not in self.answered:
                    await self.do(task)

    async def follow(self) -> None:
        """Take tasks from ``GET stream`` as they come, resuming after the last event seen."""
        run, failures = self.run, 0
        while not run.stopping.is_set():
            connection = Connection(run.port, run.host)
            headers = {}
            if self.last_event_id is not None:
                headers["Last-Event-ID"] = self.last_event_id
                run.figures.stream_resumes += 1
            try:
                await connection.send("GET", f"{run.prefix}stream", self.token, headers=headers)
                status, _ = await asyncio.wait_for(connection.head(), REQUEST_TIMEOUT)
                if status != 200:
                    run.figures.error(f"stream {status}")
                else:
                    run.figures.streaming += 1
                    failures = 0  # opened: a drop from here on is a first failure
                    try:
                        if self.last_event_id is None:
                            await self.answer_pending()
                        await self.take_events(connection)
                        failures = -1  # the server ended a healthy stream: at once
                    finally:
                        run.figures.streaming -= 1
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ValueError) as error:
                if not run.stopping.is_set() and not isinstance(error, _Dropped):
                    run.figures.error(f"stream {type(error).__name__}")
            finally:
                connection.close()
            failures += 1
            if failures:
                await asyncio.sleep(backoff(failures))

    async def answer_pending(self) -> None:
        """Answer what ``GET pending`` lists, once, as ``taskpool-agent`` does when its stream
        opens: a stream without ``Last-Event-ID`` starts at the pool's end, so a task posted
        while the device had no stream (never opened, or dropped before its first event)
        comes only this way."""
        run = self.run
        connection = Connection(run.port, run.host)
        path = f"{run.prefix}pending"
        try:
            if run.drop():
                await connection.send("GET", path, self.token)
                raise _Dropped
            status, content = await asyncio.wait_for(
                connection.request("GET", path, self.token), REQUEST_TIMEOUT
            )
        finally:
            connection.close()
        run.figures.requests["poll"] += 1
        if status != 200:
            raise ValueError(f"GET pending answered {status}")
        for task in json.loads(content):
            if task["id"] not in self.answered:
                await self.do(task)

    async def take_events(self, connection: Connection) -> None:
        """Answer the tasks an open stream brings, one at a time, as the agent does."""
        buffer = b""
        async for chunk in connection.chunks():
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                fields = dict(line.split(b": ", 1) for line in event.split(b"\n") if b": " in line)
                if b"id" in fields:
                    self.last_event_id = fields[b"id"].decode()
                if fields.get(b"event") == b"task":
                    task = json.loads(fields[b"data"])
                    if task["id"] not in self.answered:
                        await self.do(task)
                if self.run.drop():  # the network cuts the stream: resume from this event
                    raise _Dropped

    async def request_polling(self) -> tuple[int, bytes]:
        path = f"{self.run.prefix}pending?wait={POLL_WAIT}"
        if self.run.drop():
            await self.poll.send("GET", path, self.token)
            raise _Dropped
        return await asyncio.wait_for(
            self.poll.request("GET", path, self.token), POLL_WAIT + REQUEST_TIMEOUT
        )

    async def do(self, task: dict[str, Any]) -> None:
        meta = task.get("meta", {})
        await asyncio.sleep(float(meta.get("sim_seconds", 0)))
        status = meta.get("sim_outcome", "done")
        body = {"parent_id": task["id"], "status": status, "body": "simulated"}
        answer = await self.run.write(
            self.token, "response", body, key=f"{task['id']}.{status}", kind="response"
        )
        if answer:
            self.answered.add(task["id"])  # a refusal is final too: never again
        if answer not in (200, 201):
            return
        figures = self.run.figures
        if meta.get("sim_broadcast"):
            figures.broadcast_answers += 1
            figures.broadcasts_answered_by[self.id].add(task["id"])
            figures.broadcast_latency.append(time.perf_counter() - float(meta["sim_posted"]))
            return
        figures.finished.add(task["id"])
        figures.answered[status] += 1
        figures.outstanding.discard(task["id"])
        if "sim_posted" in meta:
            elapsed = time.perf_counter() - float(meta["sim_posted"])
            figures.latency.append(elapsed)
            figures.latency_window.append(elapsed)

    async def heartbeats(self) -> None:
        interval = self.run.options.heartbeat
        beat = 0
        await asyncio.sleep(random.uniform(0, 1))
        while not self.run.stopping.is_set():
            meta = {"agent": "bench.fleet", "uptime": beat * interval, "load": []}
            await self.run.write(
                self.token,
                "heartbeat",
                {"meta": meta},
                key=f"hb.{self.id}.{beat}",
                kind="heartbeat",
            )
            beat += 1
            await asyncio.sleep(interval * random.uniform(0.9, 1.1))


class _Dropped(ConnectionError):
    """A request dropped on purpose (``--drop-rate``)."""


def backoff(failures: int, first: float = 0.5, most: float = 30.0) -> float:
    step = min(most, first * 2 ** min(failures, 10))
    return random.uniform(step / 2, step)


# The run --------------------------------------------------------------------------------


class Run:
    def __init__(self, options: argparse.Namespace, tokens: dict[str, Any], server_pid: int | None):
        url = urlsplit(options.server)
        self.options = options
        self.host, self.port = url.hostname or "127.0.0.1", url.port or 80
        self.prefix = url.path if url.path.endswith("/") else url.path + "/"
        self.tokens = tokens
        self.server_pid = server_pid
        names = list(tokens["devices"])
        self.online = names[: len(names) - round(len(names) * options.offline)]
        self.figures = Figures()
        self.stopping = asyncio.Event()

    def drop(self) -> bool:
        if self.options.drop_rate and random.random() < self.options.drop_rate:
            self.figures.drops += 1
            return True
        return False

    async def write(self, token: str, path: str, body: dict, *, key: str, kind: str) -> int:
        """POST, retried with backoff and the same Idempotency-Key; the final status (0: none).

        Each on a connection of its own, closed after, as ``taskpool-agent`` does (``urllib``):
        a device's write never waits for another device's.
        """
        data = json.dumps(body).encode()
        headers = {"Idempotency-Key": key}
        for failures in range(1, 12):
            connection = Connection(self.port, self.host)
            try:
                if self.drop():
                    await connection.send("POST", self.prefix + path, token, data, headers)
                    raise _Dropped
                status, content = await asyncio.wait_for(
                    connection.request("POST", self.prefix + path, token, data, headers),
                    REQUEST_TIMEOUT,
                )
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
                if not isinstance(error, _Dropped):
                    self.figures.error(f"{kind} {type(error).__name__}")
                status = 0
            finally:
                connection.close()
            if status:
                self.figures.requests[kind] += 1
            if status in (200, 201):
                return status
            if 400 <= status < 500 and status != 429:
                self.figures.error(f"{kind} {status} {content[:80]!r}")
                return status
            if status:
                self.figures.error(f"{kind} {status}")
            await asyncio.sleep(backoff(failures))
        return 0

    async def post_tasks(self) -> None:
        """Post ``--rate`` tasks a second, each on its own: a slow answer does not slow the rate
        (the load offered stays what was asked, whatever the server's latency)."""
        options = self.options
        devices = self.online
        masters: list[Connection] = []  # idle keep-alive connections of the master
        posts: set[asyncio.Task] = set()
        started = time.perf_counter()
        sent = 0
        try:
            while not self.stopping.is_set():
                await asyncio.sleep(max(0.0, started + sent / options.rate - time.perf_counter()))
                sent += 1
                post = asyncio.create_task(self.post_task(masters, random.choice(devices)))
                posts.add(post)
                post.add_done_callback(posts.discard)
        finally:
            await asyncio.gather(*posts, return_exceptions=True)
            for connection in masters:
                connection.close()

    async def post_broadcasts(self) -> None:
        """A ``device:*`` task every ``--broadcast-every`` seconds, the first one at once."""
        masters: list[Connection] = []
        post = None
        try:
            while not self.stopping.is_set():
                # Shielded: a broadcast being posted when posting stops is still counted.
                post = asyncio.create_task(self.post_task(masters, "*", broadcast=True))
                await asyncio.shield(post)
                await asyncio.sleep(self.options.broadcast_every)
        finally:
            if post is not None:
                await asyncio.gather(post, return_exceptions=True)
            for connection in masters:
                connection.close()

    async def post_task(
        self, masters: list[Connection], device_id: str, *, broadcast: bool = False
    ) -> None:
        options, figures = self.options, self.figures
        draw = random.random()
        outcome = "done"
        if draw < options.fail_rate:
            outcome = "failed"
        elif draw < options.fail_rate + options.reject_rate:
            outcome = "rejected"
        meta = {
            "sim_seconds": round(random.uniform(*options.task_seconds), 3),
            "sim_outcome": "done" if broadcast else outcome,
            "sim_posted": time.perf_counter(),
        }
        if broadcast:
            meta["sim_broadcast"] = True
        body = json.dumps({"to": f"device:{device_id}", "title": "sim", "meta": meta}).encode()
        master = masters.pop() if masters else Connection(self.port, self.host)
        try:
            status, content = await asyncio.wait_for(
                master.request("POST", self.prefix + "task", self.tokens["master"], body),
                REQUEST_TIMEOUT,
            )
        except (TimeoutError, OSError, asyncio.IncompleteReadError) as error:
            figures.error(f"task {type(error).__name__}")
            master.close()
            return
        masters.append(master)
        figures.requests["task"] += 1
        if status != 201:
            figures.error(f"task {status} {content[:80]!r}")
            return
        if broadcast:
            figures.broadcasts += 1
            figures.broadcast_ids.append(json.loads(content)["id"])
            return
        figures.posted += 1
        task_id = json.loads(content)["id"]
        if task_id not in figures.finished:  # its answer may come before the 201 here
            figures.outstanding.add(task_id)

    async def report_lines(self, began: float) -> None:
        figures = self.figures
        last_requests = 0
        while True:
            await asyncio.sleep(self.options.every)
            requests = sum(figures.requests.values())
            window = summary(figures.latency_window)
            figures.latency_window = []
            print(
                f"{time.monotonic() - began:6.0f} s  polling {figures.polling:6d}  "
                f"streaming {figures.streaming:5d}  "
                f"req/s {(requests - last_requests) / self.options.every:7.1f}  "
                f"posted {figures.posted:6d}  answered {sum(figures.answered.values()):6d}  "
                f"p50 {window.get('p50_ms', '-'):>6} ms  p99 {window.get('p99_ms', '-'):>6} ms  "
                f"errors {sum(figures.errors.values())}  drops {figures.drops}",
                flush=True,
            )
            last_requests = requests

    async def main(self) -> dict[str, Any]:
        options = self.options
        began = time.monotonic()
        reporter = asyncio.create_task(self.report_lines(began))
        tokens = self.tokens["devices"]
        devices = [
            asyncio.create_task(Device(number, device_id, tokens[device_id], self).live())
            for number, device_id in enumerate(self.online)
        ]
        print(
            f"{len(devices)} devices starting over {options.ramp:g} s "
            f"({len(tokens) - len(devices)} offline)",
            flush=True,
        )
        await asyncio.sleep(options.ramp + 2)
        before = self.cpu()
        requests_before = collections.Counter(self.figures.requests)
        window_began = time.monotonic()
        posters = [asyncio.create_task(self.post_tasks())]
        if options.broadcast_every:
            posters.append(asyncio.create_task(self.post_broadcasts()))
        await asyncio.sleep(options.duration)
        for poster in posters:
            await self.stop_posting(poster)
        window = time.monotonic() - window_began
        after = self.cpu()
        in_window = collections.Counter(self.figures.requests)
        in_window.subtract(requests_before)
        drain_until = time.monotonic() + options.drain
        while time.monotonic() < drain_until and (
            self.figures.outstanding or self.broadcasts_unanswered()
        ):
            await asyncio.sleep(0.2)
        self.stopping.set()
        reporter.cancel()
        for device in devices:
            device.cancel()
        await asyncio.gather(*devices, return_exceptions=True)
        return self.report(window, before, after, in_window)

    def broadcasts_unanswered(self) -> int:
        """Answers the online devices still owe to the broadcasts posted."""
        figures = self.figures
        return figures.broadcasts * len(self.online) - figures.broadcast_answers

    def unanswered_by(self, most: int = 20) -> dict[str, list[str]]:
        """The broadcasts online devices have not answered: the first ``most`` devices that owe
        any, and up to ``most`` broadcasts each (a report that says who and what, kept short
        for a fleet of thousands)."""
        figures = self.figures
        posted = set(figures.broadcast_ids)
        owed: dict[str, list[str]] = {}
        for device in self.online:
            answered = figures.broadcasts_answered_by.get(device, set())
            if answered >= posted:
                continue
            owed[device] = [task for task in figures.broadcast_ids if task not in answered][:most]
            if len(owed) == most:
                break
        return owed

    async def stop_posting(self, poster: asyncio.Task) -> None:
        poster.cancel()
        await asyncio.gather(poster, return_exceptions=True)  # the posts under way finish

    def cpu(self) -> dict[str, float]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        figures = {"simulator_cpu_s": usage.ru_utime + usage.ru_stime}
        if self.server_pid is not None:
            figures.update(server_figures(self.server_pid))
        return figures

    def report(
        self, window: float, before: dict, after: dict, in_window: collections.Counter
    ) -> dict[str, Any]:
        options, figures = self.options, self.figures
        cpu = {
            "simulator_cpu_percent": round(
                100 * (after["simulator_cpu_s"] - before["simulator_cpu_s"]) / window, 1
            ),
        }
        if "server_cpu_s" in after:
            cpu["server_cpu_percent"] = round(
                100 * (after["server_cpu_s"] - before["server_cpu_s"]) / window, 1
            )
            cpu["server_rss_mib"] = round(after["server_rss_kib"] / 1024, 1)
            cpu["server_processes"] = after["server_processes"]
        return {
            "devices": len(self.tokens["devices"]),
            "rate_per_s": options.rate,
            "posting_seconds": round(window, 1),
            "heartbeat_s": options.heartbeat,
            "task_seconds": list(options.task_seconds),
            "fail_rate": options.fail_rate,
            "reject_rate": options.reject_rate,
            "drop_rate": options.drop_rate,
            "tasks_posted": figures.posted,
            "answered": dict(figures.answered),
            "unanswered": len(figures.outstanding),
            "latency_post_to_answer_stored": summary(figures.latency),
            "offline_devices": len(self.tokens["devices"]) - len(self.online),
            "streaming_devices": min(options.streams, len(self.online)),
            "stream_resumes": figures.stream_resumes,
            "broadcasts_posted": figures.broadcasts,
            "broadcast_answers": figures.broadcast_answers,
            "broadcast_answers_missing": self.broadcasts_unanswered(),
            "broadcasts_unanswered_by": self.unanswered_by(),
            "latency_broadcast_post_to_answer_stored": summary(figures.broadcast_latency),
            "requests_while_posting": dict(in_window),
            "request_rate_per_s": round(sum(in_window.values()) / max(window, 1e-9), 1),
            "requests_whole_run": dict(figures.requests),
            "drops_on_purpose": figures.drops,
            "errors": dict(figures.errors),
            **cpu,
            "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
        }


def server_figures(pid: int) -> dict[str, float]:
    """CPU seconds and resident memory of the server: ``pid`` and every process under it."""
    pids = [pid, *descendants(pid)]
    ticks = os.sysconf("SC_CLK_TCK")
    cpu, rss = 0.0, 0
    for each in pids:
        try:
            stat = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        cpu += (int(stat[11]) + int(stat[12])) / ticks
        found = re.search(r"VmRSS:\s+(\d+)", status)
        rss += int(found.group(1)) if found else 0
    return {"server_cpu_s": cpu, "server_rss_kib": rss, "server_processes": len(pids)}


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = collections.defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(entry.joinpath("stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[parent].append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


# The site ---------------------------------------------------------------------------------


def provision(devices: int, *, seconds: float = 0) -> dict[str, Any]:
    """The devices ``sim-00000`` ... and a master in the demo site's database; their tokens.

    The master's token lasts at least ``seconds`` (the run): a site's own access
    tokens may expire sooner (the demo's after 30 minutes), and a soak whose master
    stopped posting halfway would measure a fleet that only polls.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework_simplejwt.tokens import AccessToken

    from taskpool.models import DeviceUser, UserRole
    from taskpool.tokens import DeviceToken

    call_command("migrate", verbosity=0)
    names = [f"sim-{number:05d}" for number in range(devices)]
    DeviceUser.objects.bulk_create(
        [DeviceUser(id=name, validated=True, kind="simulated") for name in names],
        ignore_conflicts=True,
    )
    DeviceUser.objects.filter(pk__in=names).update(validated=True)
    by_id = DeviceUser.objects.in_bulk(names)
    user, _ = get_user_model().objects.get_or_create(username="fleet-simulator")
    UserRole.objects.update_or_create(user=user, defaults={"role": UserRole.MASTER})
    master = AccessToken.for_user(user)
    if seconds > master.lifetime.total_seconds():
        master.set_exp(lifetime=timedelta(seconds=seconds))
    return {
        "devices": {name: str(DeviceToken.for_device(by_id[name])) for name in names},
        "master": str(master),
    }


def serve(
    var_dir: Path, workers: int, app: str = "project.asgi:application", port: int = 0
) -> tuple[subprocess.Popen, str]:
    """The demo site as production serves it: uvicorn with ``workers`` worker processes, on
    ``port`` (0: one the kernel picks)."""
    metrics = var_dir / "prometheus"
    metrics.mkdir(exist_ok=True)  # shared by servers over the same site
    environment = {
        **os.environ,
        "TASKPOOL_VAR_DIR": str(var_dir),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics),
    }
    process, port = start_uvicorn(
        app, environment, workers=workers, backlog=16384, graceful_seconds=5, port=port
    )
    return process, f"http://127.0.0.1:{port}/pool/"


def raise_open_files_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def share(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("a share from 0 up to (not including) 1")
    return value


def seconds_range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    return float(low), float(high or low)


def parser() -> argparse.ArgumentParser:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--devices", type=int, default=1000)
    target = arguments.add_mutually_exclusive_group(required=True)
    target.add_argument("--server", help="the pool's URL, e.g. http://127.0.0.1:8000/pool/")
    target.add_argument("--serve", action="store_true", help="start the demo site (uvicorn)")
    arguments.add_argument("--workers", type=int, default=2, help="with --serve (default 2)")
    arguments.add_argument(
        "--app",
        default="project.asgi:application",
        help="with --serve: the ASGI application (project.asgi:django_application for Django's "
        "handler alone, without taskpool's front)",
    )
    arguments.add_argument("--server-pid", type=int, help="measure this server's CPU and memory")
    arguments.add_argument("--rate", type=float, default=20.0, help="tasks posted per second")
    arguments.add_argument("--duration", type=float, default=60.0, help="seconds of posting")
    arguments.add_argument("--ramp", type=float, default=30.0, help="seconds to start devices")
    arguments.add_argument("--drain", type=float, default=15.0, help="seconds to wait at the end")
    arguments.add_argument("--heartbeat", type=float, default=30.0, help="heartbeat interval")
    arguments.add_argument(
        "--task-seconds", type=seconds_range, default=(0.0, 0.0), help="MIN[,MAX] a task takes"
    )
    arguments.add_argument("--fail-rate", type=float, default=0.0)
    arguments.add_argument("--reject-rate", type=float, default=0.0)
    arguments.add_argument("--drop-rate", type=float, default=0.0, help="requests dropped")
    arguments.add_argument(
        "--streams", type=int, default=0, help="devices that follow GET stream instead of polling"
    )
    arguments.add_argument(
        "--broadcast-every", type=float, default=0.0, help="seconds between device:* tasks"
    )
    arguments.add_argument(
        "--offline", type=share, default=0.0, help="share of the devices that never connect"
    )
    arguments.add_argument("--every", type=float, default=5.0, help="seconds between lines")
    arguments.add_argument("--json", type=Path, help="also write the report to this file")
    return arguments


def main(argv: list[str] | None = None) -> dict[str, Any]:
    options = parser().parse_args(argv)
    raise_open_files_limit()
    with tempfile.TemporaryDirectory(prefix="taskpool-fleet-") as temporary:
        process = None
        if options.serve:  # the demo site, whatever this environment names
            os.environ["TASKPOOL_VAR_DIR"] = temporary
            os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
        # With a minute to spare: the ramp, the posting and the drain.
        tokens = provision(
            options.devices, seconds=options.ramp + options.duration + options.drain + 60
        )
        server_pid = options.server_pid
        if options.serve:
            process, options.server = serve(Path(temporary), options.workers, options.app)
            server_pid = process.pid
        try:
            report = run_event_loop(Run(options, tokens, server_pid).main())
            text = json.dumps(report, indent=2)
            print(text, flush=True)
            if options.json:
                options.json.write_text(text + "\n")
        finally:
            if process is not None:
                stop_server(process)
    return report


def run_event_loop(main: Coroutine[Any, Any, Result]) -> Result:
    """``main`` on uvloop, installed with the demo site's server, else on asyncio's own loop.

    The simulator shares the machine with the server it measures: the less
    CPU it spends on its thousands of connections, the more the server gets.
    """
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def stop_server(process: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL to it and its workers if it has not stopped in 30 s."""
    workers = descendants(process.pid)
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        for pid in workers:  # still its workers: the supervisor waits for them
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.kill()
        process.wait()


if __name__ == "__main__":
    main()
