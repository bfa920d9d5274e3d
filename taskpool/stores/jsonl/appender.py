"""``Appender``: locked, single-write appends to the day files.

Every append is one ``write()`` of one complete line to an ``O_APPEND``
descriptor, made while holding an exclusive ``flock`` on ``DATA_DIR/.lock``.
A file whose last line is torn gets a newline first, in the same write, so
the new line stays whole. The descriptor of the day being written is kept
open between appends (and reopened when the file is replaced, the day
changes, or the process forks).

A disk that cannot take a line is refused: ``StoreFull`` when it has no room
(full, over quota), ``StoreUnavailable`` when it fails. A line written short
is taken back at once, under the lock, so it never becomes half a message
that the next writer's newline would end; a line whose sync fails is not
acknowledged, and the refusal says it may be in the pool all the same.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import NamedTuple

from taskpool.exceptions import DataDirMissing, StoreFull, StoreUnavailable
from taskpool.stores.jsonl.day_files import DayFiles

LOCK_FILE_NAME = ".lock"
#: Tries at writing a line whole while another writer appends without the lock.
GLUED_RETRIES = 3


def storage_refusal(error: OSError, directory: Path) -> StoreUnavailable | None:
    """The store's refusal for a write the system refused, or ``None`` for an error of the code.

    A file the disk may not take (full, read-only, not the server's) is
    ``from_os_error``'s; a file that cannot be made because the data directory
    itself is gone is ``DataDirMissing``.
    """
    if error.errno in StoreUnavailable.STORAGE_ERRNOS:
        return StoreUnavailable.from_os_error(error)
    if error.errno == errno.ENOENT and not directory.is_dir():
        return DataDirMissing()
    return None


class Appended(NamedTuple):
    """Where a line went: its start and the offset just past it."""

    start: int
    end: int


@dataclass(slots=True)
class _Writer:
    """This process's ``O_APPEND`` descriptor on the day file it appends to."""

    day: date
    inode: int
    descriptor: int
    pid: int
    end: int = -1  # just past this process's last line in the file


class PoolLock:
    """The pool's lock as a context manager: ``with lock:`` holds the ``flock``.

    A plain class rather than ``@contextmanager``: it is taken for every
    append, and a generator costs more than the two system calls.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._descriptor = -1
        self._pid = 0

    def __enter__(self) -> None:
        if self._pid != os.getpid():
            # After a fork the inherited descriptor shares its lock with the
            # parent, which would then not exclude it: open our own.
            try:
                self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as error:  # a read-only or failing disk: the store's refusal
                refusal = storage_refusal(error, self.path.parent)
                if refusal is None:
                    raise
                raise refusal from error
            self._pid = os.getpid()
        fcntl.flock(self._descriptor, fcntl.LOCK_EX)

    def __exit__(self, *exc_info: object) -> None:
        fcntl.flock(self._descriptor, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._pid == os.getpid():
            os.close(self._descriptor)
        self._descriptor, self._pid = -1, 0


class Appender:
    """Appends lines to day files under the pool's lock.

    Not thread-safe: the store calls it under its own mutex, which also makes
    the threads of a process take turns for the ``flock`` (a lock one open
    file shares between them).
    """

    def __init__(self, files: DayFiles, *, fsync: bool) -> None:
        self.files = files
        self.fsync = fsync
        self._lock = PoolLock(files.directory / LOCK_FILE_NAME)
        self._writer: _Writer | None = None

    def locked(self) -> PoolLock:
        """The exclusive ``flock`` on ``DATA_DIR/.lock``, which every process takes to append."""
        return self._lock

    def append(
        self, day: date, line: bytes, *, inode: int | None = None, clean_end: int | None = None
    ) -> Appended:
        """Write ``line`` at the end of the day's file in one ``write()`` (hold ``locked()``).

        ``inode`` is the file's inode when the caller has just looked (it
        spares a ``stat``). ``clean_end`` says the caller knows the file ends
        with a newline at that offset, sparing the check for a torn line;
        whether the line landed right there is for the caller to compare.
        """
        try:
            return self._append(day, line, inode, clean_end)
        except OSError as error:
            refusal = storage_refusal(error, self.files.directory)
            if refusal is None:
                raise
            raise refusal from error

    def _append(self, day: date, line: bytes, inode: int | None, clean_end: int | None) -> Appended:
        writer, size = self._writer_for(day, inode)
        ended = b""
        if clean_end is None:
            if size < 0:
                size = os.lseek(writer.descriptor, 0, os.SEEK_END)
            # A file that ends where our last line ended ends with a newline.
            if size and size != writer.end and os.pread(writer.descriptor, 1, size - 1) != b"\n":
                ended = b"\n"  # end a torn line so ours stays whole
        else:
            size = clean_end
        for _ in range(GLUED_RETRIES):
            written = self._write(writer, ended + line)
            start = written - len(line)
            if (
                start - len(ended) == size
                or start == 0
                or os.pread(writer.descriptor, 1, start - 1) == b"\n"
            ):
                return Appended(start, written)
            # Bytes came in between the look at the file's end and the write, from a
            # writer that takes no lock (a large `cat >>` goes in pieces that end mid-line):
            # our line is glued to its half-line, and no reader can read it. Again, whole;
            # the glued copy stays unreadable, so no reader sees the message twice.
            size = os.lseek(writer.descriptor, 0, os.SEEK_END)
            ended = b"" if os.pread(writer.descriptor, 1, size - 1) == b"\n" else b"\n"
        raise StoreUnavailable(
            "The day file is being written without the pool's lock; try again later."
        )

    def sync(self) -> int:
        """A descriptor to ``finish`` outside the lock, or -1 without ``FSYNC``.

        Synced on a descriptor of its own: another thread may retire the
        cached one meanwhile. Writers that sync at the same time share one
        journal commit (group commit).
        """
        if not self.fsync or self._writer is None:
            return -1
        return os.dup(self._writer.descriptor)

    def finish(self, descriptor: int) -> None:
        """Sync what ``sync`` returned and close it; acknowledge the write only after."""
        if descriptor < 0:
            return
        try:
            os.fdatasync(descriptor)
        except OSError as error:
            if error.errno in StoreUnavailable.STORAGE_ERRNOS:
                # The line is in the file, where readers see it, but the disk did not say
                # it is kept: it may be lost at a crash. Other lines may follow it, so it
                # cannot be taken back; the client is told to send it again, with its key.
                refusal = StoreFull if error.errno in StoreFull.SPACE_ERRNOS else StoreUnavailable
                raise refusal(
                    f"The disk did not make the message durable ({error.strerror or error}): "
                    "it may be in the pool or not. Send it again with the same "
                    "Idempotency-Key, which stores it once."
                ) from error
            raise
        finally:
            os.close(descriptor)

    def close(self) -> None:
        self._lock.close()
        self._close_writer()

    def _writer_for(self, day: date, inode: int | None) -> tuple[_Writer, int]:
        """The kept writer for ``day``, reopened if the file was replaced, and its size if known.

        The size (-1 when not looked at) comes from the same ``stat`` that
        checked the inode, sparing an ``fstat``.
        """
        writer = self._writer
        size = -1
        if writer is not None and writer.day == day and writer.pid == os.getpid():
            if inode is None:
                try:
                    stat = os.stat(self.files.path(day))
                except FileNotFoundError:
                    pass
                else:
                    inode, size = stat.st_ino, stat.st_size
            if inode == writer.inode:
                return writer, size
        return self._open(day), -1

    def _open(self, day: date) -> _Writer:
        """Open (or create) the day's file for appending, as this process's kept writer."""
        self._close_writer()
        path = self.files.path(day)
        flags = os.O_RDWR | os.O_APPEND | os.O_CLOEXEC
        try:
            descriptor = os.open(path, flags)
        except FileNotFoundError:
            descriptor = os.open(path, flags | os.O_CREAT, 0o644)
            if self.fsync:
                self._sync_directory()
        self._writer = _Writer(day, os.fstat(descriptor).st_ino, descriptor, os.getpid())
        return self._writer

    def _close_writer(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and writer.pid == os.getpid():
            os.close(writer.descriptor)

    def _write(self, writer: _Writer, line: bytes) -> int:
        """One ``write()`` of ``line``; returns the file offset just past it."""
        written = os.write(writer.descriptor, line)
        if written != len(line):
            # The disk took part of the line: take it back (no reader reads past the
            # last newline, and this process holds the lock), keeping a newline that
            # ended another writer's torn line.
            start = os.lseek(writer.descriptor, 0, os.SEEK_CUR) - written
            kept = 1 if line.startswith(b"\n") and written else 0
            with contextlib.suppress(OSError):  # if not, a torn line, which readers skip
                os.ftruncate(writer.descriptor, start + kept)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        writer.end = os.lseek(writer.descriptor, 0, os.SEEK_CUR)
        return writer.end

    def _sync_directory(self) -> None:
        """Make a new file's name durable too."""
        descriptor = os.open(self.files.directory, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
