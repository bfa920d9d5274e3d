"""Rules a store applies to a request before it stores anything, whatever its storage."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from taskpool.exceptions import InvalidMessage, TaskClosed
from taskpool.jobs import JOB_KEYS
from taskpool.lifecycle import CANCELLED, EXPIRED
from taskpool.messages import (
    IDEMPOTENCY_KEY_RE,
    MAX_META_DEPTH,
    MESSAGE_ID_RE,
    MESSAGE_TYPES,
    Address,
    nests_deeper_than,
    parse_address,
    parse_timestamp,
)

#: ``meta`` keys the server writes on a task (``attempt`` as a job is served), and on a response.
TASK_META_RESERVED = ("expires_at", "mode", "idempotency_key", "status", "attempt", *JOB_KEYS)
RESPONSE_META_RESERVED = ("idempotency_key",)


#: What a task's ``to`` may be, as messages spell it.
TASK_ADDRESSES = "device:<id>, device:* or device:[<id>,...]"


def task_address(to: object) -> Address:
    """A task's ``to``: one device, every device, or a list of them; ``InvalidMessage`` otherwise."""
    try:
        address = parse_address(to)
    except InvalidMessage as error:
        if isinstance(to, str) and to.startswith("device:"):
            raise InvalidMessage(error.message, field="to") from None  # says what is wrong in it
        address = None
    if address is None or address.kind != "device":
        raise InvalidMessage(f"{to!r} is not a task address: use {TASK_ADDRESSES}.", field="to")
    return address


def task_title(title: object) -> str:
    """A task's title: a string with something in it (the admin lists tasks by title)."""
    if not isinstance(title, str):
        raise InvalidMessage("title must be a string.", field="title")
    if not title.strip():
        raise InvalidMessage("title must not be empty.", field="title")
    return title


def check_meta_depth(meta: Any, name: str = "meta") -> None:
    """Refuse a ``meta`` (or another object field, ``name``) nested deeper than ``MAX_META_DEPTH``."""
    if nests_deeper_than(meta, MAX_META_DEPTH):
        raise InvalidMessage(
            f"{name} may nest objects and arrays at most {MAX_META_DEPTH} levels deep.",
            field=name,
        )


def own_meta(meta: dict[str, Any] | None, reserved: tuple[str, ...]) -> dict[str, Any]:
    """A copy of a client's ``meta``, refusing keys the server writes itself and deep nesting."""
    if meta is None:
        return {}
    if type(meta) is not dict:
        raise InvalidMessage("meta must be a JSON object.", field="meta")
    check_meta_depth(meta)
    for key in reserved:
        if key in meta:
            raise InvalidMessage(f"meta.{key} is set by the server.", field="meta")
    return dict(meta)


def answer_meta(meta: dict[str, Any]) -> None:
    """Refuse ``meta`` entries of an answer that the pool reads but that do not read."""
    attempt = meta.get("attempt")
    if attempt is not None and (type(attempt) is not int or attempt < 1):
        raise InvalidMessage("meta.attempt must be a whole number from 1.", field="meta")
    step = meta.get("step_timeout")
    if step is not None and (type(step) not in (int, float) or not 0 < step < math.inf):
        raise InvalidMessage("meta.step_timeout must be a number of seconds above 0.", field="meta")


def deadline(now: float, limit: float, ttl: float | None, expires_at: datetime | None) -> float:
    """When a task posted ``now`` expires: after ``ttl``, at ``expires_at``, or after ``limit``.

    Never later than ``limit`` (``TASK_TTL``), so the day files of the horizon
    hold every task that can still be pending.
    """
    if ttl is not None and expires_at is not None:
        raise InvalidMessage("Give ttl or expires_at, not both.", field="ttl")
    if ttl is not None:
        if ttl < 1:
            raise InvalidMessage("ttl must be at least 1 second.", field="ttl")
        if ttl > limit:
            raise InvalidMessage(f"ttl may be at most {limit:g} seconds (TASK_TTL).", field="ttl")
        return now + ttl
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise InvalidMessage("expires_at must be in UTC.", field="expires_at")
        moment = expires_at.timestamp()
        if moment < now + 1:
            raise InvalidMessage("expires_at must be in the future.", field="expires_at")
        if moment > now + limit + 1:
            raise InvalidMessage(
                f"expires_at may be at most {limit:g} seconds (TASK_TTL) ahead.",
                field="expires_at",
            )
        return moment
    return now + limit


def closed_error(task_id: str, reason: str | None, meta: dict[str, Any]) -> TaskClosed:
    """The refusal for acting on a task (of ``meta``) that closed for ``reason``."""
    if reason == CANCELLED:
        return TaskClosed(f"Task {task_id} was cancelled.")
    if reason == EXPIRED:
        return TaskClosed(f"Task {task_id} has expired.")
    if "abort" in meta:
        return TaskClosed(
            f"Task {task_id} is over: its devices finished it, or the job's abort ended it."
        )
    return TaskClosed(f"Task {task_id} is already finished.")


def check_as_written(message: Any, line_bytes: int, max_message_bytes: int) -> float:
    """Refuse a decoded day-file line the pool would never have written: an id or a
    ``parent_id`` not of the pool's form, a type, address or ``ts`` that does not read, a
    title or body holding a NUL character (the API refuses one), an idempotency key the API
    would refuse, a ``meta`` nested too deep, or a line over ``MAX_MESSAGE_BYTES``. What an
    import loads, and what verify calls valid. Returns the message's time, in epoch seconds.
    """
    if not isinstance(message["id"], str) or not MESSAGE_ID_RE.fullmatch(message["id"]):
        raise InvalidMessage(f"The id {message['id']!r} is not msg_ and 32 hex digits.")
    if message["type"] not in MESSAGE_TYPES:
        raise InvalidMessage(f"The type {message['type']!r} is none of {', '.join(MESSAGE_TYPES)}.")
    try:
        moment = parse_timestamp(message["ts"])
    except ValueError:
        raise InvalidMessage(f"The ts {message['ts']!r} is not a UTC timestamp.") from None
    for key in ("from", "to"):
        parse_address(message[key])  # its own words say what is wrong
    parent_id = message["parent_id"]
    if parent_id is not None and not (
        isinstance(parent_id, str) and MESSAGE_ID_RE.fullmatch(parent_id)
    ):
        raise InvalidMessage(f"The parent_id {parent_id!r} is not msg_ and 32 hex digits.")
    for key in ("title", "body"):
        if "\x00" in message[key]:
            raise InvalidMessage(f"The {key} holds a NUL character.")
    check_meta_depth(message["meta"])
    key = message["meta"].get("idempotency_key")
    if key is not None and not (isinstance(key, str) and IDEMPOTENCY_KEY_RE.fullmatch(key)):
        raise InvalidMessage(f"The idempotency key {key!r} is not 1-128 printable ASCII.")
    if line_bytes > max_message_bytes:
        raise InvalidMessage(f"The line is over MAX_MESSAGE_BYTES ({max_message_bytes}).")
    return moment
