"""Jobs that look after themselves: a task's retries, timeout, rollout, abort and start time.

Each is an optional field of a new task, checked here and written by the
server into the task's ``meta`` under the same name, so the task line
carries its own rules:

- ``retries`` ``{"max_attempts": 1-10, "on": ["failed", "timed_out"], "backoff": s}``:
  a device's failed (or timed-out) attempt is offered to it again after the
  backoff, until the attempts are spent; a rejection never is.
- ``timeout`` ``{"in_progress": s}``: once a device has claimed the task or
  reported progress, it has that long to finish, or its attempt times out.
  A progress answer's ``meta.step_timeout`` moves the deadline (never past it).
- ``rollout`` ``{"max_per_minute": n}``, or ``{"base_per_minute": n,
  "increment_factor": f, "after_succeeded": k}`` (the rate grows f-fold each
  k devices that succeed): the task is offered to its devices at that rate,
  one at a time.
- ``abort`` ``{"failure_percentage": p, "min_executed": n, "on": [...]}``: once
  n devices have finished and p% of them failed so, the devices that have
  not started are cancelled.
- ``not_before`` (a time): pending for no device before then.

Nothing here imports Django: stores and tests use it as it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from taskpool.exceptions import InvalidMessage
from taskpool.messages import format_timestamp, parse_timestamp

#: The ``meta`` keys a task's job options are written under (by the server only).
JOB_KEYS = ("retries", "timeout", "rollout", "abort", "not_before")
_JOB_KEY_SET = frozenset(JOB_KEYS)

RETRYABLE = frozenset({"failed", "timed_out"})
ABORTING = frozenset({"failed", "rejected", "timed_out"})
MAX_ATTEMPTS = 10
#: The fastest rollout: AWS IoT Jobs' cap too.
MAX_PER_MINUTE = 1000


@dataclass(frozen=True, slots=True)
class Retries:
    max_attempts: int
    on: frozenset[str]
    backoff: float

    def covers(self, status: str, attempt: int) -> bool:
        """Whether an attempt that ended with ``status`` is followed by another."""
        return status in self.on and attempt < self.max_attempts


@dataclass(frozen=True, slots=True)
class Timeout:
    in_progress: float


@dataclass(frozen=True, slots=True)
class Rollout:
    base_per_minute: float
    increment_factor: float = 1.0
    after_succeeded: int = 0

    def per_minute(self, succeeded: int) -> float:
        """The rate once ``succeeded`` devices have succeeded."""
        if self.after_succeeded <= 0 or self.increment_factor == 1.0:
            return self.base_per_minute
        steps = succeeded // self.after_succeeded
        try:
            rate = self.base_per_minute * self.increment_factor**steps
        except OverflowError:  # a float's power past its range: long past the cap
            return MAX_PER_MINUTE
        return min(rate, MAX_PER_MINUTE)


@dataclass(frozen=True, slots=True)
class Abort:
    failure_percentage: float
    min_executed: int
    on: frozenset[str]

    def reached(self, finished: int, failures: int) -> bool:
        return (
            finished >= self.min_executed and failures * 100 >= self.failure_percentage * finished
        )


@dataclass(frozen=True, slots=True)
class JobOptions:
    """What a task's ``meta`` says of its retries, timeout, rollout, abort and start."""

    retries: Retries | None = None
    timeout: Timeout | None = None
    rollout: Rollout | None = None
    abort: Abort | None = None
    not_before: float | None = None

    @classmethod
    def of(cls, meta: dict[str, Any]) -> JobOptions | None:
        """The options a stored task carries, or ``None`` for a plain task.

        Lenient: a part written by hand that does not read is left out, as
        if absent, rather than making the task unreadable.
        """
        if _JOB_KEY_SET.isdisjoint(meta):  # most tasks: one C call at start-up
            return None
        options = cls(
            retries=_quietly(_retries, meta.get("retries")),
            timeout=_quietly(_timeout, meta.get("timeout")),
            rollout=_quietly(_rollout, meta.get("rollout")),
            abort=_quietly(_abort, meta.get("abort")),
            not_before=_quietly(parse_timestamp, meta.get("not_before")),
        )
        return None if options == cls() else options


