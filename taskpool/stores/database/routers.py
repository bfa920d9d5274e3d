"""A database router for sites that keep the pool in a database of its own.

Needed only when ``TASKPOOL["DATABASE"]`` names another alias than
``default``: add ``"taskpool.stores.database.routers.PoolDatabaseRouter"`` to
``DATABASE_ROUTERS`` and the store's tables go to that alias, and only there.
"""

from __future__ import annotations

from typing import Any

from taskpool.conf import pool_settings

APP_LABEL = "taskpool_database"


class PoolDatabaseRouter:
    """Sends ``DatabaseStore``'s tables to ``TASKPOOL["DATABASE"]``, and nothing else there."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return pool_settings.DATABASE if model._meta.app_label == APP_LABEL else None

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self.db_for_read(model, **hints)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        alias = pool_settings.DATABASE
        if app_label == APP_LABEL:
            return db == alias
        if db == alias and alias != "default":
            return False
        return None
