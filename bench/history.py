"""Realistic pool history, written as real day files.

A week of a fleet of ``DEVICE_COUNT`` devices: about 30% tasks, 55% responses
and 15% heartbeats, spread over 7 day files (six full UTC days and today up
to now). Most tasks are answered within minutes (progress, then done, failed
or rejected; device lists answered by each device; any-one tasks claimed
then done; a few cancelled, a few left to expire within the hour); a few
hundred stay open, as tasks for devices that are offline; two recent
broadcasts are answered by part of the fleet. Lines are made by
``taskpool.messages.encode_line``, so they are exactly what the store writes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from taskpool.days import day_file_name, day_of
from taskpool.messages import encode_line, format_timestamp

DEVICE_COUNT = 1000
DAY_SECONDS = 86400
TASK_SHARE, HEARTBEAT_SHARE = 0.30, 0.15
MEAN_ANSWER_SECONDS = 240.0
USERS = ("user:ops@example.com", "user:night-shift@example.com", "backend")
COMMANDS = (
    ("update-firmware", ["--channel", "stable"]),
    ("collect-logs", ["--since", "1h"]),
    ("run-diagnostics", ["--quick"]),
    ("rotate-keys", []),
    ("restart-service", ["sensor-agent"]),
    ("sync-config", ["--from", "s3://fleet/config.json"]),
)


def device_name(number: int) -> str:
    return f"dev-{number:04d}"


@dataclass
class History:
    """What was written: counts by type, the files, and the devices with open tasks."""

    directory: Path
    lines: int = 0
    tasks: int = 0
    responses: int = 0
    heartbeats: int = 0
    bytes: int = 0
    files: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def mix(self) -> str:
        if not self.lines:
            return "empty"
        return (
            f"{100 * self.tasks / self.lines:.1f}% tasks / "
            f"{100 * self.responses / self.lines:.1f}% responses / "
            f"{100 * self.heartbeats / self.lines:.1f}% heartbeats"
        )


class _Writer:
    """Events in time order -> lines in their day's file."""

    def __init__(self, history: History) -> None:
        self.history = history
        self.day = None
        self.file = None
        self.buffer: list[bytes] = []

    def write(self, moment: float, message: dict) -> None:
        day = day_of(moment)
        if day != self.day:
            self.close()
            path = self.history.directory / day_file_name(day)
            self.file = open(path, "ab")  # noqa: SIM115 - closed in close()
            self.history.files.append(path)
            self.day = day
        line = encode_line(message)
        self.buffer.append(line)
        self.history.bytes += len(line)
        self.history.lines += 1
        if len(self.buffer) >= 4096:
            self.file.write(b"".join(self.buffer))
            self.buffer.clear()

    def close(self) -> None:
        if self.file is not None:
            self.file.write(b"".join(self.buffer))
            self.buffer.clear()
            self.file.close()
            self.file = None


