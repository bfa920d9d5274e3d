"""``python -m bench.append_ceiling`` runs, and what its stripped store appends is whole lines."""

from __future__ import annotations

import orjson

from bench import append_ceiling


def test_the_ceiling_measures_three_loops_and_every_store_line_is_kept(tmp_path):
    best = append_ceiling.measure(tmp_path, writers=2, seconds=0.2, rounds=1)
    assert list(best) == [
        "raw write+fdatasync",
        "store FSYNC on",
        "store without dup, torn-line check, metrics",
    ]
    assert all(result.lines > 0 and result.rate > 0 for result in best.values())
    stored = [
        orjson.loads(line)
        for path in tmp_path.glob("*.jsonl")
        for line in path.read_bytes().splitlines()
    ]
    assert (
        len(stored)
        == best["store FSYNC on"].lines + best["store without dup, torn-line check, metrics"].lines
    )
    assert {message["type"] for message in stored} == {"heartbeat"}


def test_a_busy_loop_spends_its_time_on_each_line(tmp_path):
    """A line of the busy loop takes at least its spin, so its count is bounded by the time."""
    spin_seconds, seconds, writers = 0.005, 0.2, 2
    best = append_ceiling.measure(
        tmp_path, writers=writers, seconds=seconds, rounds=1, busy=(spin_seconds * 1e6,)
    )
    busy = best["raw under the lock, 5000 µs of CPU a line"]
    assert 0 < busy.lines <= writers * (seconds / spin_seconds + 1)
    assert not list(tmp_path.glob("raw-append-bench.*"))  # the raw loops leave no file
