"""Streaming a file-sized body without holding it, under WSGI and ASGI alike.

Django's ASGI handler reads a *sync* iterator to its end before sending
anything (and its WSGI handler does the same to an *async* one), so the body
is handed over in the form the server runs: an async generator that pulls
each chunk in a worker thread under ASGI, the plain iterator under WSGI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django.utils.http import content_disposition_header

_DONE = object()


def download(
    request: HttpRequest, chunks: Iterator[bytes], *, filename: str, content_type: str
) -> StreamingHttpResponse:
    """An attachment whose body is ``chunks``, read one at a time as it is sent."""
    body = _pulled_in_threads(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(body, content_type=content_type)
    response["Content-Disposition"] = content_disposition_header(True, filename)
    response["X-Content-Type-Options"] = "nosniff"
    return response


def _next_or_done(iterator: Iterator[bytes]) -> Any:
    return next(iterator, _DONE)


async def _pulled_in_threads(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    iterator = iter(chunks)
    pull = sync_to_async(_next_or_done, thread_sensitive=False)
    try:
        while (chunk := await pull(iterator)) is not _DONE:
            yield chunk
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            await sync_to_async(close, thread_sensitive=False)()
