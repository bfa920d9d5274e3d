"""One handler process: finding it, starting it, watching it, and what its end means.

A handler is an executable in the handlers directory, named by the task's
``meta.handler``, else by the first word of its title. It gets the task as
JSON on stdin and ``meta.args`` as arguments, runs in a ``work`` directory of
its own inside the attempt's journal directory (never in the journal's files,
which a handler cleaning up after itself would take with it), in a process
group (a session) of its own, so that a timeout or a cancellation stops it and
everything it started.

It runs under a tiny ``sh`` wrapper that writes its exit status to a file, synced
before the wrapper exits: an agent that was killed and restarted, or a device
that lost power after the handler's end, still learns how a handler it started
has ended.

Exit status 0 is ``done``, 65 (``EX_DATAERR``) ``rejected``, anything else
``failed``; the last 1 KiB of its output (stdout and stderr) is the answer's
body. A line ``progress: <text>`` is a progress report; a line
``step-timeout: <seconds>`` asks the server for that much more time for the
next step of a job with a timeout (sent at once, with the latest progress).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from taskpool_agent.clock import boot_id

EX_DATAERR = 65
TAIL_BYTES = 1024
#: The longest file name (bytes) Linux file systems take.
NAME_MAX = 255
#: What is kept of a handler's output once its answer is stored (for a person to look at).
KEPT_OUTPUT_BYTES = 1 << 16
#: The handler's output is read this much at a time, and at most ``READ_BUDGET`` a look.
READ_CHUNK = 1 << 16
READ_BUDGET = 1 << 24
#: Of a line of output not ended yet, what is kept until its end (a report is cut to 1 KiB).
UNFINISHED_LINE_BYTES = 4096
#: The handler's working directory, in the attempt's journal directory: its own to fill.
WORK_DIRECTORY = "work"
PROGRESS_PREFIX = b"progress:"
STEP_TIMEOUT_PREFIX = b"step-timeout:"
#: The shell around a handler: it marks its start (``status.started``, before the handler
#: runs, so that an agent stopped at any moment can tell a handler that never started from
#: one that did) and leaves the handler's exit status in ``status`` when it ends.
#:
#: The mark is made durable (its directory synced) before the handler runs: a device that
#: lost power while a handler ran would otherwise find no mark at the next boot, and run
#: again a handler that may already have done what it does (flashed, rebooted, paid).
#: With the mark, such a handler is answered ``failed``, interrupted, instead.
#:
#: The status is made durable before the wrapper exits, for the agent may not be there to
#: journal the answer (stopped, restarting) when the power goes: written under a temporary
#: name and synced, renamed into place, the rename synced in its directory. Found after a
#: power cut, it is whole (never an empty file that a rename reached the disk before, nor
#: one a full disk left empty: then there is none, as after a cut while it ran), and
#: a handler that ended before the cut is answered by its status, not ``failed``. The agent
#: journals the answer (synced) before sending it, so that order is all the answer needs.
#: ``sync FILE`` syncs that file with coreutils 8.24 and later and BusyBox 1.26 and later;
#: older ones ignore the arguments and sync everything, as does the fallback for a ``sync``
#: that refuses them. What it says goes to /dev/null, not into the answer's body.
#:
#: Once the handler has ended, the wrapper ignores SIGTERM: a timeout or a stop that comes
#: while it writes the status (a sync on an SD card takes a while) lets it finish, and the
#: answer is the handler's own (``HandlerProcess.kill``). It is set after the handler ends,
#: never before: the handler would inherit the ignored signal.
WRAPPER = (
    'status="$1"; shift; : > "$status.started"; '
    'sync "${status%/*}" 2>/dev/null || sync 2>/dev/null; "$@"; code=$?; trap "" TERM; '
    'echo "$code" > "$status.tmp" && { sync "$status.tmp" 2>/dev/null || sync 2>/dev/null; '
    'mv "$status.tmp" "$status"; sync "${status%/*}" 2>/dev/null || sync 2>/dev/null; }; '
    'exit "$code"'
)
WRAPPER_NAME = "taskpool-handler"


BAD_ARGUMENTS = "bad arguments"


class NoHandler(Exception):
    """The task names no handler there is (or names one badly): it is rejected.

    ``title`` is the answer's title: ``no handler``, or ``bad arguments`` for a
    handler that is there but cannot be given what the task says.
    """

    def __init__(self, message: str, title: str = "no handler") -> None:
        super().__init__(message)
        self.title = title


@dataclass
class Outcome:
    """The answer a handler's end makes: a status, a title, a body and meta."""

    status: str
    title: str
    body: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def stopped(self, title: str, meta: dict[str, Any]) -> Outcome:
        """This end, of a handler the agent stopped: ``failed`` with ``title`` and more ``meta``."""
        return Outcome("failed", title, self.body, {**self.meta, **meta})

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "title": self.title, "body": self.body, "meta": self.meta}


