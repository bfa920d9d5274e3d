"""The PostgreSQL benchmark: ``python -m bench.database [--quick] [--size N] [--only PART ...]``.

It measures ``DatabaseStore`` on the PostgreSQL server named by
``TASKPOOL_BENCH_POSTGRES`` (or ``TASKPOOL_TEST_POSTGRES``), in fresh
databases it drops at the end, against baselines measured in the same run:

- pending: a device's ``GET /pool/pending`` through the whole stack, at 0
  messages and at ``--size`` messages of history with thousands of open
  broadcasts (``bench.broadcast_history``, loaded by ``bench.database_load``
  and checked against the JSON Lines store), each against a no-op view;
- first: a new process's first pending answer at that size;
- decisions: answers and claims from 8 processes, against django-tasks-db's
  enqueue + claim + complete cycle from 8 processes on the same server;
- heartbeats: from 8 processes, and the JSON Lines store's for comparison;
- wakeups: a long-poll on one server woken by a task posted on another.

Each target is printed with PASS or FAIL; without a server it says so and
exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.postgres import SERVER_VARIABLES, Databases, server_url
from bench.stats import lines_label, median

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TASK_TTL = 7 * 86400.0
PARTS = ("pending", "first", "decisions", "heartbeats", "wakeups")
WORKERS = 8


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to take."""

    size: int
    rounds: int
    requests: int
    asgi_requests: int
    store_calls: int
    checked_devices: int
    first_runs: int
    rate_seconds: float
    rate_repeats: int
    tasks_per_device: int
    polls: int
    wake_tasks: int
    wake_rate: float
    quick: bool


