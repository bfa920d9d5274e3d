"""Runs the suite: history at each size, then every measurement, then the report."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from bench.stats import lines_label, median, percentile

REPOSITORY = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
FULL_SIZES = (0, 10_000, 100_000, 1_000_000)
QUICK_SIZES = (0, 1_000, 10_000)
TASK_TTL = 7 * 86400.0
#: The busy devices of the history with open broadcasts: they answer every one, and they ask.
BUSY_DEVICES = 50


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to take."""

    sizes: tuple[int, ...]
    requests: int
    asgi_requests: int
    request_rounds: int
    append_seconds: float
    quick: bool
    devices_requests: int = 200

    def naive_samples(self, size: int) -> int:
        if self.quick:
            return 10
        return 3 if size >= 1_000_000 else 10 if size >= 100_000 else 50

    def cold_repeats(self, size: int) -> int:
        return 2 if size >= 1_000_000 or self.quick else 3

    def checked_devices(self, size: int) -> int:
        return 20 if size >= 1_000_000 else 50


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a small run, well under a minute")
    parser.add_argument("--sizes", type=int, nargs="+", help="history sizes in lines")
    parser.add_argument("--requests", type=int, help="timed requests per endpoint and size")
    parser.add_argument("--append-seconds", type=float, help="duration of each append run")
    parser.add_argument(
        "--devices-requests", type=int, help="timed GET /pool/devices per pool (default 200)"
    )
    parser.add_argument(
        "--work-dir", type=Path, help="where pools are written (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args(argv)


def setup_django(work: Path) -> dict[str, str]:
    """Start Django on a fresh SQLite file and register 1,000 validated devices; their tokens."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"
    os.environ["BENCH_DATABASE"] = str(work / "db.sqlite3")
    os.environ["BENCH_DATA_DIR"] = str(work / "pool-unused")
    import django

    django.setup()
    from django.core.management import call_command
    from django.utils import timezone

    from bench.history import DEVICE_COUNT, device_name
    from taskpool.models import DeviceUser
    from taskpool.tokens import DeviceToken

    call_command("migrate", verbosity=0)
    # Seen already, as a fleet in steady state: no request pays for a first last_seen write.
    DeviceUser.objects.bulk_create(
        [
            DeviceUser(id=device_name(n), kind="bench", validated=True, last_seen=timezone.now())
            for n in range(DEVICE_COUNT)
        ]
    )
    return {device.id: str(DeviceToken.for_device(device)) for device in DeviceUser.objects.all()}


def admin_token() -> str:
    """A fresh access token of a user with the admin role (the devices list needs it).

    Made just before use: an access token lives minutes, a run longer.
    """
    from django.contrib.auth import get_user_model
    from rest_framework_simplejwt.tokens import AccessToken

    from taskpool.models import UserRole

    user, created = get_user_model().objects.get_or_create(username="bench-admin")
    if created:
        UserRole.objects.create(user=user, role="admin")
    return str(AccessToken.for_user(user))


def time_requests(
    tokens: dict[str, str],
    paths: tuple[str, ...],
    count: int,
    seed: int,
    *,
    transport: str = "wsgi",
) -> dict[str, list[float]]:
    """``count`` timed GETs of each path, interleaved, each pair by one random device.

    ``wsgi``: ``django.test.Client``, Django's WSGI path (which ``serve_pool``
    runs on its threads under uvicorn). ``asgi``: ``AsyncClient`` through
    Django's ASGI handler (sync middleware and views each run in a worker thread).
    """
    if transport == "asgi":
        return asyncio.run(_time_requests_asgi(tokens, paths, count, seed))
    from django.test import Client

    client = Client()
    samples: dict[str, list[float]] = {path: [] for path in paths}
    clock = time.perf_counter
    for number, headers in enumerate(_headers(tokens, count, seed)):
        for path in _rotated(paths, number):
            started = clock()
            response = client.get(path, headers=headers)
            samples[path].append(clock() - started)
            _check_ok(path, response)
    return samples


async def _time_requests_asgi(
    tokens: dict[str, str], paths: tuple[str, ...], count: int, seed: int
) -> dict[str, list[float]]:
    from django.test import AsyncClient

    client = AsyncClient()
    samples: dict[str, list[float]] = {path: [] for path in paths}
    clock = time.perf_counter
    for number, headers in enumerate(_headers(tokens, count, seed)):
        for path in _rotated(paths, number):
            started = clock()
            response = await client.get(path, headers=headers)
            samples[path].append(clock() - started)
            _check_ok(path, response)
    return samples


def _rotated(paths: tuple[str, ...], number: int) -> tuple[str, ...]:
    """The paths, each request starting with the next one, so none is always first."""
    shift = number % len(paths)
    return paths[shift:] + paths[:shift]


def _headers(tokens: dict[str, str], count: int, seed: int) -> Iterator[dict[str, str]]:
    devices = sorted(tokens)
    rng = random.Random(seed)
    for _ in range(count):
        yield {"Authorization": f"Bearer {tokens[rng.choice(devices)]}"}


def _check_ok(path: str, response: Any) -> None:
    if response.status_code != 200:
        raise RuntimeError(f"GET {path} answered {response.status_code}: {response.content!r}")


def parse_floor(directory: Path) -> tuple[float, int]:
    """Seconds to read and ``orjson.loads`` every line of the day files, and the line count."""
    import orjson

    from taskpool.days import day_of_file_name

    started = time.perf_counter()
    count = 0
    loads = orjson.loads
    for name in sorted(os.listdir(directory)):
        if day_of_file_name(name) is None:
            continue
        with open(directory / name, "rb") as file:
            data = file.read()
        for line in data.split(b"\n"):
            if line:
                loads(line)
                count += 1
    return time.perf_counter() - started, count


def build_index(directory: Path) -> tuple[float, int, int]:
    """Seconds for a fresh store to build its index and answer once, the lines it read,
    and in how many segments worker processes replayed them (0: read in order or resumed).
    """
    from taskpool.stores.jsonl import JsonlStore

    started = time.perf_counter()
    store = JsonlStore(directory, task_ttl=TASK_TTL, fsync=False)
    store.pending_for("dev-0000")
    seconds = time.perf_counter() - started
    lines = store.stats()["lines"]
    segments = store._tail.segments_replayed_in_parallel  # noqa: SLF001 - reported, not used
    store.close()
    return seconds, lines, segments


def forget_checkpoint(directory: Path) -> None:
    """Remove the store's start-up checkpoint, so the next store replays the files."""
    from taskpool.stores.jsonl.checkpoint import CHECKPOINT_FILE_NAME

    (directory / CHECKPOINT_FILE_NAME).unlink(missing_ok=True)


