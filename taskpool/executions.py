"""What a task looks like on each device it is for: its execution statuses, one device's
execution row, and how many devices are in each status.

``TaskState`` (``taskpool.lifecycle``) keeps the task's rules and its answers; these
are its views, worked out from them for the admin, the task detail and the stores'
status bits. A ``device:*`` task's views cost its answers and runs, not the fleet:
every device it holds nothing of has the same status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

from taskpool.messages import TERMINAL_STATUSES, format_timestamp

if TYPE_CHECKING:
    from taskpool.jobs import JobOptions
    from taskpool.lifecycle import Run
    from taskpool.messages import Address, Message

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
    # Jobs that look after themselves (``taskpool.jobs``):
    "timed_out",  # the attempt did not finish in time (a line from the backend)
    "retrying",  # the attempt failed or timed out; another one is offered after the backoff
    "scheduled",  # not offered to the device yet: a rollout has not reached it, or not_before
)


#: Each device's answer is kept as one string, its status's code (a character) and then
#: its time (``ts``): a broadcast holds thousands, and a ``(status, ts)`` tuple cost 56
#: bytes more each. A status without a code (none is written today) is kept whole.
_STATUS_CODES = {status: chr(ord("A") + number) for number, status in enumerate(EXECUTION_STATUSES)}
_CODED_STATUSES = {code: status for status, code in _STATUS_CODES.items()}
_UNCODED = "\x00"


def answer_record(status: str, ts: str) -> str:
    """An answer as a ``TaskState`` keeps it: ``record_status`` and ``record_time`` read it."""
    code = _STATUS_CODES.get(status)
    return code + ts if code is not None else f"{_UNCODED}{status}{_UNCODED}{ts}"


def record_status(record: str) -> str:
    status = _CODED_STATUSES.get(record[0])
    return status if status is not None else record[1:].partition(_UNCODED)[0]


def record_time(record: str) -> str:
    return record[1:] if record[0] != _UNCODED else record[1:].partition(_UNCODED)[2]


def answer_parts(record: str | None) -> tuple[str, str]:
    """(status, time) of a kept answer; ``("pending", "")`` for a device that gave none."""
    return ("pending", "") if record is None else (record_status(record), record_time(record))


class ExecutionViews:
    """``TaskState``'s views of its executions (a mixin: it reads the state's fields)."""

    __slots__ = ()

    if TYPE_CHECKING:  # the state's fields these views read (``TaskState`` has them)
        task: Message
        audience: Address
        expires_at: float
        any_one: bool
        claimer: str | None
        answers: dict[str, str]
        cancellation: Message | None
        job: JobOptions | None
        runs: dict[str, Run]
        aborted: Message | None

        def _ended_for(self, device_id: str) -> bool: ...
        def _running(self, device_id: str) -> bool: ...
        def _retrying(self, device_id: str) -> bool: ...

    def _status(self, device_id: str, now: float) -> str:
        """The execution status on one device (``execution`` without its time)."""
        answer = self.answers.get(device_id)
        if self.job is not None:
            return self._job_status(device_id, answer, now)
        if answer is not None and (status := record_status(answer)) in TERMINAL_STATUSES:
            return status
        if self.cancellation is not None:
            return "cancelled"
        if now >= self.expires_at:
            return "expired"
        if self.any_one and self.claimer is not None and self.claimer != device_id:
            return "claimed"  # held by another device: nothing left for this one to do
        return "pending" if answer is None else record_status(answer)

    def _job_status(self, device_id: str, answer: str | None, now: float) -> str:
        if self._ended_for(device_id):
            return record_status(answer)  # type: ignore[arg-type]
        if self.cancellation is not None:
            return "cancelled"
        if self.aborted is not None and not self._running(device_id):
            return "cancelled"
        if now >= self.expires_at:
            return "expired"
        if self._retrying(device_id):
            return "retrying"
        job = self.job
        run = self.runs.get(device_id)
        if job.rollout is not None and (run is None or not run.offered):  # type: ignore[union-attr]
            return "scheduled"
        if job.not_before is not None and now < job.not_before:  # type: ignore[union-attr]
            return "scheduled"
        if self.any_one and self.claimer is not None and self.claimer != device_id:
            return "claimed"
        return "pending" if answer is None else record_status(answer)

    def execution(self, device_id: str, now: float) -> dict[str, Any]:
        """This task's execution on one device: ``{"device", "status", "updated"}``, and for
        a job with retries the attempt it is on and how each earlier one ended."""
        status = self._status(device_id, now)
        answer = self.answers.get(device_id)
        if answer is not None and (record_status(answer) == status or status == "retrying"):
            updated = record_time(answer)
        elif status == "cancelled":
            closing = self.cancellation or self.aborted
            updated = closing["ts"]  # type: ignore[index]
        elif status == "expired":
            updated = format_timestamp(self.expires_at)
        elif status == "claimed":
            updated = record_time(self.answers[self.claimer])  # type: ignore[index]
        else:
            updated = self.task["ts"]
        row: dict[str, Any] = {"device": device_id, "status": status, "updated": updated}
        if self.job is not None and self.job.retries is not None:
            run = self.runs.get(device_id)
            row["attempt"] = 1 if run is None else run.attempt
            row["attempts"] = [
                {"attempt": number, "status": ended, "updated": at}
                for number, ended, at in (run.history if run is not None else [])
            ]
        return row

    def executions(self, registered_devices: list[str], now: float) -> list[dict[str, Any]]:
        """One execution per addressed device.

        For ``device:*`` that is every registered device and every device that
        answered, in that order.
        """
        return [self.execution(device_id, now) for device_id in self.addressed(registered_devices)]

    def addressed(self, registered_devices: list[str]) -> list[str]:
        """The devices of ``executions``, in that order, without working out their statuses."""
        if self.audience.everyone:
            return list(dict.fromkeys([*registered_devices, *self.answers]))
        return list(self.audience.device_ids)

    def status_counts(
        self, registered: dict[str, int], now: float, shown: int
    ) -> list[StatusCount]:
        """How many executions have each status, with the first ``shown`` devices of each in
        the order of ``executions``; by status name.

        ``registered``: ``registered_places(registered_devices)``, worked out once for
        many tasks. As ``status_bits``, a ``device:*``
        task costs its answers and runs, not the fleet: the devices it holds nothing of
        share one status, and only the first few of them are named.
        """
        if not self.audience.everyone:
            rows = [
                (place, device_id, self._status(device_id, now))
                for place, device_id in enumerate(self.audience.device_ids)
            ]
            counts: dict[str, int] = {}
            for _, _, status in rows:
                counts[status] = counts.get(status, 0) + 1
            return _count_rows(rows, counts, shown)
        rows = []
        held = 0  # registered devices the task holds something of
        # Devices that answered but are not registered come after the registered ones.
        after = len(registered)
        for device_id in dict.fromkeys([*self.answers, *self.runs]):
            place = registered.get(device_id)
            if place is not None:
                held += 1
            elif device_id in self.answers:
                place, after = after, after + 1
            else:
                continue  # a run on a device no longer registered: no execution
            rows.append((place, device_id, self._status(device_id, now)))
        counts = {}
        for _, _, status in rows:
            counts[status] = counts.get(status, 0) + 1
        untouched = len(registered) - held
        if untouched:
            status = self._status("", now)  # as any device the task holds nothing of
            counts[status] = counts.get(status, 0) + untouched
            first: list[tuple[int, str, str]] = []
            for device_id, place in registered.items():
                if len(first) == shown:
                    break
                if device_id not in self.answers and device_id not in self.runs:
                    first.append((place, device_id, status))
            rows.extend(first)
        return _count_rows(rows, counts, shown)

    def statuses(self, registered_devices: list[str], now: float) -> frozenset[str]:
        """The distinct execution statuses of this task (for the task list's filter)."""
        return bits_to_statuses(self.status_bits(registered_devices, now))

    def status_bits(self, registered_devices: list[str], now: float) -> int:
        """``statuses`` as ``statuses_to_bits`` would write them, without building any row."""
        if self.audience.everyone:
            # A device the task holds nothing of (no answer, no run, no claim) has the
            # status of any other such device: "" (no id) stands for all of them, so a
            # broadcast to a large fleet costs its answers, not its devices.
            devices = list(self.answers)
            untouched = not registered_devices
            for device_id in registered_devices:
                if device_id in self.answers:
                    continue
                if device_id in self.runs or device_id == self.claimer:
                    devices.append(device_id)
                else:
                    untouched = True
            if untouched:
                devices.append("")
        else:
            devices = list(self.audience.device_ids)
        bits = 0
        for device_id in devices:
            bits |= _STATUS_BITS[self._status(device_id, now)]
        return bits


def registered_places(registered_devices: list[str]) -> dict[str, int]:
    """Each registered device's place in the list (its first), for ``status_counts``."""
    return {device_id: place for place, device_id in enumerate(dict.fromkeys(registered_devices))}


class StatusCount(NamedTuple):
    """How many of a task's executions have one status, and the first devices that have it."""

    status: str
    total: int
    devices: list[str]


def _count_rows(
    rows: list[tuple[int, str, str]], counts: dict[str, int], shown: int
) -> list[StatusCount]:
    """``StatusCount``s of (place, device, status) rows: the first ``shown`` by place."""
    first: dict[str, list[str]] = {status: [] for status in counts}
    for _, device_id, status in sorted(rows):
        if len(first[status]) < shown:
            first[status].append(device_id)
    return [StatusCount(status, counts[status], first[status]) for status in sorted(counts)]


_STATUS_BITS = {status: 1 << number for number, status in enumerate(EXECUTION_STATUSES)}


def statuses_to_bits(statuses: frozenset[str]) -> int:
    """A set of execution statuses as a small integer (one bit per status)."""
    bits = 0
    for status in statuses:
        bits |= _STATUS_BITS[status]
    return bits


def bits_to_statuses(bits: int) -> frozenset[str]:
    return frozenset(status for i, status in enumerate(EXECUTION_STATUSES) if bits & (1 << i))
