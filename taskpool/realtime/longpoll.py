"""Waiting for pending tasks: answer at once, or when a task arrives, or empty after a while."""

from __future__ import annotations

import asyncio
import time

from taskpool.messages import Message
from taskpool.metrics import waiting
from taskpool.realtime.blocking import thread_hub_for
from taskpool.realtime.hub import hub_for
from taskpool.realtime.scope import DEVICE, Scope
from taskpool.stores.base import BaseStore

#: Seconds a blocked long-poll waits for a wake-up before it looks at the pool itself.
RECHECK_SECONDS = 5.0
#: A long-poll that waited longer than this before it found tasks authenticates again
#: before it answers with them (the views do): its token may have been revoked, or its
#: device invalidated, meanwhile.
REAUTHENTICATE_AFTER_SECONDS = 1.0


async def wait_for_pending(
    store: BaseStore, device_id: str, *, limit: int, seconds: float
) -> list[Message]:
    """The tasks pending for the device, oldest first, as soon as there are any.

    At once when some are pending; else as soon as a task for the device is
    stored, by any process; else ``[]`` after ``seconds``. Holds no thread
    while it waits.
    """
    hub = hub_for(store)
    # Through the hub: devices asking together share a thread and a look at the pool.
    if seconds <= 0:
        return await hub.pending_for(device_id, limit)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    # Registered before looking: a task stored while it looks wakes it.
    async with hub.waiter(Scope(DEVICE, device_id)) as waiter:
        while True:
            waiter.clear()
            pending = await hub.pending_for(device_id, limit)
            remaining = deadline - loop.time()
            if pending or remaining <= 0:
                return pending
            with waiting("long_poll"):
                await waiter.wait(remaining)


def wait_for_pending_in_thread(
    store: BaseStore, device_id: str, *, limit: int, seconds: float
) -> list[Message]:
    """``wait_for_pending`` for a request that has a thread of its own to block.

    That is every request under WSGI, and under Django's ASGI handler when the
    site does not use ``taskpool.asgi.serve_waiting``. One watcher thread per
    process looks at the day files for all of them (``blocking.ThreadHub``).
    """
    pending = store.pending_for(device_id, limit=limit)
    if pending or seconds <= 0:
        return pending
    deadline = time.monotonic() + seconds
    # Registered before looking again: a task stored in between wakes it.
    with thread_hub_for(store).waiter(Scope(DEVICE, device_id)) as woken, waiting("long_poll"):
        while True:
            woken.clear()
            pending = store.pending_for(device_id, limit=limit)
            remaining = deadline - time.monotonic()
            if pending or remaining <= 0:
                return pending
            # Looks again now and then even unwoken: a watcher that failed to start.
            woken.wait(min(remaining, RECHECK_SECONDS))
