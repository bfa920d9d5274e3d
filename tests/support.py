"""Helpers shared by the test modules: a clock to drive, day files written by hand, free ports."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import orjson

from taskpool.days import day_file_name, day_of
from taskpool.messages import (
    Message,
    decode_line,
    encode_line,
    format_timestamp,
    new_message,
    parse_timestamp,
)
from taskpool.stores.jsonl import JsonlStore


class ManualClock:
    """A clock that moves only when told to (``advance``), or by ``tick`` seconds per reading."""

    def __init__(self, start: str | float, *, tick: float = 0.0) -> None:
        self.now = parse_timestamp(start) if isinstance(start, str) else float(start)
        self.tick = tick
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            now = self.now
            self.now += self.tick
            return now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds

    def set(self, moment: str) -> None:
        with self._lock:
            self.now = parse_timestamp(moment)


def store_at(directory: Path, clock: ManualClock, **options: Any) -> JsonlStore:
    """A ``JsonlStore`` on ``directory`` that reads the time from ``clock``."""
    options.setdefault("fsync", False)
    return JsonlStore(directory, clock=clock, **options)


def message(
    *,
    kind: str = "task",
    sender: str = "user:ops@example.com",
    to: str = "device:pi-1",
    ts: str | float,
    title: str = "",
    body: str = "",
    parent_id: str | None = None,
    meta: dict[str, Any] | None = None,
) -> Message:
    """A complete nine-key message, as another writer would put it in a day file."""
    message = new_message(
        0,
        sender=sender,
        to=to,
        kind=kind,
        title=title,
        body=body,
        parent_id=parent_id,
        meta=meta or {},
    )
    message["ts"] = ts if isinstance(ts, str) else format_timestamp(ts)
    return message


def day_path(directory: Path, day: date) -> Path:
    return directory / day_file_name(day)


def append_raw(directory: Path, day: date, data: bytes) -> Path:
    """Append bytes to a day file by hand, as an operator's ``cat >>`` would."""
    path = day_path(directory, day)
    with open(path, "ab") as file:
        file.write(data)
    return path


def append_messages(directory: Path, *messages: Message) -> None:
    """Append each message's line to the day file its ``ts`` belongs to."""
    for item in messages:
        append_raw(directory, day_of(parse_timestamp(item["ts"])), encode_line(item))


def read_day(directory: Path, day: date) -> list[Message]:
    """Every line of a day file, parsed (fails on any line that is not a message)."""
    data = day_path(directory, day).read_bytes()
    assert data.endswith(b"\n")
    return [decode_line(line) for line in data[:-1].split(b"\n")]


def today() -> date:
    return day_of(time.time())


def noon(day: date) -> str:
    return f"{day.isoformat()}T12:00:00Z"


def days_ago(count: int) -> date:
    return today() - timedelta(days=count)


def ids(messages: list[dict[str, Any]]) -> list[str]:
    return [item["id"] for item in messages]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)


#: The repository's root, where manage.py is.
REPOSITORY = Path(__file__).resolve().parent.parent


def manage_py(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    """``python manage.py ARGS`` in the repository, with ``env``: its status and what it printed."""
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPOSITORY,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


class TaskStateCalls:
    """The devices ``TaskState`` works a status out for (``statuses``) and builds an execution
    row for (``rows``), while installed with ``monkeypatch``: to catch per-device work."""

    def __init__(self, monkeypatch: Any) -> None:
        from taskpool.lifecycle import TaskState

        self.statuses: list[str] = []
        self.rows: list[str] = []
        status, execution = TaskState._status, TaskState.execution

        def counted_status(state: Any, device_id: str, now: float) -> str:
            self.statuses.append(device_id)
            return status(state, device_id, now)

        def counted_execution(state: Any, device_id: str, now: float) -> dict[str, Any]:
            self.rows.append(device_id)
            return execution(state, device_id, now)

        monkeypatch.setattr(TaskState, "_status", counted_status)
        monkeypatch.setattr(TaskState, "execution", counted_execution)
