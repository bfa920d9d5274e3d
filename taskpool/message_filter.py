"""Which messages a reader wants: by type, sender, recipient, status and text.

``MessageFilter.matches`` is the rule. ``could_match`` is a cheap test on a raw
day-file line that never refuses a line ``matches`` would take, so a store can
skip most lines of a large day without parsing them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from taskpool.exceptions import InvalidMessage
from taskpool.messages import Address, Message, parse_address, response_status

#: The fields of a message the text search looks in (and the strings of ``meta``).
TEXT_FIELDS = ("id", "from", "to", "title", "body", "parent_id")


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """Conditions a message must all meet; ``None`` (or ``""``) means any.

    - ``type``: the message type, exactly.
    - ``sender``: the ``from`` address, exactly.
    - ``recipient``: the ``to`` address exactly; a single device's address
      (``device:pi-1``) also takes ``device:*`` and lists that name the device.
    - ``status``: ``meta.status``, exactly.
    - ``text``: found, ignoring case, in the id, from, to, title, body,
      parent id, or a key or string value of ``meta``.
    """

    type: str | None = None
    sender: str | None = None
    recipient: str | None = None
    status: str | None = None
    text: str | None = None
    _device: str | None = field(init=False, default=None, repr=False, compare=False)
    _needles: tuple[bytes, ...] = field(init=False, default=(), repr=False, compare=False)
    _folded: str = field(init=False, default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("type", "sender", "recipient", "status", "text"):
            if getattr(self, name) == "":
                object.__setattr__(self, name, None)
        object.__setattr__(self, "_device", _single_device(self.recipient))
        needles = []
        for value in (self.type, self.sender, self.status):
            if value is not None:
                needles.append(orjson.dumps(value))
        if self.recipient is not None and self._device is None:
            needles.append(orjson.dumps(self.recipient))
        object.__setattr__(self, "_needles", tuple(needles))
        object.__setattr__(self, "_folded", self.text.casefold() if self.text else "")

    @property
    def is_empty(self) -> bool:
        """Whether every message matches."""
        return not (self.type or self.sender or self.recipient or self.status or self.text)

    def matches(self, message: Message) -> bool:
        """Whether ``message`` meets every condition."""
        if self.type is not None and message["type"] != self.type:
            return False
        if self.sender is not None and message["from"] != self.sender:
            return False
        if self.status is not None and response_status(message) != self.status:
            return False
        if self.recipient is not None and not self._names_recipient(message["to"]):
            return False
        if self._folded:
            return any(self._folded in text.casefold() for text in _texts(message))
        return True

    def could_match(self, line: bytes) -> bool:
        """A quick test on a raw line: ``False`` only if ``matches`` would be ``False``.

        A line with a backslash may spell a value with JSON escapes, so it
        always passes; otherwise each exact value must appear, quoted, as is.
        """
        if b"\\" in line:
            return True
        for needle in self._needles:
            if b"\\" not in needle and needle not in line:
                return False
        if self._device is not None and (
            self._device.encode() not in line and b'"device:*"' not in line
        ):
            return False
        return not self._folded or self._folded in line.decode("utf-8", "replace").casefold()

    def _names_recipient(self, to: str) -> bool:
        if to == self.recipient:
            return True
        if self._device is None:
            return False
        try:
            address = parse_address(to)
        except InvalidMessage:
            return False
        return address.includes(self._device)


def _single_device(recipient: str | None) -> str | None:
    """The device id of ``device:<id>``, or ``None`` for any other address."""
    if recipient is None:
        return None
    try:
        address: Address = parse_address(recipient)
    except InvalidMessage:
        return None
    if address.kind != "device" or address.everyone or address.is_list:
        return None
    return address.device_ids[0]


def _texts(message: Message) -> list[str]:
    texts = [message[name] or "" for name in TEXT_FIELDS]  # type: ignore[literal-required]
    _strings_in(message["meta"], texts)
    return texts


def _strings_in(value: object, found: list[str]) -> None:
    """Collect the keys and string values of a JSON value, at any depth."""
    if isinstance(value, str):
        found.append(value)
    elif isinstance(value, dict):
        for key, inner in value.items():
            found.append(key)
            _strings_in(inner, found)
    elif isinstance(value, list):
        for inner in value:
            _strings_in(inner, found)
