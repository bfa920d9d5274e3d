"""This process's waiters, and the watcher that wakes them when the pool grows.

One ``Hub`` per event loop. A request that waits registers a ``Waiter`` for
its scope, then checks the pool, then sleeps on the waiter. While any waiter
is registered, a watcher task asks the store, in a worker thread, to wait
for new messages (``BaseStore.wait_for_changes``: the JSON Lines store
looks at the day files' sizes every 50 ms, the database store listens for
its notifications) and to say whom they concern, and wakes only those
waiters. Messages stored by any process are seen the same way.

Woken waiters that look up their pending tasks (``Hub.pending_for``) are
answered together: those that ask in the same turn of the loop share one
worker thread and one look at the pool (``BaseStore.pending_for_many``), so
a ``device:*`` task that wakes every waiting device costs one thread hop,
not one per device.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from taskpool.messages import Message
from taskpool.realtime.scope import Scope, concerned_scopes
from taskpool.stores.base import BaseStore
from taskpool.stores.changes import Changes

logger = logging.getLogger("taskpool.realtime")


class Waiter:
    """One waiting request, woken when changes concern its scope."""

    __slots__ = ("scope", "_event")

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._event = asyncio.Event()

    def clear(self) -> None:
        """Forget past wake-ups: call before looking at the pool, so none is lost."""
        self._event.clear()

    def wake(self) -> None:
        self._event.set()

    @property
    def woken(self) -> bool:
        """Whether a wake-up came since the last ``clear``."""
        return self._event.is_set()

    async def wait(self, timeout: float) -> bool:
        """Sleep until woken (``True``) or for ``timeout`` seconds (``False``)."""
        if self._event.is_set():
            return True
        try:
            async with asyncio.timeout(max(timeout, 0)):
                await self._event.wait()
        except TimeoutError:
            # A wake-up in the same turn of the loop as the timeout still
            # counts: reporting a timeout would let a stream skip past the
            # very line that woke it.
            return self._event.is_set()
        return True


class Hub:
    """The waiters of one event loop, grouped by scope, and their watcher."""

    #: Seconds the watcher waits for changes at a time (how soon it notices it is idle).
    wait_seconds = 1.0
    #: Seconds the watcher outlives its last waiter, so a device asking again finds it running.
    linger = 5.0
    #: Seconds before trying again after the store failed to say what changed.
    retry_seconds = 0.5

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self._waiters: dict[Scope, set[Waiter]] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._starting: asyncio.Task[None] | None = None
        self._mark = 0
        self._failing = False
        #: Where the watcher got to: every message before it has woken whom it concerns.
        self.through: str | None = None
        #: Pending lookups asked in this turn of the loop: (device id, limit, its answer).
        self._asked: list[tuple[str, int, asyncio.Future[list[Message]]]] = []
        self._asking: asyncio.Task[None] | None = None

    async def pending_for(self, device_id: str, limit: int) -> list[Message]:
        """``store.pending_for``, in a worker thread, together with the others asking now."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[list[Message]] = loop.create_future()
        self._asked.append((device_id, limit, answer))
        if self._asking is None:
            self._asking = loop.create_task(self._answer_asked())
        return await answer

    async def _answer_asked(self) -> None:
        try:
            # One more turn: the waiters woken with this one ask in it.
            await asyncio.sleep(0)
            while self._asked:
                batch, self._asked = self._asked, []
                try:
                    answers = await asyncio.to_thread(
                        self.store.pending_for_many, [(device, limit) for device, limit, _ in batch]
                    )
                except Exception as error:  # each asker gets the store's error
                    for _device, _limit, answer in batch:
                        if not answer.done():
                            answer.set_exception(error)
                    continue
                for (_device, _limit, answer), pending in zip(batch, answers, strict=True):
                    if not answer.done():  # not cancelled: its client is still there
                        answer.set_result(pending)
        finally:
            self._asking = None

    @property
    def waiting(self) -> int:
        """How many waiters are registered."""
        return sum(len(group) for group in self._waiters.values())

    @asynccontextmanager
    async def waiter(self, scope: Scope) -> AsyncIterator[Waiter]:
        """A registered waiter for ``scope``, released on leaving (also when cancelled).

        Once this is entered, every message stored afterwards that concerns
        ``scope`` wakes the waiter.
        """
        waiter = Waiter(scope)
        self._waiters.setdefault(scope, set()).add(waiter)
        try:
            await self._watching()
            yield waiter
        finally:
            group = self._waiters.get(scope)
            if group is not None:
                group.discard(waiter)
                if not group:
                    del self._waiters[scope]

    async def _watching(self) -> None:
        """Return once the watcher runs and has its starting mark."""
        if self._watcher is not None:
            return
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._starting)

    async def _start(self) -> None:
        try:
            changes = await asyncio.to_thread(self.store.changes_since, None)
            self._mark, self.through = changes.mark, changes.through
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        finally:
            self._starting = None

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        idle_since: float | None = None
        try:
            while True:
                if self._waiters:
                    idle_since = None
                elif idle_since is None:
                    idle_since = loop.time()
                elif loop.time() - idle_since >= self.linger:
                    return
                await self._look()
        finally:
            self._watcher = None

    async def _look(self) -> None:
        try:
            changes = await asyncio.to_thread(
                self.store.wait_for_changes, self._mark, self.wait_seconds
            )
        except Exception:
            if not self._failing:  # once per failure, not every look
                logger.exception("taskpool: watching the pool failed; retrying.")
            self._failing = True
            await asyncio.sleep(self.retry_seconds)
            return
        self._failing = False
        self._mark, self.through = changes.mark, changes.through
        self._wake(changes)

    def resume_point(self, cursor: str | None) -> str | None:
        """Where a reader may go on from, having read to ``cursor`` and not been woken since.

        Call it only with a waiter that was cleared before that read and has
        not been woken: every line the watcher looked at since then concerned
        other scopes, so the reader can skip to where the watcher got to
        instead of reading those lines itself. Cursors of a store sort as
        strings in pool order.
        """
        through = self.through
        if through is None or (cursor is not None and cursor >= through):
            return cursor
        return through

    def _wake(self, changes: Changes) -> None:
        scopes = concerned_scopes(changes)
        for scope in list(self._waiters) if scopes is None else scopes:
            group = self._waiters.get(scope)
            if group and scope.concerned_by(changes):
                for waiter in group:
                    waiter.wake()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def hub_for(store: BaseStore) -> Hub:
    """The running event loop's hub for ``store`` (a new one if the store was replaced)."""
    loop = asyncio.get_running_loop()
    with _hubs_lock:
        hub = _hubs.get(loop)
        if hub is None or hub.store is not store:
            hub = _hubs[loop] = Hub(store)
        return hub
