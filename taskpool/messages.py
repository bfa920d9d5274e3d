"""The taskpool message: its nine fields, the addressing grammar, and the
one-line JSON form it takes in a day file.

A message is a plain ``dict`` with exactly the nine keys of ``MESSAGE_KEYS``;
``Message`` names that shape for type checkers. Nothing here imports Django's
settings or models, so the store and the tests can use it on their own.
"""

from __future__ import annotations

import functools
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypedDict

import orjson

from taskpool.exceptions import InvalidMessage

Message = TypedDict(
    "Message",
    {
        "id": str,
        "ts": str,
        "from": str,
        "to": str,
        "type": str,
        "title": str,
        "body": str,
        "parent_id": str | None,
        "meta": dict[str, Any],
    },
)

MESSAGE_KEYS = ("id", "ts", "from", "to", "type", "title", "body", "parent_id", "meta")
MESSAGE_KEY_SET = frozenset(MESSAGE_KEYS)
MESSAGE_TYPES = ("task", "response", "info", "heartbeat", "error")

#: Statuses a device may send in a response.
DEVICE_STATUSES = ("progress", "done", "failed", "rejected")
#: Statuses that end a task for the device that sent them.
TERMINAL_STATUSES = frozenset({"done", "failed", "rejected"})
#: Every ``meta.status`` a response may carry.
RESPONSE_STATUSES = (*DEVICE_STATUSES, "claimed", "cancelled")

#: How deep ``meta`` may nest objects and arrays, ``meta`` itself being the first level.
#: JSON parsers take about 1,000 levels and the line encoder (orjson) stops at 255: below
#: both, every message a client may send can be stored and read back.
MAX_META_DEPTH = 32

DEVICE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MESSAGE_ID_RE = re.compile(r"msg_[0-9a-f]{32}")
#: An ``Idempotency-Key`` (kept in the message's ``meta.idempotency_key``): printable ASCII.
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,128}")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", re.ASCII)

# Characters str.splitlines() breaks on that JSON encoders leave raw: a message is one line.
_RAW_LINE_BREAKS = (
    ("\u2028".encode(), b"\\u2028"),
    ("\u2029".encode(), b"\\u2029"),
    ("\u0085".encode(), b"\\u0085"),
)


# A random 128-bit number with these bits set as RFC 9562 says is a version 4 UUID.
_UUID4_CLEAR = ~(0xF000 << 64) & ~(0xC000 << 48)
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def new_message_id() -> str:
    """A fresh message id: ``msg_`` and the 32 hex digits of a random (version 4) UUID.

    The same bits as ``uuid.uuid4().hex``, without building a ``UUID``:
    a heartbeat spent a tenth of its append in it.
    """
    return f"msg_{int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET:032x}"


_last_stamp: tuple[int, str] = (-1, "")


def format_timestamp(epoch_seconds: float) -> str:
    """UTC, second precision, ``Z`` suffix: ``2026-06-03T12:34:56Z``."""
    global _last_stamp
    second = math.floor(epoch_seconds)
    last = _last_stamp  # one read: other threads may replace it meanwhile
    if last[0] == second:
        return last[1]
    moment = time.gmtime(second)
    # Not strftime: glibc writes the year 999 as "999", which is no timestamp.
    text = (
        f"{moment.tm_year:04d}-{moment.tm_mon:02d}-{moment.tm_mday:02d}"
        f"T{moment.tm_hour:02d}:{moment.tm_min:02d}:{moment.tm_sec:02d}Z"
    )
    _last_stamp = (second, text)
    return text


def parse_timestamp(text: str) -> float:
    """Epoch seconds of a ``format_timestamp`` string; ``ValueError`` otherwise."""
    # Every task's expiry is parsed at start-up, a million lines' worth at once: the
    # minute is read once per minute (and checked by the pattern then), the seconds
    # by a table.
    if isinstance(text, str) and len(text) == 20 and text[16] == ":" and text[19] == "Z":
        second = _SECONDS.get(text[17:19])
        if second is not None:
            minute = _minute_start(text[:16])
            if minute is not None:
                return minute + second
    raise ValueError(f"not a UTC timestamp: {text!r}")


#: The seconds of a timestamp, as written: "00" to "59".
_SECONDS = {f"{second:02d}": second for second in range(60)}


