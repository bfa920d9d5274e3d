"""``taskpool_prune --before D [--archive DIR | --delete] [--dry-run]``: old days out of the pool."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.template.defaultfilters import pluralize

from taskpool.archive import ArchiveExists, DayArchive
from taskpool.conf import pool_settings
from taskpool.management.base import PoolCommand
from taskpool.management.commands.taskpool_export import day_argument
from taskpool.management.progress import add_progress_argument, progress_bar
from taskpool.stores import get_store

WHERE_DAYS_GO = "--archive DIR (or TASKPOOL['ARCHIVE_DIR']), or --delete to keep no copy"


class Command(PoolCommand):
    left_when_stopped = (
        "the days listed above are done; run it again for the rest (a day archived "
        "but not yet taken out of the pool is taken out then)."
    )
    help = (
        "Take the days older than --before out of the pool: each is archived as "
        "DIR/YYYY-MM-DD.jsonl.gz (--archive DIR, by default TASKPOOL['ARCHIVE_DIR']), read back "
        "and compared, then removed from the pool; or removed without a copy (--delete). A day "
        "within TASK_TTL of now is never taken: a task of that day could still be pending. "
        "--dry-run says what would be done and does nothing."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--before",
            type=day_argument,
            required=True,
            help="Take days before this one (YYYY-MM-DD), if TASK_TTL allows.",
        )
        where = parser.add_mutually_exclusive_group()
        where.add_argument(
            "--archive", metavar="DIR", help="Archive into DIR (default ARCHIVE_DIR)."
        )
        where.add_argument("--delete", action="store_true", help="Delete, keeping no copy.")
        parser.add_argument("--dry-run", action="store_true", help="Say what would be done.")
        add_progress_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        store = get_store()
        archive = None
        unsaid = ""  # a dry run may leave where the days go to the real run
        if not options["delete"]:
            directory = options["archive"] or pool_settings.ARCHIVE_DIR
            if not directory and not options["dry_run"]:
                raise CommandError(f"Say where the days go: {WHERE_DAYS_GO}.")
            if not directory:
                unsaid = f" The real run needs to be told where they go: {WHERE_DAYS_GO}."
        if not options["delete"] and not unsaid:
            archive = DayArchive(directory)
            own = getattr(store, "directory", None)
            if own is not None and archive.directory.resolve() == own.resolve():
                raise CommandError("The archive cannot be the pool's own DATA_DIR.")
            if archive.directory.exists() and not archive.directory.is_dir():
                raise CommandError(f"The archive {archive.directory} is not a directory.")
        days = store.prunable_days(options["before"])
        kept = [day for day in store.days() if day < options["before"] and day not in days]
        for day in kept:
            self.stdout.write(f"keep    {day}: within TASK_TTL, a task of it may be pending")
        if options["dry_run"]:
            verb = "archive" if archive is not None else "take" if unsaid else "delete"
            skips = {}
            for day in days:
                if archive is not None and (tail := unfinished_tail(store, day)):
                    skips[day] = tail
                elif (
                    archive is not None
                    and archive.has(day)
                    and archive.holds_exactly(day, store.day_lines(day)) is None
                ):
                    skips[day] = f"{archive.path(day)} exists already"
            for day in days:
                if day in skips:
                    self.stdout.write(f"skip    {day}: {skips[day]}")
                    continue
                target = f" -> {archive.path(day)}" if archive is not None else ""
                self.stdout.write(f"{verb} {day}{target}")
            self.stdout.write(
                f"Dry run: would {verb} {len(days) - len(skips)} day{pluralize(len(days) - len(skips))}, keep {len(kept)} and "
                f"skip {len(skips)}; nothing was done.{unsaid}"
            )
            if skips:  # as the real run would end
                raise CommandError(left_in_the_pool(len(skips)))
            return
        if archive is not None:
            try:
                archive.directory.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise CommandError(
                    f"Cannot make the archive {archive.directory}: {error.strerror}."
                ) from None
        taken = skipped = 0
        with progress_bar(options, total=len(days), unit="day", label="prune") as bar:
            for day in days:
                try:
                    with self.unit_of_work():  # archived and taken out, or neither
                        taken_out = self._take(store, archive, day)
                    if taken_out:
                        taken += 1
                    else:
                        skipped += 1
                except OSError as error:  # the pool's file or the archive's: one line, no traceback
                    where = f" ({error.filename})" if error.filename else ""
                    raise CommandError(
                        f"Cannot {'archive' if archive is not None else 'delete'} {day}: "
                        f"{error.strerror or error}{where}. It is left in the pool."
                    ) from None
                bar.update(1)
        done = "archived" if archive is not None else "deleted"
        self.stdout.write(
            f"Pruned: {taken} day{pluralize(taken)} {done}, {len(kept)} kept within TASK_TTL, {skipped} skipped."
        )
        if skipped:
            raise CommandError(left_in_the_pool(skipped))

    def _take(self, store: Any, archive: DayArchive | None, day: date) -> bool:
        """Archive (or delete) one day and take it out of the pool; ``False``: left, skipped."""
        if archive is not None:
            tail = unfinished_tail(store, day)
            if tail:
                self.stderr.write(f"skip    {day}: {tail} It is left in the pool.")
                return False
            try:
                lines, size = archive.write(day, store.day_lines(day))
            except ArchiveExists as error:
                held = archive.holds_exactly(day, store.day_lines(day))
                if held is None:
                    self.stderr.write(f"skip    {day}: {error.message} Both are left as they are.")
                    return False
                # An earlier run archived it and was cut short before taking it out.
                note = f"archived already, as the pool has it ({held} line{pluralize(held)}); taken out of the pool"
            else:
                note = (
                    f"archived {lines} line{pluralize(lines)} ({size} bytes) to {archive.path(day)}"
                )
        else:
            note = "deleted"
        store.remove_day(day)
        self.stdout.write(f"{'archive' if archive is not None else 'delete '} {day}: {note}")
        return True


def unfinished_tail(store: Any, day: date) -> str:
    """Why the day's file holds more than its lines ("" when it does not): bytes after its
    last complete line, which no archive of its lines would hold."""
    tail = store.unfinished_bytes(day)
    if not tail:
        return ""
    return (
        f"its last {tail} byte{pluralize(tail)} end no line (torn by a crash, or left "
        "without a newline), and the archive would not hold them: mend the file "
        "(taskpool_verify names the line), then prune again."
    )


def left_in_the_pool(skipped: int) -> str:
    return (
        f"{skipped} day{pluralize(skipped)} {pluralize(skipped, 'was,were')} left in the pool: "
        "archived already otherwise, or not whole (said above)."
    )
