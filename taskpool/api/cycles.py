"""Taking apart the reference cycles a request leaves, so its memory goes when it ends.

A DRF request is a knot of objects that point at each other: the view holds
its request and its response, whose rendering context holds the view again;
the request's parser context holds the request; a serializer's fields hold
the serializer. Django's middleware adds its own (the lazy ``user`` and the
message storage hold the request that holds them). Reference counting frees
none of it; Python's cyclic collector does, later. In a server that looks at
its oldest generation seldom (see the deployment page), a request that lived
across two younger collections waits there for the next full one: measured
on one worker answering heartbeats, 1.5 KiB a request, 130 MiB over the six
minutes to a full collection, which then took 0.9 s to walk it.

So what a request leaves is taken apart once nothing needs it: the view and
what it made once the answer is rendered (``release_after_rendering``), a
serializer's fields once it has validated (``validated``) or given an
answer's body (``represented``), a DRF request made outside a view once it
has been asked (``drf_request``), and the site's
request once its answer is closed (``release_request``, by the pool's own
threads). What remains is freed as each reference goes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rest_framework import serializers
from rest_framework.request import Request


def validated(serializer_class: type[serializers.Serializer], data: Any) -> Any:
    """``serializer_class(data=data)``'s validated data (``ValidationError`` otherwise)."""
    serializer = serializer_class(data=data)
    try:
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data
    finally:
        # ``fields`` is cached on the serializer and each field points back at it.
        serializer.__dict__.pop("fields", None)


def represented(serializer_class: type[serializers.Serializer], instance: Any) -> Any:
    """``serializer_class(instance).data``: an answer's body."""
    serializer = serializer_class(instance)
    try:
        return serializer.data
    finally:
        serializer.__dict__.pop("fields", None)


def release_after_rendering(view: Any, request: Any, response: Any) -> None:
    """Once ``response`` is rendered, let go of the view and the DRF request it made."""

    def release(rendered: Any) -> None:
        rendered.renderer_context = None
        request.parser_context = None
        view.__dict__.clear()

    response.add_post_render_callback(release)


@contextmanager
def drf_request(request: Any, **options: Any) -> Iterator[Request]:
    """DRF's ``Request`` around ``request`` for the block (it points at itself)."""
    wrapped = Request(request, **options)
    try:
        yield wrapped
    finally:
        wrapped.parser_context = None  # type: ignore[assignment]  # nothing reads it after


def release_request(request: Any) -> None:
    """Let go of what the site's middleware hung on a request whose answer is closed."""
    request.__dict__.clear()
