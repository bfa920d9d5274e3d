"""Wake-ups across hosts: a long-poll on server A, answered when a task is posted on server B.

Two uvicorn processes serve the demo site (``project.asgi:application``)
with ``TASKPOOL_STORE=database`` over one fresh PostgreSQL database, each
with a data directory of its own; they share only the database and the
secret key. ``polls`` devices long-poll A (``GET /pool/pending?wait=60``);
a master posts tasks on B at a steady ``rate``, each to one of them, and
each device answers ``done`` on A and polls again, as an agent would. The
latency of a task is from the moment its POST to B starts to the moment its
device has it from A: B's decision and commit, B's ``NOTIFY`` after the
commit, A's listener, A's read of the log, the waiter's wake-up and answer.
The HTTP client is ``bench.realtime_load``'s, in this process.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.realtime_load import (
    Connection,
    Results,
    long_polling_device,
    post_task,
    settled,
    summary,
)
from bench.server import ROOT, start_uvicorn

PROVISION = """
import json
from django.contrib.auth import get_user_model
from rest_framework_simplejwt.tokens import AccessToken
from taskpool.models import DeviceUser, UserRole
from taskpool.tokens import DeviceToken

tokens = {"polls": []}
for number in range(POLLS):
    device = DeviceUser.objects.create(pk=f"poll-{number:04d}", validated=True)
    tokens["polls"].append(str(DeviceToken.for_device(device)))
DeviceUser.objects.create(pk="nobody")  # the warm-up task's: registered, never polling
user = get_user_model().objects.create_user("master", password="bench-master")
UserRole.objects.create(user=user, role="master")
tokens["master"] = str(AccessToken.for_user(user))
print(json.dumps(tokens))
"""


def _environment(database_url: str, secret: str, var_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DATABASE_URL": database_url,
        "TASKPOOL_STORE": "database",
        "DJANGO_SECRET_KEY": secret,
        "TASKPOOL_VAR_DIR": str(var_dir),
        "PYTHONPATH": str(ROOT),
    }


def _manage(environment: dict[str, str], *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"manage.py {arguments[0]} failed:\n{done.stderr}")
    return done.stdout


def _start_server(environment: dict[str, str]) -> tuple[subprocess.Popen, int]:
    """One uvicorn process serving the demo site."""
    return start_uvicorn("project.asgi:application", environment)


async def _run(
    ports: tuple[int, int], pids: tuple[int, int], tokens: dict, tasks: int, rate: float
) -> dict[str, Any]:
    port_a, port_b = ports
    results = Results()
    stop = asyncio.Event()
    master = Connection(port_b)
    for port in ports:  # each server's first request and first write are behind it
        warm_up = Connection(port)
        await warm_up.request("GET", "/pool/pending?wait=0", tokens["polls"][0])
        await post_task(warm_up, tokens["master"], "device:nobody", f"warm-up {port}", results)
        warm_up.close()
    results.sent.clear()
    results.posting.clear()
    pollers = [
        asyncio.create_task(long_polling_device(port_a, token, results, stop))
        for token in tokens["polls"]
    ]
    for pid in pids:
        await settled(pid)
    order = list(range(len(tokens["polls"])))
    random.Random(7).shuffle(order)
    interval = 1 / rate
    started = time.perf_counter()
    for number in range(tasks):
        to = f"device:poll-{order[number % len(order)]:04d}"
        await post_task(master, tokens["master"], to, f"task-{number}", results)
        await asyncio.sleep(max(0.0, started + (number + 1) * interval - time.perf_counter()))
    deadline = time.monotonic() + 30
    while len(results.delivered) < tasks and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    stop.set()
    for poller in pollers:
        poller.cancel()
    await asyncio.gather(*pollers, return_exceptions=True)
    master.close()
    latencies = list(results.delivered.values())
    # From the moment B answered the POST: what the wake-up itself takes (B's notification,
    # A's listener and read of the log, the waiter's answer).
    after_post = [
        results.delivered[f"task-{number}"] - posting
        for number, posting in enumerate(results.posting)
        if f"task-{number}" in results.delivered
    ]
    return {
        "after_post": summary(after_post),
        "polls": len(tokens["polls"]),
        "tasks": tasks,
        "rate": rate,
        "delivered": len(latencies),
        "latency": summary(latencies),
        "posting": summary(results.posting),
        "errors": results.errors[:5],
    }


def measure(
    database_url: str,
    work: Path,
    *,
    polls: int,
    tasks: int,
    rate: float,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Migrate and provision the database, start A and B, and measure (see the module)."""
    secret = "bench-" + secrets.token_hex(24)
    hosts = [_environment(database_url, secret, work / f"host-{name}") for name in "ab"]
    progress("wake-ups: migrating and provisioning the demo site's database")
    _manage(hosts[0], "migrate", "--noinput", "-v", "0")
    script = f"POLLS = {polls}\n{PROVISION}"
    tokens = json.loads(_manage(hosts[0], "shell", "-c", script).strip().splitlines()[-1])
    servers = []
    try:
        for environment in hosts:
            servers.append(_start_server(environment))
        progress(f"wake-ups: {polls} long-polls on A, {tasks} tasks posted on B at {rate:g}/s")
        (server_a, port_a), (server_b, port_b) = servers
        return asyncio.run(
            _run((port_a, port_b), (server_a.pid, server_b.pid), tokens, tasks, rate)
        )
    finally:
        for process, _port in servers:
            process.terminate()
        for process, _port in servers:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
