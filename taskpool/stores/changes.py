"""Whom new messages concern: what a store reports so waiters can be woken.

A store reads each new line once; at that moment it knows whose pending list
the line can change and which master it is news for. ``concern_of`` says so
for one message, a ``Journal`` keeps the recent answers numbered, and
``changes_since``-style readers fold them into one ``Changes``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

from taskpool.exceptions import InvalidMessage
from taskpool.lifecycle import ABORTED, BACKEND_STATUSES, OFFERED, OPENED, TaskState
from taskpool.messages import Message, parse_address, response_status


@dataclass(frozen=True, slots=True)
class Concern:
    """Whom one message is news for."""

    #: Devices whose pending list the message may change.
    devices: tuple[str, ...] = ()
    #: The message may change every device's pending list (a ``device:*`` task).
    all_devices: bool = False
    #: The sender of the task the message is or answers (``user:…``, ``backend``).
    master: str | None = None


@dataclass(frozen=True, slots=True)
class Changes:
    """What arrived since a mark, folded: whom it concerns and how many messages there were."""

    #: Pass this to the next ``changes_since``.
    mark: int
    messages: int = 0
    devices: frozenset[str] = frozenset()
    all_devices: bool = False
    masters: frozenset[str] = frozenset()
    #: The store cannot say whom: wake every waiter.
    everything: bool = False
    #: Every line before this position is accounted for, in these or earlier changes.
    through: str | None = None


def concern_of(message: Message, open_tasks: Mapping[str, TaskState]) -> Concern:
    """Whom ``message`` concerns, judged against the open tasks as they were before it.

    A task concerns the devices it is addressed to and its sender. A response
    concerns the sender of its task; a cancel, or any answer to an any-one
    task (a claim, a release, the work ending), also every addressed device.
    """
    kind = message["type"]
    if kind == "task":
        try:
            audience = parse_address(message["to"])
        except InvalidMessage:
            return Concern(master=message["from"])
        return Concern(audience.device_ids, audience.everyone, message["from"])
    if kind != "response":
        return Concern()
    state = open_tasks.get(message["parent_id"] or "")
    if state is None:
        to = message["to"]
        return Concern(master=to if to.startswith("user:") or to == "backend" else None)
    status = response_status(message)
    audience = state.audience
    if message["from"] == "backend" and status in BACKEND_STATUSES:
        # A job moved on: whom its rollout step, timeout or retry names; an abort or a
        # start, everyone it is for (a timeout releases an any-one task to the others).
        if status in (ABORTED, OPENED) or state.any_one:
            return Concern(audience.device_ids, audience.everyone, state.task["from"])
        meta = message["meta"]
        named = meta.get("devices") if status == OFFERED else [meta.get("device")]
        devices = tuple(d for d in named or [] if type(d) is str)
        return Concern(devices, False, state.task["from"])
    if state.any_one or status == "cancelled":
        return Concern(audience.device_ids, audience.everyone, state.task["from"])
    return Concern(master=state.task["from"])


class Journal:
    """The concerns of the lines a store read lately, numbered, for watchers to pick up.

    Off until first used, so a process nobody waits in pays nothing. Keeps the
    last ``capacity`` entries; a reader further behind, or behind a ``reset``
    (the store rebuilt its index), is told ``everything``. Not thread-safe:
    the store serialises access.
    """

    def __init__(self, capacity: int = 16384) -> None:
        self.enabled = False
        self._entries: deque[Concern] = deque(maxlen=capacity)
        #: The number the next entry gets; entries are numbered from 0.
        self._next = 0
        self._reset_at = 0

    def record(self, concern: Concern) -> None:
        self._entries.append(concern)
        self._next += 1

    def reset(self) -> None:
        """Whatever was read before cannot be told apart from what is read next."""
        self.record(Concern())  # takes a number, so every earlier mark falls behind the reset
        self._reset_at = self._next

    def since(self, mark: int | None, through: str | None = None) -> Changes:
        """The entries numbered ``mark`` and after, folded; ``through`` is where the reader got to."""
        self.enabled = True
        if mark is None or mark == self._next:
            return Changes(self._next, through=through)
        oldest = self._next - len(self._entries)
        if mark < max(oldest, self._reset_at) or mark > self._next:
            return Changes(self._next, self._next - mark, everything=True, through=through)
        devices: set[str] = set()
        masters: set[str] = set()
        all_devices = False
        entries = self._entries
        for back in range(self._next - mark, 0, -1):
            concern = entries[-back]  # deques index fast from the near end
            devices.update(concern.devices)
            all_devices = all_devices or concern.all_devices
            if concern.master is not None:
                masters.add(concern.master)
        return Changes(
            self._next,
            self._next - mark,
            frozenset(devices),
            all_devices,
            frozenset(masters),
            through=through,
        )
