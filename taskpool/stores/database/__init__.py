"""The pool on PostgreSQL, for sites with more than one application host.

Add ``"taskpool.stores.database"`` to ``INSTALLED_APPS`` and set
``TASKPOOL["STORE"] = "taskpool.stores.database.DatabaseStore"``; its tables
come with ``migrate``. ``store.py`` has the store, ``models.py`` the tables.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    # Imported on first use, not when Django loads the app: the store needs the models.
    if name == "DatabaseStore":
        from taskpool.stores.database.store import DatabaseStore

        return DatabaseStore
    raise AttributeError(name)
