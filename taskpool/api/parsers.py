"""A strict JSON parser: ``MAX_MESSAGE_BYTES`` enforced (DRF's reads past Django's upload
limit), and a key repeated in one object refused (parsers keep the last one silently)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from rest_framework.exceptions import ParseError, UnsupportedMediaType
from rest_framework.parsers import BaseParser

from taskpool.api.errors import LengthRequired, PayloadTooLarge
from taskpool.conf import pool_settings

# Strings and the marks that open, close and separate objects and arrays: enough to find
# every key of a body that has already parsed as JSON.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|[{}\[\],]')
#: A number with this many digits may not fit in 64 bits (2**64 has 20).
_LONG_DIGITS = re.compile(rb"\d{19}")
#: Strings, and whole numbers of 19 digits or more outside them (not a float's parts).
_STRINGS_AND_INTEGERS = re.compile(rb'"(?:[^"\\]|\\.)*"|(?<![\d.eE+-])-?\d{19,}(?![.eE\d])')


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = pool_settings.MAX_MESSAGE_BYTES
        request = (parser_context or {}).get("request")
        meta = request.META if request is not None else {}
        encoding = meta.get("HTTP_CONTENT_ENCODING", "")
        if encoding.strip().lower() not in ("", "identity"):
            # Read as it is, a compressed body is "not UTF-8", and a plain one labelled
            # compressed would be stored as if the label were not there.
            raise UnsupportedMediaType(
                str(media_type),
                detail=f"The request body has Content-Encoding {encoding}: send it uncompressed.",
            )
        declared = meta.get("CONTENT_LENGTH")
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes.")
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes.")
        try:
            return strict_loads(data)
        except ValueError as error:
            try:
                data.decode()
            except UnicodeDecodeError as bad:  # JSON's text is UTF-8; orjson says "str"
                raise ParseError(
                    f"The request body is not UTF-8 (byte {bad.start}); JSON is sent as UTF-8."
                ) from None
            raise ParseError(f"The request body is not valid JSON: {error}.") from None


def refuse_body_of_unknown_length(request: Any) -> None:
    """``LengthRequired`` for a body sent without a ``Content-Length`` (chunked).

    Django reads such a body as empty, and DRF would parse it as ``{}``: a
    heartbeat would be stored without what it said, a claim would take the
    oldest task instead of the one named.
    """
    meta = request.META
    if meta.get("HTTP_TRANSFER_ENCODING") and not meta.get("CONTENT_LENGTH"):
        raise LengthRequired()


def strict_loads(data: bytes | str) -> Any:
    """JSON as the pool takes it: no ``NaN``, no lone surrogates, no key twice in an object.

    Raises ``ValueError`` with what is wrong (the admin's form shows it too).
    """
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ValueError(str(error)) from None
    if _LONG_DIGITS.search(data):
        too_big = integer_beyond_64_bits(data)
        if too_big is not None:
            raise ValueError(
                f"the whole number {too_big[:30]}{'...' if len(too_big) > 30 else ''} does not "
                "fit in 64 bits, and would be stored rounded"
            )
    if isinstance(value, dict | list):
        repeated = repeated_key(data)
        if repeated is not None:
            raise ValueError(f"the key {repeated!r} appears twice in one object")
    return value


def integer_beyond_64_bits(data: bytes) -> str | None:
    """The first whole number of ``data`` (valid JSON) that the parser turned into a float,
    because it is below -2**63 or above 2**64 - 1; ``None`` if there is none."""
    for match in _STRINGS_AND_INTEGERS.finditer(data):
        token = match.group()
        if token[0] != 0x22 and not -(2**63) <= int(token) < 2**64:
            return token.decode()
    return None


def repeated_key(data: bytes) -> str | None:
    """The first key that one object of ``data`` (valid JSON) has twice, or ``None``.

    A scan, not a recursive parse: a body may nest deeper than Python recurses.
    """
    objects: list[set[str] | None] = []  # per open object its keys; None for an array
    expecting_key = False
    for match in _TOKENS.finditer(data):
        token = match.group()
        first = token[0]
        if first == 0x22:  # a string: a key where one is expected
            if expecting_key:
                key = orjson.loads(token) if b"\\" in token else token[1:-1].decode()
                keys = objects[-1]
                if key in keys:  # type: ignore[operator]
                    return key
                keys.add(key)  # type: ignore[union-attr]
                expecting_key = False
        elif first == 0x7B:  # {
            objects.append(set())
            expecting_key = True
        elif first == 0x5B:  # [
            objects.append(None)
            expecting_key = False
        elif first == 0x2C:  # ,
            expecting_key = objects[-1] is not None
        else:  # } or ]
            objects.pop()
            expecting_key = False
    return None
