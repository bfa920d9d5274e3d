"""How long the admin's dashboard takes on an empty pool and on a week of history.

    python -m bench.dashboard [--lines 1000000] [--views 30] [--store jsonl|database|both]

For each store and size (0 lines, then ``--lines``), a fresh process writes
a week of realistic history (``bench.history``: 1,000 devices, about 30%
tasks, 55% answers, 15% heartbeats) as day files, or loads it into a fresh
PostgreSQL database (``bench.database_load``, on the server named by
``TASKPOOL_BENCH_POSTGRES`` or ``TASKPOOL_TEST_POSTGRES``), registers the
fleet's devices and serves the demo site's admin through Django's test
client. It times the first view (for the day files it builds the process's
index of the week: what a server pays once, at its start), then ``--views``
views once warm, and ``store.overview`` on its own. The figure that matters
is the warm view's median at the large size against the empty pool's, in
the same run: the dashboard reads what the store keeps counted, never the
week's messages, so it should stay within 3x.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
#: The warm view at the large size may take at most this many times the empty pool's.
TARGET_RATIO = 3.0
#: The pool's TASK_TTL: the history is a week, all of it in the horizon.
TASK_TTL = 7 * 86400


def timed(action: Callable[[], Any], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return times


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p90 = ordered[max(0, int(len(ordered) * 0.9) - 1)]
    return f"median {statistics.median(times) * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms"


# One size, in a process of its own -----------------------------------------------


def measure_one(store: str, lines: int, views: int, database_url: str | None) -> dict[str, Any]:
    """Write (or load) the history, then time the dashboard; runs in a fresh process."""
    work = Path(tempfile.mkdtemp(prefix="taskpool-bench-dashboard-"))
    os.environ.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        TASKPOOL_VAR_DIR=str(work),
        TASKPOOL_DATA_DIR=str(work / "pool"),
        DJANGO_SECRET_KEY="bench-only-not-a-secret-0123456789abcdef",
        DJANGO_ALLOWED_HOSTS="testserver",
        TASKPOOL_STORE=store,
    )
    if database_url:
        os.environ["DATABASE_URL"] = database_url
    else:
        os.environ.pop("DATABASE_URL", None)
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client

    from bench.history import DEVICE_COUNT, device_name, write_history
    from taskpool.fleet import validated_device_ids
    from taskpool.models import DeviceUser
    from taskpool.stores import get_store

    call_command("migrate", verbosity=0)
    devices = [device_name(number) for number in range(DEVICE_COUNT)]
    DeviceUser.objects.bulk_create(
        DeviceUser(id=device_id, kind="pi", validated=True) for device_id in devices
    )
    now = time.time()
    history_dir = work / ("pool" if store == "jsonl" else "history")
    history = write_history(history_dir, lines, now=now)
    figures: dict[str, Any] = {
        "store": store,
        "lines": history.lines,
        "mix": history.mix,
        "bytes": sum(path.stat().st_size for path in history_dir.glob("*.jsonl")),
        "days": len(history.files),
    }
    if store == "database" and lines:
        figures["load_seconds"] = _load_database(history_dir, devices, now)

    client = Client()
    client.force_login(get_user_model().objects.create_superuser("bench", password="x"))

    def view() -> None:
        response = client.get("/admin/taskpool/dashboard/")
        assert response.status_code == 200, response.status_code

    figures["first"] = timed(view, 1)[0]
    timed(view, 3)  # not counted: templates, connections and caches warm up
    figures["warm"] = timed(view, views)
    pool = get_store()
    registered = validated_device_ids()
    figures["overview"] = timed(lambda: pool.overview(registered), views)
    return figures


def _load_database(directory: Path, devices: list[str], now: float) -> float:
    """Copy the history into the store's tables in bulk, as ``bench.database`` does."""
    import psycopg
    from django.db import connections

    from bench import database_load

    started = time.perf_counter()
    jsonl = database_load.replayed_store(directory, now=now, task_ttl=TASK_TTL)
    params = connections["default"].get_connection_params()
    connections["default"].close()
    with psycopg.connect(
        **{k: v for k, v in params.items() if isinstance(v, (str, int)) and v != ""}
    ) as connection:
        database_load.load(connection, directory, devices, now=now, task_ttl=TASK_TTL, jsonl=jsonl)
    jsonl.close()
    return time.perf_counter() - started


# The run: each store and size in a child process ------------------------------------


def run_child(store: str, lines: int, views: int, database_url: str | None) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.dashboard", "--child", store, str(lines)]
    command += ["--views", str(views)]
    if database_url:
        command += ["--database-url", database_url]
    done = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, timeout=3600
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(figures: dict[str, Any]) -> None:
    line = f"{figures['lines']:>9} lines"
    if figures["lines"]:
        line += f": {figures['mix']}, {figures['bytes'] / 1e6:.0f} MB of day files"
        if "load_seconds" in figures:
            line += f" (loaded in {figures['load_seconds']:.0f} s)"
    print(line)
    print(f"{'':>11}first view                      {figures['first'] * 1000:9.1f} ms")
    print(f"{'':>11}dashboard, warm ({len(figures['warm'])} views)    {summary(figures['warm'])}")
    print(f"{'':>11}store.overview alone            {summary(figures['overview'])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--views", type=int, default=30)
    parser.add_argument("--store", choices=["jsonl", "database", "both"], default="jsonl")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "LINES"), help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        store, lines = options.child
        figures = measure_one(store, int(lines), options.views, options.database_url)
        print(json.dumps(figures))
        return 0

    stores = ["jsonl", "database"] if options.store == "both" else [options.store]
    databases = None
    if "database" in stores:
        from bench.postgres import SERVER_VARIABLES, Databases, server_url

        url = server_url()
        if url is None:
            print(f"the database store needs {' or '.join(SERVER_VARIABLES)}", file=sys.stderr)
            return 2
        databases = Databases(url)
    failed = False
    try:
        for store in stores:
            print(f"dashboard render time, {store} store, 1,000 registered devices")
            results = []
            for lines in (0, options.lines):
                url = databases.create(f"{lines}") if store == "database" and databases else None
                figures = run_child(store, lines, options.views, url)
                report(figures)
                results.append(figures)
            empty, full = results
            ratio = statistics.median(full["warm"]) / statistics.median(empty["warm"])
            within = ratio <= TARGET_RATIO
            failed |= not within
            print(
                f"  warm dashboard at {options.lines} lines / empty pool: {ratio:.2f}x "
                f"({'within' if within else 'OVER'} the {TARGET_RATIO:.0f}x target)"
            )
    finally:
        if databases is not None:
            databases.drop_all()
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
