"""Heartbeats from many processes at once: each its own store, each its own device.

A heartbeat is the cheapest write (nothing to decide): for ``DatabaseStore``
one short transaction (the log row, the device's row) committed durably;
for ``JsonlStore`` one locked append, synced when ``FSYNC`` is on. For the
database, each worker also counts the CPU it and its PostgreSQL backend used
(the server is on this machine): what one heartbeat costs the machine, apart
from waiting for the disk.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.process_rates import Loop, Rates, process_cpu_seconds, run_processes


def _cpu_counters(client: float, backend: int, server: float) -> dict[str, int]:
    """The CPU microseconds this process and its PostgreSQL backend used since the readings."""
    return {
        "client_cpu_us": round(1e6 * (time.process_time() - client)),
        "server_cpu_us": round(1e6 * (process_cpu_seconds(backend) - server)),
    }


def database_heartbeats(alias: str, workers: int, seconds: float) -> Rates:
    """Heartbeats per second into the ``DatabaseStore`` of database ``alias``."""

    def make_loop(number: int) -> Loop:
        from django.db import connections

        from taskpool.stores.database import DatabaseStore

        store = DatabaseStore(alias)
        device_id = f"beat-{number}"
        store.post_heartbeat(device_id=device_id)  # connected, and the device's row exists
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            backend = cursor.fetchone()[0]

        def loop(deadline: float) -> dict[str, int]:
            count = 0
            client, server = time.process_time(), process_cpu_seconds(backend)
            while time.perf_counter() < deadline:
                store.post_heartbeat(device_id=device_id)
                count += 1
            counters = _cpu_counters(client, backend, server)
            store.close()
            return {"heartbeats": count, **counters}

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
            backend = connection.info.backend_pid
            client, server = time.process_time(), process_cpu_seconds(backend)
            while time.perf_counter() < deadline:
                connection.execute("INSERT INTO bench_raw_commit (line) VALUES (%s)", [line])
                count += 1
            counters = _cpu_counters(client, backend, server)
            connection.close()
            return {"heartbeats": count, **counters}

        return loop

    return run_processes(make_loop, workers, seconds)