@functools.lru_cache(maxsize=4096)
def _minute_start(minute: str) -> float | None:
    """Epoch seconds of ``YYYY-MM-DDTHH:MM`` UTC, or ``None`` if that is no minute."""
    if not TIMESTAMP_RE.fullmatch(minute + ":00Z"):
        return None
    hour, minutes = int(minute[11:13]), int(minute[14:16])
    if hour > 23 or minutes > 59:
        return None
    try:
        midnight = datetime.fromisoformat(minute[:10]).replace(tzinfo=UTC).timestamp()
    except ValueError:  # a day the calendar does not have
        return None
    return midnight + hour * 3600 + minutes * 60


def is_device_id(text: object) -> bool:
    """Whether ``text`` is a valid device id."""
    return isinstance(text, str) and DEVICE_ID_RE.fullmatch(text) is not None


@dataclass(frozen=True, slots=True)
class Address:
    """A parsed ``to`` or ``from`` value.

    ``kind`` is ``device``, ``user`` or ``backend``. A device address names
    either every device (``everyone``) or the devices in ``device_ids``.
    """

    kind: str
    device_ids: tuple[str, ...] = ()
    everyone: bool = False
    user: str = ""
    is_list: bool = False
    #: A list's ``device_ids`` as a set: a list may name thousands, and ``includes`` is asked
    #: of every open task for every device (pending counts, wake-ups).
    members: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.is_list:
            object.__setattr__(self, "members", frozenset(self.device_ids))

    def includes(self, device_id: str) -> bool:
        """Whether this address names the device ``device_id``."""
        if self.kind != "device":
            return False
        if self.everyone:
            return True
        if self.is_list:
            return device_id in self.members
        return self.device_ids[0] == device_id

    def __str__(self) -> str:
        if self.kind == "backend":
            return "backend"
        if self.kind == "user":
            return f"user:{self.user}"
        if self.everyone:
            return "device:*"
        if self.is_list:
            return "device:[" + ",".join(self.device_ids) + "]"
        return f"device:{self.device_ids[0]}"


@functools.lru_cache(maxsize=8192)
def parse_address(text: object) -> Address:
    """Parse ``device:<id>``, ``device:*``, ``device:[a,b]``, ``user:<name>`` or ``backend``.

    Raises ``InvalidMessage`` with a sentence a client can act on. Addresses
    are immutable, so parsed ones are kept: a fleet reuses a few thousand.
    """
    if not isinstance(text, str):
        raise InvalidMessage("An address must be a string.")
    if text == "backend":
        return Address("backend")
    scheme, colon, rest = text.partition(":")
    if not colon:
        raise InvalidMessage(
            f"{text!r} is not an address: use device:<id>, device:*, device:[<id>,...], "
            "user:<email> or backend."
        )
    if scheme == "user":
        if not rest or any(ch.isspace() or ord(ch) < 32 for ch in rest):
            raise InvalidMessage("A user address is user:<email> or user:<username>.")
        return Address("user", user=rest)
    if scheme != "device":
        raise InvalidMessage(f"Unknown address scheme {scheme!r}: use device:, user: or backend.")
    if rest == "*":
        return Address("device", everyone=True)
    if rest.startswith("["):
        if not rest.endswith("]"):
            raise InvalidMessage("A device list is written device:[<id>,<id>].")
        ids: dict[str, None] = {}  # in order, each once
        for item in rest[1:-1].split(","):
            ids[_list_item(item.strip())] = None
        return Address("device", device_ids=tuple(ids), is_list=True)
    if not is_device_id(rest):
        raise InvalidMessage(f"{rest!r} is not a device id ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}}).")
    return Address("device", device_ids=(rest,))


def _list_item(item: str) -> str:
    if item.startswith('"'):
        try:
            item = orjson.loads(item)
        except orjson.JSONDecodeError:
            raise InvalidMessage(f"{item} is not a JSON string.") from None
    if not is_device_id(item):
        if item == "":
            raise InvalidMessage("A device list has an empty entry.")
        raise InvalidMessage(f"{item!r} is not a device id ([A-Za-z0-9][A-Za-z0-9._-]{{0,63}}).")
    return item


def nests_deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests objects and arrays more than ``limit`` levels deep.

    A loop, not a recursion: the value may be nested far deeper than Python recurses.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def device_address(device_id: str) -> str:
    """The ``from`` of a device's messages."""
    return f"device:{device_id}"


def encode_line(message: Message) -> bytes:
    """The message as one day-file line: compact JSON, UTF-8, ending in ``\\n``.

    Non-ASCII text is kept as is, except the three characters that
    ``str.splitlines()`` treats as line breaks, which are escaped.
    """
    data = orjson.dumps(message)
    for raw, escaped in _RAW_LINE_BREAKS:
        if raw in data:
            data = data.replace(raw, escaped)
    return data + b"\n"