def find_handler(handlers: Path, task: dict[str, Any]) -> tuple[Path, list[str]]:
    """The handler's path and arguments for ``task``, or ``NoHandler`` saying why not."""
    meta = task.get("meta") or {}
    name = meta.get("handler")
    if name is None:
        words = str(task.get("title", "")).split()
        name = words[0] if words else ""
    if (
        not isinstance(name, str)
        or not name
        or "/" in name
        or "\0" in name
        or name.startswith(".")
        or len(os.fsencode(name)) > NAME_MAX
    ):
        shown = name if not isinstance(name, str) or len(name) <= 80 else name[:80] + "..."
        raise NoHandler(f"No handler: {shown!r} is not a handler name.")
    args = meta.get("args", [])
    if not isinstance(args, list) or not all(isinstance(arg, str) for arg in args):
        raise NoHandler("meta.args must be a list of strings.", BAD_ARGUMENTS)
    if any("\0" in arg for arg in args):
        raise NoHandler(
            "meta.args may not hold a NUL character: no program can be given one.", BAD_ARGUMENTS
        )
    path = handlers / name
    try:
        found = path.is_file()
        runnable = found and os.access(path, os.X_OK)
    except OSError:  # a name the file system refuses: no such handler either
        found = runnable = False
    if not found:
        raise NoHandler(f"No handler named {name} in {handlers}.")
    if not runnable:
        raise NoHandler(f"The handler {path} is not executable by the agent's user (chmod +x it).")
    return path, args


def timeout_of(task: dict[str, Any], default: float) -> float:
    """The handler's time limit, in seconds: the task's ``meta.handler_timeout``, else its
    job timeout (``meta.timeout``, ``{"in_progress": s}``, which the server also enforces),
    else ``default``."""
    meta = task.get("meta") or {}
    job_timeout = meta.get("timeout")
    for value in (
        meta.get("handler_timeout"),
        job_timeout.get("in_progress") if isinstance(job_timeout, dict) else job_timeout,
    ):
        seconds = _seconds(value)
        if seconds is not None:
            return seconds
    return default


def timed_by_server(task: dict[str, Any]) -> bool:
    """Whether the handler's time limit is its job's timeout, which the server keeps (a
    ``meta.timeout`` of ``{"in_progress": s}`` and no ``meta.handler_timeout``)."""
    meta = task.get("meta") or {}
    job_timeout = meta.get("timeout")
    return (
        _seconds(meta.get("handler_timeout")) is None
        and isinstance(job_timeout, dict)
        and _seconds(job_timeout.get("in_progress")) is not None
    )


