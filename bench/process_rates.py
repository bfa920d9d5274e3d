"""How many times a loop runs per second in N processes at once, each doing its own work.

Workers are forked from the benchmark process after its database
connections are closed, so each opens its own (as each of a site's worker
processes would). Each builds what it needs (``make_loop(worker)``, not
timed), says it is ready, and all start at one moment and run for the same
time. A loop returns its counters (``{"decisions": n, ...}``); the rate is
the counted work over the time from the common start to the last worker's
end. A worker that raises makes the whole measurement raise.
"""

from __future__ import annotations

import multiprocessing
import os
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

#: A worker's loop: runs until the deadline (``time.perf_counter()``), returns its counters.
Loop = Callable[[float], dict[str, int]]


@dataclass(frozen=True)
class Rates:
    """Counters per worker, and the time they took together."""

    per_worker: list[dict[str, int]]
    seconds: float
    totals: dict[str, int] = field(default_factory=dict)

    def rate(self, counter: str) -> float:
        return self.totals.get(counter, 0) / self.seconds if self.seconds > 0 else float("nan")

    def worker_rates(self, counter: str) -> list[float]:
        return [counts.get(counter, 0) / self.seconds for counts in self.per_worker]


def _worker(make_loop, number, ready, go, start_at, seconds, results) -> None:
    try:
        loop = make_loop(number)
        ready.put(("ready", number))
        go.wait()
        start = start_at.value
        while time.perf_counter() < start:
            pass
        counts = loop(start + seconds)
        results.put(("done", (counts, time.perf_counter())))
    except BaseException:
        message = traceback.format_exc()
        ready.put(("error", message))
        results.put(("error", message))


def run_processes(make_loop: Callable[[int], Loop], workers: int, seconds: float) -> Rates:
    """Run ``make_loop(n)``'s loop in ``workers`` forked processes for ``seconds``."""
    from django.db import connections

    connections.close_all()  # each worker opens its own
    context = multiprocessing.get_context("fork")
    ready, results = context.Queue(), context.Queue()
    go = context.Event()
    start_at = context.Value("d", 0.0)
    processes = [
        context.Process(target=_worker, args=(make_loop, n, ready, go, start_at, seconds, results))
        for n in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            kind, detail = ready.get(timeout=300)
            if kind == "error":
                raise RuntimeError(f"a worker failed while getting ready:\n{detail}")
        start_at.value = time.perf_counter() + 0.05
        go.set()
        outcomes = []
        for _ in processes:
            kind, detail = results.get(timeout=seconds + 300)
            if kind == "error":
                raise RuntimeError(f"a worker failed:\n{detail}")
            outcomes.append(detail)
    finally:
        go.set()
        for process in processes:
            process.join(timeout=60)
            if process.is_alive():
                process.terminate()
    totals: Counter[str] = Counter()
    for counts, _finished in outcomes:
        totals.update(counts)
    finished = max(finished for _counts, finished in outcomes)
    return Rates([counts for counts, _ in outcomes], finished - start_at.value, dict(totals))


def process_cpu_seconds(pid: int) -> float:
    """CPU seconds (user and system) a local process has used, from ``/proc``: a PostgreSQL
    backend's, when the server runs on this machine (``nan`` when it cannot be read)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def best_of(measure: Callable[[], Rates], counter: str, repeats: int) -> tuple[Rates, list[float]]:
    """The run with the highest rate of ``counter`` among ``repeats``, and every run's rate."""
    runs = [measure() for _ in range(repeats)]
    return max(runs, key=lambda run: run.rate(counter)), [run.rate(counter) for run in runs]