def leave_lagging_checkpoint(directory: Path, behind: int) -> bool:
    """Leave a checkpoint that misses the last ``behind`` lines, as a running service's may.

    The files are cut back by ``behind`` lines (later day files set aside, the
    cut one truncated), a store builds its index and checkpoint, then the
    lines are put back in place. Returns whether a checkpoint was written.
    """
    from taskpool.days import day_of_file_name
    from taskpool.stores.jsonl.checkpoint import CHECKPOINT_FILE_NAME

    files = sorted(path for path in directory.iterdir() if day_of_file_name(path.name))
    remaining, later = behind, []
    cut_file, cut_offset = None, 0
    for path in reversed(files):
        data = path.read_bytes()
        count = data.count(b"\n")
        if count <= remaining:
            later.append(path)
            remaining -= count
            continue
        cut_offset = len(data)
        for _ in range(remaining):
            cut_offset = data.rfind(b"\n", 0, cut_offset - 1) + 1
        cut_file = path
        break
    if cut_file is None:
        return False
    removed = cut_file.read_bytes()[cut_offset:]
    for path in later:
        path.rename(path.with_name(path.name + ".later"))
    os.truncate(cut_file, cut_offset)
    try:
        forget_checkpoint(directory)
        build_index(directory)
    finally:
        with open(cut_file, "ab") as file:
            file.write(removed)
        for path in later:
            path.with_name(path.name + ".later").rename(path)
    return (directory / CHECKPOINT_FILE_NAME).exists()


def measure_memory(directory: Path) -> dict[str, int]:
    output = subprocess.run(
        [sys.executable, "-m", "bench.memory", str(directory)],
        cwd=REPOSITORY,
        check=True,
        capture_output=True,
    ).stdout
    return orjson.loads(output.splitlines()[-1])


def pool_at(directory: Path) -> Any:
    """``override_settings`` pointing taskpool (and so ``get_store()``) at ``directory``."""
    from django.conf import settings
    from django.test.utils import override_settings

    return override_settings(TASKPOOL={**settings.TASKPOOL, "DATA_DIR": str(directory)})


