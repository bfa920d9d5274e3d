"""The journal: what the agent started, finished and answered, on disk, per task attempt.

Each task attempt the agent takes has a directory under ``<state_dir>/tasks/``
holding ``entry.json`` and the handler's files (its stdin, its output, its
exit status). The entry is written before the handler starts (``started``),
when it ends (``finished``, with the answer to send) and once the server has
the answer (``answered``). After a crash or a reboot the agent reads the
journal first: it sends what it had finished, waits for a handler that still
runs, and never runs an attempt it has an entry for again. The entry names the
handler's process by its pid and when it started (``pid_started``, at the boot
``boot_id`` names): by then the pid alone may be another process's.

One agent at a time keeps a journal: two would both take a task, and both run
it. The agent holds an exclusive lock on ``<state_dir>/agent.lock`` for as long
as it runs (``hold``; the kernel lets it go when the process ends, however it
ends); a second one started on the same directory stops at once
(``JournalInUse``).

Every write is a whole new file renamed into place, so a crash leaves the old
entry or the new one, never half of one. An entry the disk damaged anyway (an
SD card's bad block, a hand edit) reads as ``damaged``: the attempt may have
started, so it is never run again, and it is left on disk to be looked at.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

STARTED, FINISHED, ANSWERED = "started", "finished", "answered"
#: An entry that cannot be read: neither run again nor answered.
DAMAGED = "damaged"

#: What ``has_room`` writes: a block, as much as an entry takes.
PROBE_BYTES = 4096

#: How long answered entries are kept (a task lives at most a week by default).
KEEP_SECONDS = 8 * 24 * 3600

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")

log = logging.getLogger("taskpool_agent")


def attempt_key(task: dict[str, Any]) -> str:
    """The journal's name for this attempt of this task: ``<task id>.<attempt>``."""
    attempt = task.get("meta", {}).get("attempt") or 1
    return _UNSAFE.sub("_", f"{task['id']}.{attempt}")


class JournalInUse(Exception):
    """Another agent runs on this state directory."""


