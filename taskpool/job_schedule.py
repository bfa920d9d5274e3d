"""What the backend owes a job task as time passes: its opening, timeouts, retries, an
abort, and the rollout's offers (``TaskState.due``, which the ticker writes).

A mixin of ``TaskState`` (``taskpool.lifecycle``): it reads the state's fields and
decides nothing about answers, which stay with the state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

from taskpool.executions import record_status
from taskpool.messages import parse_timestamp

if TYPE_CHECKING:
    from taskpool.jobs import JobOptions
    from taskpool.lifecycle import Run
    from taskpool.messages import Address, Message

#: What the backend writes as a job moves on (``meta.status`` of its responses).
TIMED_OUT, RETRY, OFFERED, ABORTED, OPENED = "timed_out", "retry", "offered", "aborted", "opened"
BACKEND_STATUSES = frozenset({TIMED_OUT, RETRY, OFFERED, ABORTED, OPENED})
#: Devices an ``offered`` line names at most (a rollout step over more writes several).
OFFERS_PER_LINE = 500
#: After a quiet spell (no process ticking, or no device waiting), a rollout makes up at
#: most this many seconds' worth of offers at once (one step, if a step is longer), then
#: goes on at its rate: a restart or devices joining together make no burst.
ROLLOUT_CATCH_UP_SECONDS = 5.0


class Transition(NamedTuple):
    """A line the backend owes a job task now (``TaskState.due``)."""

    status: str
    devices: tuple[str, ...] = ()
    attempt: int | None = None
    reason: str = ""
    rollout_clock: float | None = None


class JobSchedule:
    """``TaskState``'s schedule of the lines the backend owes a job."""

    __slots__ = ()

    if TYPE_CHECKING:  # the state's fields the schedule reads (``TaskState`` has them)
        task: Message
        audience: Address
        expires_at: float
        answers: dict[str, str]
        cancellation: Message | None
        job: JobOptions | None
        runs: dict[str, Run]
        aborted: Message | None
        opened: bool
        rollout_clock: float | None

        def _ended_for(self, device_id: str) -> bool: ...
        def _running(self, device_id: str) -> bool: ...
        def _retrying(self, device_id: str) -> bool: ...

    def due(self, now: float, registered_devices: Callable[[], list[str]]) -> list[Transition]:
        """The lines a job task is owed at ``now``, in the order to write them.

        ``registered_devices()``: the devices a ``device:*`` rollout offers the
        task to (validated devices, in a stable order; asked only then); a
        device that joins later is offered it too.
        """
        job = self.job
        if job is None or self.cancellation is not None or now >= self.expires_at:
            return []
        owed: list[Transition] = []
        if job.not_before is not None and not self.opened and now >= job.not_before:
            owed.append(Transition(OPENED))
        for device, run in self.runs.items():
            if run.deadline is not None and now >= run.deadline and self._running(device):
                owed.append(
                    Transition(
                        TIMED_OUT,
                        (device,),
                        run.attempt,
                        "No answer within the attempt's time limit.",
                    )
                )
            elif run.retry_at is not None and now >= run.retry_at and self._retrying(device):
                owed.append(Transition(RETRY, (device,), run.attempt + 1))
        if job.abort is not None and self.aborted is None:
            finished = failures = 0
            for device in self.answers:
                if self._ended_for(device):
                    finished += 1
                    if record_status(self.answers[device]) in job.abort.on:
                        failures += 1
            if job.abort.reached(finished, failures):
                owed.append(
                    Transition(
                        ABORTED,
                        reason=f"{failures} of {finished} finished executions failed "
                        f"({', '.join(sorted(job.abort.on))}), at or over "
                        f"{job.abort.failure_percentage:g}%.",
                    )
                )
        if job.rollout is not None and self.aborted is None and not owed:
            offer = self._offers_due(now, registered_devices)
            if offer is not None:
                owed.append(offer)
        return owed

    def _offers_due(
        self, now: float, registered_devices: Callable[[], list[str]]
    ) -> Transition | None:
        """The next rollout step: the devices due an offer by now, at the rollout's rate."""
        job = self.job
        start = job.not_before if job.not_before is not None else moment_of(self.task["ts"])  # type: ignore[union-attr]
        if start is None or now < start:
            return None
        audience = registered_devices() if self.audience.everyone else self.audience.device_ids
        waiting = [
            device for device in audience if not (device in self.runs and self.runs[device].offered)
        ]
        if not waiting:
            return None
        succeeded = sum(1 for answer in self.answers.values() if record_status(answer) == "done")
        per_second = job.rollout.per_minute(succeeded) / 60  # type: ignore[union-attr]
        if self.rollout_clock is None:
            # The first device at once, and the rate counts from that offer: counted from
            # the task's time, which is cut to its second, a first look up to a second
            # later found room for two.
            return Transition(OFFERED, (waiting[0],), rollout_clock=now)
        # Then one every 1/rate seconds, spread evenly.
        clock = max(self.rollout_clock, now - max(1 / per_second, ROLLOUT_CATCH_UP_SECONDS))
        # (A little slack for the rounding of epoch seconds, about 1e-7 s today.)
        count = min(math.floor((now - clock) * per_second + 1e-5), len(waiting), OFFERS_PER_LINE)
        if count <= 0:
            return None
        return Transition(OFFERED, tuple(waiting[:count]), rollout_clock=clock + count / per_second)


def moment_of(ts: str) -> float | None:
    """Epoch seconds of a message's ``ts``, or ``None`` for a hand-written one that does not read."""
    try:
        return parse_timestamp(ts)
    except ValueError:
        return None
