"""The naive baseline: pending computed from scratch, re-reading the horizon on every call.

This is the straightforward way to answer ``GET /pool/pending`` from JSON
Lines: list the day files in the ``TASK_TTL`` horizon, read and parse every
line, then replay each task addressed to the device with its responses. It
exists only for comparison (and as an independent check of the index); the
rules come from ``taskpool.lifecycle``, the one place that knows them.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

import orjson

from taskpool.days import day_of, day_of_file_name
from taskpool.exceptions import InvalidMessage
from taskpool.lifecycle import replay
from taskpool.messages import parse_address


def read_horizon(data_dir: str | os.PathLike[str], now: float, task_ttl: float) -> list[Any]:
    """Every parsable message in the day files of the horizon, in file order."""
    first_day = day_of(now - task_ttl)
    days = sorted(
        day for name in os.listdir(data_dir) if (day := day_of_file_name(name)) is not None
    )
    messages = []
    for day in days:
        if day < first_day:
            continue
        with open(os.path.join(data_dir, f"{day.isoformat()}.jsonl"), "rb") as file:
            data = file.read()
        complete = data[: data.rfind(b"\n") + 1]
        for line in complete.split(b"\n"):
            if not line:
                continue
            try:
                messages.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                continue
    return messages


def pending_in(
    messages: list[Any], device_id: str, now: float, task_ttl: float, limit: int
) -> list[Any]:
    """The tasks among ``messages`` pending for ``device_id``, oldest first."""
    responses: dict[str, list[Any]] = defaultdict(list)
    tasks = []
    seen: set[str] = set()
    for message in messages:
        if type(message) is not dict:
            continue
        kind = message.get("type")
        if kind == "response":
            responses[message.get("parent_id")].append(message)
        elif kind == "task" and message.get("id") not in seen:
            seen.add(message.get("id"))
            try:
                addressed = parse_address(message.get("to")).includes(device_id)
            except InvalidMessage:
                continue
            if addressed:
                tasks.append(message)
    pending = []
    for task in tasks:
        try:
            state = replay(task, responses.get(task["id"], []), task_ttl)
        except (InvalidMessage, KeyError, TypeError):
            continue
        if state.is_pending_for(device_id, now):
            pending.append(task)
            if len(pending) >= limit:
                break
    return pending


def naive_pending(
    data_dir: str | os.PathLike[str], device_id: str, *, task_ttl: float, limit: int = 100
) -> list[Any]:
    """Re-read the horizon and compute what is pending for ``device_id``."""
    now = time.time()
    return pending_in(read_horizon(data_dir, now, task_ttl), device_id, now, task_ttl, limit)
