"""Waiting in a thread of its own: the hub for blocking requests.

Through Django itself (WSGI, or Django's ASGI handler without
``taskpool.asgi.serve_waiting``) every request has a thread, and a long-poll
blocks it. So that a thousand of them do not each look at the pool, one
watcher thread per process and store waits for changes
(``BaseStore.wait_for_changes``) and wakes only the waiting requests whose
scope the new messages concern, like the event loop's ``Hub`` does for
requests that hold no thread.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from taskpool.realtime.scope import Scope, concerned_scopes
from taskpool.stores.base import BaseStore

logger = logging.getLogger("taskpool.realtime")


class ThreadHub:
    """The blocked waiters of one store in this process, and their watcher thread."""

    #: Seconds the watcher waits for changes at a time (how soon it notices it is idle).
    wait_seconds = 1.0
    #: Seconds before trying again after the store failed to say what changed.
    retry_seconds = 0.5
    #: Seconds the watcher outlives its last waiter, so a device asking again finds it running.
    linger = 5.0

    def __init__(self, store: BaseStore) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._waiters: dict[Scope, set[threading.Event]] = {}
        self._running = threading.Event()  # set once the watcher has its starting mark
        self._watcher: threading.Thread | None = None

    @contextmanager
    def waiter(self, scope: Scope) -> Iterator[threading.Event]:
        """An event set when a message concerning ``scope`` is stored; released on leaving.

        Once this is entered, every message stored afterwards that concerns
        ``scope`` sets the event: register first, then look at the pool.
        """
        event = threading.Event()
        with self._lock:
            self._waiters.setdefault(scope, set()).add(event)
            if self._watcher is None:
                self._running.clear()
                self._watcher = threading.Thread(
                    target=self._watch, name="taskpool-watcher", daemon=True
                )
                self._watcher.start()
        self._running.wait()
        try:
            yield event
        finally:
            with self._lock:
                group = self._waiters.get(scope)
                if group is not None:
                    group.discard(event)
                    if not group:
                        del self._waiters[scope]

    def _watch(self) -> None:
        store = self.store
        try:
            mark = store.changes_since(None).mark
        except Exception:
            logger.exception("taskpool: watching the pool failed.")
            with self._lock:
                self._watcher = None  # the next waiter tries again; these look on their own
            return
        finally:
            self._running.set()
        idle_since: float | None = None
        failing = False
        while True:
            with self._lock:
                if self._waiters:
                    idle_since = None
                elif idle_since is None:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= self.linger:
                    self._watcher = None
                    return
            try:
                changes = store.wait_for_changes(mark, self.wait_seconds)
            except Exception:
                if not failing:  # once per failure, not every look
                    logger.exception("taskpool: watching the pool failed; retrying.")
                failing = True
                time.sleep(self.retry_seconds)
                continue
            failing = False
            mark = changes.mark
            scopes = concerned_scopes(changes)
            with self._lock:
                woken = [
                    event
                    for scope in (list(self._waiters) if scopes is None else scopes)
                    if scope in self._waiters and scope.concerned_by(changes)
                    for event in self._waiters[scope]
                ]
            for event in woken:
                event.set()


_hubs: weakref.WeakKeyDictionary[BaseStore, ThreadHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def thread_hub_for(store: BaseStore) -> ThreadHub:
    """This process's hub of blocked waiters for ``store``."""
    with _hubs_lock:
        hub = _hubs.get(store)
        if hub is None:
            hub = _hubs[store] = ThreadHub(store)
        return hub