def progress(text: str) -> None:
    print(f"[bench.database {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.database", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run, a few minutes")
    parser.add_argument("--size", type=int, help="lines of history (default 1,000,000)")
    parser.add_argument("--only", nargs="+", choices=PARTS, help="measure only these parts")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> Plan:
    if args.quick:
        return Plan(
            size=args.size or 20_000,
            rounds=4,
            requests=200,
            asgi_requests=80,
            store_calls=100,
            checked_devices=20,
            first_runs=2,
            rate_seconds=1.5,
            rate_repeats=2,
            tasks_per_device=400,
            polls=20,
            wake_tasks=60,
            wake_rate=20.0,
            quick=True,
        )
    return Plan(
        size=args.size or 1_000_000,
        rounds=12,
        requests=1200,
        asgi_requests=360,
        store_calls=600,
        checked_devices=50,
        first_runs=3,
        rate_seconds=4.0,
        rate_repeats=3,
        tasks_per_device=1500,
        polls=100,
        wake_tasks=400,
        wake_rate=20.0,
        quick=False,
    )


def setup_django(urls: dict[str, str]) -> None:
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.database_settings"
    os.environ["BENCH_POSTGRES_DATABASES"] = json.dumps(urls)
    import django

    django.setup()


def measure_pending(plan: Plan, work: Path, figures: dict[str, Any], devices: list[str]) -> None:
    """Load the history, check it, and time pending at 0 and at ``plan.size`` messages.

    The history is the one the day files' bench measures its open-broadcast
    rows on (``bench.run``): thousands of open broadcasts and lists, answered
    within minutes by the fleet's busy devices and late, or never, by the
    rest. Pending is timed as the busy devices ask it (a device that polls
    has answered nearly everything: a few tasks in each answer), the same
    devices the day files' target is measured with, and again as the devices
    that are behind ask it (100 tasks in each answer, the default limit).
    """
    import psycopg
    from django.db import connections

    from bench import database_load, database_pending
    from bench.broadcast_history import write_broadcast_history
    from bench.postgres import connection_params
    from bench.run import BUSY_DEVICES
    from taskpool.stores.database import DatabaseStore

    database_pending.migrate(["pool_empty", "pool_full"])
    tokens = database_pending.register_devices(devices)
    busy, behind = devices[:BUSY_DEVICES], devices[BUSY_DEVICES:]
    # The first request is asked by a device that is behind: the largest answer.
    figures["first_token"] = tokens[behind[0]]
    label = lines_label(plan.size)
    progress(f"{label}: writing history with open broadcasts")
    now = time.time()
    directory = work / "history"
    written = write_broadcast_history(
        directory, plan.size, now=now, active_devices=BUSY_DEVICES, open_lists=plan.size // 400
    )
    history = {
        "lines": written.lines,
        "bytes": sum(path.stat().st_size for path in database_load.day_files(directory)),
        "broadcasts": written.broadcasts,
        "any_one_broadcasts": written.any_one,
        "cancelled_broadcasts": written.cancelled,
        "open_lists": written.lists,
        "broadcast_responses": written.responses,
        "busy_devices": len(busy),
        "mix": written.base.mix,
    }
    progress(f"{label}: replaying it with the JSON Lines store")
    started = time.perf_counter()
    jsonl = database_load.replayed_store(directory, now=now, task_ttl=TASK_TTL)
    history["jsonl_replay_seconds"] = time.perf_counter() - started
    progress(f"{label}: loading it into PostgreSQL (COPY)")
    started = time.perf_counter()
    with psycopg.connect(**connection_params("pool_full")) as connection:
        loaded = database_load.load(
            connection, directory, devices, now=now, task_ttl=TASK_TTL, jsonl=jsonl
        )
    history["load_seconds"] = time.perf_counter() - started
    history["loaded"] = asdict(loaded)
    progress(f"{label}: checking pending against the JSON Lines store")
    reference = DatabaseStore("pool_full", clock=lambda: now)
    checked = database_load.check_against_jsonl(
        reference, jsonl, busy, sample=plan.checked_devices // 2
    )
    checked_behind = database_load.check_against_jsonl(
        reference, jsonl, behind, sample=plan.checked_devices // 2
    )
    checked = (checked[0] + checked_behind[0], checked[1] + checked_behind[1])
    history["checked"] = checked
    reference.close()
    jsonl.close()
    del jsonl
    gc.collect()
    figures["history"] = history
    pools = {"0": "pool_empty", label: "pool_full"}
    for key, asking in (("pending", busy), ("pending_behind", behind)):
        figures[key] = database_pending.measure(
            pools,
            {device_id: tokens[device_id] for device_id in asking},
            rounds=plan.rounds,
            requests=plan.requests,
            asgi_requests=plan.asgi_requests,
            store_calls=plan.store_calls,
            progress=lambda text, key=key: progress(text.replace("pending", key, 1)),
        )
    progress("pending: each statement's cost, and the plan of the pending page")
    for suffix, asking in (("", busy), ("_behind", behind)):
        figures[f"statements{suffix}"] = database_pending.statement_profile(
            pools, asking, calls=200
        )
        figures[f"pending_plan{suffix}"] = database_pending.explain_pending("pool_full", asking[1])
    progress("the devices list, every device with its pending count")
    figures["devices_list"] = database_pending.devices_list(pools)
    figures["pool_bytes"] = {
        name: _database_size(alias) for name, alias in pools.items() if alias in connections
    }


def _database_size(alias: str) -> int:
    from django.db import connections

    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_database_size(current_database())")
        return cursor.fetchone()[0]


def measure_first_request(
    plan: Plan, urls: dict[str, str], token: str, data_dir: Path | None = None
) -> dict[str, Any]:
    """A fresh process's first pending answer at the loaded pool, ``plan.first_runs`` times;
    with ``data_dir``, the same site with the pool in those day files instead."""
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.database_settings",
        "BENCH_POSTGRES_DATABASES": json.dumps(
            {"default": urls["default"], "pool_full": urls["pool_full"]}
        ),
        "BENCH_POOL_DATABASE": "pool_full",
        "BENCH_DEVICE_TOKEN": token,
        "PYTHONPATH": str(REPOSITORY),
    }
    if data_dir is not None:
        environment["BENCH_DATA_DIR"] = str(data_dir)
    runs = []
    store = "day files" if data_dir else "PostgreSQL"
    for number in range(plan.first_runs):
        progress(f"first request ({store}): fresh process {number + 1}/{plan.first_runs}")
        spawned = time.time()
        done = subprocess.run(
            [sys.executable, "-m", "bench.database_first_request"],
            cwd=REPOSITORY,
            env=environment,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"the first-request process failed:\n{done.stderr}")
        times = json.loads(done.stdout.strip().splitlines()[-1])
        runs.append(
            {
                "interpreter": times["began"] - spawned,
                "django_setup": times["set_up"] - times["began"],
                "first_request": times["answered"] - times["set_up"],
                "total": times["answered"] - spawned,
                "second_request": times["second_request"],
                "tasks": times["tasks"],
            }
        )
    return {"runs": runs, "median": {k: median([r[k] for r in runs]) for k in runs[0]}}


