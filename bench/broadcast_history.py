"""A week of history with thousands of broadcasts left open, written as real day files.

``bench.history`` writes a fleet's week in which nearly every task is
answered within minutes. A fleet that rolls things out to every device
looks different: ``device:*`` tasks stay open for their whole life, each
answered by some devices and not (yet) by others, devices answering hours
or days late, some only with ``progress``. This module writes that shape on
top of ``bench.history``'s week: ``write_broadcast_history`` posts the extra
broadcasts and their answers (lines made by ``encode_line``, stamped as the
store stamps them) into the same day files, in time order, so the files are
what a store that took those requests would have written.

The broadcasts: ``OPEN_BROADCASTS`` plain ones, spread over the week; a tenth
as many any-one broadcasts (``meta.mode = "any"``), some claimed and worked
on, some finished, some nobody took yet; and a tenth as many cancelled ones.

With ``active_devices`` the first that many devices are the fleet's busy
ones, that answer every broadcast within minutes (in whatever order the
delays give, and now and then only with ``progress``), while the others
answer some, late: every broadcast stays open (for the rest of the fleet)
although the devices that ask for work most have answered nearly all of
them, which is what makes pending walk them. ``open_lists`` adds as many
``device:[…]`` tasks, each to a few busy and a few other devices: the busy
ones answer, the others mostly do not, so they stay open too.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import orjson

from bench.history import (
    COMMANDS,
    DEVICE_COUNT,
    History,
    agent_key,
    device_name,
    write_history,
)
from taskpool.days import day_file_name, day_of
from taskpool.messages import encode_line, format_timestamp

#: Plain ``device:*`` tasks still open at the end of the week.
OPEN_BROADCASTS = 2000
#: The most devices that answer one broadcast (each answers a random share of this).
MAX_RESPONDERS = 220
#: Devices answer late: the mean delay after the broadcast, in seconds.
MEAN_ANSWER_SECONDS = 8 * 3600.0
#: The busy devices answer within minutes: their mean delay, in seconds.
ACTIVE_ANSWER_SECONDS = 120.0
#: The share of their answers that are only ``progress`` (the task stays pending for them).
ACTIVE_PROGRESS_ONLY = 0.0005
SENDER = "user:rollouts@example.com"


@dataclass
class BroadcastHistory:
    """``bench.history``'s week, and what was posted on top of it."""

    base: History
    broadcasts: int = 0
    any_one: int = 0
    cancelled: int = 0
    lists: int = 0
    responses: int = 0

    @property
    def lines(self) -> int:
        return (
            self.base.lines
            + self.broadcasts
            + self.any_one
            + self.cancelled
            + self.lists
            + self.responses
        )