def job_meta(
    *,
    now: float,
    task_ttl: float,
    mode: str | None,
    retries: Any = None,
    timeout: Any = None,
    rollout: Any = None,
    abort: Any = None,
    not_before: datetime | None = None,
) -> dict[str, Any]:
    """The ``meta`` entries for a new task's job options, checked strictly.

    Raises ``InvalidMessage`` naming the field at fault.
    """
    meta: dict[str, Any] = {}
    if retries is not None:
        parsed = _checked("retries", _retries, retries)
        if mode == "any":
            raise InvalidMessage(
                "retries apply to a task each device runs; an any-one task is released to "
                "another device instead (use timeout).",
                field="retries",
            )
        if parsed.backoff > task_ttl:
            raise InvalidMessage(
                f"retries.backoff may be at most {task_ttl:g} seconds (TASK_TTL).", field="retries"
            )
        meta["retries"] = {
            "max_attempts": parsed.max_attempts,
            "on": sorted(parsed.on),
            "backoff": retries.get("backoff", 0),  # as sent: 2 stays 2, not 2.0
        }
    if timeout is not None:
        parsed_timeout = _checked("timeout", _timeout, timeout)
        if parsed_timeout.in_progress > task_ttl:
            raise InvalidMessage(
                f"timeout.in_progress may be at most {task_ttl:g} seconds (TASK_TTL).",
                field="timeout",
            )
        meta["timeout"] = {"in_progress": timeout["in_progress"]}
    if rollout is not None:
        _checked("rollout", _rollout, rollout)
        if mode == "any":
            raise InvalidMessage(
                "A rollout offers a task to its devices one by one; an any-one task is "
                "offered to all of them at once.",
                field="rollout",
            )
        meta["rollout"] = dict(rollout)
    if abort is not None:
        parsed_abort = _checked("abort", _abort, abort)
        meta["abort"] = {
            "failure_percentage": abort["failure_percentage"],
            "min_executed": parsed_abort.min_executed,
            "on": sorted(parsed_abort.on),
        }
    if not_before is not None:
        if not_before.tzinfo is None:
            raise InvalidMessage("not_before must say its time zone.", field="not_before")
        moment = not_before.timestamp()
        if moment > now + task_ttl:
            raise InvalidMessage(
                f"not_before may be at most {task_ttl:g} seconds (TASK_TTL) ahead.",
                field="not_before",
            )
        meta["not_before"] = format_timestamp(math.ceil(moment))
    return meta


def served(task: dict[str, Any], attempt: int | None) -> dict[str, Any]:
    """The task as a device is served it: with retries, ``meta.attempt`` says which attempt
    the device is on (a copy: the stored task is left as it is)."""
    if attempt is None or "retries" not in task["meta"]:
        return task
    return {**task, "meta": {**task["meta"], "attempt": attempt}}


# Reading each option ------------------------------------------------------------


def _retries(value: Any) -> Retries:
    body = _object(
        "retries", value, required={"max_attempts"}, known={"max_attempts", "on", "backoff"}
    )
    attempts = _integer("retries.max_attempts", body["max_attempts"], 1, MAX_ATTEMPTS)
    on = _statuses("retries.on", body.get("on", sorted(RETRYABLE)), RETRYABLE)
    backoff = _number("retries.backoff", body.get("backoff", 0), 0, math.inf)
    return Retries(attempts, on, float(backoff))


def _timeout(value: Any) -> Timeout:
    body = _object("timeout", value, required={"in_progress"}, known={"in_progress"})
    return Timeout(float(_number("timeout.in_progress", body["in_progress"], 1, math.inf)))


