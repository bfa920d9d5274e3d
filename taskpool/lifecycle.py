"""The life of one task: whom it is for, who answered what, and when it is over.

``TaskState`` is the one place that knows these rules: which answers end a
task for a device, how an any-one task is claimed and released, when a task
is cancelled or expired. Two mixins of it read its fields: what it looks
like on each device (execution statuses, rows, counts) is
``taskpool.executions``, and what the backend owes a job as time passes
(timeouts, retries, rollout offers) is ``taskpool.job_schedule``. The JSON
Lines store's index keeps a ``TaskState`` for every open task; the database
store keeps its parts in rows and restores one per decision; the task detail
replays a task's responses into a fresh one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from sys import intern
from typing import Any

from taskpool.exceptions import (
    AlreadyAnswered,
    AttemptEnded,
    ClaimedByOther,
    InvalidMessage,
    NotAddressed,
    NotStarted,
    TaskClosed,
)
from taskpool.executions import ExecutionViews, answer_record, record_status
from taskpool.job_schedule import (
    ABORTED,
    BACKEND_STATUSES,
    OFFERED,
    OPENED,
    TIMED_OUT,
    JobSchedule,
    moment_of,
)
from taskpool.jobs import JobOptions
from taskpool.messages import (
    TERMINAL_STATUSES,
    Address,
    Message,
    format_timestamp,
    parse_address,
    parse_timestamp,
)

#: Why a task stopped being open.
FINISHED, CANCELLED, EXPIRED = "finished", "cancelled", "expired"

_ANSWER_STATUSES = frozenset({"claimed", "progress", "done", "failed", "rejected"})
_WORK_ENDING = frozenset({"done", "failed"})
_RUNNING = frozenset({"claimed", "progress"})
_ATTEMPT_ENDING = frozenset({"done", "failed", "rejected", "timed_out"})


@dataclass(slots=True)
class Run:
    """One device's attempts at a job task (tasks with ``taskpool.jobs`` options only)."""

    #: The attempt the device is on, counted from 1.
    attempt: int = 1
    #: When the current attempt began running (claimed, or first progress).
    started: float | None = None
    #: When the current attempt times out.
    deadline: float | None = None
    #: When the next attempt is offered, after a failed or timed-out one.
    retry_at: float | None = None
    #: For a rollout: whether the task was offered to the device.
    offered: bool = False
    #: Each ended attempt: (attempt, how it ended, when).
    history: list[tuple[int, str, str]] = field(default_factory=list)

    def as_record(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "started": self.started,
            "deadline": self.deadline,
            "retry_at": self.retry_at,
            "offered": self.offered,
            "history": [list(entry) for entry in self.history],
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> Run:
        return cls(
            attempt=record.get("attempt", 1),
            started=record.get("started"),
            deadline=record.get("deadline"),
            retry_at=record.get("retry_at"),
            offered=record.get("offered", False),
            history=[tuple(entry) for entry in record.get("history", [])],
        )


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


class TaskState(ExecutionViews, JobSchedule):
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
        "job",
        "runs",
        "aborted",
        "opened",
        "rollout_clock",
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
        #: Each answering device's latest status and its time, as ``answer_record`` keeps them.
        self.answers: dict[str, str] = {}
        self.cancellation: Message | None = None
        #: Retries, timeout, rollout, abort, start time; ``None`` for a plain task.
        self.job: JobOptions | None = JobOptions.of(task["meta"])
        #: A job task's devices' attempts (see ``Run``).
        self.runs: dict[str, Run] = {}
        #: The backend's line that aborted the task, once it did.
        self.aborted: Message | None = None
        #: Whether the backend said the task started (``not_before`` came).
        self.opened = False
        #: A rollout's offer clock: offers are due at its rate from this time on.
        self.rollout_clock: float | None = None

    # Taking responses in --------------------------------------------------------

    def apply(self, response: Message) -> bool:
        """Take one response to this task into account.

        Answers the rules would refuse (from a device not addressed, after a
        terminal answer, to a task another device holds) change nothing, so a
        hand-edited file cannot break the state. Returns whether the claim on
        an any-one task changed hands, which changes who may see it pending.
        """
        if self.job is not None:
            return self._apply_to_job(response)
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
        if not audience.includes(device):
            return False
        previous = self.answers.get(device)
        if previous is not None and record_status(previous) in TERMINAL_STATUSES:
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
        # Interned: each device's name is then one string for all the answers
        # that hold it, not a copy per answer, which was a third of an open
        # broadcast's memory (and a checkpoint's pickle keeps them shared).
        self.answers[intern(device)] = answer_record(status, response["ts"])
        return claim_changed

    def _apply_to_job(self, response: Message) -> bool:
        """``apply`` for a task with job options: attempts, deadlines, offers, the abort."""
        meta = response["meta"]
        status = meta.get("status")
        sender = response["from"]
        if sender == "backend" and status in BACKEND_STATUSES:
            return self._apply_backend(response)
        if not sender.startswith("device:"):
            if status == "cancelled" and self.cancellation is None:
                self.cancellation = response
            return False
        device = sender[7:]
        if type(status) is not str or status not in _ANSWER_STATUSES:
            return False
        if not self.audience.includes(device) or not self._may_answer(device):
            return False
        # Shared: the device's name in answers and runs, the status in the run's history.
        device, status = intern(device), intern(status)
        run = self._run(device)
        attempt = meta.get("attempt")
        if attempt is not None and attempt != run.attempt:
            return False  # an answer to an attempt that has ended
        previous = self.answers.get(device)
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
        moment = moment_of(response["ts"])
        timeout = self.job.timeout  # type: ignore[union-attr]
        # A line's time is its second, and the answer came within it: deadlines count from
        # the second's end, so that a device gets at least the seconds it was promised.
        if status in _RUNNING and run.started is None:
            run.started = moment
            if timeout is not None and moment is not None:
                run.deadline = moment + 1 + timeout.in_progress
        step = meta.get("step_timeout")
        if (
            status == "progress"
            and timeout is not None
            and run.started is not None
            and moment is not None
            and (type(step) is int or type(step) is float)
            and step > 0
        ):
            run.deadline = min(moment + 1 + step, run.started + 1 + timeout.in_progress)
        if status in _ATTEMPT_ENDING:
            self._end_attempt(device, run, status, response["ts"], moment)
        if status == "claimed" and previous is not None and record_status(previous) != "pending":
            return claim_changed  # already working on it: keep its progress
        self.answers[device] = answer_record(status, response["ts"])
        return claim_changed

    def _apply_backend(self, line: Message) -> bool:
        """A line the backend wrote as the job moved on (see ``due``)."""
        meta = line["meta"]
        status = meta["status"]
        if status == ABORTED:
            if self.aborted is None:
                self.aborted = line
            return False
        if status == OPENED:
            self.opened = True
            return False
        if status == OFFERED:
            devices = meta.get("devices")
            if type(devices) is list:
                for device in devices:
                    if type(device) is str and self.audience.includes(device):
                        self._run(device).offered = True
            clock = meta.get("rollout_clock")
            if type(clock) is int or type(clock) is float:
                self.rollout_clock = float(clock)
            return False
        device, attempt = meta.get("device"), meta.get("attempt")
        if type(device) is not str or device not in self.runs:
            return False
        run = self.runs[device]
        if status == TIMED_OUT:
            if attempt != run.attempt or not self._running(device):
                return False
            self._end_attempt(device, run, TIMED_OUT, line["ts"], moment_of(line["ts"]))
            self.answers[device] = answer_record(TIMED_OUT, line["ts"])
            if self.claimer == device:
                self.claimer, self.claim = None, None  # released: another device may take it
                return True
            return False
        # RETRY: the next attempt, once the previous one failed or timed out.
        if attempt != run.attempt + 1 or not self._retrying(device):
            return False
        run.attempt, run.started, run.deadline, run.retry_at = attempt, None, None, None
        self.answers[device] = answer_record("pending", line["ts"])
        return False

    def _end_attempt(
        self, device: str, run: Run, status: str, ts: str, moment: float | None
    ) -> None:
        run.history.append((run.attempt, status, ts))
        run.deadline = None
        retries = self.job.retries  # type: ignore[union-attr]
        if retries is not None and retries.covers(status, run.attempt) and moment is not None:
            # As deadlines: from the end of the answer's second, so the backoff is at least
            # what it says (none is none: offered again at once).
            run.retry_at = moment + (1 + retries.backoff if retries.backoff else 0)

    def _run(self, device: str) -> Run:
        run = self.runs.get(device)
        if run is None:
            run = self.runs[device] = Run()
        return run

    # What a store keeps of it ---------------------------------------------------

    @classmethod
    def restore(
        cls,
        task: Message,
        position: int,
        default_ttl: float,
        *,
        record: dict[str, Any],
        answers: dict[str, tuple[str, str]],
        runs: dict[str, dict[str, Any]] | None = None,
    ) -> TaskState:
        """A state a store kept: ``record`` as ``task_record`` gave it, and devices' parts.

        ``answers`` (and a job task's ``runs``, as ``device_record`` gave them)
        may hold only some devices' (those a decision looks at): the state then
        speaks for those devices only.
        """
        state = cls(task, position, default_ttl)
        state.claim = record.get("claim")
        state.claimer = state.claim["from"][7:] if state.claim is not None else None
        state.cancellation = record.get("cancellation")
        state.aborted = record.get("aborted")
        state.opened = bool(record.get("opened", False))
        state.rollout_clock = record.get("rollout_clock")
        state.answers = {device: answer_record(*answer) for device, answer in answers.items()}
        state.runs = {device: Run.from_record(kept) for device, kept in (runs or {}).items()}
        return state

    def task_record(self) -> dict[str, Any]:
        """What ``restore`` needs besides each device's parts (JSON)."""
        record: dict[str, Any] = {"claim": self.claim, "cancellation": self.cancellation}
        if self.job is not None:
            record.update(
                aborted=self.aborted, opened=self.opened, rollout_clock=self.rollout_clock
            )
        return record

    def device_record(self, device_id: str) -> dict[str, Any] | None:
        """A job task's attempts on one device (JSON), for ``restore``; ``None`` otherwise."""
        run = self.runs.get(device_id)
        return None if run is None else run.as_record()

    def attempt_of(self, device_id: str) -> int | None:
        """The attempt the device is on, for a task with retries (``None`` otherwise)."""
        if self.job is None or self.job.retries is None:
            return None
        run = self.runs.get(device_id)
        return 1 if run is None else run.attempt

    # Who it is pending for ------------------------------------------------------

    def offered_to(self, device_id: str) -> bool:
        """Whether the task is pending for the device whatever the time (expiry and
        ``not_before`` aside)."""
        if self.cancellation is not None or not self.audience.includes(device_id):
            return False
        if self.job is not None:
            return self._job_offered_to(device_id)
        answer = self.answers.get(device_id)
        if answer is not None and record_status(answer) in TERMINAL_STATUSES:
            return False
        return not (self.any_one and self.claimer is not None and self.claimer != device_id)

    def offered_to_unheard(self) -> bool:
        """Whether the task is offered to an addressed device it has heard nothing from
        (no answer, no attempt): ``offered_to`` for such a device, expiry and
        ``not_before`` aside. What a ``device:*`` task is to the devices that have not
        answered it, however many: not once claimed, aborted, cancelled, or offered
        device by device (a rollout)."""
        if self.cancellation is not None:
            return False
        if self.any_one and self.claimer is not None:
            return False
        job = self.job
        return job is None or (job.rollout is None and self.aborted is None)

    def is_pending_for(self, device_id: str, now: float) -> bool:
        """Addressed, not ended for this device, not cancelled, expired or held by another;
        for a job, offered and started."""
        if self.cancellation is not None or now >= self.expires_at:
            return False
        if not self.audience.includes(device_id):
            return False
        if self.job is not None:
            not_before = self.job.not_before
            return self._job_offered_to(device_id) and (not_before is None or now >= not_before)
        answer = self.answers.get(device_id)
        if answer is not None and record_status(answer) in TERMINAL_STATUSES:
            return False
        return not (self.any_one and self.claimer is not None and self.claimer != device_id)

    def _job_offered_to(self, device_id: str) -> bool:
        if not self._may_answer(device_id):
            return False
        return not (self.any_one and self.claimer is not None and self.claimer != device_id)

    def _may_answer(self, device_id: str) -> bool:
        """A job task's device is on a live attempt: offered, not over, not waiting for a retry."""
        job = self.job
        run = self.runs.get(device_id)
        if job.rollout is not None and (run is None or not run.offered):  # type: ignore[union-attr]
            return False
        if self._ended_for(device_id) or self._retrying(device_id):
            return False
        return self.aborted is None or self._running(device_id)

    def _running(self, device_id: str) -> bool:
        answer = self.answers.get(device_id)
        return answer is not None and record_status(answer) in _RUNNING

    def _retrying(self, device_id: str) -> bool:
        """A job task's device whose attempt failed or timed out, and that gets another."""
        answer = self.answers.get(device_id)
        if answer is None or self.aborted is not None or self.job is None:
            return False
        retries = self.job.retries
        run = self.runs.get(device_id)
        return (
            retries is not None
            and run is not None
            and retries.covers(record_status(answer), run.attempt)
        )

    def _ended_for(self, device_id: str) -> bool:
        """Whether the device is done with the task for good (terminal, or out of attempts)."""
        answer = self.answers.get(device_id)
        if self.job is None:
            return answer is not None and record_status(answer) in TERMINAL_STATUSES
        if answer is not None:
            status = record_status(answer)
            if status in ("done", "rejected"):
                return True
            if status in ("failed", TIMED_OUT):
                return not self._retrying(device_id)
        return False

    # When it is over ------------------------------------------------------------

    def ended_reason(self) -> str | None:
        """Why the task is over for every device whatever the time: ``CANCELLED``, ``FINISHED`` or ``None``."""
        if self.cancellation is not None:
            return CANCELLED
        if (
            self.any_one
            and self.claimer is not None
            and record_status(self.answers[self.claimer]) in _WORK_ENDING
        ):
            return FINISHED
        if self.job is not None and self.aborted is not None:
            # Aborted: over once the devices that had started are done.
            running = any(record_status(answer) in _RUNNING for answer in self.answers.values())
            return None if running else FINISHED
        if self.audience.everyone:
            return None
        for device_id in self.audience.device_ids:
            if not self._ended_for(device_id):
                return None
        return FINISHED

    def closed_reason(self, now: float) -> str | None:
        """Why the task is over for every device at ``now`` (``EXPIRED`` too), or ``None``."""
        reason = self.ended_reason()
        if reason is None and now >= self.expires_at:
            return EXPIRED
        return reason

    def check_answer(self, device_id: str, now: float, attempt: int | None = None) -> None:
        """Raise the domain error that refuses an answer from ``device_id``, if any.

        ``attempt`` is the one the answer names (``meta.attempt``), if it does.
        """
        if not self.audience.includes(device_id):
            raise NotAddressed(f"Task {self.id} is not addressed to device {device_id}.")
        answer = self.answers.get(device_id)
        if self._ended_for(device_id):
            if (
                answer is not None and record_status(answer) == TIMED_OUT
            ):  # the server's line, not an answer
                run = self.runs.get(device_id)
                raise AttemptEnded(
                    f"Attempt {1 if run is None else run.attempt} of task {self.id} on device "
                    f"{device_id} timed out, and no attempt follows."
                )
            raise AlreadyAnswered(
                f"Device {device_id} has already answered task {self.id} with "
                f"{record_status(answer)}."  # type: ignore[arg-type]
            )
        if self.cancellation is not None:
            raise TaskClosed(f"Task {self.id} was cancelled.")
        if now >= self.expires_at:
            raise TaskClosed(f"Task {self.id} expired at {format_timestamp(self.expires_at)}.")
        if self.any_one and self.claimer is not None and self.claimer != device_id:
            raise ClaimedByOther(f"Task {self.id} is held by device {self.claimer}.")
        if self.job is not None:
            self._check_job_answer(device_id, now, attempt)
        elif attempt is not None and attempt != 1:
            raise AttemptEnded(
                f"Task {self.id} is not retried: it has one attempt, not attempt {attempt}."
            )

    def _check_job_answer(self, device_id: str, now: float, attempt: int | None) -> None:
        job = self.job
        run = self.runs.get(device_id)
        current = 1 if run is None else run.attempt
        if job.not_before is not None and now < job.not_before:  # type: ignore[union-attr]
            raise NotStarted(
                f"Task {self.id} does not start before {format_timestamp(job.not_before)}."  # type: ignore[union-attr]
            )
        if job.rollout is not None and (run is None or not run.offered):  # type: ignore[union-attr]
            raise NotStarted(f"Task {self.id} has not been offered to device {device_id} yet.")
        if self.aborted is not None and not self._running(device_id):
            reason = self.aborted["meta"].get("reason") or "aborted"
            raise TaskClosed(f"Task {self.id} was aborted: {reason}")
        if self._retrying(device_id):
            ended = record_status(self.answers[device_id])
            raise AttemptEnded(
                f"Attempt {current} of task {self.id} on device {device_id} ended ({ended}); "
                f"attempt {current + 1} is offered at "
                f"{format_timestamp(run.retry_at or now)}."  # type: ignore[union-attr]
            )
        if attempt is not None and attempt != current:
            raise AttemptEnded(
                f"Device {device_id} is on attempt {current} of task {self.id}, not {attempt}."
            )
        if run is not None and run.deadline is not None and now >= run.deadline:
            raise AttemptEnded(
                f"Attempt {current} of task {self.id} on device {device_id} timed out at "
                f"{format_timestamp(run.deadline)}."
            )


def replay(task: Message, responses: list[Message], default_ttl: float) -> TaskState:
    """A ``TaskState`` built from a task and its responses in file order."""
    state = TaskState(task, 0, default_ttl)
    for response in responses:
        state.apply(response)
    return state
