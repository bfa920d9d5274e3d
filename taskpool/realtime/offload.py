"""Blocking reads, moved off the event loop one batch at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import TypeVar

Item = TypeVar("Item")
_END = object()


async def in_worker_thread(iterator: Iterator[Item]) -> AsyncIterator[Item]:
    """Each item of a blocking iterator, fetched in a worker thread; closes it when left early."""
    try:
        while (item := await asyncio.to_thread(next, iterator, _END)) is not _END:
            yield item  # type: ignore[misc]
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
