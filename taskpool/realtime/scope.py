"""Who is listening: what their stream carries, and which changes wake them.

- a device gets what changes its pending list: the tasks addressed to it
  (a scheduled one, with a start or a rollout, by the line that offers it),
  their cancellation, and other devices' claims (and releases) of the any-one
  tasks it was offered, of which it reads only the status;
- a master gets the tasks it sent and every response to them; a master who
  asks for all (``?all=1``) gets every task and every response, as it may see
  and cancel every task;
- an admin gets every message;
- anyone else gets no stream.
"""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from sys import intern
from typing import Any, cast

from taskpool.exceptions import InvalidMessage
from taskpool.lifecycle import ABORTED, BACKEND_STATUSES, OFFERED, OPENED, TIMED_OUT
from taskpool.messages import Message, parse_address, response_status
from taskpool.principals import address_of, has_role, is_device
from taskpool.stores.base import BaseStore
from taskpool.stores.changes import Changes

DEVICE, MASTER, ALL_TASKS, ADMIN = "device", "master", "all-tasks", "admin"

#: Answers by which a device takes an any-one task (the first one claims it).
_TAKING = frozenset({"claimed", "progress", "done", "failed"})
_REMEMBERED_TASKS = 1024
#: A holder the stream has not learnt yet (no device is named so).
_NOT_KNOWN = ""


@dataclass(frozen=True, slots=True)
class Scope:
    """A listener's view of the pool: a device, a master (by address), every task, or an admin."""

    kind: str
    #: The device id, or the master's address (``user:…``); empty otherwise.
    name: str = ""

    @classmethod
    def of(cls, principal: Any) -> Scope | None:
        """The scope of an authenticated principal; ``None`` for one who gets no stream."""
        if is_device(principal):
            return cls(DEVICE, principal.id)
        if has_role(principal, "admin"):
            return cls(ADMIN)
        if has_role(principal, "master"):
            return cls(MASTER, address_of(principal))
        return None

    def asking_for_all(self) -> Scope | None:
        """This listener asking for every task and response; ``None`` for a device."""
        if self.kind == DEVICE:
            return None
        return self if self.kind == ADMIN else Scope(ALL_TASKS)

    def concerned_by(self, changes: Changes) -> bool:
        """Whether the messages behind ``changes`` may be for this listener."""
        if changes.everything:
            return True
        if not changes.messages:
            return False
        if self.kind == ADMIN:
            return True
        if self.kind == DEVICE:
            return changes.all_devices or self.name in changes.devices
        if self.kind == ALL_TASKS:
            # Tasks and responses concern devices or a sender; heartbeats concern no one.
            return bool(changes.masters or changes.devices or changes.all_devices)
        return self.name in changes.masters


class StreamFilter:
    """Decides, message by message in pool order, what one stream carries.

    Looks up the task a response answers in ``store`` (remembering the last
    ones). A device hears of another device's answer to an any-one task only
    when it changed who holds the task, a claim or a release, so it hears of
    a claim once rather than of every progress report after it. Who held the
    task is the pool's, not the connection's: a task whose line the stream
    read starts with no holder, and one from before the stream's cursor asks
    the store who held it before the first answer met (``holder_before``);
    from there the stream follows the answers it reads, in pool order. A
    device thus gets the same events from a cursor in one connection as in
    several, resumed with ``Last-Event-ID`` anywhere in between.
    """

    def __init__(self, scope: Scope, store: BaseStore) -> None:
        self.scope = scope
        self._task = functools.lru_cache(maxsize=_REMEMBERED_TASKS)(_facts_finder(store))
        self._holder_before = store.holder_before
        #: Any-one tasks' holders where the stream has read to (``None``: nobody).
        self._holders: OrderedDict[str, str | None] = OrderedDict()

    def carries(self, message: Message) -> bool:
        scope = self.scope
        if scope.kind == ADMIN:
            return True
        if scope.kind == ALL_TASKS:
            return message["type"] in ("task", "response")
        if message["type"] == "task":
            own = self._is_own(message)
            if own and scope.kind == DEVICE and message["meta"].get("mode") == "any":
                self._hold(message["id"], None)  # nobody holds a task at its line
            # A device hears of a scheduled task (a start to come, a rollout) from the
            # backend's line that offers it to it, not before: it is not pending yet.
            return own and (scope.kind == MASTER or not _scheduled(message))
        if message["type"] != "response" or not message["parent_id"]:
            return False
        if scope.kind == DEVICE and not self._may_change_pending(message):
            return False  # decided without looking the task up
        task = self._task(message["parent_id"])
        if task is None or not self._is_own(task):
            return False
        return scope.kind == MASTER or self._changes_pending(task, message)

    def as_carried(self, message: Message) -> Message:
        """``message`` as this listener reads it: to a device, without other devices' parts."""
        if self.scope.kind != DEVICE or message["type"] != "response":
            return message
        return as_seen_by_device(message, self.scope.name)

    def _may_change_pending(self, response: Message) -> bool:
        """A cancel, a job's move that names the device (or everyone), or another device's
        answer (to what may be an any-one task)."""
        status = response_status(response)
        if status == "cancelled":
            return True
        if response["from"] == "backend" and status in BACKEND_STATUSES:
            return True  # which devices it concerns is told with its task in hand
        return (status in _TAKING or status == "rejected") and response["from"] != (
            f"device:{self.scope.name}"
        )

    def _is_own(self, task: Message) -> bool:
        """A master's own task, or a task addressed to the device."""
        if self.scope.kind == MASTER:
            return task["from"] == self.scope.name
        try:
            return parse_address(task["to"]).includes(self.scope.name)
        except InvalidMessage:
            return False

    def _changes_pending(self, task: Message, response: Message) -> bool:
        status = response_status(response)
        if status == "cancelled":
            return True
        any_one = task["meta"].get("mode") == "any"
        if response["from"] == "backend" and status in BACKEND_STATUSES:
            if (
                any_one
                and status == TIMED_OUT
                and task["id"] in self._holders
                and self._holders[task["id"]] == response["meta"].get("device")
            ):
                self._hold(task["id"], None)  # a timeout releases the task
            return _names_device(response, self.scope.name, any_one)
        sender = response["from"]
        if not any_one or not sender.startswith("device:"):
            return False
        device = sender[7:]
        if device == self.scope.name:
            return False  # its own answers: it knows them
        # The device's own answers are not followed: while it holds the task, another
        # device's answer claims nothing and releases nothing (the rules refuse a claim),
        # whether the holder is known here or not.
        holder = self._holders.get(task["id"], _NOT_KNOWN)
        known = holder != _NOT_KNOWN
        if not known:  # the stream began after the task's line, or forgot it: the pool knows
            holder = self._holder_before(task["id"], response["id"])
        if status == "rejected" and holder == device:
            self._hold(task["id"], None)  # released: claimable again
            return True
        if holder is None and status in _TAKING:
            self._hold(task["id"], device)
            return True
        if not known:
            self._hold(task["id"], holder)
        return False

    def _hold(self, task_id: str, holder: str | None) -> None:
        """Remember who holds ``task_id`` (``None``: nobody), forgetting the least recent."""
        holders = self._holders
        holders[task_id] = holder
        holders.move_to_end(task_id)
        if len(holders) > _REMEMBERED_TASKS:
            holders.popitem(last=False)


