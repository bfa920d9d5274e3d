"""Answers and claims from many devices at once: decisions that can be refused with a 409.

Each worker process is one device (``w0`` … ``w7``) with its own
``DatabaseStore``. Before the runs the pool gets, per device, tasks
addressed to it alone, and any-one tasks addressed to all of the workers
(``device:[w0,…,w7]``, ``meta.mode = "any"``), enough for every run. Then each worker, in a loop,
as a device agent would:

1. claims the oldest any-one task it may take (``claim``, no task named: the
   row is taken with ``SKIP LOCKED``, as a queue worker takes a job);
2. answers it ``done`` (``post_response``: a decision that is refused if the
   claim was lost, the task cancelled or already answered);
3. answers its next own task ``done`` (or ``failed``, one in ten).

Each stored answer and claim is one decision, one transaction holding the
task's row lock, committed durably. Refusals (409) are counted apart: in
this workload there should be none.
"""

from __future__ import annotations

import time
from pathlib import Path

from bench.process_rates import Loop, Rates, run_processes
from taskpool.days import day_file_name, day_of
from taskpool.messages import encode_line, format_timestamp, new_message_id

DEVICES = tuple(f"w{number}" for number in range(8))


def post_tasks(alias: str, directory: Path, per_device: int) -> dict[str, list[str]]:
    """``per_device`` own tasks per device and as many any-one tasks per device, open for an hour,
    written as a day file and copied into the empty pool of ``alias`` with ``bench.database_load``
    (posting them one by one would take longer than the runs); each device's own task ids."""
    import psycopg

    from bench import database_load
    from bench.postgres import connection_params

    now = time.time()
    ts, expires_at = format_timestamp(now), format_timestamp(now + 3600)
    everyone = "device:[" + ",".join(DEVICES) + "]"
    own: dict[str, list[str]] = {device_id: [] for device_id in DEVICES}
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / day_file_name(day_of(now)), "wb") as file:
        for _ in range(per_device):
            for device_id in DEVICES:
                task_id = new_message_id()
                own[device_id].append(task_id)
                file.write(_task(task_id, ts, f"device:{device_id}", {"expires_at": expires_at}))
                file.write(
                    _task(new_message_id(), ts, everyone, {"mode": "any", "expires_at": expires_at})
                )
    jsonl = database_load.replayed_store(directory, now=now, task_ttl=7 * 86400)
    with psycopg.connect(**connection_params(alias)) as connection:
        database_load.load(
            connection, directory, list(DEVICES), now=now, task_ttl=7 * 86400, jsonl=jsonl
        )
    jsonl.close()
    return own


def _task(task_id: str, ts: str, to: str, meta: dict) -> bytes:
    return encode_line(
        {
            "id": task_id,
            "ts": ts,
            "from": "backend",
            "to": to,
            "type": "task",
            "title": "job",
            "body": "",
            "parent_id": None,
            "meta": meta,
        }
    )


def decisions(alias: str, own: dict[str, list[str]], seconds: float) -> Rates:
    """Decisions per second from one worker process per device of ``own``."""
    from taskpool.exceptions import AlreadyAnswered, ClaimedByOther, TaskClosed

    refusals = (AlreadyAnswered, ClaimedByOther, TaskClosed)

    def make_loop(number: int) -> Loop:
        from taskpool.stores.database import DatabaseStore

        store = DatabaseStore(alias)
        device_id = DEVICES[number]
        tasks = iter(own[device_id])
        store.pending_for(device_id)  # connected

        def loop(deadline: float) -> dict[str, int]:
            counts = {"decisions": 0, "claims": 0, "answers": 0, "refused": 0, "nothing": 0}
            answered = 0
            while time.perf_counter() < deadline:
                try:
                    claim = store.claim(device_id=device_id)
                    if claim is None:
                        counts["nothing"] += 1
                    else:
                        counts["claims"] += 1
                        store.post_response(
                            device_id=device_id, parent_id=claim.task["id"], status="done"
                        )
                        counts["answers"] += 1
                except refusals:
                    counts["refused"] += 1
                task_id = next(tasks, None)
                if task_id is None:
                    counts["ran out"] = 1
                    break
                answered += 1
                try:
                    store.post_response(
                        device_id=device_id,
                        parent_id=task_id,
                        status="failed" if answered % 10 == 0 else "done",
                    )
                    counts["answers"] += 1
                except refusals:
                    counts["refused"] += 1
            counts["decisions"] = counts["claims"] + counts["answers"]
            store.close()
            return counts

        return loop

    return run_processes(make_loop, len(own), seconds)
