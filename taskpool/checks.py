"""System checks: the ``TASKPOOL`` settings, each store's own configuration, and the site's
settings the pool depends on."""

from __future__ import annotations

from collections.abc import Sequence
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


@checks.register(checks.Tags.database)
def check_pool_database(
    app_configs: Any = None, databases: Sequence[str] | None = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """What the store finds in the databases asked for (``check --database``, ``migrate``).

    Tagged ``database``: a plain ``check`` (and ``runserver``) passes no
    databases and queries none.
    """
    options = getattr(settings, "TASKPOOL", None)
    if not databases or not isinstance(options, dict):
        return []
    from taskpool.stores import store_class

    try:
        store = store_class()
    except StoreImproperlyConfigured:  # check_taskpool_settings says so
        return []
    if store.check(options):  # nothing to query until those are put right
        return []
    return store.check_database(options, list(databases))


#: The schema class the API's OpenAPI schema (``/pool/schema``, ``/pool/docs``) is built with.
SPECTACULAR_SCHEMA = "drf_spectacular.openapi.AutoSchema"


@checks.register()
def check_site_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """The site's own settings that the pool cannot work without, or that break a part of it."""
    problems: list[checks.CheckMessage] = []
    if not settings.USE_TZ:
        problems.append(
            checks.Error(
                "taskpool needs USE_TZ = True: it keeps every time in UTC, and with naive "
                "times the devices' requests fail.",
                hint="Set USE_TZ = True (Django's default).",
                id="taskpool.E006",
            )
        )
    schema_class = getattr(settings, "REST_FRAMEWORK", {}).get("DEFAULT_SCHEMA_CLASS")
    if schema_class != SPECTACULAR_SCHEMA:
        problems.append(
            checks.Warning(
                f"REST_FRAMEWORK['DEFAULT_SCHEMA_CLASS'] is {schema_class!r}: the pool's "
                "OpenAPI schema (/pool/schema) and its docs page cannot be built with it.",
                hint=f"Set it to {SPECTACULAR_SCHEMA!r}.",
                id="taskpool.W002",
            )
        )
    return problems