def _facts_finder(store: BaseStore) -> Callable[[str], Message | None]:
    """``store.find_task``, keeping of the task only what a stream's filter reads.

    Each stream remembers the last thousand tasks it looked up. Kept whole
    (title, body, meta), they were most of what a worker's memory grew by
    under streams: 8 MB in three minutes with 60 device streams and a
    broadcast every 10 s, each stream keeping its own copy of every task.
    Its sender, its address and its mode are a few hundred bytes, their
    strings shared between streams.
    """

    def find(task_id: str) -> Message | None:
        task = store.find_task(task_id)
        if task is None:
            return None
        mode = task["meta"].get("mode")
        facts = {
            "id": task["id"],
            "from": intern(task["from"]),
            "to": intern(task["to"]),
            "meta": {} if mode is None else {"mode": mode},
        }
        return cast(Message, facts)  # the keys the filter reads, not a whole message

    return find


def _scheduled(task: Message) -> bool:
    """Whether the task is offered by a later line: one with a start, or a rollout."""
    meta = task["meta"]
    return "not_before" in meta or "rollout" in meta


def seen_by_device(response: Message, device_id: str, any_one: bool) -> bool:
    """Whether a device addressed by a task may read this response to it: its own answers,
    a cancel, and the job's moves that concern it; never another device's answer."""
    if response["from"] == f"device:{device_id}" or response_status(response) == "cancelled":
        return True
    return response["from"] == "backend" and _names_device(response, device_id, any_one)


def as_seen_by_device(response: Message, device_id: str) -> Message:
    """A response that a device addressed by its task may read, as it may read it.

    Another device's answer (a claim or a release of an any-one task, which
    the device's stream carries) keeps only its status: not its title, body
    or meta, which are that device's results. A rollout's offer names only
    this device, not the others it reached.
    """
    sender = response["from"]
    if sender == f"device:{device_id}":
        return response
    meta = response["meta"]
    if sender.startswith("device:"):
        return cast(
            Message,
            {**response, "title": "", "body": "", "meta": {"status": response_status(response)}},
        )
    devices = meta.get("devices")
    if sender == "backend" and meta.get("status") == OFFERED and type(devices) is list:
        named = [device_id] if device_id in devices else []
        return cast(Message, {**response, "meta": {**meta, "devices": named}})
    return response


def _names_device(line: Message, device_id: str, any_one: bool) -> bool:
    """Whether a backend line of a job may change the device's pending list."""
    meta = line["meta"]
    status = meta.get("status")
    if status in (ABORTED, OPENED):
        return True
    if status == OFFERED:
        devices = meta.get("devices")
        return type(devices) is list and device_id in devices
    # A timeout names its device, and releases an any-one task to the others.
    return meta.get("device") == device_id or (status == TIMED_OUT and any_one)


def concerned_scopes(changes: Changes) -> list[Scope] | None:
    """The scopes ``changes`` may concern; ``None`` when every scope must be asked.

    Lets a hub find the few waiters to wake without asking each one.
    """
    if changes.everything or changes.all_devices:
        return None
    if not changes.messages:
        return []
    return [
        Scope(ADMIN),
        Scope(ALL_TASKS),
        *(Scope(DEVICE, device_id) for device_id in changes.devices),
        *(Scope(MASTER, master) for master in changes.masters),
    ]