class Journal:
    def __init__(self, state_dir: Path) -> None:
        self.root = state_dir / "tasks"
        self._make_root()
        self._lock_path = state_dir / "agent.lock"
        self._damaged_seen: set[str] = set()  # said once each, not at every poll

    def _make_root(self) -> None:
        """The entries' directory, made again if it went (removed by hand, say)."""
        if not self.root.is_dir():
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            _sync_directory(self.root.parent)  # its name survives a power cut

    def hold(self) -> None:
        """Keep the journal for this process alone, until it ends (``JournalInUse`` if
        another process holds it)."""
        self._lock = only_owner(self._lock_path, f"the state directory {self._lock_path.parent}")

    def directory(self, key: str) -> Path:
        """The attempt's directory (created): the entry and the handler's files."""
        path = self.root / key
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:
            return path
        # Its name survives a power cut, with the entry written in it before the handler
        # starts: else the next boot may find no entry, and run the task again.
        _sync_directory(self.root)
        return path

    def read(self, key: str) -> dict[str, Any] | None:
        """The attempt's entry; ``None`` if it has none; ``{"state": "damaged"}`` if unreadable."""
        path = self.root / key / "entry.json"
        try:
            entry = json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            entry = None
        if _well_formed(entry):
            return entry
        if key not in self._damaged_seen:
            self._damaged_seen.add(key)
            log.warning("%s is damaged: that attempt is not run again, nor answered", path)
        return {"state": DAMAGED}

    def write(self, key: str, entry: dict[str, Any]) -> None:
        directory = self.directory(key)
        entry = {**entry, "updated_at": time.time()}
        temporary = directory / "entry.json.tmp"
        with temporary.open("w", encoding="utf-8") as file:
            json.dump(entry, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, directory / "entry.json")
        _sync_directory(directory)  # the rename itself survives a power cut

    def has_room(self) -> OSError | None:
        """``None`` if an entry can be written now, else why not (a full or read-only disk):
        asked before a step that an entry must follow (a claim), written, synced, removed."""
        probe = self.root / ".probe"
        try:
            self._make_root()
            with probe.open("wb") as file:
                file.write(b"\0" * PROBE_BYTES)
                file.flush()
                os.fsync(file.fileno())
        except OSError as error:
            return error
        finally:
            with contextlib.suppress(OSError):
                probe.unlink(missing_ok=True)
        return None

    def forget(self, key: str) -> None:
        """Remove the attempt's entry and files, as far as the disk lets: for a handler that
        could not be started, to be started later."""
        shutil.rmtree(self.root / key, ignore_errors=True)

    def unanswered(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """Entries started or finished but not answered, oldest first."""
        entries = []
        for path in self.root.iterdir():
            entry = self.read(path.name) if path.is_dir() else None
            if entry is not None and entry["state"] in (STARTED, FINISHED):
                entries.append((entry.get("started_at", 0.0), path.name, entry))
        for _, key, entry in sorted(entries, key=lambda item: (item[0], item[1])):
            yield key, entry

    def forget_old(self, now: float | None = None, keep: Collection[str] = ()) -> int:
        """Remove answered entries older than ``KEEP_SECONDS``, but those of the attempts
        in ``keep``; how many were removed.

        ``keep`` is the attempts the server still lists as pending (an answer it refused
        for good leaves its task there until it expires): their entries stay, however old
        the wall clock makes them look (NTP steps a device's clock forward by days), or
        the attempt would run again.
        """
        now = time.time() if now is None else now
        removed = 0
        for path in self.root.iterdir():
            entry = self.read(path.name) if path.is_dir() else None
            if entry is None or path.name in keep:
                continue
            if entry.get("state") == ANSWERED and now - entry["updated_at"] > KEEP_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
                removed += 1
        return removed


def _sync_directory(path: Path) -> None:
    """Sync ``path``'s own entries (names made, renamed or removed in it) to the disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def hold_config(config_path: Path) -> int | None:
    """Keep the device of ``config_path`` for this process alone, until it ends.

    The state directory's lock keeps out a second agent on the same directory only: one
    started by hand with the same config, and the default state directory where the
    service names another, would keep a journal of its own and run each task again. The
    lock is on a file beside the config, which is replaced whole when a token is saved.
    ``None`` (and a warning) where that file cannot be made: the state directory's lock
    still holds.
    """
    path = config_path.with_name(f".{config_path.name}.lock")
    try:
        return only_owner(path, f"the config {config_path}")
    except JournalInUse:
        raise
    except OSError as error:
        logging.getLogger("taskpool_agent").warning(
            "cannot lock %s (%s): a second agent with this config would not be kept out",
            path,
            error.strerror or error,
        )
        return None


def only_owner(path: Path, what: str) -> int:
    """An exclusive lock on ``path``, held by this process until it ends; ``JournalInUse``,
    saying that another agent runs with ``what``, if another process holds it."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        if error.errno != errno.EROFS:
            raise
        # A read-only file system (remounted so after an error): the lock left there still
        # keeps a second agent out, which could not journal anything either.
        descriptor = os.open(path, os.O_RDONLY)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise JournalInUse(
                f"another taskpool-agent runs with {what}: two would run each task twice."
            ) from None
        return descriptor
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip()
        os.close(descriptor)
        # Empty: it is starting just now. A pid no process has: the holder could not write
        # its own (a read-only disk), and this one is an earlier agent's.
        which = f" (pid {holder})" if holder and _alive(holder) else ""
        raise JournalInUse(
            f"another taskpool-agent{which} runs with {what}: two would run each task twice."
        ) from None
    with contextlib.suppress(OSError):  # only to be read by a person: a full disk may refuse it
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


def _alive(pid: str) -> bool:
    """Whether ``pid`` names a process that runs now (0 and below name groups, not one)."""
    try:
        number = int(pid)
        if number <= 0:
            return False
        os.kill(number, 0)
    except (ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def _well_formed(entry: Any) -> bool:
    """Whether ``entry`` is one the agent wrote: each field it reads there, of its type."""
    if not isinstance(entry, dict) or entry.get("state") not in (STARTED, FINISHED, ANSWERED):
        return False
    task, started_at, pid = entry.get("task"), entry.get("started_at", 0.0), entry.get("pid", 0)
    return (
        isinstance(task, dict)
        and isinstance(task.get("id"), str)
        and isinstance(task.get("meta", {}), dict)
        and _number(entry.get("updated_at"))
        and _number(started_at)
        and (entry["state"] != STARTED or "started_at" in entry)
        and type(pid) is int
        and type(entry.get("pid_started")) in (int, type(None))
        and (entry["state"] != FINISHED or _answer_shaped(entry.get("answer")))
    )


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _answer_shaped(answer: Any) -> bool:
    """An ``Outcome`` as the journal keeps it (``Outcome.as_dict``)."""
    return (
        isinstance(answer, dict)
        and answer.keys() == {"status", "title", "body", "meta"}
        and all(isinstance(answer[name], str) for name in ("status", "title", "body"))
        and isinstance(answer["meta"], dict)
    )
