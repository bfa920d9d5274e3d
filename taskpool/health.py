"""Whether this server can serve the pool: the store's own checks, and the site's database.

``GET /pool/health`` answers from here. The database is the one that holds
the devices and roles (for a day-file pool, the only one); a store that
keeps the pool in a database checks that one itself.
"""

from __future__ import annotations

import logging

from django.db import DatabaseError, connections, router

from taskpool.exceptions import PoolError
from taskpool.missing_tables import migrate_hint
from taskpool.models import DeviceUser
from taskpool.stores import get_store
from taskpool.stores.base import HealthCheck


def site_database_check() -> HealthCheck:
    """``database``: the database of devices and roles answers a query of its devices' table
    (so a database never migrated is not taken for a healthy one)."""
    alias = router.db_for_read(DeviceUser)
    try:
        DeviceUser.objects.using(alias).exists()
    except DatabaseError as error:
        hint = migrate_hint(error)
        if hint is not None:
            return HealthCheck("database", hint)
        connections[alias].close()  # the next request connects afresh
        return HealthCheck("database", "The database of devices and roles does not answer.")
    return HealthCheck("database")


def health_checks(*, ready: bool = False) -> list[HealthCheck]:
    """Every check, the store's first; with ``ready``, also whether the store is ready to serve."""
    try:
        store = get_store()
    except PoolError as error:  # the store's own refusal, which says what is wrong
        store_checks = [HealthCheck("store", error.message)]
    except Exception:  # a store that cannot be built is the answer; the log says why
        logging.getLogger("taskpool").exception("The store cannot be opened.")
        store_checks = [HealthCheck("store", "The store cannot be opened.")]
    else:
        store_checks = store.health(ready=ready)
    return [*store_checks, site_database_check()]
