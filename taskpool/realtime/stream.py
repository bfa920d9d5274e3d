"""The event stream: the messages of a scope after a cursor, replayed, then live.

Reading is driven by the cursor alone: each look reads the pool after the
last position read, so a replay runs straight into the live part with no gap
and no duplicate, whatever woke the stream. A look that meets a database that
does not answer is tried again every ``RETRY_SECONDS`` from the same cursor,
keep-alives going on meanwhile: the stream outlives an outage with nothing
lost, instead of ending every listener's connection at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from django.db import DatabaseError

from taskpool.exceptions import InvalidCursor
from taskpool.metrics import waiting
from taskpool.realtime import sse
from taskpool.realtime.hub import hub_for
from taskpool.realtime.scope import Scope, StreamFilter
from taskpool.stores.base import BaseStore

logger = logging.getLogger("taskpool.realtime")

#: Seconds of silence after which a keep-alive comment is sent.
KEEP_ALIVE_SECONDS = 15.0
#: How often a stream that was not woken moves its cursor past what others were sent.
CATCH_UP_SECONDS = 1.0
#: How often the stream served without an event loop (WSGI) looks for new lines.
SYNC_POLL_SECONDS = 0.25
#: How long a stream goes on after it last found its listener admitted before it asks
#: again (before an event, and at a keep-alive): a token revoked, a device invalidated
#: or a role taken away ends the stream within this, or at its next keep-alive.
ADMISSION_SECONDS = 1.0
#: Seconds between two looks at a pool whose database does not answer.
RETRY_SECONDS = 1.0
#: About the most a stream hands the server at once: a client that reads slowly then holds
#: up the stream (the server's flow control), not the pool's next messages in memory.
CHUNK_BYTES = 64 * 1024
#: Messages a stream reads at a time: from ``FIRST_PAGE``, doubled while a read fills no
#: chunk (small messages, a long catch-up), quartered when one does (messages of tens of
#: kilobytes, of which a read of 500 would hold 30 MB to send a few), within these bounds.
FIRST_PAGE, MIN_PAGE, MAX_PAGE = 64, 4, 500


def next_page(page: int, chunk: bytes, more: bool) -> int:
    """How many messages a stream reads next, after a read of ``page`` gave ``chunk``."""
    if more and len(chunk) >= CHUNK_BYTES:
        return max(MIN_PAGE, page // 4)
    if more:
        return min(MAX_PAGE, page * 2)
    return page


def read_events(
    store: BaseStore, stream_filter: StreamFilter, cursor: str | None, limit: int = MAX_PAGE
) -> tuple[bytes, str | None, bool]:
    """The events after ``cursor`` this stream carries (``limit`` messages read, or about
    ``CHUNK_BYTES`` of events), where it got to, and whether more follow.

    The filter follows who holds each any-one task as it reads: a lookup that
    fails partway (the database went away) ends the page before that message,
    so the next read starts there and no message is judged twice.
    """
    page = store.messages_after(cursor, limit=limit)
    events: list[bytes] = []
    size = 0
    for entry in page.entries:
        if size >= CHUNK_BYTES:  # the rest at the next read, once this chunk is taken
            return b"".join(events), cursor, True
        try:
            carried = stream_filter.carries(entry.message)
        except DatabaseError:
            if entry is page.entries[0]:
                raise
            return b"".join(events), cursor, True
        if carried:
            events.append(sse.event(entry.cursor, stream_filter.as_carried(entry.message)))
            size += len(events[-1])
        cursor = entry.cursor
    return b"".join(events), page.next_cursor, page.has_more


async def events(
    store: BaseStore,
    scope: Scope,
    cursor: str | None,
    *,
    keep_alive: float = KEEP_ALIVE_SECONDS,
    admitted: Callable[[], Awaitable[bool]] | None = None,
) -> AsyncIterator[bytes]:
    """The stream for ``scope`` from ``cursor`` on, until its listener is no longer
    ``admitted`` (asked at most every ``ADMISSION_SECONDS``); for an event loop (ASGI).

    A keep-alive comment follows ``keep_alive`` seconds of silence.
    """
    stream_filter = StreamFilter(scope, store)
    loop = asyncio.get_running_loop()
    hub = hub_for(store)
    admitted_at = loop.time()

    async def still_admitted() -> bool:
        nonlocal admitted_at
        if admitted is None or loop.time() - admitted_at < ADMISSION_SECONDS:
            return True
        if not await admitted():
            return False
        admitted_at = loop.time()
        return True

    async with hub.waiter(scope) as waiter:
        with waiting("stream"):
            yield sse.OPENED
            quiet_until = loop.time() + keep_alive
            failing = False
            page = FIRST_PAGE
            while True:
                waiter.clear()
                try:
                    chunk, cursor, more = await asyncio.to_thread(
                        read_events, store, stream_filter, cursor, page
                    )
                    page = next_page(page, chunk, more)
                except InvalidCursor:
                    logger.warning(
                        "taskpool: a stream's position %s went away; closing it.", cursor
                    )
                    return
                except DatabaseError:
                    failing = _log_failure(failing)
                    await asyncio.sleep(RETRY_SECONDS)
                    if loop.time() >= quiet_until:
                        yield sse.KEEP_ALIVE  # the listener's admission cannot be asked now
                        quiet_until = loop.time() + keep_alive
                    continue
                failing = False
                if chunk:
                    if not await still_admitted():
                        return
                    yield chunk
                    quiet_until = loop.time() + keep_alive
                if more:
                    continue
                while not await waiter.wait(min(CATCH_UP_SECONDS, quiet_until - loop.time())):
                    # Not woken: what others were sent since need not be read again.
                    cursor = hub.resume_point(cursor)
                    if loop.time() >= quiet_until:
                        if not await still_admitted():
                            return
                        yield sse.KEEP_ALIVE
                        quiet_until = loop.time() + keep_alive


def sync_events(
    store: BaseStore,
    scope: Scope,
    cursor: str | None,
    *,
    keep_alive: float = KEEP_ALIVE_SECONDS,
    admitted: Callable[[], bool] | None = None,
) -> Iterator[bytes]:
    """The same stream for a thread of its own (WSGI, ``runserver``): it polls the pool."""
    stream_filter = StreamFilter(scope, store)
    admitted_at = time.monotonic()

    def still_admitted() -> bool:
        nonlocal admitted_at
        if admitted is None or time.monotonic() - admitted_at < ADMISSION_SECONDS:
            return True
        if not admitted():
            return False
        admitted_at = time.monotonic()
        return True

    with waiting("stream"):
        yield sse.OPENED
        quiet_until = time.monotonic() + keep_alive
        failing = False
        page = FIRST_PAGE
        while True:
            try:
                chunk, cursor, more = read_events(store, stream_filter, cursor, page)
                page = next_page(page, chunk, more)
            except InvalidCursor:
                logger.warning("taskpool: a stream's position %s went away; closing it.", cursor)
                return
            except DatabaseError:
                failing = _log_failure(failing)
                time.sleep(RETRY_SECONDS)
                if time.monotonic() >= quiet_until:
                    yield sse.KEEP_ALIVE
                    quiet_until = time.monotonic() + keep_alive
                continue
            failing = False
            if chunk:
                if not still_admitted():
                    return
                yield chunk
                quiet_until = time.monotonic() + keep_alive
            if more:
                continue
            if time.monotonic() >= quiet_until:
                if not still_admitted():
                    return
                yield sse.KEEP_ALIVE
                quiet_until = time.monotonic() + keep_alive
            time.sleep(SYNC_POLL_SECONDS)


def _log_failure(failing: bool) -> bool:
    """Log a look that met a database that does not answer, once per spell of them."""
    if not failing:
        logger.warning(
            "taskpool: a stream cannot read the pool's database; it tries again every %s s.",
            RETRY_SECONDS,
            exc_info=True,
        )
    return True