def prepare_size(size: int, plan: Plan, work: Path, tokens: dict[str, str]) -> dict[str, Any]:
    """Write the history for ``size``; measure cold start, memory and the naive baseline."""
    from bench.history import write_history
    from bench.naive import pending_in, read_horizon
    from taskpool.stores import get_store
    from taskpool.stores.jsonl import JsonlStore
    from taskpool.stores.jsonl.checkpoint import CHECKPOINT_FILE_NAME

    directory = work / f"pool-{size}"
    progress(f"{lines_label(size)}: writing history")
    history = write_history(directory, size)
    figures: dict[str, Any] = {
        "size": size,
        "lines": history.lines,
        "bytes": history.bytes,
        "files": len(history.files),
        "mix": history.mix,
        "generate_seconds": history.seconds,
    }

    progress(f"{lines_label(size)}: cold start")
    gc.collect()
    floors = [parse_floor(directory) for _ in range(plan.cold_repeats(size))]
    replays = []
    for _ in range(plan.cold_repeats(size)):
        forget_checkpoint(directory)
        replays.append(build_index(directory))  # writes the checkpoint used below
    checkpoint_file = directory / CHECKPOINT_FILE_NAME
    figures["checkpoint_bytes"] = checkpoint_file.stat().st_size if checkpoint_file.exists() else 0
    resumes = [build_index(directory) for _ in range(plan.cold_repeats(size))]
    figures["floor_seconds"] = median([seconds for seconds, _ in floors])
    figures["floor_lines"] = floors[0][1]
    figures["replay_seconds"] = median([seconds for seconds, *_ in replays])
    figures["replay_lines"] = replays[0][1]
    figures["replay_segments"] = replays[0][2]
    figures["cold_seconds"] = median([seconds for seconds, *_ in resumes])
    figures["cold_lines"] = resumes[0][1]
    # The worst case in service: the checkpoint is as far behind as it gets.
    behind = JsonlStore.checkpoint_lines - 1
    figures["lag_lines"] = behind
    if leave_lagging_checkpoint(directory, behind):
        lagging = [build_index(directory) for _ in range(plan.cold_repeats(size))]
        figures["lag_seconds"] = median([seconds for seconds, *_ in lagging])
        figures["lag_lines_total"] = lagging[0][1]
    else:
        figures["lag_seconds"], figures["lag_lines_total"] = figures["replay_seconds"], 0
    gc.collect()

    progress(f"{lines_label(size)}: memory (fresh processes)")
    forget_checkpoint(directory)
    figures["replay_memory"] = measure_memory(directory)
    figures.update(measure_memory(directory))  # resumes from the checkpoint the first wrote

    with pool_at(directory):
        store = get_store()
        figures["open_tasks"] = store.stats()["open_tasks"]
        progress(f"{lines_label(size)}: naive baseline")
        naive = time_requests(
            tokens, ("/bench/naive-pending",), plan.naive_samples(size), seed=size
        )
        figures["naive_samples"] = plan.naive_samples(size)
        figures["naive_p50"] = median(naive["/bench/naive-pending"])

        progress(f"{lines_label(size)}: checking the index against the naive answer")
        now = time.time()
        messages = read_horizon(directory, now, TASK_TTL)
        devices = random.Random(size).sample(sorted(tokens), plan.checked_devices(size))
        agree = sum(
            [task["id"] for task in store.pending_for(device, limit=1000)]
            == [task["id"] for task in pending_in(messages, device, now, TASK_TTL, 1000)]
            for device in devices
        )
        figures["agree"] = (agree, len(devices))
        del messages
    gc.collect()
    return figures


