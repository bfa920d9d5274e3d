"""Stores: where the pool's messages live. ``get_store()`` returns this process's store."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from taskpool.exceptions import StoreImproperlyConfigured

if TYPE_CHECKING:
    from taskpool.stores.base import BaseStore

# Django and the settings are imported when a store is first asked for, not with the
# package: a first start's replay workers import the index's modules only.

_store: BaseStore | None = None
_store_lock = threading.Lock()


def store_class() -> type[BaseStore]:
    """The class named by ``TASKPOOL["STORE"]``."""
    from django.utils.module_loading import import_string

    from taskpool.conf import pool_settings

    path = pool_settings.STORE
    if not isinstance(path, str):
        raise StoreImproperlyConfigured(
            f"TASKPOOL['STORE'] is {path!r}: it takes the dotted path of a store class."
        )
    try:
        return import_string(path)
    except ImportError as error:
        raise StoreImproperlyConfigured(
            f"TASKPOOL['STORE'] is {path!r}, which cannot be imported: {error}"
        ) from error


def get_store() -> BaseStore:
    """This process's store, built on first use from the ``TASKPOOL`` settings."""
    global _store
    store = _store
    if store is None:
        with _store_lock:
            if _store is None:
                from taskpool.conf import pool_settings

                _store = store_class().from_settings(pool_settings)
            store = _store
    return store


def reset_store() -> None:
    """Forget this process's store, so the next ``get_store()`` builds it anew."""
    global _store
    with _store_lock:
        store, _store = _store, None
    if store is not None and hasattr(store, "close"):
        store.close()
