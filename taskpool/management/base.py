"""``PoolCommand``: the operator's commands, whose database errors are one line each.

A command run against a database that is down, read-only, or not migrated
yet would print Django's traceback, and so would one stopped with Ctrl-C. The operator needs the one line that
says which, and a hint for the common case, not a stack.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from taskpool.exceptions import StoreUnavailable
from taskpool.missing_tables import migrate_hint


class PoolCommand(BaseCommand):
    #: What Ctrl-C leaves, said instead of a traceback (exit 130, as a shell says it).
    interrupted = "Interrupted."

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except KeyboardInterrupt:
            raise CommandError(self.interrupted, returncode=130) from None
        except DatabaseError as error:
            hint = migrate_hint(error)
            if hint is not None:
                raise CommandError(hint) from error
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise CommandError(f"The database: {detail}") from error
        except StoreUnavailable as error:
            raise CommandError(str(error)) from error
