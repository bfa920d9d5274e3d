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