def prepare_broadcasts(size: int, plan: Plan, work: Path) -> dict[str, Any]:
    """Write the history with open broadcasts and lists for ``size``; check it and time a replay."""
    from bench.broadcast_history import write_broadcast_history
    from bench.history import device_name
    from bench.naive import pending_in, read_horizon
    from taskpool.stores.jsonl import JsonlStore

    directory = work / f"pool-broadcasts-{size}"
    progress(f"{lines_label(size)} with open broadcasts: writing history")
    written = write_broadcast_history(
        directory, size, active_devices=BUSY_DEVICES, open_lists=size // 400
    )
    figures: dict[str, Any] = {
        "size": size,
        "lines": written.lines,
        "bytes": sum(path.stat().st_size for path in directory.glob("*.jsonl")),
        "files": len(list(directory.glob("*.jsonl"))),
        "busy_devices": BUSY_DEVICES,
    }
    progress(f"{lines_label(size)} with open broadcasts: replay, then from checkpoint")
    forget_checkpoint(directory)
    figures["replay_seconds"], _lines, figures["replay_segments"] = build_index(directory)
    figures["memory"] = measure_memory(directory)  # from the checkpoint the replay wrote
    store = JsonlStore(directory, task_ttl=TASK_TTL, fsync=False)
    store.pending_for("dev-0000")
    index = store._index  # noqa: SLF001 - reported, not used
    figures["open_tasks"] = len(index.open)
    figures["open_broadcasts"] = sum(1 for state in index.open.values() if state.audience.everyone)
    figures["open_lists"] = sum(
        1
        for state in index.open.values()
        if not state.audience.everyone and len(state.audience.device_ids) > 1
    )
    kept = getattr(index, "broadcasts", None)  # (an index without spans, to compare)
    figures["spans"] = sum(len(spans) for spans in kept.done.values()) // 2 if kept else 0
    now = time.time()
    messages = read_horizon(directory, now, TASK_TTL)
    busy = [device_name(number) for number in range(BUSY_DEVICES)]
    devices = random.Random(size).sample(busy, min(len(busy), plan.checked_devices(size)))
    figures["agree"] = (
        sum(
            [task["id"] for task in store.pending_for(device, limit=1000)]
            == [task["id"] for task in pending_in(messages, device, now, TASK_TTL, 1000)]
            for device in devices
        ),
        len(devices),
    )
    figures["busy_pending_mean"] = sum(
        len(store.pending_for(device, limit=1000)) for device in busy
    ) / len(busy)
    store.close()
    del messages
    gc.collect()
    return figures


