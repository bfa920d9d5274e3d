"""Renderers: JSON through orjson."""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.renderers import BaseRenderer


class JSONRenderer(BaseRenderer):
    media_type = "application/json"
    format = "json"
    charset = None  # JSON is UTF-8 by definition

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        if data is None:
            return b""
        return orjson.dumps(data, default=str)


class JSONLinesRenderer(BaseRenderer):
    """``?format=jsonl``: JSON Lines, one value per line.

    The log streams a day's stored lines itself; this renders anything else
    a view returns (a list: one line per item).
    """

    media_type = "application/x-ndjson"
    format = "jsonl"
    charset = None

    def render(
        self, data: Any, accepted_media_type: Any = None, renderer_context: Any = None
    ) -> bytes:
        items = data if isinstance(data, list) else [data]
        return b"".join(orjson.dumps(item, default=str) + b"\n" for item in items)
