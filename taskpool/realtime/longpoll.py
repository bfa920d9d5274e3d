"""Waiting for pending tasks: answer at once, or when a task arrives, or empty after a while."""

from __future__ import annotations

import asyncio
import time

from taskpool.messages import Message
from taskpool.realtime.hub import hub_for
from taskpool.realtime.scope import DEVICE, Scope
from taskpool.stores.base import BaseStore


async def wait_for_pending(
    store: BaseStore, device_id: str, *, limit: int, seconds: float
) -> list[Message]:
    """The tasks pending for the device, oldest first, as soon as there are any.

    At once when some are pending; else as soon as a task for the device is
    stored, by any process; else ``[]`` after ``seconds``. Holds no thread
    while it waits.
    """
    pending = await asyncio.to_thread(store.pending_for, device_id, limit=limit)
    if pending or seconds <= 0:
        return pending
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    # Registered before looking again: a task stored in between wakes it.
    async with hub_for(store).waiter(Scope(DEVICE, device_id)) as waiter:
        while True:
            waiter.clear()
            pending = await asyncio.to_thread(store.pending_for, device_id, limit=limit)
            remaining = deadline - loop.time()
            if pending or remaining <= 0:
                return pending
            await waiter.wait(remaining)


def wait_for_pending_in_thread(
    store: BaseStore, device_id: str, *, limit: int, seconds: float, interval: float = 0.05
) -> list[Message]:
    """``wait_for_pending`` for a request that has a thread of its own to block.

    That is every request under WSGI, and under Django's ASGI handler when the
    site does not use ``taskpool.asgi.serve_waiting``. Looks at the day files'
    extents every ``interval`` seconds and at the pending list when they changed.
    """
    deadline = time.monotonic() + seconds
    seen = None
    while True:
        # The extent is read before the pending list: a task stored in between
        # is in the list, or changes the extent for the next look.
        extent = store.change_signature()
        if extent != seen:
            seen = extent
            pending = store.pending_for(device_id, limit=limit)
            if pending:
                return pending
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return []
        time.sleep(min(interval, remaining))