def _seconds(value: object) -> float | None:
    """A positive number of seconds, or ``None``."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None


@dataclass(frozen=True)
class Progress:
    """What a handler reported: a text, or a step timeout (seconds) to ask the server for."""

    text: str | None = None
    step_timeout: float | None = None

    @classmethod
    def parse(cls, line: bytes) -> Progress | None:
        """The report a line of output makes, or ``None`` for any other line (or a step
        timeout that is not a number of seconds above 0)."""
        if line.startswith(PROGRESS_PREFIX):
            return cls(text=line[len(PROGRESS_PREFIX) :].strip().decode(errors="replace"))
        if line.startswith(STEP_TIMEOUT_PREFIX):
            try:
                seconds = float(line[len(STEP_TIMEOUT_PREFIX) :].strip())
            except ValueError:
                return None
            if 0 < seconds < float("inf"):
                return cls(step_timeout=seconds)
        return None


class HandlerProcess:
    """A handler running (or that ran) in ``directory``: started here or by an earlier agent."""

    def __init__(self, directory: Path, pid: int, popen: subprocess.Popen | None = None) -> None:
        self.directory = directory
        self.pid = pid  # also the process group: the wrapper leads a session of its own
        #: When its wrapper started (``process_started``): read before anything collects
        #: it, it tells this process from a later one given the same pid.
        self.started = process_started(pid) if pid else None
        self._popen = popen
        self.exited = threading.Event()
        self._code: int | None = None
        #: When (monotonic) this agent saw it end; ``None`` while it runs, or for a handler
        #: that had ended before it was adopted (its status file's time says when).
        self.seen_ending: float | None = None
        self._ended_before = popen is None and (directory / "status").exists()
        self._read_at = 0
        self._partial = b""
        if popen is not None:
            threading.Thread(target=self._wait, name="taskpool-handler-wait", daemon=True).start()

    @classmethod
    def start(
        cls, directory: Path, path: Path, args: list[str], task: dict[str, Any]
    ) -> HandlerProcess:
        """Start the handler; ``NoHandler`` for arguments no program can be given, which
        would fail so at every try, ``OSError`` for a start that may work at the next."""
        (directory / "task.json").write_text(json.dumps(task))
        for stale in ("status", "status.tmp", "status.started", "output"):
            (directory / stale).unlink(missing_ok=True)
        work = directory / WORK_DIRECTORY
        work.mkdir(exist_ok=True)
        with (
            (directory / "task.json").open("rb") as stdin,
            (directory / "output").open("wb") as out,
        ):
            try:
                popen = subprocess.Popen(
                    [
                        "/bin/sh",
                        "-c",
                        WRAPPER,
                        WRAPPER_NAME,
                        str(directory / "status"),
                        str(path),
                        *args,
                    ],
                    stdin=stdin,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=work,
                    start_new_session=True,
                )
            except OSError as error:
                if error.errno == errno.E2BIG:  # the same at every try: the task's to answer
                    raise NoHandler(
                        "meta.args are too long to give a program (Argument list too long): "
                        "Linux takes no argument over 128 KiB, and a few MiB in all.",
                        BAD_ARGUMENTS,
                    ) from error
                raise  # short of memory or processes for now: tried again
        return cls(directory, popen.pid, popen)

    @staticmethod
    def ever_started(directory: Path) -> bool:
        """Whether a handler was started in ``directory``: its wrapper marked its start, or
        (a wrapper from before the mark) it wrote output."""
        if (directory / "status.started").exists():
            return True
        output = directory / "output"
        return output.exists() and output.stat().st_size > 0

    @classmethod
    def adopt(cls, directory: Path, pid: int) -> HandlerProcess:
        """A handler an earlier agent started: watched through its status file and its pid."""
        process = cls(directory, pid)
        process._read_at = (
            (directory / "output").stat().st_size if (directory / "output").exists() else 0
        )
        return process

    def _wait(self) -> None:
        assert self._popen is not None
        code = self._popen.wait()
        self._code = 128 - code if code < 0 else code  # killed by signal n: 128 + n, as sh says
        self.seen_ending = time.monotonic()
        self.exited.set()

    def poll(self) -> bool:
        """Whether it has ended (for an adopted handler: its status file, or its process gone)."""
        ended = (self.directory / "status").exists() or not self.alive()
        if self._popen is None and not self.exited.is_set() and ended:
            if not self._ended_before:
                self.seen_ending = time.monotonic()
            self.exited.set()
        return self.exited.is_set()

    def alive(self) -> bool:
        """Whether its wrapper still runs: the process of its pid is the one adopted."""
        return still_running(self.pid, boot_id(), self.started)

    def wait(self, seconds: float) -> bool:
        if self._popen is not None:
            return self.exited.wait(seconds)
        deadline = time.monotonic() + seconds
        while not self.poll():
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.05, seconds))
        return True

    def ended_at(self) -> float | None:
        """When it ended, from its status file (``None`` while it runs, or without one)."""
        try:
            return (self.directory / "status").stat().st_mtime
        except FileNotFoundError:
            return None

    def exit_code(self) -> int | None:
        """Its exit status; ``None`` when it ended without one (killed with the machine)."""
        if self._code is not None:
            return self._code
        try:
            return int((self.directory / "status").read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def progress_lines(self) -> list[Progress]:
        """The latest ``progress:`` and ``step-timeout:`` lines printed since the last call.

        Only the latest of each kind: the reporter sends no other. The output is
        read a chunk at a time, at most ``READ_BUDGET`` bytes a call (the rest at
        the next), so a handler that prints gigabytes costs no more memory.
        """
        latest: dict[bool, Progress] = {}
        try:
            with (self.directory / "output").open("rb") as output:
                output.seek(self._read_at)
                for _ in range(READ_BUDGET // READ_CHUNK):
                    chunk = output.read(READ_CHUNK)
                    if not chunk:
                        break
                    self._read_at += len(chunk)
                    lines = (self._partial + chunk).split(b"\n")
                    # An unfinished line waits for its end; of a long one, its start is kept,
                    # which says whether it is a report.
                    self._partial = lines.pop()[:UNFINISHED_LINE_BYTES]
                    for progress in map(Progress.parse, lines):
                        if progress is not None:
                            latest[progress.text is not None] = progress
        except FileNotFoundError:
            return []
        return list(latest.values())

    def output_tail(self) -> str:
        """The last 1 KiB of its output, as text: a character the cut left half of is
        dropped, and bytes that are not UTF-8 read U+FFFD, as in a progress answer."""
        tail = _last_bytes(self.directory / "output", TAIL_BYTES)
        if tail is None:
            return ""
        data = tail[1]
        cut = 0
        while cut < min(3, len(data)) and data[cut] & 0xC0 == 0x80:  # a character's rest
            cut += 1
        return data[cut:].decode(errors="replace")

    def kill(self, grace: float = 2.0) -> bool:
        """Stop it and everything it started: SIGTERM to its group, SIGKILL after ``grace``;
        whether it had ended by itself first.

        A handler that ended in the instant it is stopped (or just before) has its
        exit status written by its wrapper, which the SIGTERM does not stop once the
        handler has ended: its status is there, and says how it ended. A wrapper
        stopped while its handler ran writes none.

        A handler adopted from an earlier agent, stopped, has no exit status to
        collect: it gets the one ``sh`` would report for the signal that ended it.
        """
        ending = signal.SIGTERM
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _group_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_alive(self.pid):
            ending = signal.SIGKILL
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        self.wait(grace)
        if (self.directory / "status").exists():
            return True
        if self._popen is None and self.exit_code() is None:
            self._code = 128 + ending
        return False


def keep_output_tail(directory: Path) -> None:
    """Cut a handler's output in ``directory`` to its last ``KEPT_OUTPUT_BYTES``: once its
    answer is stored, the journal keeps it for a person to look at, not gigabytes of it."""
    path = directory / "output"
    tail = _last_bytes(path, KEPT_OUTPUT_BYTES)
    if tail is None or tail[0] <= KEPT_OUTPUT_BYTES:
        return
    kept = path.with_name("output.tmp")
    try:
        kept.write_bytes(tail[1])
    except OSError:  # no room for a copy (the output may be what fills the disk): in place
        kept.unlink(missing_ok=True)
        with path.open("r+b") as output:
            output.truncate(0)
            output.write(tail[1])
        return
    os.replace(kept, path)


def _last_bytes(path: Path, count: int) -> tuple[int, bytes] | None:
    """The file's size and its last ``count`` bytes; ``None`` when there is no file."""
    try:
        with path.open("rb") as file:
            size = file.seek(0, os.SEEK_END)
            file.seek(max(0, size - count))
            return size, file.read()
    except FileNotFoundError:
        return None