def measure_decisions(plan: Plan, work: Path) -> dict[str, Any]:
    """Ours and django-tasks-db's, alternating, best of ``plan.rate_repeats`` each."""
    from django.conf import settings
    from django.core.management import call_command

    from bench import database_decisions, database_pending

    database_pending.migrate(["pool_decide"])
    figures: dict[str, Any] = {"workers": WORKERS, "seconds": plan.rate_seconds}
    ours, theirs = [], []
    baseline = None
    if settings.TASKS_DB_INSTALLED and "tasks" in settings.DATABASES:
        from bench import tasks_db_baseline as baseline

        call_command("migrate", database="tasks", verbosity=0)
    progress("decisions: posting the tasks for every run")
    own = database_decisions.post_tasks(
        "pool_decide", work / "decisions", plan.tasks_per_device * plan.rate_repeats
    )
    for number in range(plan.rate_repeats):
        progress(f"decisions: ours, run {number + 1}/{plan.rate_repeats}")
        share = {
            device_id: tasks[number * plan.tasks_per_device : (number + 1) * plan.tasks_per_device]
            for device_id, tasks in own.items()
        }
        ours.append(database_decisions.decisions("pool_decide", share, plan.rate_seconds))
        if baseline is not None:
            progress(f"decisions: django-tasks-db, run {number + 1}")
            theirs.append(baseline.cycles(WORKERS, plan.rate_seconds))
    best = max(ours, key=lambda run: run.rate("decisions"))
    figures["ours"] = {
        "rates": [run.rate("decisions") for run in ours],
        "best": best.rate("decisions"),
        "totals": best.totals,
        "per_worker": best.worker_rates("decisions"),
        "ran_out": sum(run.totals.get("ran out", 0) for run in ours),
    }
    if theirs:
        best_theirs = max(theirs, key=lambda run: run.rate("cycles"))
        figures["tasks_db"] = {
            "rates": [run.rate("cycles") for run in theirs],
            "best": best_theirs.rate("cycles"),
            "per_worker": best_theirs.worker_rates("cycles"),
        }
    return figures


