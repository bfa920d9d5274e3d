"""``taskpool_export DIR [--since D] [--until D]``: the pool's messages as day files in DIR."""

from __future__ import annotations

import argparse
import os
from datetime import date
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.template.defaultfilters import pluralize

from taskpool.archive import configured_archive
from taskpool.days import day_file_name, note_pruned_before, parse_day
from taskpool.management.base import PoolCommand
from taskpool.management.progress import add_progress_argument, progress_bar
from taskpool.stores import get_store


def day_argument(text: str) -> date:
    """A day on the command line; a bad one is a usage error (argparse's message, exit 2)."""
    try:
        return parse_day(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _reason(error: OSError) -> str:
    """The system's words, and the file when it names one."""
    return f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")


class Command(PoolCommand):
    left_when_stopped = "the day files written so far are whole; run it again for the rest."
    help = (
        "Write the pool's messages as day files (YYYY-MM-DD.jsonl, one message a line) in DIR, "
        "which a JSON Lines store can read and taskpool_import can load. A day file already in "
        "DIR is replaced whole."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", help="Where to write the day files (created if needed).")
        parser.add_argument("--since", type=day_argument, help="First day to export (YYYY-MM-DD).")
        parser.add_argument("--until", type=day_argument, help="Last day to export (YYYY-MM-DD).")
        add_progress_argument(parser)

    def handle(self, *args: Any, directory: str, **options: Any) -> None:
        store = get_store()
        target = Path(directory).resolve()
        own = getattr(store, "directory", None)
        if own is not None and Path(own).resolve() == target:
            raise CommandError("DIR is the pool's own DATA_DIR: export somewhere else.")
        since, until = options["since"] or date.min, options["until"] or date.max
        if since > until:
            raise CommandError(f"--since {since} is after --until {until}: no day is in between.")
        try:
            target.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise CommandError(f"Cannot make {target}: {error.strerror}.") from None
        days = [day for day in store.days() if since <= day <= until]
        total = None  # a database's days are not sized first: that would read them twice
        if store.supports_day_files:
            try:
                # Sized by their files' bytes (count_limit=0: no file is read through,
                # only its last line), so a day file it cannot read is found before
                # anything is written.
                summaries = store.day_summaries(days, count_limit=0)
            except OSError as error:  # a day file it cannot read: no traceback
                raise CommandError(
                    f"Cannot export: {_reason(error)}. Nothing was written."
                ) from None
            total = sum(summary.size for summary in summaries)
        written = 0
        with progress_bar(options, total=total, unit="B", label="export") as bar:
            for day in days:
                try:
                    with self.unit_of_work():
                        lines = self._write_day(store, day, target / day_file_name(day), bar)
                except OSError as error:  # a day it cannot read, or DIR full: no traceback
                    raise CommandError(
                        f"Cannot export {day}: {_reason(error)}. The export is not whole."
                    ) from None
                if not lines and day not in store.days():
                    # Pruned since it was listed: written empty, it would stand for the day
                    # (a restored pool's own day hides the archive's).
                    (target / day_file_name(day)).unlink(missing_ok=True)
                    raise CommandError(
                        f"Cannot export {day}: it left the pool meanwhile (pruned?). The export "
                        "is not whole: run it again."
                    )
                written += lines
        if days:
            # The pool's days before these are not here (pruned, or not asked for): an
            # answer near the start may answer a task of one of them, which verify then
            # does not take for an answer to no task.
            note_pruned_before(target, days[0])
        self.stdout.write(
            f"Exported {written} line{pluralize(written)} in {len(days)} day file{pluralize(days)} "
            f"to {target}."
        )
        archive = configured_archive()
        if archive is not None:
            held = set(store.days())
            archived = [day for day in archive.days() if since <= day <= until and day not in held]
            if archived:
                # Pruned days are not the pool's to export: a backup made of this alone
                # would lack them without a word.
                self.stdout.write(
                    f"{len(archived)} day{pluralize(archived)} in the range ({archived[0]} to "
                    f"{archived[-1]}) {pluralize(archived, 'is,are')} in the archive, not in the "
                    f"pool: copy {pluralize(archived, 'it,them')} from {archive.directory}."
                )

    def _write_day(self, store: Any, day: date, path: Path, bar: Any) -> int:
        """Write one day through a temporary file, renamed into place once whole."""
        partial = path.with_name(f".{path.name}.partial")
        lines = 0
        try:
            with open(partial, "wb") as file:
                for chunk in store.day_lines(day):
                    file.write(chunk)
                    lines += chunk.count(b"\n")
                    bar.update(len(chunk))
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return lines
