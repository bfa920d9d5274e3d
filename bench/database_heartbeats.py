"""Heartbeats from many processes at once: each its own store, each its own device.

A heartbeat is the cheapest write (nothing to decide): for ``DatabaseStore``
one short transaction (the log row, the device's row) committed durably;
for ``JsonlStore`` one locked append, synced when ``FSYNC`` is on.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.process_rates import Loop, Rates, run_processes


def database_heartbeats(alias: str, workers: int, seconds: float) -> Rates:
    """Heartbeats per second into the ``DatabaseStore`` of database ``alias``."""

    def make_loop(number: int) -> Loop:
        from taskpool.stores.database import DatabaseStore

        store = DatabaseStore(alias)
        device_id = f"beat-{number}"
        store.post_heartbeat(device_id=device_id)  # connected, and the device's row exists

        def loop(deadline: float) -> dict[str, int]:
            count = 0
            while time.perf_counter() < deadline:
                store.post_heartbeat(device_id=device_id)
                count += 1
            store.close()
            return {"heartbeats": count}

        return loop

    return run_processes(make_loop, workers, seconds)


def jsonl_heartbeats(directory: Path, workers: int, seconds: float, *, fsync: bool) -> Rates:
    """Heartbeats per second into a ``JsonlStore`` over ``directory``."""

    def make_loop(number: int) -> Loop:
        from taskpool.stores.jsonl import JsonlStore

        store = JsonlStore(directory, fsync=fsync)
        device_id = f"beat-{number}"
        store.post_heartbeat(device_id=device_id)

        def loop(deadline: float) -> dict[str, int]:
            count = 0
            while time.perf_counter() < deadline:
                store.post_heartbeat(device_id=device_id)
                count += 1
            store.close()
            return {"heartbeats": count}

        return loop

    return run_processes(make_loop, workers, seconds)


def raw_commits(alias: str, workers: int, seconds: float) -> Rates:
    """One-row ``INSERT``s, each committed, per second into a scratch table of database
    ``alias``, over plain psycopg connections: what the server gives any store's writes."""
    import psycopg

    from bench.postgres import connection_params

    params = connection_params(alias)
    with psycopg.connect(**params, autocommit=True) as connection:
        connection.execute(
            "CREATE TABLE IF NOT EXISTS bench_raw_commit (id bigserial PRIMARY KEY, line text)"
        )

    def make_loop(number: int) -> Loop:
        connection = psycopg.connect(**params, autocommit=True)
        line = f"heartbeat of writer {number}"

        def loop(deadline: float) -> dict[str, int]:
            count = 0
            while time.perf_counter() < deadline:
                connection.execute("INSERT INTO bench_raw_commit (line) VALUES (%s)", [line])
                count += 1
            connection.close()
            return {"heartbeats": count}

        return loop

    return run_processes(make_loop, workers, seconds)
