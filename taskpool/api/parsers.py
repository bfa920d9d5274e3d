"""A JSON parser that enforces ``MAX_MESSAGE_BYTES`` (DRF's reads past Django's upload limit)."""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from taskpool.api.errors import PayloadTooLarge
from taskpool.conf import pool_settings


class StrictJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        limit = pool_settings.MAX_MESSAGE_BYTES
        request = (parser_context or {}).get("request")
        declared = request.META.get("CONTENT_LENGTH") if request is not None else None
        if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes.")
        data = stream.read(limit + 1) if stream is not None else b""
        if len(data) > limit:
            raise PayloadTooLarge(f"The request body is over {limit} bytes.")
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as error:
            raise ParseError(f"The request body is not valid JSON ({error}).") from None
