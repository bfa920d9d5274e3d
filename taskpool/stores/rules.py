"""What decides each write, written once for every store.

A store runs a decision while it holds whatever makes it atomic across
every writer (the JSON Lines store: the pool's ``flock``; the database
store: a transaction holding the task's row lock), and shows it the pool
as every writer left it through a ``Ledger``. A decision answers with the
message to store (``None`` to store nothing) and the result to give back,
or raises the ``PoolError`` that refuses the request:

- a repeated idempotency key returns what was stored first, and the same
  key with another request is refused;
- an answer to a task that is over for the device is a 409 (which one,
  ``TaskState.check_answer`` says);
- a claim takes the named any-one task, or the oldest one claimable.

The rules of one task's life (pending, claims, statuses, a job's attempts
and deadlines) are ``taskpool.lifecycle.TaskState``'s; this module applies
them to requests, and writes the backend's lines a job is owed as time
passes (``transition``, driven by ``taskpool.ticker``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from taskpool.exceptions import (
    AlreadyAnswered,
    IdempotencyConflict,
    InvalidMessage,
    NotAddressed,
    NotClaimable,
    UnknownTask,
)
from taskpool.lifecycle import FINISHED, OFFERED, TaskState
from taskpool.messages import (
    Address,
    Message,
    device_address,
    format_timestamp,
    new_message,
    parse_address,
    parse_timestamp,
    same_request,
)
from taskpool.stores.validation import closed_error, deadline


class Posted(NamedTuple):
    """A stored message, and whether this call stored it (``False``: an idempotent replay)."""

    message: Message
    created: bool


class Claim(NamedTuple):
    """An any-one task and the response that claimed it for the caller."""

    task: Message
    claim: Message
    created: bool


class ClosedTask(NamedTuple):
    """A task that is over for every device, and why (``FINISHED``, ``CANCELLED``, ``EXPIRED``)."""

    task: Message
    reason: str


#: What a decision answers: the message to store (``None``: store nothing), and the result.
Decision = tuple[Message | None, Any]


class Ledger(Protocol):
    """The pool as a store shows it to a decision, while the store holds its write lock.

    Every answer reflects every message stored before the lock was taken, by
    any process on any host. Only tasks within the ``TASK_TTL`` horizon are
    known.
    """

    def open_task(self, task_id: str, for_device: str | None = None) -> TaskState | None:
        """The state of the open task ``task_id``, or ``None`` if it is closed or unknown.

        The state speaks at least for ``for_device`` (a store may leave out
        other devices' answers to a broadcast): ask for the device that acts.
        """

    def closed_task(self, task_id: str) -> ClosedTask | None:
        """The task ``task_id`` if it is closed, and why; ``None`` if open or unknown."""

    def sent_with_key(self, sender: str, key: str) -> Message | None:
        """The first message ``sender`` stored with idempotency key ``key``, if any."""

    def oldest_claimable(self, device_id: str, now: float) -> TaskState | None:
        """The oldest any-one task pending for the device that nobody holds, or ``None``."""

    def whole_task(self, task_id: str) -> TaskState | None:
        """``open_task`` speaking for every device (what a job's timekeeping reads)."""


def task(
    ledger: Ledger,
    now: float,
    *,
    sender: str,
    address: Address,
    title: str,
    body: str,
    meta: dict[str, Any],
    ttl: float | None,
    expires_at: datetime | None,
    task_ttl: float,
    idempotency_key: str | None,
) -> Decision:
    """A new task; ``meta.expires_at`` is always written (see ``validation.deadline``)."""
    message = new_message(
        now,
        sender=sender,
        to=str(address),
        kind="task",
        title=title,
        body=body,
        parent_id=None,
        meta=meta,
    )
    replayed = _replayed(ledger, sender, idempotency_key, message)
    if replayed is not None:
        return None, Posted(replayed, False)
    expiry = deadline(now, task_ttl, ttl, expires_at)
    start = meta.get("not_before")
    offered_from = now if start is None else max(now, parse_timestamp(start))
    if start is not None and offered_from >= expiry:
        raise InvalidMessage(
            "not_before must be before the task expires, or it is never offered.",
            field="not_before",
        )
    # What counts is the life the task has once it may be offered, from its start.
    _refuse_options_that_outlive(meta, expiry - offered_from)
    meta["expires_at"] = format_timestamp(math.ceil(expiry))  # at least the ttl asked for
    return message, Posted(message, True)


def _refuse_options_that_outlive(meta: dict[str, Any], life: float) -> None:
    """Refuse a retry backoff or a timeout no shorter than the task's whole life: the retry
    would never be offered, the timeout never called."""
    retries, timeout = meta.get("retries"), meta.get("timeout")
    said = math.floor(life * 10) / 10  # 59.95 s is "59.9 s", which the option is not under
    if retries is not None and retries["backoff"] >= life:
        raise InvalidMessage(
            f"retries.backoff ({retries['backoff']:g} s) must be shorter than the task's life "
            f"({said:g} s), or no retry is ever offered.",
            field="retries",
        )
    if timeout is not None and timeout["in_progress"] >= life:
        raise InvalidMessage(
            f"timeout.in_progress ({timeout['in_progress']:g} s) must be shorter than the "
            f"task's life ({said:g} s), or the task expires before it times out.",
            field="timeout",
        )


def response(
    ledger: Ledger,
    now: float,
    *,
    device_id: str,
    parent_id: str,
    title: str,
    body: str,
    meta: dict[str, Any],
    idempotency_key: str | None,
) -> Decision:
    """A device's answer to a task addressed to it, unless the task is over for it."""
    sender = device_address(device_id)
    message = new_message(
        now,
        sender=sender,
        to="",
        kind="response",
        title=title,
        body=body,
        parent_id=parent_id,
        meta=meta,
    )
    replayed = _replayed(ledger, sender, idempotency_key, message)
    if replayed is not None:
        return None, Posted(replayed, False)
    state = _open_task_for(ledger, parent_id, device_id)
    attempt = meta.get("attempt")
    state.check_answer(device_id, now, attempt)
    current = state.attempt_of(device_id)
    if attempt is None and current is not None:
        meta["attempt"] = current  # the answer says which attempt it ends
    message["to"] = state.task["from"]
    return message, Posted(message, True)


def heartbeat(now: float, *, device_id: str, body: str, meta: dict[str, Any]) -> Decision:
    """A device's heartbeat: nothing to decide."""
    message = new_message(
        now,
        sender=device_address(device_id),
        to="backend",
        kind="heartbeat",
        title="",
        body=body,
        parent_id=None,
        meta=meta,
    )
    return message, message


def claim(
    ledger: Ledger,
    now: float,
    *,
    device_id: str,
    parent_id: str | None,
    meta: dict[str, Any],
    idempotency_key: str | None,
) -> Decision:
    """A device takes the any-one task ``parent_id``, or the oldest one claimable (``None``: none)."""
    sender = device_address(device_id)
    message = new_message(
        now,
        sender=sender,
        to="",
        kind="response",
        title="",
        body="",
        parent_id=parent_id,
        meta=meta,
    )
    replayed = _replayed(
        ledger, sender, idempotency_key, message, with_parent=parent_id is not None
    )
    if replayed is not None:
        claimed = task_message(ledger, replayed["parent_id"] or "")
        if claimed is None:
            raise UnknownTask(f"There is no task {replayed['parent_id']} in the pool.")
        return None, Claim(claimed, replayed, False)
    if parent_id is not None:
        state = _open_task_for(ledger, parent_id, device_id)
        if not state.any_one:
            raise NotClaimable(
                f'Task {parent_id} is not an any-one task (meta.mode "any").', field="parent_id"
            )
        if state.claimer == device_id and state.claim is not None:
            return None, Claim(state.task, state.claim, False)
        state.check_answer(device_id, now)
    else:
        found = ledger.oldest_claimable(device_id, now)
        if found is None:
            return None, None
        state = found
    message["parent_id"] = state.id
    message["to"] = state.task["from"]
    return message, Claim(state.task, message, True)


def cancel(
    ledger: Ledger,
    now: float,
    *,
    sender: str,
    task_id: str,
    reason: str,
    meta: dict[str, Any],
    idempotency_key: str | None,
) -> Decision:
    """A ``cancelled`` response from a user: the task leaves every pending list."""
    message = new_message(
        now,
        sender=sender,
        to="",
        kind="response",
        title="",
        body=reason,
        parent_id=task_id,
        meta=meta,
    )
    replayed = _replayed(ledger, sender, idempotency_key, message)
    if replayed is not None:
        return None, Posted(replayed, False)
    state = ledger.open_task(task_id)
    if state is None:
        closed = ledger.closed_task(task_id)
        if closed is None:
            raise UnknownTask(f"There is no task {task_id} in the pool.")
        raise closed_error(task_id, closed.reason, closed.task["meta"])
    message["to"] = state.task["to"]
    return message, Posted(message, True)


def transition(
    ledger: Ledger, now: float, *, task_id: str, registered_devices: Callable[[], list[str]]
) -> Decision:
    """The next line the backend owes a job task at ``now`` (``None``: nothing is due).

    Decided under the store's lock like any write, so that of many processes
    and hosts keeping time at once, each transition is written once.
    """
    state = ledger.whole_task(task_id)
    if state is None:
        return None, None
    owed = state.due(now, registered_devices)
    if not owed:
        return None, None
    step = owed[0]
    meta: dict[str, Any] = {"status": step.status}
    if step.status == OFFERED:
        meta["devices"] = list(step.devices)
        meta["rollout_clock"] = step.rollout_clock
    elif step.devices:
        meta["device"] = step.devices[0]
    if step.attempt is not None:
        meta["attempt"] = step.attempt
    if step.reason:
        meta["reason"] = step.reason
    message = new_message(
        now,
        sender="backend",
        to=state.task["from"],
        kind="response",
        title="",
        body=step.reason,
        parent_id=task_id,
        meta=meta,
    )
    return message, message


def task_message(ledger: Ledger, task_id: str) -> Message | None:
    """The task ``task_id``, open or closed, or ``None`` if the ledger does not know it."""
    state = ledger.open_task(task_id)
    if state is not None:
        return state.task
    closed = ledger.closed_task(task_id)
    return None if closed is None else closed.task


def _replayed(
    ledger: Ledger,
    sender: str,
    key: str | None,
    candidate: Message,
    *,
    with_parent: bool = True,
) -> Message | None:
    """The message first stored with ``key`` by ``sender``, if the request is a repeat."""
    if key is None:
        return None
    stored = ledger.sent_with_key(sender, key)
    if stored is None:
        return None
    if not same_request(stored, candidate, with_parent=with_parent):
        raise IdempotencyConflict(
            f"Idempotency key {key!r} was used for a different request ({stored['id']})."
        )
    return stored


def _open_task_for(ledger: Ledger, task_id: str, device_id: str) -> TaskState:
    """The open task a device acts on, or the refusal that explains why it cannot."""
    state = ledger.open_task(task_id, device_id)
    if state is not None:
        if not state.audience.includes(device_id):
            raise NotAddressed(f"Task {task_id} is not addressed to device {device_id}.")
        return state
    closed = ledger.closed_task(task_id)
    if closed is None:
        raise UnknownTask(f"There is no task {task_id} in the pool.", field="parent_id")
    try:
        addressed = parse_address(closed.task["to"]).includes(device_id)
    except InvalidMessage:
        addressed = False
    if not addressed:
        raise NotAddressed(f"Task {task_id} is not addressed to device {device_id}.")
    if closed.reason == FINISHED and closed.task["meta"].get("mode") != "any":
        # Finished means every addressed device answered for good, this one too, or the job
        # ended its execution: its last attempt timed out, or an abort cancelled it unstarted.
        ends = ["it answered"]
        if "timeout" in closed.task["meta"]:
            ends.append("its last attempt timed out")
        if "abort" in closed.task["meta"]:
            ends.append("the job's abort cancelled it before it started")
        if len(ends) == 1:
            raise AlreadyAnswered(f"Device {device_id} has already answered task {task_id}.")
        raise AlreadyAnswered(
            f"Task {task_id} is over for device {device_id}: {', '.join(ends[:-1])} or {ends[-1]}."
        )
    raise closed_error(task_id, closed.reason, closed.task["meta"])
