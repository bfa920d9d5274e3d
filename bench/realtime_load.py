"""Load test of the real-time endpoints: many waiting devices on one uvicorn process.

    python -m bench.realtime_load                     # 1,000 long-polls, 100 streams
    python -m bench.realtime_load --polls 200 --streams 20 \\
        --app project.asgi:django_application         # Django's handler alone, to compare
    python -m bench.realtime_load --polls 10000 --workers 2   # as the docs tell production sites

It builds a throwaway demo site (SQLite and a pool directory in a temporary
directory), starts uvicorn on a free port (one process, or ``--workers N``
worker processes under uvicorn's supervisor, whose figures are summed), and then, from this
process, with a small asyncio HTTP/1.1 client:

1. opens ``--polls`` long-polls (``GET /pool/pending?wait=60``, one device
   each) and ``--streams`` event streams (``GET /pool/stream``, one device
   each), and measures the server's threads and memory with all of them waiting;
2. posts ``--tasks`` tasks at ``--rate`` per second, each to one waiting device
   (long-polling devices answer ``done`` and poll again, as an agent would), and
   measures each task's delivery latency: from the moment the master starts
   sending it to the moment the device has it;
3. posts one ``device:*`` task and measures how long each waiting connection
   takes to receive it.

Latencies include the task's own POST (authentication, the locked append and
its fsync), the watcher's look at the day files, the wake-up and the answer.
The client shares the machine with the server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.server import ROOT, start_uvicorn

WAIT_SECONDS = 60


# A small HTTP/1.1 client (httpx would cost the shared CPU more than the server) --


class Connection:
    """One keep-alive HTTP/1.1 connection to the server."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    async def send(
        self,
        method: str,
        path: str,
        token: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if self.writer is None:
            await self.open()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Authorization: Bearer {token}"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if body is not None:
            head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + (body or b""))
        await self.writer.drain()

    async def head(self) -> tuple[int, dict[str, str]]:
        status_line = await self.reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        return int(status_line.split()[1]), headers

    async def request(
        self,
        method: str,
        path: str,
        token: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        reused = self.writer is not None
        try:
            await self.send(method, path, token, body, headers)
            status, headers = await self.head()
        except (ConnectionError, asyncio.IncompleteReadError):
            if not reused:
                raise
            # The server closes idle keep-alive connections: open a new one, once.
            self.close()
            self.writer = None
            await self.send(method, path, token, body, headers)
            status, headers = await self.head()
        if headers.get("transfer-encoding") == "chunked":
            content = b"".join([chunk async for chunk in self.chunks()])
        else:
            content = await self.reader.readexactly(int(headers.get("content-length", "0")))
        if headers.get("connection") == "close":
            self.close()
            self.writer = None
        return status, content

    async def chunks(self):
        """The body of a chunked response, chunk by chunk (an event stream)."""
        while True:
            size = int((await self.reader.readline()).strip(), 16)
            if size == 0:
                await self.reader.readline()  # the empty trailer
                return
            data = await self.reader.readexactly(size)
            await self.reader.readexactly(2)
            yield data


# The run ---------------------------------------------------------------------------


@dataclass
class Results:
    sent: dict[str, float] = field(default_factory=dict)  # task title -> when its POST began
    posting: list[float] = field(default_factory=list)  # each task POST's round trip
    delivered: dict[str, float] = field(default_factory=dict)  # title -> latency, first delivery
    via: dict[str, str] = field(default_factory=dict)  # title -> "poll" or "stream"
    broadcast: list[float] = field(default_factory=list)
    broadcast_sent: float = 0.0
    errors: list[str] = field(default_factory=list)
    polls_answered: int = 0
    streams_open: int = 0

    def received(self, title: str, how: str, now: float) -> None:
        if title == "broadcast":
            self.broadcast.append(now - self.broadcast_sent)
        elif title in self.sent and title not in self.delivered:
            self.delivered[title] = now - self.sent[title]
            self.via[title] = how


async def long_polling_device(port: int, token: str, results: Results, stop: asyncio.Event) -> None:
    connection = Connection(port)
    try:
        while not stop.is_set():
            status, content = await connection.request(
                "GET", f"/pool/pending?wait={WAIT_SECONDS}", token
            )
            now = time.perf_counter()
            if status != 200:
                results.errors.append(f"poll {status} {content[:200]!r}")
                return
            tasks = json.loads(content)
            results.polls_answered += 1
            for task in tasks:
                results.received(task["title"], "poll", now)
            if any(task["title"] == "broadcast" for task in tasks):
                return
            for task in tasks:
                body = json.dumps({"parent_id": task["id"], "status": "done"}).encode()
                status, content = await connection.request("POST", "/pool/response", token, body)
                if status != 201:
                    results.errors.append(f"response {status} {content[:200]!r}")
    except (ConnectionError, asyncio.IncompleteReadError) as error:
        if not stop.is_set():
            results.errors.append(f"poll connection: {error!r}")
    finally:
        connection.close()


async def streaming_device(port: int, token: str, results: Results, stop: asyncio.Event) -> None:
    connection = Connection(port)
    try:
        await connection.send("GET", "/pool/stream", token)
        status, _ = await connection.head()
        if status != 200:
            results.errors.append(f"stream {status}")
            return
        buffer = b""
        async for chunk in connection.chunks():
            now = time.perf_counter()
            buffer += chunk
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                if event.startswith(b": stream open"):
                    results.streams_open += 1
                for line in event.split(b"\n"):
                    if line.startswith(b"data: "):
                        title = json.loads(line[6:])["title"]
                        results.received(title, "stream", now)
                        if title == "broadcast":
                            return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError) as error:
        if not stop.is_set():
            results.errors.append(f"stream connection: {error!r}")
    finally:
        connection.close()


