"""Server-Sent Events: the bytes of one event, and of a keep-alive comment."""

from __future__ import annotations

from taskpool.messages import MESSAGE_TYPES, Message, encode_line

MEDIA_TYPE = "text/event-stream; charset=utf-8"
KEEP_ALIVE = b": keep-alive\n\n"
OPENED = b": stream open\n\n"
_EVENT_NAMES = {kind: kind.encode() for kind in MESSAGE_TYPES}


def event(cursor: str, message: Message) -> bytes:
    """``id:`` the cursor, ``event:`` the message type, ``data:`` the message on one line.

    The event name is one of the known message types (``message`` for any
    other, so a line's text never reaches the field), and the data is the
    message's day-file encoding, in which no line break can occur.
    """
    name = _EVENT_NAMES.get(message["type"], b"message")
    return b"id: %s\nevent: %s\ndata: %s\n" % (cursor.encode(), name, encode_line(message))
