"""The life of one task: whom it is for, who answered what, and when it is over.

``TaskState`` is the one place that knows these rules: which answers end a
task for a device, how an any-one task is claimed and released, when a task
is cancelled or expired, and what each device's execution status is. The
JSON Lines store's index keeps a ``TaskState`` for every open task; the
database store keeps its parts in rows and restores one per decision; the
task detail replays a task's responses into a fresh one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from taskpool.exceptions import (
    AlreadyAnswered,
    ClaimedByOther,
    InvalidMessage,
    NotAddressed,
    TaskClosed,
)
from taskpool.messages import (
    TERMINAL_STATUSES,
    Address,
    Message,
    format_timestamp,
    parse_address,
    parse_timestamp,
)

#: Every status an execution (one task on one device) can have.
EXECUTION_STATUSES = (
    "pending",
    "claimed",
    "progress",
    "done",
    "failed",
    "rejected",
    "cancelled",
    "expired",
)

#: Why a task stopped being open.
FINISHED, CANCELLED, EXPIRED = "finished", "cancelled", "expired"

_ANSWER_STATUSES = frozenset({"claimed", "progress", "done", "failed", "rejected"})
_WORK_ENDING = frozenset({"done", "failed"})


def task_expiry(task: Message, default_ttl: float) -> float:
    """When ``task`` expires, in epoch seconds: ``meta.expires_at``, else ``ts + default_ttl``."""
    expires_at = task["meta"].get("expires_at")
    if isinstance(expires_at, str):
        try:
            return parse_timestamp(expires_at)
        except ValueError:
            try:
                moment = datetime.fromisoformat(expires_at)
            except ValueError:
                pass
            else:
                if moment.tzinfo is not None:
                    return moment.timestamp()
    try:
        return parse_timestamp(task["ts"]) + default_ttl
    except ValueError:
        raise InvalidMessage("The task's ts is not a UTC timestamp.") from None


class TaskState:
    """One task and what its responses have done to it so far."""

    __slots__ = (
        "task",
        "id",
        "position",
        "audience",
        "expires_at",
        "any_one",
        "claimer",
        "claim",
        "answers",
        "cancellation",
    )

    def __init__(self, task: Message, position: int, default_ttl: float) -> None:
        audience = parse_address(task["to"])
        if audience.kind != "device":
            raise InvalidMessage("A task is addressed to devices.")
        self.task = task
        self.id: str = task["id"]
        #: Where the task's line is; orders tasks as the day files do.
        self.position = position
        self.audience: Address = audience
        self.expires_at = task_expiry(task, default_ttl)
        self.any_one = task["meta"].get("mode") == "any"
        #: The device holding an any-one task, and the response that claimed it.
        self.claimer: str | None = None
        self.claim: Message | None = None
        #: Each answering device's latest status and its time: device -> (status, ts).
        self.answers: dict[str, tuple[str, str]] = {}
        self.cancellation: Message | None = None

    def apply(self, response: Message) -> bool:
        """Take one response to this task into account.

        Answers the rules would refuse (from a device not addressed, after a
        terminal answer, to a task another device holds) change nothing, so a
        hand-edited file cannot break the state. Returns whether the claim on
        an any-one task changed hands, which changes who may see it pending.
        """
        # Spelled out (no helper calls): every response of the history passes here at start-up.
        status = response["meta"].get("status")
        sender = response["from"]
        if not sender.startswith("device:"):
            if status == "cancelled" and self.cancellation is None:
                self.cancellation = response
            return False
        device = sender[7:]
        if type(status) is not str or status not in _ANSWER_STATUSES:
            return False
        audience = self.audience
        if not audience.everyone and device not in audience.device_ids:
            return False
        previous = self.answers.get(device)
        if previous is not None and previous[0] in TERMINAL_STATUSES:
            return False
        claim_changed = False
        if self.any_one:
            if status == "rejected":
                if self.claimer == device:
                    self.claimer, self.claim = None, None
                    claim_changed = True
            elif self.claimer is None:
                self.claimer, self.claim = device, response
                claim_changed = True
            elif self.claimer != device:
                return False
        if status == "claimed" and previous is not None:
            return claim_changed  # already working on it: keep its progress
        self.answers[device] = (status, response["ts"])
        return claim_changed

    @classmethod
    def restore(
        cls,
        task: Message,
        position: int,
        default_ttl: float,
        *,
        record: dict[str, Any],
        answers: dict[str, tuple[str, str]],
    ) -> TaskState:
        """A state a store kept: ``record`` as ``task_record`` gave it, and devices' answers.

        ``answers`` may hold only some devices' (those a decision looks at):
        the state then speaks for those devices only.
        """
        state = cls(task, position, default_ttl)
        state.claim = record.get("claim")
        state.claimer = state.claim["from"][7:] if state.claim is not None else None
        state.cancellation = record.get("cancellation")
        state.answers = dict(answers)
        return state

    def task_record(self) -> dict[str, Any]:
        """What ``restore`` needs besides the answers: the claim and the cancellation (JSON)."""
        return {"claim": self.claim, "cancellation": self.cancellation}

    def offered_to(self, device_id: str) -> bool:
        """Whether the task is pending for the device whatever the time (expiry aside)."""
        if self.cancellation is not None or not self.audience.includes(device_id):
            return False
        answer = self.answers.get(device_id)
        if answer is not None and answer[0] in TERMINAL_STATUSES:
            return False
        return not (self.any_one and self.claimer is not None and self.claimer != device_id)

    def is_pending_for(self, device_id: str, now: float) -> bool:
        """Addressed, not ended for this device, not cancelled, expired or held by another."""
        if self.cancellation is not None or now >= self.expires_at:
            return False
        if not self.audience.includes(device_id):
            return False
        answer = self.answers.get(device_id)
        if answer is not None and answer[0] in TERMINAL_STATUSES:
            return False
        return not (self.any_one and self.claimer is not None and self.claimer != device_id)

    def ended_reason(self) -> str | None:
        """Why the task is over for every device whatever the time: ``CANCELLED``, ``FINISHED`` or ``None``."""
        if self.cancellation is not None:
            return CANCELLED
        if (
            self.any_one
            and self.claimer is not None
            and self.answers[self.claimer][0] in _WORK_ENDING
        ):
            return FINISHED
        if self.audience.everyone:
            return None
        for device_id in self.audience.device_ids:
            answer = self.answers.get(device_id)
            if answer is None or answer[0] not in TERMINAL_STATUSES:
                return None
        return FINISHED

    def closed_reason(self, now: float) -> str | None:
        """Why the task is over for every device at ``now`` (``EXPIRED`` too), or ``None``."""
        reason = self.ended_reason()
        if reason is None and now >= self.expires_at:
            return EXPIRED
        return reason

    def check_answer(self, device_id: str, now: float) -> None:
        """Raise the domain error that refuses an answer from ``device_id``, if any."""
        if not self.audience.includes(device_id):
            raise NotAddressed(f"Task {self.id} is not addressed to device {device_id}.")
        answer = self.answers.get(device_id)
        if answer is not None and answer[0] in TERMINAL_STATUSES:
            raise AlreadyAnswered(
                f"Device {device_id} has already answered task {self.id} with {answer[0]}."
            )
        if self.cancellation is not None:
            raise TaskClosed(f"Task {self.id} was cancelled.")
        if now >= self.expires_at:
            raise TaskClosed(f"Task {self.id} expired at {format_timestamp(self.expires_at)}.")
        if self.any_one and self.claimer is not None and self.claimer != device_id:
            raise ClaimedByOther(f"Task {self.id} is held by device {self.claimer}.")

    def _status(self, device_id: str, now: float) -> str:
        """The execution status on one device (``execution`` without its time)."""
        answer = self.answers.get(device_id)
        if answer is not None and answer[0] in TERMINAL_STATUSES:
            return answer[0]
        if self.cancellation is not None:
            return "cancelled"
        if now >= self.expires_at:
            return "expired"
        if self.any_one and self.claimer is not None and self.claimer != device_id:
            return "claimed"  # held by another device: nothing left for this one to do
        return "pending" if answer is None else answer[0]

    def execution(self, device_id: str, now: float) -> dict[str, str]:
        """This task's execution on one device: ``{"device", "status", "updated"}``."""
        status = self._status(device_id, now)
        answer = self.answers.get(device_id)
        if answer is not None and answer[0] == status:
            updated = answer[1]
        elif status == "cancelled":
            updated = self.cancellation["ts"]  # type: ignore[index]
        elif status == "expired":
            updated = format_timestamp(self.expires_at)
        elif status == "claimed":
            updated = self.answers[self.claimer][1]  # type: ignore[index]
        else:
            updated = self.task["ts"]
        return {"device": device_id, "status": status, "updated": updated}

    def executions(self, registered_devices: list[str], now: float) -> list[dict[str, str]]:
        """One execution per addressed device.

        For ``device:*`` that is every registered device and every device that
        answered, in that order.
        """
        if self.audience.everyone:
            devices = list(dict.fromkeys([*registered_devices, *self.answers]))
        else:
            devices = list(self.audience.device_ids)
        return [self.execution(device_id, now) for device_id in devices]

    def statuses(self, registered_devices: list[str], now: float) -> frozenset[str]:
        """The distinct execution statuses of this task (for the task list's filter)."""
        return bits_to_statuses(self.status_bits(registered_devices, now))

    def status_bits(self, registered_devices: list[str], now: float) -> int:
        """``statuses`` as ``statuses_to_bits`` would write them, without building any row."""
        if self.audience.everyone:
            devices = [*registered_devices, *self.answers]
            if not registered_devices:
                # Unknown devices: what the task is for one that never answered ("" is no id).
                devices.append("")
        else:
            devices = list(self.audience.device_ids)
        bits = 0
        for device_id in devices:
            bits |= _STATUS_BITS[self._status(device_id, now)]
        return bits


_STATUS_BITS = {status: 1 << number for number, status in enumerate(EXECUTION_STATUSES)}


def statuses_to_bits(statuses: frozenset[str]) -> int:
    """A set of execution statuses as a small integer (one bit per status)."""
    bits = 0
    for status in statuses:
        bits |= _STATUS_BITS[status]
    return bits


def bits_to_statuses(bits: int) -> frozenset[str]:
    return frozenset(status for i, status in enumerate(EXECUTION_STATUSES) if bits & (1 << i))


def replay(task: Message, responses: list[Message], default_ttl: float) -> TaskState:
    """A ``TaskState`` built from a task and its responses in file order."""
    state = TaskState(task, 0, default_ttl)
    for response in responses:
        state.apply(response)
    return state
