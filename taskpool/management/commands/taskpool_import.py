"""``taskpool_import DIR``: load day files into the pool's database, idempotently."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.template.defaultfilters import pluralize

from taskpool.conf import pool_settings
from taskpool.exceptions import InvalidMessage
from taskpool.management.base import PoolCommand
from taskpool.management.progress import add_progress_argument, progress_bar
from taskpool.messages import decode_line
from taskpool.stores import get_store
from taskpool.stores.validation import check_as_written
from taskpool.verification import archived_only, day_files, unread_files

#: Lines stored per transaction.
BATCH_LINES = 1000


def complete_lines(path: Path, totals: Counter[str]) -> Iterator[bytes]:
    """Each complete line of a file, without its newline; an unfinished last line is left
    out, and counted in ``totals["unfinished"]``."""
    with open(path, "rb") as file:
        for line in file:
            if not line.endswith(b"\n"):
                totals["unfinished"] += bool(line.strip())
            elif line.strip():
                yield line[:-1]


class Command(PoolCommand):
    left_when_stopped = (
        "the messages stored so far stay; run it again to load the rest (what is "
        "stored already is skipped)."
    )
    help = (
        "Load the day files of DIR (YYYY-MM-DD.jsonl, as a JSON Lines store or taskpool_export "
        "writes them) into a store that keeps the pool in a database. Each message keeps its id "
        "and time; one stored already is skipped, so importing twice stores nothing twice. "
        "Lines that are not messages the pool could have written (a bad id, type, address or "
        "ts, a meta nested too deep, a line over MAX_MESSAGE_BYTES) are counted and left out; "
        "the command then exits 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", help="The directory of day files to load.")
        add_progress_argument(parser)

    def handle(self, *args: Any, directory: str, **options: Any) -> None:
        store = get_store()
        if not store.supports_import:
            raise CommandError(
                f"{type(store).__name__} keeps the pool in day files already: copy the files "
                "into its DATA_DIR instead (taskpool_import loads them into a database)."
            )
        source = Path(directory)
        if not source.is_dir():
            raise CommandError(f"{directory} is not a directory.")
        only_archives = archived_only(source)
        if only_archives is not None:
            raise CommandError(only_archives)
        files = [path for _day, path in day_files(source)]
        for said in unread_files(source):  # an archive, a misnamed day: said, not imported
            self.stderr.write(said)
        for path in files:  # before anything is stored: all of it, or nothing
            if not path.is_file():
                raise CommandError(f"Cannot read {path}: it is not a file (or a broken link).")
        max_bytes = pool_settings.MAX_MESSAGE_BYTES
        totals: Counter[str] = Counter()
        total_bytes = sum(path.stat().st_size for path in files)
        with progress_bar(options, total=total_bytes, unit="B", label="import") as bar:
            for path in files:
                batch: list[bytes] = []
                for line in complete_lines(path, totals):
                    bar.update(len(line) + 1)
                    try:
                        check_as_written(decode_line(line), len(line) + 1, max_bytes)
                    except InvalidMessage:
                        totals["refused"] += 1
                        continue
                    batch.append(line)
                    if len(batch) == BATCH_LINES:
                        with self.unit_of_work():
                            totals.update(self._load(store, batch))
                        batch = []
                if batch:
                    with self.unit_of_work():
                        totals.update(self._load(store, batch))
        stored, skipped = totals["stored"], totals["skipped"]
        refused, unfinished = totals["refused"], totals["unfinished"]
        self.stdout.write(
            f"Imported {stored} message{pluralize(stored)} from {len(files)} day "
            f"file{pluralize(files)} in {source} ({skipped} already stored, {refused} "
            f"line{pluralize(refused)} that {pluralize(refused, 'is,are')} not "
            f"{pluralize(refused, 'a message,messages')} and {unfinished} unfinished last "
            f"line{pluralize(unfinished)} left out)."
        )
        left_out = refused + unfinished
        if left_out:
            # What was sound is stored; a script that imports and then moves on must still see
            # that the copy is not whole.
            raise CommandError(
                f"{left_out} line{pluralize(left_out)} {pluralize(left_out, 'was,were')} left out.",
                returncode=1,
            )

    def _load(self, store: Any, batch: list[bytes]) -> Counter[str]:
        """Store a batch; a line the store cannot keep is left out (and counted), not the batch."""
        try:
            stored, skipped = store.import_lines(batch)
            return Counter(stored=stored, skipped=skipped)
        except InvalidMessage:
            counts: Counter[str] = Counter()
            for line in batch:
                try:
                    stored, skipped = store.import_lines([line])
                except InvalidMessage:
                    counts["refused"] += 1
                    continue
                counts.update(stored=stored, skipped=skipped)
            return counts
