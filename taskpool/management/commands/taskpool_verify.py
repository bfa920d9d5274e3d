"""``taskpool_verify [--since D] [--json] [--directory DIR] [--skew S]``: read the day files
through and report what is wrong."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.template.defaultfilters import pluralize

from taskpool.conf import pool_settings
from taskpool.management.base import PoolCommand
from taskpool.management.commands.taskpool_export import day_argument
from taskpool.management.progress import add_progress_argument, progress_bar
from taskpool.stores import get_store
from taskpool.verification import archived_only, unread_files, verify_directory

#: The most ``--skew`` takes: an export's writers overlap by seconds, never by a day.
MAX_SKEW_SECONDS = 86400


def skew_argument(text: str) -> int:
    """Seconds of ``--skew``; anything else is a usage error (exit 2)."""
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_SKEW_SECONDS:
        raise argparse.ArgumentTypeError(f"takes whole seconds from 0 to {MAX_SKEW_SECONDS}")
    return int(text)


class Command(PoolCommand):
    help = (
        "Read the pool's day files and report, with file and line (from 1), torn lines, lines "
        "that are not JSON or not messages, duplicate ids, lines out of time order and answers "
        "to tasks no earlier line posts. Exit code 0 only when all is sound. --directory "
        "verifies other day files (an export, a copy)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", type=day_argument, help="First day to verify (YYYY-MM-DD).")
        parser.add_argument("--json", action="store_true", help="One JSON report on stdout.")
        parser.add_argument(
            "--directory", help="Verify the day files in this directory instead of the pool's."
        )
        parser.add_argument(
            "--skew",
            type=skew_argument,
            default=0,
            metavar="SECONDS",
            help="A line stamped at most this much before a line ahead of it is not out of order "
            "(an export of the database store: each host stamps a line before the database "
            "gives it its place in the log). Default 0.",
        )
        add_progress_argument(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            report = self._verify(options)
        except CommandError as refusal:
            if options["json"]:  # a script reads stdout: JSON there too, saying why not
                self.stdout.write(json.dumps({"error": str(refusal)}))
            raise
        if options["json"]:
            self.stdout.write(json.dumps({**report.as_json(), "not_read": self._unread}, indent=2))
        else:
            for said in self._unread:
                self.stdout.write(said)
            for problem in report.problems:
                self.stdout.write(
                    f"{problem.file}:{problem.line}: {problem.kind}: {problem.detail}"
                )
            counts = ", ".join(f"{n} {kind}" for kind, n in report.counts().items() if n)
            verdict = "sound" if report.sound else f"NOT sound ({counts})"
            self.stdout.write(
                f"{report.files} day file{pluralize(report.files)}, {report.lines} line{pluralize(report.lines)}, "
                f"{report.messages} message{pluralize(report.messages)}: "
                f"{verdict}."
            )
        if not report.sound:
            problems = len(report.problems)
            raise CommandError(f"{problems} problem{pluralize(problems)} found.", returncode=1)

    def _verify(self, options: dict[str, Any]) -> Any:
        """The report on the day files the options name; ``CommandError`` when none can be."""
        if options["directory"]:
            directory = Path(options["directory"])
            if not directory.is_dir():
                raise CommandError(f"{directory} is not a directory.")
            only_archives = archived_only(directory)
            if only_archives is not None:
                raise CommandError(only_archives)
        else:
            store = get_store()
            if not store.supports_day_files:
                raise CommandError(
                    f"{type(store).__name__} keeps no day files: its database holds each message "
                    "whole in a row, with unique ids, so there is no torn line or duplicate to "
                    "find. To check the lines it would give, export them (taskpool_export DIR) "
                    "and verify those: taskpool_verify --directory DIR --skew 5."
                )
            directory = Path(store.directory)  # type: ignore[attr-defined]

        self._unread = unread_files(directory)

        def progress(total: int) -> Any:
            self._bar = progress_bar(options, total=total, unit="B", label="verify")
            return self._bar.update

        try:
            report = verify_directory(
                directory,
                since=options["since"],
                task_ttl=pool_settings.TASK_TTL,
                max_message_bytes=pool_settings.MAX_MESSAGE_BYTES,
                skew_seconds=options["skew"],
                progress=progress,
            )
        except OSError as error:
            raise CommandError(f"Cannot read {error.filename}: {error.strerror}.") from None
        if getattr(self, "_bar", None) is not None:
            self._bar.close()
        return report
