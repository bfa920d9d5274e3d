"""The database store's migrations that a database has not had.

``migrate`` migrates the ``default`` database alone, and Django warns of
unapplied migrations on that one only; a pool kept in a database of its own
is easy to leave out, at the first installation and at each upgrade that
brings a migration. This asks the database which it has had, as ``migrate``
would before migrating it.
"""

from __future__ import annotations

from django.db import connections
from django.db.migrations.loader import MigrationLoader

from taskpool.stores.database.routers import APP_LABEL


def unapplied_migrations(alias: str) -> tuple[list[str], bool]:
    """The store's migrations not applied on ``alias``, in order (``app.name``), and
    whether none of them is (the tables are missing, not only changed)."""
    loader = MigrationLoader(connections[alias], ignore_no_migrations=True)
    applied = loader.applied_migrations or {}
    ours = [
        node
        for leaf in loader.graph.leaf_nodes(APP_LABEL)
        for node in loader.graph.forwards_plan(leaf)
        if node[0] == APP_LABEL
    ]
    missing = [f"{app}.{name}" for app, name in ours if (app, name) not in applied]
    return missing, len(missing) == len(ours)