def outcome_of(code: int | None, tail: str, seconds: float) -> Outcome:
    """The answer to an ended handler: its status from the exit code, its output tail as body."""
    meta: dict[str, Any] = {"exit_code": code, "duration": round(seconds, 3)}
    if code is None:
        meta["reason"] = (
            "The handler ended without an exit status (the device restarted, or the agent's "
            "disk was full?)."
        )
        return Outcome("failed", "interrupted", tail, meta)
    if code == 0:
        return Outcome("done", "exit 0", tail, meta)
    if code == EX_DATAERR:
        return Outcome("rejected", f"exit {code}", tail, meta)
    return Outcome("failed", f"exit {code}", tail, meta)


def process_started(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since the boot (the 22nd field of
    ``/proc/PID/stat``); ``None`` without ``/proc``, or once no process has that pid.

    With the boot's id, it tells a process from any other that gets its pid later.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            # After the command's name, which may hold spaces and parentheses itself.
            fields = stat.read().rpartition(b")")[2].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def still_running(pid: int, boot: str | None, started: int | None) -> bool:
    """Whether ``pid`` is still the handler wrapper that started at ``started`` (clock ticks
    since the boot ``boot``), as a journal entry says: not a process that got the number
    after it ended, at a later boot or at this one (another agent's handler on the host).

    Where the entry or the system does not say (an entry of an older agent, no ``/proc``),
    the command line, or else the process group, is all there is to go by.
    """
    this_boot = boot_id()
    if boot is not None and this_boot is not None and boot != this_boot:
        return False  # it ended with the machine
    if started is not None and this_boot is not None:
        return process_started(pid) == started and wrapper_alive(pid)
    return wrapper_alive(pid)


def wrapper_alive(pid: int) -> bool:
    """Whether ``pid`` is still a handler wrapper (not a process that reused the number)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return WRAPPER_NAME.encode() in cmdline.read()
    except OSError:
        return _group_alive(pid)  # no /proc: trust the group


def find_wrapper(directory: Path) -> int | None:
    """The pid of the wrapper running the handler of ``directory``, found by its command line
    (which names the directory's status file); ``None`` when none runs, or without ``/proc``.

    For a handler whose start an agent journaled but not its pid (it was stopped between).
    """
    status = str(directory / "status").encode()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return None
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                arguments = cmdline.read().split(b"\0")
        except OSError:
            continue  # ended meanwhile, or not ours to read
        if WRAPPER_NAME.encode() in arguments and status in arguments:
            return int(entry)
    return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
