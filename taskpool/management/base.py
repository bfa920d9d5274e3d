"""``PoolCommand``: the operator's commands, whose database errors are one line each.

A command run against a database that is down, read-only, or not migrated
yet would print Django's traceback. The operator needs the one line that
says which, and a hint for the common case, not a stack.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from taskpool.exceptions import StoreUnavailable


class PoolCommand(BaseCommand):
    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except DatabaseError as error:
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            hint = " (has migrate been run for this database?)" if _missing_table(detail) else ""
            raise CommandError(f"The database: {detail}{hint}") from error
        except StoreUnavailable as error:
            raise CommandError(str(error)) from error


def _missing_table(detail: str) -> bool:
    """Whether the database said a table is missing (PostgreSQL's words, then SQLite's)."""
    return ("relation" in detail and "does not exist" in detail) or "no such table" in detail