def measure_heartbeats(plan: Plan, work: Path) -> dict[str, Any]:
    from bench import database_heartbeats, database_pending
    from bench.process_rates import best_of

    database_pending.migrate(["pool_beats"])
    figures: dict[str, Any] = {"workers": WORKERS, "seconds": plan.rate_seconds}
    runs = {
        "database x8": lambda: database_heartbeats.database_heartbeats(
            "pool_beats", WORKERS, plan.rate_seconds
        ),
        "database x1": lambda: database_heartbeats.database_heartbeats(
            "pool_beats", 1, plan.rate_seconds
        ),
        "raw x8": lambda: database_heartbeats.raw_commits("pool_beats", WORKERS, plan.rate_seconds),
        "raw x1": lambda: database_heartbeats.raw_commits("pool_beats", 1, plan.rate_seconds),
        "jsonl FSYNC on x8": lambda: database_heartbeats.jsonl_heartbeats(
            work / "heartbeats-fsync", WORKERS, plan.rate_seconds, fsync=True
        ),
        "jsonl FSYNC off x8": lambda: database_heartbeats.jsonl_heartbeats(
            work / "heartbeats-no-fsync", WORKERS, plan.rate_seconds, fsync=False
        ),
    }
    for name, run in runs.items():
        progress(f"heartbeats: {name}")
        best, rates = best_of(run, "heartbeats", plan.rate_repeats)
        figures[name] = {
            "rates": rates,
            "best": best.rate("heartbeats"),
            "per_worker": best.worker_rates("heartbeats"),
        }
        if "client_cpu_us" in best.totals and best.totals["heartbeats"]:
            figures[name]["cpu_ms"] = {
                side: best.totals[f"{side}_cpu_us"] / 1000 / best.totals["heartbeats"]
                for side in ("client", "server")
            }
    figures["cpus"] = os.cpu_count()
    return figures


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    url = server_url()
    if url is None:
        print(
            "bench.database skipped: no PostgreSQL (set "
            f"{' or '.join(SERVER_VARIABLES)} to postgresql://user@host:port/database)"
        )
        return 0
    plan = make_plan(args)
    parts = tuple(args.only or PARTS)
    if "first" in parts and "pending" not in parts:
        parts = ("pending", *parts)  # the first request needs the loaded pool
    work = Path(tempfile.mkdtemp(prefix="taskpool-bench-database-"))
    databases = Databases(url)
    started = time.perf_counter()
    figures: dict[str, Any] = {"plan": asdict(plan), "parts": list(parts)}
    try:
        urls = {"default": databases.create("site")}
        for part, roles in (
            ("pending", ("pool_empty", "pool_full")),
            ("decisions", ("pool_decide", "tasks")),
            ("heartbeats", ("pool_beats",)),
        ):
            if part in parts:
                for role in roles:
                    urls[role] = databases.create(role)
        setup_django(urls)
        from bench.history import DEVICE_COUNT, device_name
        from bench.machine import describe

        figures["machine"] = describe(work)
        figures["postgres"] = {
            "version": databases.version(),
            **{name: databases.setting(name) for name in _DURABILITY},
        }
        devices = [device_name(n) for n in range(DEVICE_COUNT)]
        if "pending" in parts:
            measure_pending(plan, work, figures, devices)
        if "first" in parts:
            token = figures.pop("first_token")
            figures["first"] = measure_first_request(plan, urls, token)
            # The JSON Lines store over the same files, from the checkpoint its replay wrote.
            figures["first_jsonl"] = measure_first_request(plan, urls, token, work / "history")
        figures.pop("first_token", None)
        if "decisions" in parts:
            figures["decisions"] = measure_decisions(plan, work)
        if "heartbeats" in parts:
            figures["heartbeats"] = measure_heartbeats(plan, work)
        if "wakeups" in parts:
            from bench import database_wakeups

            figures["wakeups"] = database_wakeups.measure(
                databases.create("hosts"),
                work,
                polls=plan.polls,
                tasks=plan.wake_tasks,
                rate=plan.wake_rate,
                progress=progress,
            )
        figures["seconds"] = time.perf_counter() - started
        _report(figures, argv)
    finally:
        _close_everything()
        databases.drop_all()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


_DURABILITY = ("synchronous_commit", "fsync", "wal_sync_method", "commit_delay", "shared_buffers")


def _close_everything() -> None:
    if "django" not in sys.modules or not os.environ.get("BENCH_POSTGRES_DATABASES"):
        return
    try:
        from django.db import connections

        from taskpool.stores import reset_store

        reset_store()
        connections.close_all()
    except Exception:  # noqa: BLE001 - the databases are dropped with FORCE anyway
        pass


def _report(figures: dict[str, Any], argv: list[str] | None) -> None:
    from bench.database_report import report

    command = "python -m bench.database " + " ".join(argv if argv is not None else sys.argv[1:])
    text = report(figures, command.strip())
    print(text)
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-database"
    (RESULTS / f"{stamp}.txt").write_text(text + "\n")
    (RESULTS / f"{stamp}.json").write_bytes(
        orjson.dumps(figures, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=str)
    )
    progress(f"written to bench/results/{stamp}.txt")


if __name__ == "__main__":
    sys.exit(main())
