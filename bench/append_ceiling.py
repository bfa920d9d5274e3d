"""How far the store's own code could move its durable appends: ``python -m bench.append_ceiling``.

Takes turns, for a few rounds, between raw ``write``+``fdatasync`` loops, the
store's heartbeat as it is, and the same store without three things it must
keep: the ``dup`` of the descriptor it syncs (another thread may retire the
kept one meanwhile), the check that ends a torn last line before its own,
and its metrics. Each keeps its best round; the store's rates are printed
against raw's, as ``make bench`` prints them.

Beside them, the raw loop under the pool's lock with a fixed amount of CPU
spent on each line (``--busy``, in µs): what any work a line does between
two syncs costs, whatever that work is. On this kind of machine 10 µs
already took a tenth off raw's rate, while the store spends far more of
its CPU than that on a line making, counting and placing its message.

The stripped store is a measurement and nothing else: it could sync a
closed descriptor and append to a torn line. What it gains over the real
store is the most that cutting the store's own work could gain without
breaking a rule of the day files.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.appends import (
    RAW_FILE_NAME,
    RAW_LOCK_NAME,
    AppendResult,
    _measure,
    _raw_loop,
    _store_loop,
)
from taskpool import metrics
from taskpool.stores.jsonl import JsonlStore
from taskpool.stores.jsonl.appender import Appended, Appender


class _StrippedAppender(Appender):
    """Syncs the kept descriptor itself, and never looks for a torn line."""

    def sync(self) -> int:
        writer = self._writer
        return writer.descriptor if self.fsync and writer is not None else -1

    def finish(self, descriptor: int) -> None:
        if descriptor >= 0:
            os.fdatasync(descriptor)

    def _append(self, day, line, inode, clean_end) -> Appended:  # noqa: ANN001 - as the base's
        writer, _size = self._writer_for(day, inode)
        written = self._write(writer, line)
        return Appended(written - len(line), written)


def _stripped_loop(store: JsonlStore) -> Callable[[int, float], int]:
    def run(writer: int, deadline: float) -> int:
        store.fsync = True
        device_id = f"bench-writer-{writer}"
        count = 0
        with metrics.not_recorded():
            while time.perf_counter() < deadline:
                store.post_heartbeat(device_id=device_id)
                count += 1
        return count

    return run


def measure(
    directory: Path,
    *,
    writers: int,
    seconds: float,
    rounds: int,
    busy: tuple[float, ...] = (),
) -> dict[str, AppendResult]:
    store = JsonlStore(directory)
    stripped = JsonlStore(directory)
    stripped._appender = _StrippedAppender(stripped._files, fsync=True)  # noqa: SLF001
    loops = {
        "raw write+fdatasync": _raw_loop(directory, True),
        "store FSYNC on": _store_loop(store, True),
        "store without dup, torn-line check, metrics": _stripped_loop(stripped),
    }
    for microseconds in busy:
        loops[f"raw under the lock, {microseconds:g} µs of CPU a line"] = _raw_loop(
            directory, True, locked=True, busy_seconds=microseconds / 1e6
        )
    best: dict[str, AppendResult] = {}
    try:
        for _round in range(rounds):
            for name, loop in loops.items():
                store.stats()
                stripped.stats()
                result = _measure(loop, writers, seconds)
                if name not in best or result.rate > best[name].rate:
                    best[name] = result
    finally:
        for name in (RAW_FILE_NAME, RAW_LOCK_NAME):
            (directory / name).unlink(missing_ok=True)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=5, help="turns each loop takes")
    parser.add_argument(
        "--busy",
        default="10,20,40",
        help="µs of CPU a line for the raw loops under the lock, comma-separated ('' for none)",
    )
    options = parser.parse_args()
    busy = tuple(float(value) for value in options.busy.split(",") if value.strip())
    with tempfile.TemporaryDirectory(prefix="taskpool-append-ceiling-") as work:
        best = measure(
            Path(work),
            writers=options.writers,
            seconds=options.seconds,
            rounds=options.rounds,
            busy=busy,
        )
    raw = best["raw write+fdatasync"].rate
    print(f"{options.writers} writers, best of {options.rounds} rounds of {options.seconds:g} s:")
    for name, result in best.items():
        print(
            f"  {name:47} {result.rate:9,.0f} lines/s  {result.rate / raw:6.1%} of raw"
            f"  CPU {result.cpu_per_line * 1e6:4.0f} µs a line (user {result.user_per_line * 1e6:.0f})"
        )


if __name__ == "__main__":
    main()
