"""Keeping time for jobs: the lines the backend writes as time passes.

A job task (``taskpool.jobs``) is owed lines that no request brings: an
attempt that timed out, a retry after the backoff, the next devices of a
rollout, an abort once failures pile up, the start of a scheduled task.
``tick()`` writes every one that is due. Each server process runs it every
``TICK_INTERVAL`` seconds in a thread, started by the first request that
reaches the pool, under WSGI and ASGI alike; ``python manage.py
taskpool_tick`` runs it for sites whose server runs no threads, or that set
``TICK_INTERVAL`` to 0 (from cron, a systemd timer, or ``--every 1``). Any
number of processes and hosts may tick at once: each line is decided under
the store's lock (``rules.transition``), so it is written once.
"""

from __future__ import annotations

import functools
import logging
import threading
import time

from django.db import DatabaseError, close_old_connections

from taskpool.conf import pool_settings
from taskpool.exceptions import StoreUnavailable
from taskpool.messages import Message
from taskpool.missing_tables import migrate_hint
from taskpool.stores import get_store
from taskpool.stores.base import BaseStore

logger = logging.getLogger("taskpool.ticker")

#: Lines written for one task in one tick at most (a rollout step writes one a line).
LINES_PER_TASK = 100
#: The store failing: every task would meet it, so a tick stops at the first.
STORE_ERRORS = (StoreUnavailable, DatabaseError, OSError)


class TickFailed(Exception):
    """Some job tasks could not be kept this tick; the others were (``written``)."""

    def __init__(self, written: list[Message], failures: list[tuple[str, Exception]]) -> None:
        named = ", ".join(f"{task_id} ({error!r})" for task_id, error in failures)
        super().__init__(f"Keeping time failed for {len(failures)} job task(s): {named}.")
        self.written = written
        self.failures = failures


def tick(
    store: BaseStore | None = None, *, registered_devices: list[str] | None = None
) -> list[Message]:
    """Write every line a job task is owed now; returns them.

    ``registered_devices`` are the devices a ``device:*`` rollout offers its
    task to; by default the validated devices (looked up only if a rollout
    to every device needs them).
    """
    store = store or get_store()
    task_ids = store.open_job_tasks()
    if not task_ids:
        return []

    @functools.cache
    def devices() -> list[str]:
        if registered_devices is not None:
            return registered_devices
        from taskpool.fleet import validated_device_ids

        return validated_device_ids()

    written: list[Message] = []
    failures: list[tuple[str, Exception]] = []
    for task_id in task_ids:
        try:
            for _ in range(LINES_PER_TASK):
                line = store.transition(task_id, devices)
                if line is None:
                    break
                written.append(line)
        except STORE_ERRORS:
            raise
        except Exception as error:  # noqa: BLE001 - one task's fault: the others are still kept
            failures.append((task_id, error))
    if failures:
        raise TickFailed(written, failures) from failures[0][1]
    return written


class Ticker:
    """This process's thread that ticks every ``TICK_INTERVAL`` seconds."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def is_running(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def ensure_running(self) -> None:
        """Start the thread, unless it runs or ``TICK_INTERVAL`` is 0 (cheap to call often)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        if pool_settings.TICK_INTERVAL.total_seconds() <= 0:
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="taskpool-tick", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        failing = False
        while True:
            interval = pool_settings.TICK_INTERVAL.total_seconds()
            if interval <= 0:
                return
            time.sleep(interval)
            close_old_connections()
            try:
                tick()
            except TickFailed as error:
                if not failing:  # once per failure, not every tick
                    logger.error(
                        "taskpool: %s The others were kept; trying again.",
                        error,
                        exc_info=error.__cause__,
                    )
                failing = True
                continue
            except Exception as error:
                if not failing:
                    hint = migrate_hint(error)
                    if hint is not None:
                        logger.error("taskpool: keeping time for jobs failed: %s", hint)
                    else:
                        logger.exception("taskpool: keeping time for jobs failed; trying again.")
                failing = True
                continue
            failing = False


ticker = Ticker()
