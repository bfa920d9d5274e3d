"""``PoolCommand``: the operator's commands, whose errors and stops are one line each.

A command run against a database that is down, read-only, or not migrated
yet would print Django's traceback, and so would one stopped with Ctrl-C. The operator needs the one line that
says which, and a hint for the common case, not a stack.

SIGTERM (systemd's stop, a container's stop) would end a command at once and
without a word. A command takes it as it takes Ctrl-C: one line saying what
the run left, and exit 143 (128 + 15, as a shell reports it). Work a
command marks as one unit (``unit_of_work``: a tick, a day exported or
pruned, a batch imported) is finished first; anything else stops at once.

Writes a command makes are not counted in the Prometheus metrics
(``taskpool.metrics.not_recorded``): a command's counts would be kept in files
of its own in ``PROMETHEUS_MULTIPROC_DIR``, a set at every run.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from taskpool import metrics
from taskpool.exceptions import StoreUnavailable
from taskpool.missing_tables import migrate_hint

#: Exit codes of a run stopped by Ctrl-C (SIGINT) and by SIGTERM: 128 + the signal's number.
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """SIGTERM, raised where the command stands (a ``BaseException``, as ``KeyboardInterrupt``
    is, so that no ``except Exception`` takes it for a failure of the work)."""


class PoolCommand(BaseCommand):
    #: What a stopped run leaves, said after "Interrupted:" or "Terminated:" instead of a
    #: traceback; empty when there is nothing to say.
    left_when_stopped = ""

    _in_unit = False
    _terminate_after_unit = False

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            with self._terminated_on_sigterm(), metrics.not_recorded():
                return super().execute(*args, **options)
        except KeyboardInterrupt:
            raise CommandError(self._stopped("Interrupted"), returncode=EXIT_INTERRUPTED) from None
        except Terminated:
            raise CommandError(self._stopped("Terminated"), returncode=EXIT_TERMINATED) from None
        except DatabaseError as error:
            hint = migrate_hint(error)
            if hint is not None:
                raise CommandError(hint) from error
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CommandError(f"The database: {detail}") from error
        except StoreUnavailable as error:
            raise CommandError(str(error)) from error

    def _stopped(self, how: str) -> str:
        return f"{how}: {self.left_when_stopped}" if self.left_when_stopped else f"{how}."

    @contextmanager
    def unit_of_work(self) -> Iterator[None]:
        """Finish the block before a SIGTERM that arrives during it stops the command."""
        self._in_unit = True
        try:
            yield
        finally:
            self._in_unit = False
        if self._terminate_after_unit:
            raise Terminated

    @contextmanager
    def _terminated_on_sigterm(self) -> Iterator[None]:
        # Python lets only the main thread set a handler (call_command from another
        # thread keeps the process's own).
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        self._in_unit = self._terminate_after_unit = False
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _on_sigterm(self, _signum: int, _frame: Any) -> None:
        if self._in_unit:
            self._terminate_after_unit = True
        else:
            raise Terminated