def write_history(
    directory: Path, lines: int, *, now: float | None = None, seed: int = 3
) -> History:
    """Write about ``lines`` lines of history into ``directory`` (which must hold no day files)."""
    started = time.perf_counter()
    now = time.time() if now is None else now
    directory.mkdir(parents=True, exist_ok=True)
    history = History(directory)
    if lines <= 0:
        return history
    rng = random.Random(seed * 1_000_003 + lines)
    first_day = day_of(now) - timedelta(days=6)
    start = time.mktime(first_day.timetuple()) - time.timezone  # midnight UTC
    end = now - 1
    span = end - start

    def new_id() -> str:
        return f"msg_{rng.getrandbits(128):032x}"

    task_count = max(1, round(lines * TASK_SHARE))
    heartbeat_budget = round(lines * HEARTBEAT_SHARE)
    open_count = min(300, max(1, task_count // 10))
    open_tasks = set(rng.sample(range(task_count), open_count))
    broadcasts = 2 if task_count >= 1000 else 0
    # Events: (moment, sequence, kind, payload); the sequence keeps ties in order.
    events: list[tuple[float, int, str, tuple]] = []
    sequence = 0

    def add(moment: float, kind: str, payload: tuple) -> None:
        nonlocal sequence
        if moment < end:
            events.append((moment, sequence, kind, payload))
            sequence += 1

    for number in range(task_count):
        moment = start + (number + rng.random()) / task_count * span
        task_id = new_id()
        sender = rng.choice(USERS)
        expires = moment + 7 * DAY_SECONDS
        mode = None
        answers: list[tuple[str, str]] = []  # (device, status) in the order they come
        if number in open_tasks:
            device = device_name(rng.randrange(DEVICE_COUNT))
            to = f"device:{device}"
            if rng.random() < 0.5:
                answers.append((device, "progress"))
            answers_to_task = answers
        elif number >= task_count - broadcasts:
            to = "device:*"
            responders = rng.sample(range(DEVICE_COUNT), min(500, lines // 100))
            answers_to_task = [(device_name(d), "done") for d in responders]
        else:
            roll = rng.random()
            if roll < 0.85:
                device = device_name(rng.randrange(DEVICE_COUNT))
                to = f"device:{device}"
                progress = rng.choices((0, 1, 2), (0.4, 0.5, 0.1))[0]
                answers = [(device, "progress")] * progress
                answers.append(
                    (device, rng.choices(("done", "failed", "rejected"), (85, 10, 5))[0])
                )
            elif roll < 0.93:
                devices = [
                    device_name(d) for d in rng.sample(range(DEVICE_COUNT), rng.choice((2, 3)))
                ]
                to = "device:[" + ",".join(devices) + "]"
                for device in devices:
                    if rng.random() < 0.5:
                        answers.append((device, "progress"))
                    answers.append((device, "done"))
            elif roll < 0.97:
                devices = [
                    device_name(d) for d in rng.sample(range(DEVICE_COUNT), rng.choice((2, 3, 4)))
                ]
                to = "device:[" + ",".join(devices) + "]"
                mode = "any"
                winner = rng.choice(devices)
                answers = [(winner, "claimed"), (winner, "done")]
                if rng.random() < 0.5:
                    answers.insert(1, (winner, "progress"))
            elif roll < 0.99:
                to = f"device:{device_name(rng.randrange(DEVICE_COUNT))}"
                answers = [(sender, "cancelled")]
            else:
                to = f"device:{device_name(rng.randrange(DEVICE_COUNT))}"
                expires = moment + 3600  # a short-lived task nobody answered
            answers_to_task = answers
        command, args = rng.choice(COMMANDS)
        meta: dict = {"command": command, "args": args}
        if mode:
            meta["mode"] = mode
        meta["expires_at"] = format_timestamp(expires)
        add(moment, "task", (task_id, sender, to, command, meta))
        answered = moment
        for device, status in answers_to_task:
            answered += rng.expovariate(1 / MEAN_ANSWER_SECONDS)
            add(answered, "response", (task_id, sender, to, device, status))

    response_count = sum(1 for event in events if event[2] == "response")
    heartbeat_count = max(0, lines - task_count - response_count) or heartbeat_budget
    for _ in range(heartbeat_count):
        add(start + rng.random() * span, "heartbeat", (device_name(rng.randrange(DEVICE_COUNT)),))
    events.sort()

    writer = _Writer(history)
    stamps: dict[int, str] = {}
    try:
        for moment, _sequence, kind, payload in events:
            second = int(moment)
            ts = stamps.get(second)
            if ts is None:
                ts = stamps[second] = format_timestamp(second)
            writer.write(moment, _message(kind, payload, ts, new_id, rng))
            if kind == "task":
                history.tasks += 1
            elif kind == "response":
                history.responses += 1
            else:
                history.heartbeats += 1
    finally:
        writer.close()
    history.seconds = time.perf_counter() - started
    return history


def agent_key(task_id: str, status: str, message_id: str) -> str:
    """The ``Idempotency-Key`` the device agent sends with an answer: it keys every one, and
    the pool keeps each key for ``TASK_TTL`` (a history without them flatters the memory)."""
    if status == "progress":
        return f"{task_id}.1.progress.{message_id[-16:]}"
    return f"{task_id}.1.{'claim' if status == 'claimed' else status}"


def _message(kind: str, payload: tuple, ts: str, new_id, rng: random.Random) -> dict:
    if kind == "task":
        task_id, sender, to, command, meta = payload
        return {
            "id": task_id,
            "ts": ts,
            "from": sender,
            "to": to,
            "type": "task",
            "title": command.replace("-", " "),
            "body": f"Please {command.replace('-', ' ')} and report back.",
            "parent_id": None,
            "meta": meta,
        }
    if kind == "response":
        task_id, task_sender, task_to, device, status = payload
        if status == "cancelled":
            return {
                "id": new_id(),
                "ts": ts,
                "from": device,  # the user who cancels
                "to": task_to,
                "type": "response",
                "title": "",
                "body": "not needed any more",
                "parent_id": task_id,
                "meta": {"status": "cancelled"},
            }
        message_id = new_id()
        meta = {"status": status, "idempotency_key": agent_key(task_id, status, message_id)}
        if status in ("done", "failed"):
            meta.update(
                exit_code=0 if status == "done" else 1, duration_ms=rng.randrange(50, 90_000)
            )
        return {
            "id": message_id,
            "ts": ts,
            "from": f"device:{device}",
            "to": task_sender,
            "type": "response",
            "title": "",
            "body": {
                "progress": "working on it",
                "done": "ok",
                "failed": "exit status 1",
                "rejected": "busy",
                "claimed": "",
            }[status],
            "parent_id": task_id,
            "meta": meta,
        }
    (device,) = payload
    return {
        "id": new_id(),
        "ts": ts,
        "from": f"device:{device}",
        "to": "backend",
        "type": "heartbeat",
        "title": "",
        "body": "",
        "parent_id": None,
        "meta": {
            "battery": rng.randrange(20, 101),
            "load": round(rng.random() * 4, 2),
            "uptime_s": rng.randrange(60, 10**7),
        },
    }
