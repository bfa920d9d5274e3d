"""The log: a day as a JSON array, pages with cursors, or the day's raw lines.

- ``?date=D`` (or nothing: today): the whole day's messages as a JSON array;
- ``?date=D&limit=N``, ``?after=C&limit=N``: a page, ``{"results", "next_cursor", "has_more"}``,
  running on into later days, so a client can page through a day and then tail the pool;
- ``?format=jsonl&date=D``: the day's lines exactly as stored, streamed as ``application/x-ndjson``.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from taskpool.api import queries, views
from taskpool.api import serializers as api
from taskpool.api.realtime import served_by_event_loop
from taskpool.api.renderers import JSONLinesRenderer, JSONRenderer
from taskpool.archive import archived_day
from taskpool.days import day_file_name, day_of
from taskpool.exceptions import InvalidCursor
from taskpool.permissions import HasRole
from taskpool.realtime.offload import in_worker_thread
from taskpool.stores import get_store


class LogView(views.PoolAPIView):
    permission_classes = [HasRole.at_least("admin")]
    renderer_classes = [JSONRenderer, JSONLinesRenderer]
    query_serializer_class = queries.LogQuerySerializer

    @extend_schema(
        summary="The pool's messages: a day, a page after a cursor, or a day's raw lines",
        parameters=[queries.LogQuerySerializer],
        responses={
            (200, "application/json"): OpenApiResponse(
                api.LogSerializer,
                description="Without limit and after, the day's messages as an array; "
                "with either, a page.",
            ),
            (200, "application/x-ndjson"): OpenApiResponse(str, description="The day's lines."),
            **views.ERRORS,
        },
    )
    def get(self, request: Request) -> Any:
        if request.accepted_renderer.format == JSONLinesRenderer.format:
            for name in ("after", "limit"):
                if name in request.query_params:
                    # Ignored, a client would take a whole day from its start for a page.
                    raise ValidationError(
                        {name: ["A day's raw lines come whole: page in JSON, or give only date."]}
                    )
            return self.day_lines(self.day())
        if "after" in request.query_params or "limit" in request.query_params:
            return self.page()
        store, day = get_store(), self.day()
        return Response((archived_day(store.days(), day) or store).day_messages(day))

    def day(self) -> date:
        """The ``date`` asked for, or today (UTC)."""
        return self.query.get("date") or day_of(get_store().now())

    def page(self) -> Response:
        query = self.query
        store = get_store()
        if "after" in query:
            try:
                page = store.messages_after(query["after"], limit=query["limit"])
            except InvalidCursor as error:
                raise InvalidCursor(error.message, field="after") from None
        else:
            day = self.day()
            if archived_day(store.days(), day) is not None:
                # Paged, the pool would run on from its first day after it: another day's
                # messages, read as this one's.
                raise ValidationError(
                    {
                        "limit": [
                            f"{day.isoformat()} was pruned from the pool and is read from its "
                            "archive whole: give only date (or format=jsonl)."
                        ]
                    }
                )
            page = store.messages_from_day(day, limit=query["limit"])
        return Response(
            {"results": page.results, "next_cursor": page.next_cursor, "has_more": page.has_more}
        )

    def day_lines(self, day: date) -> StreamingHttpResponse:
        store = get_store()
        lines = (archived_day(store.days(), day) or store).day_lines(day)
        # Under ASGI a blocking iterator would be read to its end before sending.
        content = in_worker_thread(lines) if served_by_event_loop(self.request) else lines
        response = StreamingHttpResponse(content, content_type=JSONLinesRenderer.media_type)
        response["Content-Disposition"] = f'inline; filename="{day_file_name(day)}"'
        return response
