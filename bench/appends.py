"""Append throughput: the store against raw ``os.write`` loops, from 1 or many processes.

Writers are forked from the benchmark process, so each starts with the
store's index already built (as a server's worker would be after start-up).
They wait until all are ready, run for the same fixed time, and report how
many lines they appended; the rate is all their lines over the time from
the common start to the last writer's last acknowledged line.
"""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from taskpool.days import day_of
from taskpool.messages import encode_line, format_timestamp, new_message_id
from taskpool.stores.jsonl import JsonlStore
from taskpool.stores.jsonl.appender import Appender
from taskpool.stores.jsonl.day_files import DayFiles

RAW_FILE_NAME = "raw-append-bench.bin"  # not a day file: the store never reads it
RAW_LOCK_NAME = "raw-append-bench.lock"
#: The store's lowest layer alone, syncing each line as the store does.
APPENDER_LOOP = "store's appender alone"


@dataclass(frozen=True)
class AppendResult:
    writers: int
    lines: int
    seconds: float
    #: The writers' CPU, user and system, over the run.
    cpu_seconds: float = float("nan")
    #: Of which user time: the Python each line takes, where the loops differ.
    user_seconds: float = float("nan")
    #: How often the writers slept (voluntary context switches): in the sync, on the lock.
    sleeps: int = 0

    @property
    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_per_line(self) -> float:
        return self.cpu_seconds / self.lines if self.lines else float("nan")

    @property
    def user_per_line(self) -> float:
        return self.user_seconds / self.lines if self.lines else float("nan")

    @property
    def sleeps_per_line(self) -> float:
        return self.sleeps / self.lines if self.lines else float("nan")


def heartbeat_line(writer: int) -> bytes:
    """A line of the size the store writes for a writer's heartbeat."""
    return encode_line(
        {
            "id": new_message_id(),
            "ts": format_timestamp(time.time()),
            "from": f"device:bench-writer-{writer}",
            "to": "backend",
            "type": "heartbeat",
            "title": "",
            "body": "",
            "parent_id": None,
            "meta": {},
        }
    )


def _store_loop(store: JsonlStore, fsync: bool) -> Callable[[int, float], int]:
    def run(writer: int, deadline: float) -> int:
        store.fsync = fsync
        device_id = f"bench-writer-{writer}"
        count = 0
        while time.perf_counter() < deadline:
            store.post_heartbeat(device_id=device_id)
            count += 1
        return count

    return run


def _appender_loop(directory: Path) -> Callable[[int, float], int]:
    """The store's own ``Appender`` and nothing above it, syncing each line.

    A ready-made line, appended to the pool's day file as the store appends
    every line (under the pool's lock, the file's inode checked, one write)
    and synced as the store syncs it (outside the lock, on a descriptor of
    its own): what is left of the durable rate for everything a store does
    above its files, such as making the message, counting it, and its API.
    Each writer appends the same line, id and all: the pool is the bench's
    own, and appends are measured after everything that reads it.
    """

    def run(writer: int, deadline: float) -> int:
        appender = Appender(DayFiles(directory, max_message_bytes=1 << 16), fsync=True)
        line = heartbeat_line(writer)
        count = 0
        try:
            while time.perf_counter() < deadline:
                day = day_of(time.time())
                with appender.locked():
                    appender.append(day, line)
                    to_sync = appender.sync()
                appender.finish(to_sync)
                count += 1
        finally:
            appender.close()
        return count

    return run


