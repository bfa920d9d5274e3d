"""Progress bars for the long commands (import, export, verify, prune), with tqdm.

A bar goes to stderr, so a command's output stays clean for scripts; it is
shown only on a terminal, and never with ``--no-progress``. The day files'
index shows one too while a first start replays the week (``replay_bar``),
on a terminal only (a server under systemd shows none).
"""

from __future__ import annotations

import sys
from typing import Any

from django.core.management.base import CommandParser
from tqdm import tqdm


def add_progress_argument(parser: CommandParser) -> None:
    parser.add_argument(
        "--no-progress", action="store_true", help="No progress bar, even on a terminal."
    )


def progress_bar(options: dict[str, Any], *, total: int | None, unit: str, label: str) -> tqdm:
    """A bar counting to ``total`` ``unit``s (``None``: a count and a rate, no end), quiet off a
    terminal or with ``--no-progress``."""
    quiet = options.get("no_progress") or not sys.stderr.isatty()
    return tqdm(
        total=total,
        unit=unit,
        unit_scale=unit == "B",
        desc=label,
        disable=quiet,
        file=sys.stderr,
        leave=False,
    )


def replay_bar(total_bytes: int) -> tqdm:
    """The index's first-start replay, in bytes of day files; quiet off a terminal."""
    return progress_bar({}, total=total_bytes, unit="B", label="index")
