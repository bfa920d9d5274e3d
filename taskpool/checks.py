"""System checks: the ``TASKPOOL`` settings, and each store's own configuration."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks

from taskpool.conf import DEFAULTS
from taskpool.exceptions import StoreImproperlyConfigured


@checks.register()
def check_taskpool_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    options = getattr(settings, "TASKPOOL", None)
    if not isinstance(options, dict):
        return [
            checks.Error(
                "settings.TASKPOOL must be a dict.",
                hint='For example TASKPOOL = {"DATA_DIR": BASE_DIR / "var" / "pool"}.',
                id="taskpool.E001",
            )
        ]
    errors: list[checks.CheckMessage] = [
        checks.Warning(f"TASKPOOL has an unknown key {name!r}.", id="taskpool.W001")
        for name in options
        if name not in DEFAULTS
    ]
    from taskpool.stores import store_class

    try:
        store = store_class()
    except StoreImproperlyConfigured as error:
        return [*errors, checks.Error(str(error), id="taskpool.E005")]
    return [*errors, *store.check(options)]
