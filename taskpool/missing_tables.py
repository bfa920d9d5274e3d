"""Which database to migrate, when a query met a table that is not there.

A site that has not run ``migrate`` for every database it uses (the pool's
own database is easy to forget) meets a missing table at its first request
or command. The database says which table; this says which database, by
asking the site's routers where the model of that table is written, so
that an operator reads the command to run instead of a stack.
"""

from __future__ import annotations

import re

from django.apps import apps
from django.db import DEFAULT_DB_ALIAS, router

#: PostgreSQL's words, then SQLite's.
_MISSING = (
    re.compile(r'relation "([^"]+)" does not exist'),
    re.compile(r"no such table: (\S+)"),
)
_UNDEFINED_TABLE = "42P01"


def missing_table(error: BaseException) -> str | None:
    """The table ``error`` says is missing, or ``None`` for any other error."""
    cause = error.__cause__
    sqlstate = getattr(getattr(cause, "diag", None), "sqlstate", None) or getattr(
        cause, "sqlstate", None
    )
    if sqlstate not in (None, _UNDEFINED_TABLE):
        return None
    for pattern in _MISSING:
        found = pattern.search(str(error))
        if found:
            return found.group(1)
    return None


def migrate_hint(error: BaseException) -> str | None:
    """What to run for the missing table ``error`` names, or ``None`` if it names none."""
    table = missing_table(error)
    if table is None:
        return None
    alias = DEFAULT_DB_ALIAS
    for model in apps.get_models(include_auto_created=True):
        if model._meta.db_table == table:
            alias = router.db_for_write(model) or DEFAULT_DB_ALIAS
            break
    return f"The database has no table {table}: run {migrate_command(alias)}."


def migrate_command(alias: str) -> str:
    """The command that migrates the database ``alias``."""
    option = "" if alias == DEFAULT_DB_ALIAS else f" --database {alias}"
    return f"manage.py migrate{option}"