def write_broadcast_history(
    directory: Path,
    lines: int,
    *,
    now: float | None = None,
    open_broadcasts: int = OPEN_BROADCASTS,
    active_devices: int = 0,
    open_lists: int = 0,
    seed: int = 11,
) -> BroadcastHistory:
    """About ``lines`` lines in ``directory``: broadcasts first, the rest ``bench.history``'s week.

    With fewer than 100 lines per open broadcast asked for, the broadcasts
    shrink with ``lines`` (a small run keeps the shape, smaller).
    """
    now = time.time() if now is None else now
    open_broadcasts = min(open_broadcasts, lines // 400)
    open_lists = min(open_lists, lines // 400)
    rng = random.Random(seed * 7919 + lines)
    first_day = day_of(now) - timedelta(days=6)
    start = time.mktime(first_day.timetuple()) - time.timezone  # midnight UTC
    end = now - 1
    events: list[tuple[float, int, bytes]] = []
    figures = BroadcastHistory(History(directory))

    def add(moment: float, message: dict) -> None:
        if moment < end:
            message["ts"] = format_timestamp(moment)
            events.append((moment, len(events), encode_line(message)))

    def new_id() -> str:
        return f"msg_{rng.getrandbits(128):032x}"

    plain = open_broadcasts
    any_one = open_broadcasts // 10
    cancelled = open_broadcasts // 10
    kinds = (
        ["plain"] * plain + ["any"] * any_one + ["cancelled"] * cancelled + ["list"] * open_lists
    )
    rng.shuffle(kinds)
    for number, kind in enumerate(kinds):
        moment = start + (number + rng.random()) / len(kinds) * (end - start)
        task_id = new_id()
        command, args = rng.choice(COMMANDS)
        meta: dict = {"command": command, "args": args, "wave": number}
        if kind == "any":
            meta["mode"] = "any"
        meta["expires_at"] = format_timestamp(moment + 7 * 86400)
        if kind == "list":
            figures.lists += 1
            busy = rng.sample(range(active_devices), min(active_devices, rng.choice((1, 2))))
            others = rng.sample(range(active_devices, DEVICE_COUNT), rng.choice((2, 3)))
            devices = [device_name(number) for number in busy + others]
            task = _task(task_id, command, meta)
            task["to"] = "device:[" + ",".join(devices) + "]"
            add(moment, task)
            _list_answers(rng, add, new_id, task_id, moment, busy, others)
            continue
        add(moment, _task(task_id, command, meta))
        if kind == "any":
            figures.any_one += 1
            _any_one_answers(rng, add, new_id, task_id, moment, taken=active_devices > 0)
        else:
            figures.broadcasts += kind == "plain"
            figures.cancelled += kind == "cancelled"
            # A cancelled task takes no more answers: none come after the cancellation.
            cancel_at = moment + rng.expovariate(1 / (4 * 3600)) if kind == "cancelled" else end
            _answers(rng, add, new_id, task_id, moment, until=cancel_at, active=active_devices)
            if kind == "cancelled":
                add(
                    cancel_at,
                    _response(new_id(), task_id, SENDER, "cancelled", body="rolled back"),
                )
    figures.responses = len(events) - len(kinds)
    events.sort()
    figures.base = write_history(directory, max(0, lines - len(events)), now=now)
    _merge(directory, events)
    return figures


def _task(task_id: str, command: str, meta: dict) -> dict:
    return {
        "id": task_id,
        "ts": "",
        "from": SENDER,
        "to": "device:*",
        "type": "task",
        "title": f"rollout: {command.replace('-', ' ')}",
        "body": f"Every device: {command.replace('-', ' ')}, then report back.",
        "parent_id": None,
        "meta": meta,
    }


def _response(message_id: str, task_id: str, sender: str, status: str, body: str = "") -> dict:
    meta: dict = {"status": status}
    if sender.startswith("device:"):
        meta["idempotency_key"] = agent_key(task_id, status, message_id)
    return {
        "id": message_id,
        "ts": "",
        "from": sender,
        "to": "device:*" if status == "cancelled" else SENDER,
        "type": "response",
        "title": "",
        "body": body,
        "parent_id": task_id,
        "meta": meta,
    }


def _answers(
    rng: random.Random, add, new_id, task_id: str, moment: float, *, until: float, active: int = 0
) -> None:
    """The busy devices answer soon; some others answer, late: progress only, a final
    answer, or progress then one."""
    for number in range(active):
        sender = f"device:{device_name(number)}"
        at = moment + rng.expovariate(1 / ACTIVE_ANSWER_SECONDS)
        if at >= until:
            continue
        if rng.random() < ACTIVE_PROGRESS_ONLY:
            add(at, _response(new_id(), task_id, sender, "progress", "working on it"))
        else:
            add(at, _response(new_id(), task_id, sender, "done", "ok"))
    responders = rng.sample(range(active, DEVICE_COUNT), rng.randrange(MAX_RESPONDERS))
    for number in responders:
        sender = f"device:{device_name(number)}"
        at = moment + rng.expovariate(1 / MEAN_ANSWER_SECONDS)
        roll = rng.random()
        if roll < 0.4:
            if at < until:
                add(at, _response(new_id(), task_id, sender, "progress", "working on it"))
            if roll < 0.15:
                continue  # still working on it
            at += rng.expovariate(1 / 1800)
        status = rng.choices(("done", "failed", "rejected"), (85, 10, 5))[0]
        if at < until:
            add(at, _response(new_id(), task_id, sender, status, "ok" if status == "done" else ""))


def _list_answers(
    rng: random.Random, add, new_id, task_id: str, moment: float, busy: list, others: list
) -> None:
    """A list task: its busy devices answer soon; of the others, a few answer late."""
    for number in busy:
        at = moment + rng.expovariate(1 / ACTIVE_ANSWER_SECONDS)
        add(at, _response(new_id(), task_id, f"device:{device_name(number)}", "done", "ok"))
    for number in others:
        if rng.random() < 0.2:
            at = moment + rng.expovariate(1 / MEAN_ANSWER_SECONDS)
            add(at, _response(new_id(), task_id, f"device:{device_name(number)}", "done", "ok"))


def _any_one_answers(
    rng: random.Random, add, new_id, task_id: str, moment: float, *, taken: bool = False
) -> None:
    """An any-one broadcast: nobody took it yet, or one device claimed it (and maybe finished).

    ``taken``: always claimed (a fleet with busy devices takes every one).
    """
    roll = rng.random()
    if roll < 0.3 and not taken:
        return
    sender = f"device:{device_name(rng.randrange(DEVICE_COUNT))}"
    at = moment + rng.expovariate(1 / 600)
    add(at, _response(new_id(), task_id, sender, "claimed"))
    at += rng.expovariate(1 / 600)
    add(at, _response(new_id(), task_id, sender, "progress", "working on it"))
    if roll < 0.6:
        add(at + rng.expovariate(1 / 600), _response(new_id(), task_id, sender, "done", "ok"))


def _merge(directory: Path, events: list[tuple[float, int, bytes]]) -> None:
    """Write ``events`` (in time order) into the day files, each line after the lines of its
    second already there, as a store appending them at that time would have."""
    by_day: dict = {}
    for moment, _order, line in events:
        by_day.setdefault(day_of(moment), []).append(line)
    for day, lines in by_day.items():
        path = directory / day_file_name(day)
        existing = path.read_bytes().splitlines(keepends=True) if path.exists() else []
        merged = heapq.merge(_keyed(existing, 0), _keyed(lines, 1))
        path.write_bytes(b"".join(line for _ts, _origin, _n, line in merged))


def _keyed(lines: list[bytes], origin: int) -> Iterator[tuple[str, int, int, bytes]]:
    for number, line in enumerate(lines):
        yield orjson.loads(line)["ts"], origin, number, line
