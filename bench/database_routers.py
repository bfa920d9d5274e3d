"""Which of the benchmark's PostgreSQL databases each table lives in.

Django's own tables in ``default``; the pool's tables in the database that
``TASKPOOL["DATABASE"]`` names at the time (``PoolDatabaseRouter``), and only
the pool's in any ``pool_*`` database; django-tasks-db's table in ``tasks``
and only there.
"""

from __future__ import annotations

from typing import Any

from taskpool.stores.database.routers import APP_LABEL, PoolDatabaseRouter

TASKS_APP = "django_tasks_db"
TASKS_DATABASE = "tasks"


class BenchRouter(PoolDatabaseRouter):
    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        if model._meta.app_label == TASKS_APP:
            return TASKS_DATABASE
        return super().db_for_read(model, **hints)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self.db_for_read(model, **hints)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        if app_label == TASKS_APP or db == TASKS_DATABASE:
            return app_label == TASKS_APP and db == TASKS_DATABASE
        if db.startswith("pool_"):
            return app_label == APP_LABEL and super().allow_migrate(db, app_label, **hints)
        return super().allow_migrate(db, app_label, **hints)
