"""System checks: the ``TASKPOOL`` settings, each store's own configuration, and the site's
settings the pool depends on."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core import checks

from taskpool.conf import DEFAULTS, DURATIONS
from taskpool.exceptions import StoreImproperlyConfigured


@checks.register()
def check_taskpool_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    options = getattr(settings, "TASKPOOL", None)
    if not isinstance(options, dict):
        return [
            checks.Error(
                "settings.TASKPOOL is not set."
                if options is None
                else f"settings.TASKPOOL is {options!r}: it must be a dict.",
                hint='For example TASKPOOL = {"DATA_DIR": BASE_DIR / "var" / "pool"}.',
                id="taskpool.E001",
            )
        ]
    errors: list[checks.CheckMessage] = [
        checks.Warning(f"TASKPOOL has an unknown key {name!r}.", id="taskpool.W001")
        for name in options
        if name not in DEFAULTS
    ]
    errors += [
        checks.Error(problem, id="taskpool.E007")
        for name in sorted(options)
        if (problem := _value_problem(name, options[name])) is not None
    ]
    if _value_problem("STORE", options.get("STORE", DEFAULTS["STORE"])) is not None:
        return errors  # said above; no store to ask for its own checks
    from taskpool.stores import store_class

    try:
        store = store_class()
    except StoreImproperlyConfigured as error:
        return [*errors, checks.Error(str(error), id="taskpool.E005")]
    return [*errors, *store.check(options)]


#: Durations that cannot be zero: every task would expire, every device token too.
ABOVE_ZERO = frozenset({"TASK_TTL", "DEVICE_TOKEN_LIFETIME"})
#: Switches: a string such as "False", read from the environment, would count as on.
SWITCHES = frozenset({"FSYNC", "ENROLLMENT", "ALLOW_UNREGISTERED_DEVICES"})
#: Secrets a request must show, or ``None`` for none.
SECRETS = frozenset({"METRICS_TOKEN", "ENROLLMENT_KEY"})
#: Names of a thing: a dotted path, a database alias.
NAMES = frozenset({"STORE", "DATABASE"})
#: Directories: a path, or ``None`` (the store's own check says whether it needs one).
DIRECTORIES = frozenset({"DATA_DIR", "ARCHIVE_DIR"})


def _value_problem(name: str, value: Any) -> str | None:
    """What is wrong with a value of ``TASKPOOL`` that would misbehave or fail at first use."""
    if name in SWITCHES and not isinstance(value, bool):
        return f"TASKPOOL[{name!r}] is {value!r}: it takes True or False."
    if name in SECRETS and not (value is None or (isinstance(value, str) and value)):
        return f"TASKPOOL[{name!r}] is {value!r}: it takes a non-empty string, or None for none."
    if name in NAMES and not (isinstance(value, str) and value):
        return f"TASKPOOL[{name!r}] is {value!r}: it takes a name (a string)."
    if name in DIRECTORIES and not (value is None or isinstance(value, str | os.PathLike)):
        return f"TASKPOOL[{name!r}] is {value!r}: it takes a path (a string or a Path)."
    if name in DURATIONS:
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, int | float) and not isinstance(value, bool):
            seconds = value
        else:
            return (
                f"TASKPOOL[{name!r}] is {value!r}: a duration is a timedelta or a number of "
                "seconds."
            )
        if not math.isfinite(seconds) or seconds < 0 or (name in ABOVE_ZERO and seconds == 0):
            least = "above 0" if name in ABOVE_ZERO else "0 or more"
            return f"TASKPOOL[{name!r}] is {value!r}: it takes a finite duration {least}."
    if name == "MAX_MESSAGE_BYTES" and (
        not isinstance(value, int) or isinstance(value, bool) or value <= 0
    ):
        return (
            f"TASKPOOL['MAX_MESSAGE_BYTES'] is {value!r}: it takes a whole number of bytes above 0."
        )
    return None


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
        said = "is not set" if schema_class is None else f"is {schema_class!r}"
        problems.append(
            checks.Warning(
                f"REST_FRAMEWORK['DEFAULT_SCHEMA_CLASS'] {said}: the pool's "
                "OpenAPI schema (/pool/schema) and its docs page cannot be built with it.",
                hint=f"Set it to {SPECTACULAR_SCHEMA!r}.",
                id="taskpool.W002",
            )
        )
    problems += _docs_page_apps()
    problems += _throttle_cache()
    problems += _role_inline()
    return problems


def _throttle_cache() -> list[checks.CheckMessage]:
    """``taskpool.W006``: the default cache counts nothing, and the throttles count there."""
    backend = settings.CACHES.get("default", {}).get("BACKEND", "")
    if backend != "django.core.cache.backends.dummy.DummyCache":
        return []
    return [
        checks.Warning(
            "The default cache is DummyCache, which keeps nothing: the pool's login and "
            "enrollment throttles count there, so they never stop anyone (password guessing, "
            "enrollment requests without end).",
            hint="Give CACHES['default'] a cache that keeps counts: Redis or Memcached for "
            "several processes, LocMemCache for one.",
            id="taskpool.W006",
        )
    ]


def _role_inline() -> list[checks.CheckMessage]:
    """``taskpool.W007``: the admin's user page lacks the pool's role inline.

    The inline is added to the user admin registered when taskpool's admin module is
    imported; a site whose own user admin is registered later replaces it.
    """
    from django.apps import apps

    if not apps.is_installed("django.contrib.admin"):
        return []
    from django.contrib import admin
    from django.contrib.auth import get_user_model

    from taskpool.admin.roles import UserRoleInline

    user_model = get_user_model()
    if not admin.site.is_registered(user_model):
        return []
    if UserRoleInline in admin.site.get_model_admin(user_model).inlines:
        return []
    return [
        checks.Warning(
            "The admin's user page has no pool role on it: the site's user admin was "
            "registered after taskpool's admin added the role to the one before.",
            hint="List taskpool after the app that registers the user admin in "
            "INSTALLED_APPS, or add taskpool.admin.roles.UserRoleInline to its inlines. "
            "Roles stay editable under Task pool > Pool roles.",
            id="taskpool.W007",
        )
    ]


def _docs_page_apps() -> list[checks.CheckMessage]:
    """``taskpool.W005``: an app the API docs page (``/pool/docs``) is drawn with is missing."""
    from django.apps import apps

    needed = ["drf_spectacular"]
    spectacular = getattr(settings, "SPECTACULAR_SETTINGS", {})
    if "SIDECAR" in (
        spectacular.get("SWAGGER_UI_DIST"),
        spectacular.get("SWAGGER_UI_FAVICON_HREF"),
    ):
        needed.append("drf_spectacular_sidecar")  # its static files are the page's scripts
    return [
        checks.Warning(
            f"{app!r} is not in INSTALLED_APPS: the pool's API docs page (/pool/docs) "
            "cannot be drawn without it.",
            hint=f"Add {app!r} to INSTALLED_APPS.",
            id="taskpool.W005",
        )
        for app in needed
        if not apps.is_installed(app)
    ]