def _rollout(value: Any) -> Rollout:
    either = "give max_per_minute, or base_per_minute, increment_factor and after_succeeded"
    if value == {}:
        raise InvalidMessage(f"rollout is empty: {either}.", field="rollout")
    if isinstance(value, dict) and "max_per_minute" in value:
        body = _object(
            "rollout", value, required={"max_per_minute"}, known={"max_per_minute"}, hint=either
        )
        rate = _integer("rollout.max_per_minute", body["max_per_minute"], 1, MAX_PER_MINUTE)
        return Rollout(float(rate))
    body = _object(
        "rollout",
        value,
        required={"base_per_minute", "increment_factor", "after_succeeded"},
        known={"base_per_minute", "increment_factor", "after_succeeded"},
        hint=either,
    )
    base = _integer("rollout.base_per_minute", body["base_per_minute"], 1, MAX_PER_MINUTE)
    factor = _number("rollout.increment_factor", body["increment_factor"], 1.1, 5)
    succeeded = _integer("rollout.after_succeeded", body["after_succeeded"], 1, 1_000_000)
    return Rollout(float(base), float(factor), succeeded)


def _abort(value: Any) -> Abort:
    body = _object(
        "abort",
        value,
        required={"failure_percentage", "min_executed"},
        known={"failure_percentage", "min_executed", "on"},
    )
    percentage = body["failure_percentage"]
    if type(percentage) not in (int, float) or not 0 < percentage <= 100:  # NaN is not
        raise InvalidMessage(
            "abort.failure_percentage must be a number above 0, at most 100.", field="abort"
        )
    executed = _integer("abort.min_executed", body["min_executed"], 1, 1_000_000)
    on = _statuses("abort.on", body.get("on", ["failed"]), ABORTING)
    return Abort(float(percentage), executed, on)


def _object(
    name: str, value: Any, *, required: set[str], known: set[str], hint: str = ""
) -> dict[str, Any]:
    if type(value) is not dict:
        raise InvalidMessage(f"{name} must be a JSON object.", field=name)
    unknown = sorted(set(value) - known)
    if unknown:
        raise InvalidMessage(
            f"{name} has no field {unknown[0]!r}" + (f": {hint}." if hint else "."), field=name
        )
    missing = sorted(required - set(value))
    if missing:
        raise InvalidMessage(
            f"{name}.{missing[0]} is required" + (f": {hint}." if hint else "."), field=name
        )
    return value


def _integer(name: str, value: Any, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise InvalidMessage(
            f"{name} must be a whole number from {low} to {high}.", field=name.split(".")[0]
        )
    return value


def _number(name: str, value: Any, low: float, high: float) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or not low <= value <= high:
        bound = "" if high == math.inf else f" to {high:g}"
        raise InvalidMessage(
            f"{name} must be a number from {low:g}{bound}.", field=name.split(".")[0]
        )
    return value


def _statuses(name: str, value: Any, allowed: frozenset[str]) -> frozenset[str]:
    if type(value) is not list or not value or any(type(item) is not str for item in value):
        raise InvalidMessage(
            f"{name} must be a list of: {', '.join(sorted(allowed))}.", field=name.split(".")[0]
        )
    unknown = [item for item in value if item not in allowed]
    if unknown:
        raise InvalidMessage(
            f"{name} takes {', '.join(sorted(allowed))}, not {unknown[0]!r}.",
            field=name.split(".")[0],
        )
    return frozenset(value)


def check_option(name: str, value: Any) -> None:
    """Refuse a job option that does not read (``InvalidMessage`` naming it), alone: the
    bounds that depend on the rest of the task (TASK_TTL, an any-one task) are ``job_meta``'s."""
    parse = {"retries": _retries, "timeout": _timeout, "rollout": _rollout, "abort": _abort}[name]
    _checked(name, parse, value)


def _checked(name: str, parse: Any, value: Any) -> Any:
    try:
        return parse(value)
    except InvalidMessage as error:
        raise InvalidMessage(error.message, field=name) from None


def _quietly(parse: Any, value: Any) -> Any:
    if value is None:
        return None
    try:
        return parse(value)
    except (InvalidMessage, ValueError, TypeError):
        return None