def decode_line(line: bytes) -> Message:
    """Parse one line (without its ``\\n``) into a message.

    Raises ``InvalidMessage`` for anything that is not a JSON object with
    exactly the nine keys, each of its type. Readers skip and count such lines.
    """
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise InvalidMessage("The line is not JSON.") from None
    check_message(message)
    return message


def check_message(message: Any) -> None:
    """Raise ``InvalidMessage`` unless ``message`` has the nine keys, each of its type."""
    # Spelled out: every line of the history passes here when a process starts. Nine
    # keys of which none is missing are the nine: no set of the keys is compared.
    if type(message) is not dict or len(message) != len(MESSAGE_KEY_SET):
        raise InvalidMessage(_NINE_KEYS)
    try:
        strings = (
            type(message["id"]) is str
            and type(message["ts"]) is str
            and type(message["from"]) is str
            and type(message["to"]) is str
            and type(message["type"]) is str
            and type(message["title"]) is str
            and type(message["body"]) is str
        )
        parent_id = message["parent_id"]
        meta = message["meta"]
    except KeyError:
        raise InvalidMessage(_NINE_KEYS) from None
    if not strings:
        if message.keys() != MESSAGE_KEY_SET:  # a key not looked at yet may be missing
            raise InvalidMessage(_NINE_KEYS)
        bad = next(key for key in _STRING_KEYS if type(message[key]) is not str)
        raise InvalidMessage(f"{bad} must be a string.")
    if parent_id is not None and type(parent_id) is not str:
        raise InvalidMessage("parent_id must be a string or null.")
    if type(meta) is not dict:
        raise InvalidMessage("meta must be a JSON object.")


_STRING_KEYS = ("id", "ts", "from", "to", "type", "title", "body")
_NINE_KEYS = "A message is a JSON object with exactly the nine keys."


def response_status(message: Message) -> str | None:
    """The ``meta.status`` of a response, or ``None``."""
    status = message["meta"].get("status")
    return status if type(status) is str else None


#: ``meta`` keys the server writes, left out when comparing two requests.
SERVER_META_KEYS = frozenset({"idempotency_key", "expires_at"})
#: ``meta`` keys the server writes when the client leaves them out (an answer's
#: ``attempt``): left out of the stored message when the repeat leaves them out too.
SERVER_FILLED_META_KEYS = frozenset({"attempt"})


def same_request(stored: Message, candidate: Message, *, with_parent: bool = True) -> bool:
    """Whether ``candidate`` asks for what ``stored`` was stored for (idempotent retries).

    Compares what a client chooses: the type, title, body, ``meta`` (less the
    keys the server writes), a task's ``to``, and the parent unless told not to.
    Numbers compare as JSON numbers: ``2`` and ``2.0`` are one value (a release
    that stored a job's options as floats stored ``2.0`` for a ``2`` sent).
    """
    filled = SERVER_FILLED_META_KEYS - candidate["meta"].keys()

    def chosen(message: Message) -> tuple[Any, ...]:
        meta = {
            k: _whole_numbers_as_integers(v)
            for k, v in message["meta"].items()
            if k not in SERVER_META_KEYS and k not in filled
        }
        return (
            message["type"],
            message["title"],
            message["body"],
            orjson.dumps(meta, option=orjson.OPT_SORT_KEYS),
            message["to"] if message["type"] == "task" else None,
            message["parent_id"] if with_parent else None,
        )

    return chosen(stored) == chosen(candidate)


#: Whole floats below this are written as integers when compared: each is exactly one.
_EXACT_INTEGERS = 2**53


def _whole_numbers_as_integers(value: Any) -> Any:
    """``value`` with every float that is a whole number (``2.0``) as that integer."""
    if type(value) is float:
        return int(value) if value.is_integer() and abs(value) < _EXACT_INTEGERS else value
    if type(value) is dict:
        return {key: _whole_numbers_as_integers(item) for key, item in value.items()}
    if type(value) is list:
        return [_whole_numbers_as_integers(item) for item in value]
    return value


def new_message(
    now: float,
    *,
    sender: str,
    to: str,
    kind: str,
    title: str,
    body: str,
    parent_id: str | None,
    meta: dict[str, Any],
) -> Message:
    """A message stamped with a fresh id and ``now``, its nine keys in their order."""
    return {
        "id": new_message_id(),
        "ts": format_timestamp(now),
        "from": sender,
        "to": to,
        "type": kind,
        "title": title,
        "body": body,
        "parent_id": parent_id,
        "meta": meta,
    }
