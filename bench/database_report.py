"""The printed report of ``bench.database``: one section per measurement, then each target."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from bench.history import DEVICE_COUNT
from bench.report import Target
from bench.stats import lines_label, mebibytes, milliseconds, per_second, ratio, times

REQUEST_METHOD = (
    "in process, no sockets: django.test.Client (WSGI) and AsyncClient (ASGI); the demo site's"
    " middleware, DRF, a device JWT; Django's tables and the pool on PostgreSQL"
)


def _rows(rows: list[tuple[str, str, str]]) -> list[str]:
    widths = [max(len(row[column]) for row in rows) for column in range(2)]
    return [
        f"  {name:<{widths[0]}}  {value:<{widths[1]}}  {comparison}".rstrip()
        for name, value, comparison in rows
    ]


def _check(value: float, limit: float, *, at_most: bool) -> bool | None:
    if math.isnan(value):
        return None
    return value <= limit if at_most else value >= limit


def report(figures: dict[str, Any], command: str) -> str:
    postgres = figures["postgres"]
    lines = [
        f"taskpool PostgreSQL benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `{command}`",
        f"machine: {figures['machine']}",
        f"PostgreSQL {postgres['version']}, the same server and settings for every database of"
        f" the run: synchronous_commit {postgres['synchronous_commit']}, fsync"
        f" {postgres['fsync']}, wal_sync_method {postgres['wal_sync_method']}, commit_delay"
        f" {postgres['commit_delay']}, shared_buffers {postgres['shared_buffers']}",
        "",
    ]
    targets: list[Target] = []
    if "pending" in figures:
        lines += _pending(figures, targets)
    if "first" in figures:
        lines += _first(figures, targets)
    if "decisions" in figures:
        lines += _decisions(figures["decisions"], targets)
    if "heartbeats" in figures:
        lines += _heartbeats(figures["heartbeats"], targets)
    if "wakeups" in figures:
        lines += _wakeups(figures["wakeups"], targets)
    lines += ["Targets:", *(target.line() for target in targets)]
    lines.append(f"\n(whole run {figures['seconds']:.0f} s)")
    return "\n".join(lines)


def _pending(figures: dict[str, Any], targets: list[Target]) -> list[str]:
    history = figures["history"]
    loaded = history["loaded"]
    size = figures["plan"]["size"]
    label = lines_label(size)
    busy = history.get("busy_devices", 0)
    checked_devices, checked_tasks = history["checked"]
    lines = [
        f"== pending at {label}: {history['lines']:,} lines in 7 day files,"
        f" {mebibytes(history['bytes'])}; {history['broadcasts']:,} open broadcasts and"
        f" {history.get('open_lists', 0):,} open lists, answered within minutes by the {busy}"
        f" busy devices and by the others some, late ({history['broadcast_responses']:,}"
        f" answers), {history['any_one_broadcasts']} any-one and"
        f" {history['cancelled_broadcasts']} cancelled broadcasts, on a week of"
        f" {history['mix']} (the day files' open-broadcast history) ==",
        f"  loaded with COPY in {history['load_seconds']:.0f} s: {loaded['messages']:,} messages,"
        f" {loaded['tasks']:,} tasks ({loaded['open_tasks']:,} open, {loaded['open_broadcasts']:,}"
        f" of them broadcasts), {loaded['executions']:,} execution rows, database"
        f" {mebibytes(loaded['database_bytes'])} (replay by the JSON Lines store"
        f" {history['jsonl_replay_seconds']:.0f} s)",
        f"  checked: for {checked_devices} devices, busy and behind, pending_for and"
        f" pending_counts on PostgreSQL equal the JSON Lines store's on the same files"
        f" ({checked_tasks:,} pending tasks, same order)",
    ]
    groups = [
        ("pending", f"the {busy} busy devices (who the day files' target asks)"),
        ("pending_behind", f"the {DEVICE_COUNT - busy:,} devices that are behind"),
    ]
    for key, who in groups:
        if key in figures:
            lines += _pending_rows(figures[key], label, who)
    rows: list[tuple[str, str, str]] = []
    devices_list = figures.get("devices_list")
    if devices_list:
        rows.append(
            (
                f"GET /pool/devices p50 {label} / 0",
                times(ratio(devices_list[label], devices_list["0"])),
                f"{milliseconds(devices_list['0'])} -> {milliseconds(devices_list[label])};"
                f" {DEVICE_COUNT:,} devices with their pending counts, WSGI",
            )
        )
        lines += _rows(rows)
    for suffix, who in (("", "a busy device"), ("_behind", "a device that is behind")):
        lines += _statements(figures, label, suffix, who)
    lines.append("")
    zero, full = figures["pending"]["0"], figures["pending"][label]
    for transport, prefix in (("WSGI", ""), ("ASGI", "asgi_")):
        value = ratio(full[f"{prefix}pending_p50"], zero[f"{prefix}pending_p50"])
        targets.append(
            Target(
                f"pending p50 at {label} (thousands of open broadcasts) <= 1.2x p50 at 0"
                f" messages, whole stack on PostgreSQL, asked by the busy devices, {transport}",
                times(value),
                _check(value, 1.2, at_most=True),
            )
        )
    if devices_list:
        value = ratio(devices_list[label], devices_list["0"])
        targets.append(
            Target(
                f"GET /pool/devices ({DEVICE_COUNT:,} devices) p50 at {label} <= 3x at 0,"
                " on PostgreSQL",
                times(value),
                _check(value, 3.0, at_most=True),
            )
        )
    return lines


def _statements(figures: dict[str, Any], label: str, suffix: str, who: str) -> list[str]:
    """What each statement of ``pending_for`` cost, and the plan of the one that reads the page."""
    lines = []
    statements = figures.get(f"statements{suffix}", {})
    if statements:
        lines.append(
            f"  each statement of pending_for for {who}, median ms (client side, round trip"
            f" included), 0 -> {label}:"
        )
        names = list(dict.fromkeys([*statements["0"], *statements[label]]))
        for name in names:
            before, after = (
                statements["0"].get(name, math.nan),
                statements[label].get(name, math.nan),
            )
            lines.append(f"    {before:7.3f} -> {after:7.3f}  {name}")
    plan = figures.get(f"pending_plan{suffix}", "")
    timing = [line.strip() for line in plan.splitlines() if "Time:" in line]
    nodes = [
        line.split("->")[-1].split("  (")[0].strip()
        for line in plan.splitlines()
        if "(cost=" in line
    ]
    if timing:
        lines.append(
            f"  the pending page's plan at {label}, {who} (EXPLAIN ANALYZE):"
            f" {'; '.join(timing)}; {' > '.join(nodes)}"
        )
    return lines


def _pending_rows(pending: dict[str, Any], label: str, who: str) -> list[str]:
    """``GET /pool/pending`` at 0 and at ``label`` as one group of devices asked it."""
    zero, full = pending["0"], pending[label]
    lines = [
        f"  GET /pool/pending asked by {who}, {REQUEST_METHOD}; {full['requests']} (WSGI) and"
        f" {full['asgi_requests']} (ASGI) requests per pool, each interleaved with the no-op,"
        f" in {full['rounds']} rounds alternating the pools",
    ]
    rows = [
        (
            "tasks in each answer (p50)",
            f"{zero['returned_p50']:.0f} at 0 / {full['returned_p50']:.0f} at {label}",
            "limit 100 (the default)",
        )
    ]
    for transport, prefix in (("WSGI", ""), ("ASGI", "asgi_")):
        for name, pool in (("0", zero), (label, full)):
            pending_p50, noop_p50 = pool[f"{prefix}pending_p50"], pool[f"{prefix}noop_p50"]
            memory_p50 = pool[f"{prefix}memory_p50"]
            rows += [
                (
                    f"pending p50 / p99 at {name}, {transport}",
                    f"{milliseconds(pending_p50)} / {milliseconds(pool[f'{prefix}pending_p99'])}",
                    f"pending / no-op = {times(ratio(pending_p50, noop_p50))}",
                ),
                (
                    "  no-op p50; same answer from memory p50",
                    f"{milliseconds(noop_p50)}; {milliseconds(memory_p50)}",
                    f"the store's part {milliseconds(pending_p50 - memory_p50)}, rendering the"
                    f" answer {milliseconds(memory_p50 - noop_p50)}",
                ),
            ]
        rows.append(
            (
                f"pending p50 {label} / 0, {transport}",
                times(ratio(full[f"{prefix}pending_p50"], zero[f"{prefix}pending_p50"])),
                f"no-op {label} / 0 = "
                f"{times(ratio(full[f'{prefix}noop_p50'], zero[f'{prefix}noop_p50']))}; pending"
                f" {label} / the same answer from memory = "
                f"{times(ratio(full[f'{prefix}pending_p50'], full[f'{prefix}memory_p50']))}",
            )
        )
    for name, pool in (("0", zero), (label, full)):
        rows.append(
            (
                f"store.pending_for p50 / p99 at {name}",
                f"{milliseconds(pool['store_p50'])} / {milliseconds(pool['store_p99'])}",
                f"{pool['store_calls']} calls, no HTTP",
            )
        )
    return lines + _rows(rows)


def _first(figures: dict[str, Any], targets: list[Target]) -> list[str]:
    first = figures["first"]
    middle = first["median"]
    label = lines_label(figures["plan"]["size"])
    lines = [
        f"== a new application process at {label}: first GET /pool/pending"
        f" ({len(first['runs'])} fresh processes) ==",
        *_rows(
            [
                (
                    "spawn -> first answer (median)",
                    f"{middle['total']:.3f} s",
                    "runs: " + ", ".join(f"{run['total']:.3f} s" for run in first["runs"]),
                ),
                ("  interpreter start", f"{middle['interpreter']:.3f} s", ""),
                ("  django.setup()", f"{middle['django_setup']:.3f} s", "settings, apps, models"),
                (
                    "  first request",
                    f"{middle['first_request']:.3f} s",
                    "URLconf, middleware, DRF, JWT, both connections, the store, its queries",
                ),
                (
                    "second request",
                    milliseconds(middle["second_request"]),
                    f"{middle['tasks']:.0f} tasks in the answer",
                ),
            ]
        ),
    ]
    jsonl = figures.get("first_jsonl")
    if jsonl:
        lines += _rows(
            [
                (
                    "the JSON Lines store, same files",
                    f"{jsonl['median']['total']:.3f} s",
                    f"django.setup() {jsonl['median']['django_setup']:.3f} s, first request"
                    f" {jsonl['median']['first_request']:.3f} s (its index, from the checkpoint)",
                )
            ]
        )
    lines.append("")
    targets.append(
        Target(
            f"a new process serves its first pending request at {label} in <= 2 s",
            f"{middle['total']:.2f} s",
            _check(middle["total"], 2.0, at_most=True),
        )
    )
    return lines


def _decisions(decisions: dict[str, Any], targets: list[Target]) -> list[str]:
    ours = decisions["ours"]
    totals = ours["totals"]
    theirs = decisions.get("tasks_db")
    lines = [
        f"== answers and claims from {decisions['workers']} processes (each its own device and"
        f" store; {decisions['seconds']:g} s runs, best of {len(ours['rates'])}) ==",
        *_rows(
            [
                (
                    "ours: claim + done, then done on an own task",
                    per_second(ours["best"], "decisions"),
                    f"runs: {', '.join(per_second(rate, '') for rate in ours['rates'])};"
                    f" per process {_spread(ours['per_worker'])}",
                ),
                (
                    "  of the best run",
                    f"{totals.get('claims', 0):,} claims, {totals.get('answers', 0):,} answers",
                    f"{totals.get('refused', 0)} refused (409), {totals.get('nothing', 0)} claims"
                    " found nothing"
                    + (f", {ours['ran_out']} workers ran out of tasks" if ours["ran_out"] else ""),
                ),
                (
                    "django-tasks-db: enqueue + claim + complete",
                    per_second(theirs["best"], "cycles") if theirs else "not installed",
                    f"runs: {', '.join(per_second(rate, '') for rate in theirs['rates'])};"
                    f" per process {_spread(theirs['per_worker'])}; its own Worker,"
                    " select_for_update(skip_locked=True)"
                    if theirs
                    else "pip install -e '.[bench]'",
                ),
                (
                    "ours / django-tasks-db",
                    times(ratio(ours["best"], theirs["best"])) if theirs else "n/a",
                    "a decision each against a whole cycle each, from 8 processes",
                ),
            ]
        ),
        "",
    ]
    value = ratio(ours["best"], theirs["best"]) if theirs else math.nan
    targets.append(
        Target(
            "answers and claims from 8 processes >= django-tasks-db's enqueue + claim + complete"
            " cycles from 8, same server",
            f"{per_second(ours['best'], 'decisions')} vs"
            f" {per_second(theirs['best'], 'cycles') if theirs else 'n/a'}"
            f" = {times(value)}",
            _check(value, 1.0, at_most=False),
        )
    )
    return lines


def _spread(rates: list[float]) -> str:
    return f"{min(rates):,.0f}-{max(rates):,.0f}/s" if rates else "n/a"


def _heartbeats(heartbeats: dict[str, Any], targets: list[Target]) -> list[str]:
    names = {
        "database x8": "DatabaseStore, 8 processes",
        "database x1": "DatabaseStore, 1 process",
        "raw x8": "raw INSERT + COMMIT, 8 connections",
        "raw x1": "raw INSERT + COMMIT, 1 connection",
        "jsonl FSYNC on x8": "JsonlStore FSYNC on, 8 processes",
        "jsonl FSYNC off x8": "JsonlStore FSYNC off, 8 processes",
    }
    rows = []
    for key, name in names.items():
        run = heartbeats.get(key)
        if run is None:
            continue
        cpu = run.get("cpu_ms")
        rows.append(
            (
                name,
                per_second(run["best"], "heartbeats"),
                f"per process {_spread(run['per_worker'])}; runs:"
                f" {', '.join(per_second(rate, '') for rate in run['rates'])}"
                + (
                    f"; CPU per heartbeat {cpu['client']:.3f} ms client +"
                    f" {cpu['server']:.3f} ms server backend"
                    if cpu
                    else ""
                ),
            )
        )
    lines = [
        f"== heartbeats ({heartbeats['seconds']:g} s runs, best of"
        f" {len(heartbeats['database x8']['rates'])}; each process its own store and device) ==",
        *_rows(rows),
    ]
    if "raw x8" in heartbeats:
        share = ratio(best := heartbeats["database x8"]["best"], heartbeats["raw x8"]["best"])
        lines += _rows(
            [
                (
                    "DatabaseStore / raw, 8 processes",
                    f"{100 * share:.0f}%",
                    "raw: one-row INSERTs over psycopg, autocommit, same server and settings",
                )
            ]
        )
    cpu = heartbeats["database x8"].get("cpu_ms")
    if cpu and heartbeats.get("cpus"):
        ceiling = heartbeats["cpus"] / ((cpu["client"] + cpu["server"]) / 1000)
        lines += _rows(
            [
                (
                    "CPU ceiling of DatabaseStore, 8 processes",
                    per_second(ceiling, "heartbeats"),
                    f"{heartbeats['cpus']} CPUs / CPU per heartbeat (client + backend), were"
                    " the machine ours alone and never waiting for the disk",
                )
            ]
        )
    lines.append("")
    best = heartbeats["database x8"]["best"]
    targets.append(
        Target(
            "heartbeats from 8 processes >= 3,000/s on this machine's PostgreSQL",
            per_second(best, "heartbeats"),
            _check(best, 3000, at_most=False),
        )
    )
    return lines


def _wakeups(wakeups: dict[str, Any], targets: list[Target]) -> list[str]:
    latency, posting = wakeups["latency"], wakeups["posting"]
    after = wakeups.get("after_post", {})
    lines = [
        f"== wake-ups across hosts: two uvicorn processes of the demo site over one database;"
        f" {wakeups['polls']} long-polls on A, {wakeups['tasks']} tasks posted on B at"
        f" {wakeups['rate']:g}/s ==",
        *_rows(
            [
                (
                    "POST on B starts -> long-poll on A answers",
                    f"p50 {latency.get('p50_ms', math.nan)} ms, p99"
                    f" {latency.get('p99_ms', math.nan)} ms, max {latency.get('max_ms', math.nan)} ms",
                    f"{wakeups['delivered']}/{wakeups['tasks']} delivered",
                ),
                (
                    "the POST's own round trip on B",
                    f"p50 {posting.get('p50_ms', math.nan)} ms, p99"
                    f" {posting.get('p99_ms', math.nan)} ms",
                    "decision, commit, answer",
                ),
                (
                    "B answers the POST -> long-poll on A answers",
                    f"p50 {after.get('p50_ms', math.nan)} ms, p99"
                    f" {after.get('p99_ms', math.nan)} ms",
                    "NOTIFY after commit, A's listener, its read of the log, the waiter's answer",
                ),
            ]
        ),
    ]
    if wakeups["errors"]:
        lines.append(f"  errors: {wakeups['errors']}")
    lines.append("")
    p99 = latency.get("p99_ms", math.nan)
    every_one = wakeups["delivered"] == wakeups["tasks"]
    targets.append(
        Target(
            "a long-poll on server A answers within 200 ms (p99) of a task posted on server B",
            f"p99 {p99} ms, {wakeups['delivered']}/{wakeups['tasks']} tasks delivered",
            bool(every_one and _check(p99, 200, at_most=True)),
        )
    )
    return lines