async def post_task(connection: Connection, token: str, to: str, title: str, results: Results):
    body = json.dumps({"to": to, "title": title}).encode()
    results.sent[title] = began = time.perf_counter()
    status, content = await connection.request("POST", "/pool/task", token, body)
    results.posting.append(time.perf_counter() - began)
    if status != 201:
        results.errors.append(f"task {status} {content[:200]!r}")


def server_figures(pid: int) -> dict[str, float]:
    """The server's threads, resident memory (KiB) and CPU seconds, from /proc, summed over
    the process and its children (uvicorn's workers under ``--workers``)."""
    totals = {"threads": 0, "rss_kib": 0, "cpu_seconds": 0.0}
    ticks = os.sysconf("SC_CLK_TCK")
    for process in _process_tree(pid):
        try:
            status = Path(f"/proc/{process}/status").read_text()
            stat = Path(f"/proc/{process}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        totals["threads"] += int(fields["Threads"])
        totals["rss_kib"] += int(fields["VmRSS"].split()[0])
        totals["cpu_seconds"] += (int(stat[11]) + int(stat[12])) / ticks
    return totals


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (uvicorn's workers, and any process they started)."""
    found, index = [pid], 0
    while index < len(found):
        for task in Path(f"/proc/{found[index]}/task").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                found += [int(child) for child in (task / "children").read_text().split()]
        index += 1
    return found


async def settled(pid: int, quiet: float = 1.0, timeout: float = 120.0) -> None:
    """Wait until the server has used no CPU for ``quiet`` seconds: every request is waiting."""
    deadline = time.monotonic() + timeout
    last = server_figures(pid)["cpu_seconds"]
    quiet_since = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        now = server_figures(pid)["cpu_seconds"]
        if now - last > 0.02:
            quiet_since = time.monotonic()
        last = now
        if time.monotonic() - quiet_since >= quiet:
            return


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def verdicts(figures: dict) -> list[str]:
    """The real-time targets, PASS or FAIL, for the connections this run had."""
    waiting = figures["connections"]["long_polls"] + figures["connections"]["streams"]
    delivery = figures["tasks"]["latency"].get("p99_ms", math.inf)
    broadcast = figures["broadcast"]["latency"].get("p99_ms", math.inf)
    checks = [
        (f"task delivery p99 <= 200 ms: {delivery} ms", delivery <= 200),
        (
            f"device:* task reaches all {waiting:,} waiting connections within 3 s (p99):"
            f" {figures['broadcast']['received_by']:,} in {broadcast} ms",
            figures["broadcast"]["received_by"] == waiting and broadcast <= 3000,
        ),
        (
            f"every task delivered, no errors: {figures['tasks']['delivered']} of"
            f" {figures['tasks']['sent']}, {figures['error_count']} errors",
            figures["tasks"]["delivered"] == figures["tasks"]["sent"]
            and figures["error_count"] == 0,
        ),
    ]
    return [f"{'PASS' if passed else 'FAIL'}  {text}" for text, passed in checks]


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "count": len(values),
        "p50_ms": round(1000 * statistics.median(values), 1),
        "p99_ms": round(1000 * percentile(values, 0.99), 1),
        "max_ms": round(1000 * max(values), 1),
    }


async def run(options: argparse.Namespace, port: int, pid: int, tokens: dict) -> dict:
    results = Results()
    stop = asyncio.Event()
    master = Connection(port)
    warm_up = Connection(port)
    await warm_up.request("GET", "/pool/pending?wait=0", tokens["polls"][0])
    await post_task(master, tokens["master"], "device:nobody", "warm-up", results)
    warm_up.close()
    await settled(pid)
    idle = server_figures(pid)

    pollers = [
        asyncio.create_task(long_polling_device(port, token, results, stop))
        for token in tokens["polls"]
    ]
    streamers = [
        asyncio.create_task(streaming_device(port, token, results, stop))
        for token in tokens["streams"]
    ]
    connections = len(pollers) + len(streamers)
    while results.streams_open < len(streamers) and not results.errors:
        await asyncio.sleep(0.05)
    await settled(pid)
    loaded = server_figures(pid)
    await asyncio.sleep(5)  # idle with every request waiting: what the watcher costs
    waiting_cpu = server_figures(pid)["cpu_seconds"] - loaded["cpu_seconds"]

    poll_ids = list(range(len(tokens["polls"])))
    random.Random(7).shuffle(poll_ids)
    interval = 1 / options.rate
    started = time.perf_counter()
    for n in range(options.tasks):
        if n % 5 == 4 and tokens["streams"]:
            to = f"device:stream-{n % len(tokens['streams']):04d}"
        else:
            to = f"device:poll-{poll_ids[n % len(poll_ids)]:04d}"
        await post_task(master, tokens["master"], to, f"task-{n}", results)
        await asyncio.sleep(max(0.0, started + (n + 1) * interval - time.perf_counter()))
    deadline = time.monotonic() + 30
    while len(results.delivered) < options.tasks and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await settled(pid)
    after_tasks = server_figures(pid)

    results.broadcast_sent = time.perf_counter()
    body = json.dumps({"to": "device:*", "title": "broadcast"}).encode()
    await master.request("POST", "/pool/task", tokens["master"], body)
    deadline = time.monotonic() + 60
    while len(results.broadcast) < connections and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    for task in pollers + streamers:
        task.cancel()
    await asyncio.gather(*pollers, *streamers, return_exceptions=True)
    master.close()

    delivered = list(results.delivered.values())
    by_poll = [value for title, value in results.delivered.items() if results.via[title] == "poll"]
    by_stream = [v for title, v in results.delivered.items() if results.via[title] == "stream"]
    return {
        "app": options.app,
        "workers": options.workers,
        "connections": {"long_polls": len(pollers), "streams": len(streamers)},
        "server_idle": idle,
        "server_waiting": loaded,
        "server_after_tasks": after_tasks,
        "per_waiting_connection": {
            "threads": round((loaded["threads"] - idle["threads"]) / connections, 3),
            "rss_kib": round((loaded["rss_kib"] - idle["rss_kib"]) / connections, 1),
        },
        "cpu_seconds_per_second_while_all_wait": round(waiting_cpu / 5, 4),
        "tasks": {
            "sent": options.tasks,
            "delivered": len(delivered),
            "undelivered": sorted(set(results.sent) - set(results.delivered) - {"warm-up"}),
            "rate_per_second": options.rate,
            "latency": summary(delivered),
            "latency_long_poll": summary(by_poll),
            "latency_stream": summary(by_stream),
            "post_round_trip": summary(results.posting[1:]),
        },
        "broadcast": {"received_by": len(results.broadcast), "latency": summary(results.broadcast)},
        "errors": results.errors[:10],
        "error_count": len(results.errors),
    }


# Setting up the site and the server -------------------------------------------------


def provision(var_dir: Path, polls: int, streams: int) -> dict:
    """Migrate a fresh demo database, create the devices and a master, and make their tokens."""
    os.environ["TASKPOOL_VAR_DIR"] = str(var_dir)
    os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from rest_framework_simplejwt.tokens import AccessToken

    from taskpool.models import DeviceUser, UserRole
    from taskpool.tokens import DeviceToken

    call_command("migrate", verbosity=0)
    names = [f"poll-{n:04d}" for n in range(polls)] + [f"stream-{n:04d}" for n in range(streams)]
    DeviceUser.objects.bulk_create([DeviceUser(id=name, validated=True) for name in names])
    DeviceUser.objects.create(id="nobody")  # the warm-up task's: registered, never polling
    devices = {
        device.id: str(DeviceToken.for_device(device)) for device in DeviceUser.objects.all()
    }
    user = get_user_model().objects.create_user("bench-master")
    UserRole.objects.create(user=user, role=UserRole.MASTER)
    return {
        "polls": [devices[f"poll-{n:04d}"] for n in range(polls)],
        "streams": [devices[f"stream-{n:04d}"] for n in range(streams)],
        "master": str(AccessToken.for_user(user)),
    }


def start_server(app: str, var_dir: Path, workers: int = 1) -> tuple[subprocess.Popen, int]:
    """The demo site over ``var_dir``, served by uvicorn with ``workers`` processes."""
    return start_uvicorn(app, {**os.environ, "TASKPOOL_VAR_DIR": str(var_dir)}, workers=workers)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--polls", type=int, default=1000, help="concurrent long-polls")
    parser.add_argument("--streams", type=int, default=100, help="concurrent event streams")
    parser.add_argument("--tasks", type=int, default=300, help="tasks to post while they wait")
    parser.add_argument("--rate", type=float, default=20.0, help="tasks per second")
    parser.add_argument("--app", default="project.asgi:application", help="the ASGI app to serve")
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn worker processes (as in production)"
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    options = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="taskpool-bench-") as temporary:
        var_dir = Path(temporary)
        tokens = provision(var_dir, options.polls, options.streams)
        process, port = start_server(options.app, var_dir, options.workers)
        try:
            figures = asyncio.run(run(options, port, process.pid, tokens))
        finally:
            process.terminate()
            process.wait(timeout=30)
    figures["targets"] = verdicts(figures)
    text = json.dumps(figures, indent=2)
    print(text)
    if options.json:
        options.json.write_text(text + "\n")
    return figures


if __name__ == "__main__":
    main()
