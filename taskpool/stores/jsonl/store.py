"""``JsonlStore``: the pool as JSON Lines day files, one per UTC day: the reference store.

Writes go through ``Appender``: one ``write()`` of one complete line, under
an exclusive ``flock`` on ``DATA_DIR/.lock``. Under that lock the store
first catches its index up with the files, so each decision of
``taskpool.stores.rules`` (a 409, a claim) is made on everything any process
wrote (``stores.jsonl.ledger``), then stamps the time and picks the day file. With ``FSYNC`` the line is synced after the lock is released, so
writers that arrive together share one sync (group commit); a write is
acknowledged only once its sync returns.

Reads: each process keeps a ``PoolIndex``, built once from the day files in
the ``TASK_TTL`` horizon and then advanced by reading only the bytes appended
since its last look, up to the last complete line (the "tail"). A file that
shrinks, is replaced, or appears older than the files already read makes the
index start over from the files. A start-up checkpoint (``stores.jsonl.checkpoint``),
written every ``CHECKPOINT_LINES`` lines, lets a new process skip replaying
the week. Reading the files for anything else (the log, pages, the admin) is
``DayFiles``'s, without the index (``stores.jsonl.file_reads``); the task
lists and pages take where each task is from the index and what it says from
the files (``stores.jsonl.task_views``).
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from django.core import checks

from taskpool.days import day_of, note_pruned_before
from taskpool.exceptions import (
    MessageTooLarge,
    PoolError,
    StoreImproperlyConfigured,
    StoreUnavailable,
)
from taskpool.management.progress import replay_bar
from taskpool.messages import Message, encode_line
from taskpool.stores.base import (
    DeviceActivity,
    HealthCheck,
    StoreFigures,
    refuse_in_horizon,
)
from taskpool.stores.changes import Changes
from taskpool.stores.jsonl import checkpoint
from taskpool.stores.jsonl.appender import Appender
from taskpool.stores.jsonl.day_files import DayFiles, refuse_broken_link
from taskpool.stores.jsonl.directory_check import (
    broken_day_links,
    creation_problem,
    directory_problem,
)
from taskpool.stores.jsonl.file_reads import DayFileReads
from taskpool.stores.jsonl.index import PoolIndex, split_position
from taskpool.stores.jsonl.ledger import IndexLedger
from taskpool.stores.jsonl.tail import CHECKPOINT_LINES, IndexTail
from taskpool.stores.jsonl.task_views import TaskViews
from taskpool.stores.overview import (
    Failure,
    HourActivity,
    PoolOverview,
    TaskDay,
    overview_window,
    window_hours,
)
from taskpool.stores.rules import Decision, Ledger

#: A write by a process whose index is older than this (seconds) catches up
#: before taking the pool's lock; a busier one has little to read under it.
CATCH_UP_UNLOCKED_AFTER = 0.5

logger = logging.getLogger("taskpool")


class JsonlStore(DayFileReads, TaskViews):
    """The pool in ``DATA_DIR/YYYY-MM-DD.jsonl`` files; see the module docstring."""

    supports_day_files = True
    #: Seconds between two looks at the day files' sizes while a watcher waits.
    change_poll_interval = 0.05
    #: Lines read between two start-up checkpoints (see ``taskpool.stores.jsonl.checkpoint``).
    checkpoint_lines = CHECKPOINT_LINES

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        task_ttl: float = 7 * 86400,
        fsync: bool = True,
        max_message_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        directory = Path(data_dir)
        if not directory.is_absolute():
            raise StoreImproperlyConfigured(f"DATA_DIR must be an absolute path, not {directory}.")
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a read-only or full disk: the store's refusal, as JSON
            if error.errno in StoreUnavailable.STORAGE_ERRNOS:
                raise StoreUnavailable.from_os_error(error) from error
            # No retry mends this (a permission, a file in the path): the log says
            # where and why, every request gets the store's refusal, not a server error.
            logger.error("The pool's data directory %s cannot be made: %s", directory, error)
            raise StoreUnavailable(
                "The pool's data directory cannot be made; the server's log says why."
            ) from error
        self.directory = directory
        self.task_ttl = float(task_ttl)
        self.max_message_bytes = max_message_bytes
        self._clock = clock
        self._mutex = threading.RLock()
        self._files = DayFiles(directory, max_message_bytes=max_message_bytes)
        self._appender = Appender(self._files, fsync=fsync)
        self._tail = IndexTail(
            # The store's clock, read through now(): tests replace it after construction.
            self._files,
            task_ttl=self.task_ttl,
            clock=self.now,
            checkpoint_lines=self.checkpoint_lines,
        )
        # On a terminal, a first start shows its replay of the week.
        self._tail.replay_progress = replay_bar
        self._ledger = IndexLedger(self._tail, self._files)
        #: Whether the index has been brought up to date once (``health(ready=True)``).
        self._index_built = False
        self._warming_up: threading.Thread | None = None

    @property
    def fsync(self) -> bool:
        """Whether each append is synced before it is acknowledged (``FSYNC``)."""
        return self._appender.fsync

    @fsync.setter
    def fsync(self, value: bool) -> None:
        self._appender.fsync = value

    @classmethod
    def from_settings(cls, settings: Any) -> JsonlStore:
        if not settings.DATA_DIR:
            raise StoreImproperlyConfigured("TASKPOOL['DATA_DIR'] is required.")
        return cls(
            settings.DATA_DIR,
            task_ttl=settings.TASK_TTL.total_seconds(),
            fsync=settings.FSYNC,
            max_message_bytes=settings.MAX_MESSAGE_BYTES,
        )

    @classmethod
    def check(cls, options: dict[str, Any]) -> list[checks.CheckMessage]:
        data_dir = options.get("DATA_DIR")
        if not data_dir:
            return [
                checks.Error(
                    "TASKPOOL['DATA_DIR'] is not set.",
                    hint="Set it to the absolute path of the directory for the day files.",
                    id="taskpool.E002",
                )
            ]
        if not isinstance(data_dir, str | os.PathLike):
            return []  # not a path at all: the settings' own check says so
        path = Path(data_dir)
        if not path.is_absolute():
            return [
                checks.Error(
                    f"TASKPOOL['DATA_DIR'] is not an absolute path: {data_dir}.",
                    id="taskpool.E003",
                )
            ]
        problem = creation_problem(path)
        if problem is not None:
            return [checks.Error(f"TASKPOOL['DATA_DIR'] {problem}", id="taskpool.E004")]
        return broken_day_links(path)

    def close(self) -> None:
        with self._mutex:
            self._appender.close()

    def now(self) -> float:
        return self._clock()

    # The index: what the tail has read -------------------------------------

    @property
    def _index(self) -> PoolIndex:
        return self._tail.index

    def _advance(self, *, checkpoint_allowed: bool = True) -> float:
        now = self._tail.advance(checkpoint_allowed=checkpoint_allowed)
        self._index_built = True
        return now

    # Operations ---------------------------------------------------------------

    def health(self, *, ready: bool = False) -> list[HealthCheck]:
        """``data_dir``: the directory takes an append (``directory_check``); then ``read``;
        ``index`` if ``ready``."""
        directory = directory_problem(self.directory)
        if directory is not None:
            return [HealthCheck("data_dir", directory)]
        checks = [HealthCheck("data_dir"), self._read_check()]
        if ready:
            checks.append(self._index_check())
        return checks

    def _read_check(self) -> HealthCheck:
        """``read``: once the index is built, it catches up with the files, as every request
        does first, so a day file the pool refuses to read fails the check as it fails them.

        Before (or while another thread holds the store), the end of the newest file is
        looked for, and the horizon's day files for one linked to nothing, which a replay
        would refuse: the check never waits for a replay.
        """
        try:
            if self._index_built and self._mutex.acquire(blocking=False):
                try:
                    self._advance(checkpoint_allowed=False)
                finally:
                    self._mutex.release()
            else:
                self.end_cursor()
                first_day = day_of(self.now() - self.task_ttl)
                for day in self._files.days():
                    if day >= first_day:
                        refuse_broken_link(self._files.path(day))
        except PoolError as error:
            return HealthCheck("read", error.message)
        except Exception:  # noqa: BLE001 - any failure is the answer; the log says why
            logger.exception("The pool cannot be read.")
            return HealthCheck("read", "The pool cannot be read.")
        return HealthCheck("read")

    def _index_check(self) -> HealthCheck:
        """Passes once the index was built; until then starts building it, in a thread of its own."""
        if self._index_built:
            return HealthCheck("index")
        with self._mutex:
            if self._warming_up is None or not self._warming_up.is_alive():
                self._warming_up = threading.Thread(
                    target=self._warm_up, name="taskpool-index", daemon=True
                )
                self._warming_up.start()
        return HealthCheck("index", "The index of the day files is still being built.")

    def _warm_up(self) -> None:
        with self._mutex:
            self._advance()

    def unfinished_bytes(self, day: date) -> int:
        with self._files.open(day) as (descriptor, complete_end):
            return 0 if descriptor is None else os.fstat(descriptor).st_size - complete_end

    def remove_day(self, day: date) -> None:
        """Deletes the day file. Nothing else needs it: the index reads only the horizon."""
        refuse_in_horizon(self, day)
        note_pruned_before(self.directory, day + timedelta(days=1))  # for taskpool_verify
        self._files.path(day).unlink(missing_ok=True)

    def figures(self) -> StoreFigures:
        with self._mutex:
            lag = self._tail.unread_bytes()  # before catching up: what this process lags
            self._advance()
            open_tasks = len(self._index.open)
        try:
            written = os.stat(self.directory / checkpoint.CHECKPOINT_FILE_NAME).st_mtime
        except OSError:
            age = None
        else:
            age = max(self._clock() - written, 0.0)
        return StoreFigures(
            open_tasks=open_tasks,
            index_lag_bytes=lag,
            checkpoint_age_seconds=age,
            disk_free_bytes=shutil.disk_usage(self.directory).free,
            stored_bytes=self._files.total_size(),
        )

    # Writing ----------------------------------------------------------------

    def transact(
        self, decide: Callable[[Ledger, float], Decision], *, reads_pool: bool = True
    ) -> Any:
        """Decide under the pool's lock, append the line ``decide`` returns, then sync it.

        The decision sees the index caught up with every process's lines.
        With ``reads_pool=False`` (heartbeats, which no decision reads) the
        writer neither catches its index up first nor takes its line into
        it: its next read does, in file order, as for any other process's
        line, so concurrent writers do not parse each other's lines under
        the lock.
        """
        with self._mutex:
            if reads_pool and not self._tail.advanced_within(CATCH_UP_UNLOCKED_AFTER):
                # Catch up before taking the pool's lock, so that only the
                # lines appended in between are read under it: a process whose
                # first request writes would otherwise replay the week while
                # every writer waits.
                self._advance()
            with self._appender.locked():
                now = self._advance(checkpoint_allowed=False) if reads_pool else self._clock()
                now = self._tail.not_behind_the_newest_day(now)
                message, result = decide(self._ledger, now)
                if message is None:
                    return result
                line = encode_line(message)
                if len(line) > self.max_message_bytes:
                    raise MessageTooLarge(
                        f"The message is {len(line)} bytes; the pool takes at most "
                        f"{self.max_message_bytes}."
                    )
                day = day_of(now)
                if reads_pool:
                    self._append_indexed(day, line, now)
                else:
                    self._appender.append(day, line)
                to_sync = self._appender.sync()
        self._appender.finish(to_sync)
        return result

    def _append_indexed(self, day: date, line: bytes, now: float) -> None:
        """Append ``line`` and take it into the index (hold the lock, the index just advanced)."""
        inode, clean_end = self._tail.append_position(day)
        appended = self._appender.append(day, line, inode=inode, clean_end=clean_end)
        self._tail.take_appended(day, line, appended, clean_end, now)

    # Reading ----------------------------------------------------------------

    def pending_for(self, device_id: str, *, limit: int = 100) -> list[Message]:
        with self._mutex:
            now = self._advance()
            return self._index.pending_for(device_id, now, limit)

    def pending_for_many(self, requests: list[tuple[str, int]]) -> list[list[Message]]:
        with self._mutex:
            now = self._advance()  # once for all of them
            index = self._index
            return [index.pending_for(device_id, now, limit) for device_id, limit in requests]

    def pending_counts(self, device_ids: list[str]) -> dict[str, int]:
        with self._mutex:
            now = self._advance()
            return {
                device_id: self._index.pending_count(device_id, now) for device_id in device_ids
            }

    def open_job_tasks(self) -> list[str]:
        with self._mutex:
            self._advance()
            return [task_id for task_id, state in self._index.open.items() if state.job is not None]

    def device_activity(self, device_ids: list[str]) -> dict[str, DeviceActivity]:
        with self._mutex:
            self._advance()
            index = self._index
            return {
                device_id: DeviceActivity(
                    index.last_message.get(device_id), index.last_heartbeat.get(device_id)
                )
                for device_id in device_ids
            }

    def overview(
        self, registered_devices: list[str], *, days: int = 7, failures: int = 10
    ) -> PoolOverview:
        """From the index's counts (``stores.jsonl.activity``) and its open tasks."""
        with self._mutex:
            now = self._advance()
            index = self._index
            activity = index.activity
            first_day, first_hour = overview_window(now, days, self.task_ttl)
            hours = [
                HourActivity(hour, *activity.hours.get(hour, ()))
                for hour in window_hours(first_hour, now)
            ]
            ordinals = range(first_day.toordinal(), day_of(now).toordinal() + 1)
            statuses = {ordinal: Counter(activity.closed_statuses(ordinal)) for ordinal in ordinals}
            oldest = None
            # Only the open tasks are looked at one by one: a closed one's statuses are counted.
            for state in index.open.values():
                if oldest is None or state.position < oldest.position:
                    oldest = state
                counts = statuses.get(split_position(state.position)[0])
                if counts is not None:
                    counts.update(state.statuses(registered_devices, now))
            task_days = []
            for ordinal in ordinals:
                records = index.days.get(ordinal)
                task_days.append(
                    TaskDay(
                        date.fromordinal(ordinal),
                        records.task_count() if records is not None else 0,
                        dict(sorted(statuses[ordinal].items())),
                    )
                )
            recent = [Failure(*entry) for entry in reversed(activity.failures[-failures:])]
            return PoolOverview(
                task_days=task_days,
                hours=hours,
                failures=recent if failures > 0 else [],
                oldest_open=None if oldest is None else oldest.task,
            )

    def find_task(self, task_id: str) -> Message | None:
        with self._mutex:
            known = self._index.locate(task_id)
            if known is None:  # perhaps stored since the index last looked
                self._advance()
                known = self._index.locate(task_id)
                if known is None:
                    return None
            return self._ledger.task_at(known)

    # Waking waiters ------------------------------------------------------

    def changes_since(self, mark: int | None) -> Changes:
        with self._mutex:
            self._advance()
            through = self._tail.through()
            return self._tail.journal.since(mark, None if through is None else str(through))

    def wait_for_changes(self, mark: int | None, timeout: float) -> Changes:
        """Looks at the day files' sizes (a few ``stat`` calls) until they grow.

        Polling ``stat`` rather than inotify: no dependency, every filesystem,
        and every way a line can arrive (another process, ``cat >>``).
        """
        deadline = time.monotonic() + timeout
        extents = self._extents()
        changes = self.changes_since(mark)
        while not (changes.messages or changes.everything or mark is None):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            time.sleep(min(self.change_poll_interval, remaining))
            current = self._extents()
            if current != extents:
                extents = current
                changes = self.changes_since(mark)
        return changes

    def _extents(self) -> tuple[int, tuple[tuple[date, int, int], ...]]:
        return self._files.extents(day_of(self._clock() - self.task_ttl))

    def stats(self) -> dict[str, int]:
        """Figures about the index: lines read, lines skipped, open tasks."""
        with self._mutex:
            self._advance()
            index = self._index
            return {
                "lines": index.lines,
                "skipped_lines": index.skipped_lines,
                "open_tasks": len(index.open),
            }
