"""What one request costs the server in CPU, by kind, through two ASGI applications side by side.

    python -m bench.request_cost                      # the demo's front against Django's handler
    python -m bench.request_cost --requests 1000 --rounds 5

A fleet's server spends its CPU on many small requests: long-polls renewed,
heartbeats, answers. This serves a throwaway demo site (SQLite and day files in
a temporary directory) with one uvicorn worker per application, each on a port
of its own, both over the same database and pool: ``project.asgi:application`` (taskpool's front, ``serve_pool``) and
``project.asgi:django_application`` (Django's ASGI handler alone). Then, for each
kind of request, it sends ``--requests`` of them to each server in turn, ten at
a time, each on a new connection as the device agent's ``urllib`` makes them,
and reads the server's CPU time (user and system, from /proc) before and after.
Each figure is the best of ``--rounds`` rounds, the two servers' rounds
interleaved so that the machine's other load falls on both alike; the last
column is the ratio between them.

The kinds: ``GET health``; ``GET pending`` (no wait, an empty answer);
``GET pending?wait=0.01`` (a long-poll that waits and ends empty, served in the
event loop by the front); a heartbeat; a task posted by a master; a device's
answer to one of those tasks. The client shares the machine with the servers
but is not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import fleet
from bench.realtime_load import Connection

APPS = {
    "front": "project.asgi:application",
    "django": "project.asgi:django_application",
}
CONCURRENCY = 10


class Server:
    def __init__(self, name: str, app: str, var_dir: Path) -> None:
        self.name, self.app = name, app
        self.process, url = fleet.serve(var_dir, 1, app)
        self.port = int(url.rsplit(":", 1)[1].split("/", 1)[0])

    def cpu_seconds(self) -> float:
        return fleet.server_figures(self.process.pid)["server_cpu_s"]

    def stop(self) -> None:
        fleet.stop_server(self.process)


class Requests:
    """The requests of each kind, built from the provisioned tokens."""

    def __init__(self, tokens: dict[str, Any]) -> None:
        self.devices = list(tokens["devices"].items())
        self.master = tokens["master"]
        self.posted: list[tuple[str, str]] = []  # (device token, task id), to be answered
        self.sent = 0

    def kinds(self) -> dict[str, Callable[[int], tuple[str, str, str, bytes | None, dict]]]:
        return {
            "GET health": lambda n: ("GET", "/pool/health", self.token(n), None, {}),
            "GET pending": lambda n: ("GET", "/pool/pending", self.token(n), None, {}),
            "GET pending?wait (empty)": lambda n: (
                "GET",
                "/pool/pending?wait=0.01",
                self.token(n),
                None,
                {},
            ),
            "POST heartbeat": self.heartbeat,
            "POST task": self.task,
            "POST response": self.response,
        }

    def token(self, number: int) -> str:
        return self.devices[number % len(self.devices)][1]

    def heartbeat(self, number: int) -> tuple[str, str, str, bytes, dict]:
        self.sent += 1
        body = json.dumps({"meta": {"agent": "bench", "uptime": number, "load": [0.1]}})
        key = {"Idempotency-Key": f"hb.{self.sent}"}
        return "POST", "/pool/heartbeat", self.token(number), body.encode(), key

    def task(self, number: int) -> tuple[str, str, str, bytes, dict]:
        device_id = self.devices[number % len(self.devices)][0]
        body = json.dumps({"to": f"device:{device_id}", "title": "bench"}).encode()
        return "POST", "/pool/task", self.master, body, {}

    def response(self, number: int) -> tuple[str, str, str, bytes, dict]:
        token, task_id = self.posted.pop()
        body = json.dumps({"parent_id": task_id, "status": "done", "body": "ok"}).encode()
        return "POST", "/pool/response", token, body, {"Idempotency-Key": f"{task_id}.done"}

    def note(self, kind: str, number: int, content: bytes) -> None:
        if kind == "POST task":
            self.posted.append((self.token(number), json.loads(content)["id"]))


async def one_round(server: Server, requests: Requests, kind: str, count: int) -> float:
    """Milliseconds of the server's CPU per request, over ``count`` requests of ``kind``."""
    build = requests.kinds()[kind]
    gate = asyncio.Semaphore(CONCURRENCY)

    async def send(number: int) -> None:
        async with gate:
            method, path, token, body, headers = build(number)
            connection = Connection(server.port)
            try:
                status, content = await connection.request(method, path, token, body, headers)
            finally:
                connection.close()
            if status not in (200, 201):
                raise RuntimeError(f"{server.name}: {method} {path} answered {status}: {content!r}")
            requests.note(kind, number, content)

    before = server.cpu_seconds()
    await asyncio.gather(*(send(number) for number in range(count)))
    await asyncio.sleep(0.2)  # the last answers' work ends (closing, the request's signals)
    return 1000 * (server.cpu_seconds() - before) / count


async def measure(servers: list[Server], requests: Requests, count: int, rounds: int) -> dict:
    figures: dict[str, dict[str, float]] = {}
    for server in servers:  # warm up: imports, connections, first compiled queries
        for kind in requests.kinds():
            if kind == "POST response":
                continue
            await one_round(server, requests, kind, 20)
    requests.posted.clear()
    for kind in requests.kinds():
        best = {server.name: float("inf") for server in servers}
        for _ in range(rounds):
            for server in servers:
                if kind == "POST response":  # each answer needs a task of its own, unanswered
                    await one_round(server, requests, "POST task", count)
                best[server.name] = min(
                    best[server.name], await one_round(server, requests, kind, count)
                )
        figures[kind] = best
    return figures


def report(figures: dict[str, dict[str, float]]) -> str:
    lines = [
        f"{'CPU per request (ms, best of rounds)':36} {'front':>8} {'django':>8} {'django/front':>13}"
    ]
    for kind, best in figures.items():
        ratio = best["django"] / best["front"] if best["front"] else float("nan")
        lines.append(f"{kind:36} {best['front']:8.2f} {best['django']:8.2f} {ratio:12.1f}x")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    arguments = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arguments.add_argument("--requests", type=int, default=400, help="requests per kind and round")
    arguments.add_argument("--rounds", type=int, default=3)
    arguments.add_argument("--json", type=Path, help="also write the figures to this file")
    options = arguments.parse_args(argv)
    fleet.raise_open_files_limit()
    with tempfile.TemporaryDirectory(prefix="taskpool-request-cost-") as temporary:
        os.environ["TASKPOOL_VAR_DIR"] = temporary
        os.environ["DJANGO_SETTINGS_MODULE"] = "project.settings"
        requests = Requests(fleet.provision(200))
        servers: list[Server] = []
        try:
            for name, app in APPS.items():  # one database and one pool, two servers
                servers.append(Server(name, app, Path(temporary)))
            figures = asyncio.run(measure(servers, requests, options.requests, options.rounds))
        finally:
            for server in servers:
                server.stop()
    print(report(figures), flush=True)
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
