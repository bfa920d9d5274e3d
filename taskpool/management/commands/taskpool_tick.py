"""``taskpool_tick [--every S]``: write the lines jobs are owed now (timeouts, retries, rollout
steps, aborts, starts), once or every S seconds."""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

from django.core.management.base import CommandError, CommandParser
from django.db import close_old_connections
from django.template.defaultfilters import pluralize

from taskpool.management.base import PoolCommand
from taskpool.ticker import TickFailed, tick

#: The longest ``--every``: a day. Longer keeps no job's time (and ``time.sleep`` refuses
#: what is past its range, after the first tick).
MOST_SECONDS = 86400


def positive_seconds(text: str) -> float:
    """A number of seconds above zero, at most a day; anything else is a usage error."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds <= MOST_SECONDS:  # NaN and infinities too
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a number of seconds above 0, at most {MOST_SECONDS}."
        )
    return seconds


class Command(PoolCommand):
    left_when_stopped = "stopped ticking."
    help = (
        "Write the lines that jobs are owed as time passes: attempts that timed out, retries "
        "after their backoff, the next devices of rollouts, aborts, scheduled starts. Server "
        "processes do this every TICK_INTERVAL themselves; run this from cron or a systemd "
        "timer (or with --every 1 as a service) where none runs. Safe beside them: each line "
        "is written once."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every",
            type=positive_seconds,
            metavar="SECONDS",
            help="Keep going, once every SECONDS (until stopped), instead of once.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        every = options["every"]
        while True:
            failed = None
            with self.unit_of_work():  # a SIGTERM waits for the tick's lines
                try:
                    written = tick()
                except TickFailed as error:  # the other tasks' lines were written
                    failed, written = error, error.written
            if written or not every:
                kinds = sorted({line["meta"]["status"] for line in written})
                self.stdout.write(
                    f"Wrote {len(written)} line{pluralize(written)}"
                    + (f" ({', '.join(kinds)})." if kinds else ".")
                )
            if failed is not None:
                if not every:
                    raise CommandError(str(failed))
                self.stderr.write(str(failed))
            if not every:
                return
            time.sleep(every)
            close_old_connections()
