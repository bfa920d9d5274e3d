"""``Decisions``: what each write of ``JsonlStore`` decides, under the pool's lock.

The store checks a request's own fields before it takes the lock, then
catches its index up with every process's lines and asks one of these
methods, with the time it stamps. Each answers with the message to append
(``None`` to append nothing) and the result to give back, or raises the
``PoolError`` that refuses the request: a repeated idempotency key replays
what was stored first (DESIGN 9), an answer to a closed task is a 409, a
claim takes the oldest claimable any-one task (DESIGN 3).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from taskpool.exceptions import (
    AlreadyAnswered,
    IdempotencyConflict,
    InvalidMessage,
    NotAddressed,
    NotClaimable,
    UnknownTask,
)
from taskpool.lifecycle import FINISHED, TaskState
from taskpool.messages import (
    Address,
    Message,
    device_address,
    format_timestamp,
    new_message,
    parse_address,
    same_request,
)
from taskpool.stores.base import Claim, Posted
from taskpool.stores.jsonl.day_files import DayFiles
from taskpool.stores.jsonl.index import KnownTask
from taskpool.stores.jsonl.tail import IndexTail
from taskpool.stores.validation import closed_error, deadline

Decision = tuple[Message | None, Any]


class Decisions:
    """The rules of each write, against the index as the tail has read it."""

    def __init__(self, tail: IndexTail, files: DayFiles, task_ttl: float) -> None:
        self.tail = tail
        self.files = files
        self.task_ttl = task_ttl

    def task(
        self,
        now: float,
        *,
        sender: str,
        address: Address,
        title: str,
        body: str,
        meta: dict[str, Any],
        ttl: float | None,
        expires_at: datetime | None,
        idempotency_key: str | None,
    ) -> Decision:
        task = new_message(
            now,
            sender=sender,
            to=str(address),
            kind="task",
            title=title,
            body=body,
            parent_id=None,
            meta=meta,
        )
        replayed = self._replayed(sender, idempotency_key, task)
        if replayed is not None:
            return None, Posted(replayed, False)
        meta["expires_at"] = format_timestamp(deadline(now, self.task_ttl, ttl, expires_at))
        return task, Posted(task, True)

    def response(
        self,
        now: float,
        *,
        device_id: str,
        parent_id: str,
        title: str,
        body: str,
        meta: dict[str, Any],
        idempotency_key: str | None,
    ) -> Decision:
        sender = device_address(device_id)
        response = new_message(
            now,
            sender=sender,
            to="",
            kind="response",
            title=title,
            body=body,
            parent_id=parent_id,
            meta=meta,
        )
        replayed = self._replayed(sender, idempotency_key, response)
        if replayed is not None:
            return None, Posted(replayed, False)
        state = self._open_task_for(parent_id, device_id)
        state.check_answer(device_id, now)
        response["to"] = state.task["from"]
        return response, Posted(response, True)

    def heartbeat(self, now: float, *, device_id: str, body: str, meta: dict[str, Any]) -> Decision:
        heartbeat = new_message(
            now,
            sender=device_address(device_id),
            to="backend",
            kind="heartbeat",
            title="",
            body=body,
            parent_id=None,
            meta=meta,
        )
        return heartbeat, heartbeat

    def claim(
        self,
        now: float,
        *,
        device_id: str,
        parent_id: str | None,
        meta: dict[str, Any],
        idempotency_key: str | None,
    ) -> Decision:
        sender = device_address(device_id)
        candidate = new_message(
            now,
            sender=sender,
            to="",
            kind="response",
            title="",
            body="",
            parent_id=parent_id,
            meta=meta,
        )
        replayed = self._replayed(
            sender, idempotency_key, candidate, with_parent=parent_id is not None
        )
        if replayed is not None:
            known = self.tail.index.locate(replayed["parent_id"] or "")
            if known is None:
                raise UnknownTask(f"There is no task {replayed['parent_id']} in the pool.")
            return None, Claim(self.task_at(known), replayed, False)
        if parent_id is not None:
            state = self._open_task_for(parent_id, device_id)
            if not state.any_one:
                raise NotClaimable(
                    f'Task {parent_id} is not an any-one task (meta.mode "any").',
                    field="parent_id",
                )
            if state.claimer == device_id and state.claim is not None:
                return None, Claim(state.task, state.claim, False)
            state.check_answer(device_id, now)
        else:
            state = next(
                (
                    state
                    for state in self.tail.index.pending_states(device_id, now)
                    if state.any_one and state.claimer is None
                ),
                None,
            )
            if state is None:
                return None, None
        candidate["parent_id"] = state.id
        candidate["to"] = state.task["from"]
        return candidate, Claim(state.task, candidate, True)

    def cancel(
        self,
        now: float,
        *,
        sender: str,
        task_id: str,
        reason: str,
        meta: dict[str, Any],
        idempotency_key: str | None,
    ) -> Decision:
        cancellation = new_message(
            now,
            sender=sender,
            to="",
            kind="response",
            title="",
            body=reason,
            parent_id=task_id,
            meta=meta,
        )
        replayed = self._replayed(sender, idempotency_key, cancellation)
        if replayed is not None:
            return None, Posted(replayed, False)
        state = self.tail.index.open.get(task_id)
        if state is None:
            known = self.tail.index.locate(task_id)
            if known is None:
                raise UnknownTask(f"There is no task {task_id} in the pool.")
            raise closed_error(task_id, known.closed)
        cancellation["to"] = state.task["to"]
        return cancellation, Posted(cancellation, True)

    def task_at(self, known: KnownTask) -> Message:
        """The task line the index located."""
        return self.files.message_starting_at(date.fromordinal(known.day_ordinal), known.offset)

    def _replayed(
        self, sender: str, key: str | None, candidate: Message, *, with_parent: bool = True
    ) -> Message | None:
        """The message first stored with ``key`` by ``sender``, if the request is a repeat."""
        if key is None:
            return None
        found = self.tail.index.locate_idempotent(sender, key)
        if found is None:
            return None
        stored = self.files.message_starting_at(date.fromordinal(found[0]), found[1])
        if not same_request(stored, candidate, with_parent=with_parent):
            raise IdempotencyConflict(
                f"Idempotency key {key!r} was used for a different request ({stored['id']})."
            )
        return stored

    def _open_task_for(self, task_id: str, device_id: str) -> TaskState:
        """The open task a device acts on, or the refusal that explains why it cannot."""
        index = self.tail.index
        state = index.open.get(task_id)
        if state is not None:
            if not state.audience.includes(device_id):
                raise NotAddressed(f"Task {task_id} is not addressed to device {device_id}.")
            return state
        known = index.locate(task_id)
        if known is None:
            raise UnknownTask(f"There is no task {task_id} in the pool.", field="parent_id")
        task = self.task_at(known)
        try:
            addressed = parse_address(task["to"]).includes(device_id)
        except InvalidMessage:
            addressed = False
        if not addressed:
            raise NotAddressed(f"Task {task_id} is not addressed to device {device_id}.")
        if known.closed == FINISHED and task["meta"].get("mode") != "any":
            # Finished means every addressed device answered for good, this one too.
            raise AlreadyAnswered(f"Device {device_id} has already answered task {task_id}.")
        raise closed_error(task_id, known.closed)