def measure_requests(
    results: dict[Any, dict[str, Any]],
    plan: Plan,
    work: Path,
    tokens: dict[str, str],
    busy_tokens: dict[str, str] | None = None,
) -> None:
    """Pending and no-op latency at every size, in rounds that visit each size in turn.

    Going round the sizes many times, each round starting one size further
    on, spreads the machine's drift (other load, caches, the heap) evenly
    over them, so their ratios are fair: with 4 rounds the no-op view, which
    reads no store, came out 15-20% apart between sizes.
    """
    from taskpool.stores import get_store

    paths = ("/pool/pending", "/bench/noop")
    transports = {"wsgi": plan.requests, "asgi": plan.asgi_requests}
    samples = {
        (transport, size): {path: [] for path in paths}
        for transport in transports
        for size in results
    }
    sizes = list(results)
    for round_number in range(plan.request_rounds):
        start = round_number % len(sizes)
        for size in sizes[start:] + sizes[:start]:
            # Keys ("broadcasts", n): the history with open broadcasts, asked by its busy devices.
            broadcasts = isinstance(size, tuple)
            lines = size[1] if broadcasts else size
            label = lines_label(lines) + (" with open broadcasts" if broadcasts else "")
            progress(f"requests: round {round_number + 1}/{plan.request_rounds}, {label}")
            directory = work / (f"pool-broadcasts-{lines}" if broadcasts else f"pool-{lines}")
            asking = busy_tokens if broadcasts and busy_tokens else tokens
            with pool_at(directory):
                get_store().pending_for("dev-0000")  # the index, from its checkpoint
                for transport, total in transports.items():
                    seed = lines * 100 + round_number + (7 if broadcasts else 0)
                    time_requests(asking, paths, 20, -1, transport=transport)  # warm-up
                    timed = time_requests(
                        asking,
                        paths,
                        max(1, total // plan.request_rounds),
                        seed,
                        transport=transport,
                    )
                    for path in paths:
                        samples[transport, size][path] += timed[path]
    for size, figures in results.items():
        figures["request_rounds"] = plan.request_rounds
        for transport in transports:
            prefix = "" if transport == "wsgi" else "asgi_"
            measured = samples[transport, size]
            figures[f"{prefix}requests"] = len(measured[paths[0]])
            for path, name in zip(paths, ("pending", "noop"), strict=True):
                figures[f"{prefix}{name}_p50"] = median(measured[path])
                figures[f"{prefix}{name}_p99"] = percentile(measured[path], 0.99)


def measure_devices_list(
    pools: dict[str, Path], plan: Plan, rounds: int
) -> dict[str, dict[str, float]]:
    """``GET /pool/devices`` (1,000 devices, their pending counts) on each pool, in rounds."""
    from django.test import Client

    from taskpool.stores import get_store

    client = Client()
    samples: dict[str, list[float]] = {name: [] for name in pools}
    names = list(pools)
    per_round = max(1, plan.devices_requests // rounds)
    for round_number in range(rounds):
        start = round_number % len(names)
        for name in names[start:] + names[:start]:
            progress(f"devices list: round {round_number + 1}/{rounds}, {name}")
            # A fresh token each round: one lives 5 minutes, and a slow pool's round may not.
            headers = {"Authorization": f"Bearer {admin_token()}"}
            with pool_at(pools[name]):
                get_store().pending_for("dev-0000")
                for _ in range(3):
                    _check_ok("/pool/devices", client.get("/pool/devices", headers=headers))
                for _ in range(per_round):
                    started = time.perf_counter()
                    response = client.get("/pool/devices", headers=headers)
                    samples[name].append(time.perf_counter() - started)
                    _check_ok("/pool/devices", response)
    return {
        name: {"p50": median(values), "p99": percentile(values, 0.99), "requests": len(values)}
        for name, values in samples.items()
    }


def measure_size_appends(size: int, plan: Plan, work: Path, figures: dict[str, Any]) -> None:
    """Appends at one size (last: they add lines to the pool)."""
    from bench.appends import heartbeat_line, measure_appends
    from taskpool.stores import get_store

    directory = work / f"pool-{size}"
    progress(f"{lines_label(size)}: appends")
    with pool_at(directory):
        appends = measure_appends(get_store(), directory, seconds=plan.append_seconds)
    figures["appends"] = {
        name: {
            "writers": r.writers,
            "lines": r.lines,
            "seconds": r.seconds,
            "rate": r.rate,
            "cpu_per_line": r.cpu_per_line,
            "user_per_line": r.user_per_line,
            "sleeps_per_line": r.sleeps_per_line,
        }
        for name, r in appends.items()
    }
    figures["append_line_bytes"] = len(heartbeat_line(0))
    figures["append_seconds"] = plan.append_seconds


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(argv)
    sizes = tuple(args.sizes or (QUICK_SIZES if args.quick else FULL_SIZES))
    plan = Plan(
        sizes=tuple(sorted(set(sizes))),
        requests=args.requests or (300 if args.quick else 2000),
        asgi_requests=100 if args.quick else 600,
        request_rounds=4 if args.quick else 16,
        append_seconds=args.append_seconds or (0.25 if args.quick else 1.0),
        quick=args.quick,
        devices_requests=args.devices_requests or (40 if args.quick else 200),
    )
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="taskpool-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        tokens = setup_django(work)
        from bench.history import device_name
        from bench.machine import describe
        from bench.report import broadcast_table, size_table, targets

        machine = describe(work)
        results: dict[int, dict[str, Any]] = {}
        for size in plan.sizes:
            results[size] = prepare_size(size, plan, work, tokens)
        broadcast_results = {
            size: prepare_broadcasts(size, plan, work) for size in plan.sizes if size
        }
        busy_tokens = {
            device: token
            for device, token in tokens.items()
            if device in {device_name(number) for number in range(BUSY_DEVICES)}
        }
        together: dict[Any, dict[str, Any]] = {
            **results,
            **{("broadcasts", size): figures for size, figures in broadcast_results.items()},
        }
        measure_requests(together, plan, work, tokens, busy_tokens)
        if broadcast_results:
            largest = max(broadcast_results)
            listed = measure_devices_list(
                {
                    "empty": work / "pool-0",
                    "broadcasts": work / f"pool-broadcasts-{largest}",
                },
                plan,
                rounds=4,
            )
            broadcast_results[largest]["devices_list"] = listed
        for size in plan.sizes:
            measure_size_appends(size, plan, work, results[size])
            gc.collect()
        command = "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:])
        header = [
            f"taskpool benchmark, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC: `{command.strip()}`",
            f"machine: {machine}",
            "",
        ]
        body = [size_table(size, results[size], results.get(0)) + "\n" for size in plan.sizes]
        body += [
            broadcast_table(size, figures, results.get(0)) + "\n"
            for size, figures in broadcast_results.items()
        ]
        checks = targets(results, broadcast_results)
        footer = ["Targets:", *(target.line() for target in checks)]
        footer.append(f"\n(whole run {time.perf_counter() - started:.0f} s)")
        text = "\n".join(header + body + footer)
        print(text)
        RESULTS.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if plan.quick else "")
        (RESULTS / f"{stamp}.txt").write_text(text + "\n")
        (RESULTS / f"{stamp}.json").write_bytes(
            orjson.dumps(
                {"machine": machine, "results": results, "broadcasts": broadcast_results},
                option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS,
            )
        )
        progress(f"written to bench/results/{stamp}.txt")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0