def _raw_loop(
    directory: Path, sync: bool, locked: bool = False, busy_seconds: float = 0.0
) -> Callable[[int, float], int]:
    """The same line written in a bare loop; ``locked`` takes an ``flock`` around each write.

    The locked loop is the day files' rule (every append under an exclusive
    ``flock``) and nothing else: the ceiling for any store that keeps it.
    ``busy_seconds`` of CPU are spent before each line, as a store spends them
    making it.
    """

    def run(writer: int, deadline: float) -> int:
        line = heartbeat_line(writer)
        descriptor = os.open(
            directory / RAW_FILE_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
        )
        lock = os.open(directory / RAW_LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        count = 0
        try:
            while time.perf_counter() < deadline:
                if busy_seconds:
                    busy_until = time.perf_counter() + busy_seconds
                    while time.perf_counter() < busy_until:
                        pass
                if locked:
                    fcntl.flock(lock, fcntl.LOCK_EX)
                os.write(descriptor, line)
                if locked:
                    fcntl.flock(lock, fcntl.LOCK_UN)
                if sync:
                    os.fdatasync(descriptor)
                count += 1
        finally:
            os.close(descriptor)
            os.close(lock)
        return count

    return run


def _worker(loop, writer, ready, go, start_at, seconds, results) -> None:
    ready.put(writer)
    go.wait()
    start = start_at.value
    while time.perf_counter() < start:
        pass
    before = resource.getrusage(resource.RUSAGE_SELF)
    count = loop(writer, start + seconds)
    after = resource.getrusage(resource.RUSAGE_SELF)
    user = after.ru_utime - before.ru_utime
    cpu = user + after.ru_stime - before.ru_stime
    results.put((count, time.perf_counter(), cpu, user, after.ru_nvcsw - before.ru_nvcsw))


def _measure(loop: Callable[[int, float], int], writers: int, seconds: float) -> AppendResult:
    context = multiprocessing.get_context("fork")
    ready, results = context.Queue(), context.Queue()
    go = context.Event()
    start_at = context.Value("d", 0.0)
    processes = [
        context.Process(target=_worker, args=(loop, n, ready, go, start_at, seconds, results))
        for n in range(writers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.get(timeout=120)
    start_at.value = time.perf_counter() + 0.05
    go.set()
    outcomes = [results.get(timeout=seconds + 120) for _ in processes]
    for process in processes:
        process.join()
        if process.exitcode != 0:
            raise RuntimeError(f"an append writer failed with exit code {process.exitcode}")
    counts, finishes, cpus, users, sleeps = zip(*outcomes, strict=True)
    return AppendResult(
        writers,
        sum(counts),
        max(finishes) - start_at.value,
        cpu_seconds=sum(cpus),
        user_seconds=sum(users),
        sleeps=sum(sleeps),
    )


def measure_appends(
    store: JsonlStore,
    directory: Path,
    *,
    seconds: float,
    writer_counts: tuple[int, ...] = (1, 8),
    durable_rounds: int = 3,
) -> dict[str, AppendResult]:
    """Lines/s for the store (FSYNC off and on) and for raw loops, by number of writers.

    The durable loops (raw ``write``+``fdatasync``, the store with FSYNC on,
    and with several writers the same raw loop under the pool's lock and the
    store's appender alone) take turns for ``durable_rounds`` rounds, and
    each keeps its best: what a disk gives to syncing writers drifts from one
    second to the next, and measured once each, a second apart, the store's
    ratio to raw moved between 75% and 95% from run to run.
    """
    results: dict[str, AppendResult] = {}
    try:
        for writers in writer_counts:
            for name, loop in (
                ("raw write", _raw_loop(directory, False)),
                ("raw write under flock", _raw_loop(directory, False, locked=True)),
            ):
                results[f"{name} x{writers}"] = _measure(loop, writers, seconds)
            store.stats()  # catch the parent's index up, so writers start level
            results[f"store FSYNC off x{writers}"] = _measure(
                _store_loop(store, False), writers, seconds
            )
            durable = [
                ("raw write+fdatasync", _raw_loop(directory, True)),
                ("store FSYNC on", _store_loop(store, True)),
            ]
            if writers > 1:
                # The layers under the store: the pool's lock alone, then its appender.
                durable.append(
                    ("raw write+fdatasync under flock", _raw_loop(directory, True, locked=True))
                )
                durable.append((APPENDER_LOOP, _appender_loop(directory)))
            for _round in range(durable_rounds):
                for name, loop in durable:
                    store.stats()
                    result = _measure(loop, writers, seconds)
                    best = results.get(f"{name} x{writers}")
                    if best is None or result.rate > best.rate:
                        results[f"{name} x{writers}"] = result
    finally:
        for name in (RAW_FILE_NAME, RAW_LOCK_NAME):
            (directory / name).unlink(missing_ok=True)
    return results
