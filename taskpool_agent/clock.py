"""How long a handler has run, measured so that a step of the wall clock does not change it.

A device's wall clock steps: a Raspberry Pi has no real-time clock, boots with
the time it saved at its last shutdown (fake-hwclock) or with 1970, and NTP
steps it forward by days or years minutes later; clocks step back too. A
timeout counted on that clock kills a handler at once, or never.

So a handler's start is kept (in its journal entry) on the monotonic clock
too, which no step moves, with the id of the boot it counts from: an agent
restarted while the handler runs (the same boot) counts its time on it. The
wall clock is the fallback, for an entry of another boot (its handler ended
with the machine) or one written without it, never counted below zero.

The token's age is not told by that wall clock either: its ``iat`` and ``exp``
are the server's times. ``ServerClock`` reads the server's time off the ``Date``
of its latest answer, run on since on the monotonic clock.
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

#: The kernel's id of this boot: the monotonic clock counts from the boot it names.
BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"


def boot_id() -> str | None:
    """This boot's id; ``None`` where the kernel does not say (not Linux)."""
    try:
        with open(BOOT_ID_PATH, encoding="ascii") as file:
            return file.read().strip() or None
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Start:
    """When a handler started: on the wall clock, and on this boot's monotonic clock."""

    wall: float
    monotonic: float | None = None
    boot: str | None = None

    @classmethod
    def now(cls) -> Start:
        return cls(time.time(), time.monotonic(), boot_id())

    @classmethod
    def of(cls, entry: dict[str, Any]) -> Start:
        """The start a journal entry keeps (``as_entry``); its wall time alone for an entry
        written without the rest."""
        monotonic, boot = entry.get("started_monotonic"), entry.get("boot_id")
        return cls(
            float(entry.get("started_at", 0.0)),
            float(monotonic) if isinstance(monotonic, int | float) else None,
            boot if isinstance(boot, str) else None,
        )

    def as_entry(self) -> dict[str, Any]:
        """The fields a journal entry keeps it in."""
        return {"started_at": self.wall, "started_monotonic": self.monotonic, "boot_id": self.boot}

    def elapsed(self, until: float | None = None) -> float:
        """Seconds since the start; to ``until`` (a wall-clock time, such as a file's
        modification time) if given, but never more than since the start, nor below zero."""
        if self.monotonic is not None and self.boot is not None and self.boot == boot_id():
            since = max(0.0, time.monotonic() - self.monotonic)
        else:
            since = max(0.0, time.time() - self.wall)
        if until is None:
            return since
        return min(max(0.0, until - self.wall), since)


class ServerClock:
    """The server's time now, from the ``Date`` of the latest answer heard, plus the time
    since on this device's monotonic clock: whatever the device's wall clock says.

    A ``Date`` says whole seconds, and is stamped as the answer leaves the server:
    the time read is a second or so behind the server's, never ahead. Answers without
    one (no server the agent knows of leaves it out: HTTP asks for it) leave the
    device's wall clock to go by.
    """

    def __init__(self) -> None:
        self._date: tuple[float, float] | None = None  # the Date heard, and when (monotonic)
        self._answered = False

    def heard(self, date: str | None) -> None:
        """An answer came, with this ``Date`` header (``None``: without one)."""
        self._answered = True
        try:
            when = email.utils.parsedate_to_datetime(date) if date else None
        except (TypeError, ValueError, IndexError):
            when = None
        if when is not None:
            if when.tzinfo is None:  # "-0000": UTC, the source's zone unknown
                when = when.replace(tzinfo=UTC)
            self._date = (when.timestamp(), time.monotonic())

    def now(self) -> float | None:
        """The server's time (epoch seconds); ``None`` until the server has answered."""
        if self._date is not None:
            date, heard_at = self._date
            return date + max(0.0, time.monotonic() - heard_at)
        return time.time() if self._answered else None
