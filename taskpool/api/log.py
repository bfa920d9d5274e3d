"""The log: a day as a JSON array, pages with cursors, or the day's raw lines.

- ``?date=D`` (or nothing: today): the day's messages as a JSON array, as in the seed;
- ``?date=D&limit=N``, ``?after=C&limit=N``: a page, ``{"results", "next_cursor", "has_more"}``,
  running on into later days, so a client can page through a day and then tail the pool;
- ``?format=jsonl&date=D``: the day's lines exactly as stored, streamed as ``application/x-ndjson``.
"""

from __future__ import annotations

from typing import Any

from django.http import StreamingHttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from taskpool.api import serializers as api
from taskpool.api import views
from taskpool.api.realtime import served_by_event_loop
from taskpool.api.renderers import JSONLinesRenderer, JSONRenderer
from taskpool.archive import archived_day
from taskpool.days import day_file_name, day_of, parse_day
from taskpool.exceptions import InvalidCursor
from taskpool.realtime.offload import in_worker_thread
from taskpool.stores import get_store


class LogView(views.LogView):
    renderer_classes = [JSONRenderer, JSONLinesRenderer]

    @extend_schema(
        summary="The pool's messages: a day, a page after a cursor, or a day's raw lines",
        parameters=[
            api.LogPageQuerySerializer,
            OpenApiParameter(
                "format", str, enum=["json", "jsonl"], description="jsonl: the day's stored lines"
            ),
        ],
        responses={
            (200, "application/json"): OpenApiResponse(
                api.LogPageSerializer,
                description="With limit or after, a page; without them, the day's messages as an array.",
            ),
            (200, "application/x-ndjson"): OpenApiResponse(str, description="The day's lines."),
            **views.ERRORS,
        },
    )
    def get(self, request: Request) -> Any:
        if request.accepted_renderer.format == JSONLinesRenderer.format:
            return self.day_lines(request)
        if "after" in request.query_params or "limit" in request.query_params:
            return self.page(request)
        return super().get(request)

    def page(self, request: Request) -> Response:
        query = self.valid(api.LogPageQuerySerializer, request.query_params)
        store = get_store()
        if "after" in query:
            try:
                page = store.messages_after(query["after"], limit=query["limit"])
            except InvalidCursor as error:
                raise InvalidCursor(error.message, field="after") from None
        else:
            day = query.get("date") or day_of(store.now())
            page = store.messages_from_day(day, limit=query["limit"])
        return Response(
            {"results": page.results, "next_cursor": page.next_cursor, "has_more": page.has_more}
        )

    def day_lines(self, request: Request) -> StreamingHttpResponse:
        store = get_store()
        text = request.query_params.get("date")
        try:
            day = day_of(store.now()) if text is None else parse_day(text)
        except ValueError as error:
            raise serializers.ValidationError({"date": [str(error)]}) from None
        lines = (archived_day(store.days(), day) or store).day_lines(day)
        # Under ASGI a blocking iterator would be read to its end before sending.
        content = in_worker_thread(lines) if served_by_event_loop(request) else lines
        response = StreamingHttpResponse(content, content_type=JSONLinesRenderer.media_type)
        response["Content-Disposition"] = f'inline; filename="{day_file_name(day)}"'
        return response

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(response, Response) and response.status_code >= 400:
            # Errors are JSON, also when the client asked for JSON Lines.
            request.accepted_renderer = JSONRenderer()
            request.accepted_media_type = JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
