"""Django settings for the PostgreSQL benchmark: the demo site's stack, every table on PostgreSQL.

``bench.database`` names the databases before Django starts, in
``BENCH_POSTGRES_DATABASES`` (JSON: alias -> ``postgresql://`` URL):
``default`` holds Django's own tables (users, devices, sessions), and each
``pool_*`` alias a ``DatabaseStore`` pool of its own (``TASKPOOL["DATABASE"]``
says which one the store uses; the benchmark switches it with
``override_settings``). An alias ``tasks``, when given, holds django-tasks-db's
table (that package is then installed too, and only then).
"""

import os
from importlib.util import find_spec

import dj_database_url
import orjson

from bench.settings import (
    ALLOWED_HOSTS,
    DEFAULT_AUTO_FIELD,
    INSTALLED_APPS,
    MIDDLEWARE,
    REST_FRAMEWORK,
    SECRET_KEY,
    SPECTACULAR_SETTINGS,
    STATIC_URL,
    TASKPOOL,
    TEMPLATES,
    TIME_ZONE,
    USE_TZ,
)

__all__ = [
    "ALLOWED_HOSTS",
    "DEFAULT_AUTO_FIELD",
    "MIDDLEWARE",
    "REST_FRAMEWORK",
    "SECRET_KEY",
    "SPECTACULAR_SETTINGS",
    "STATIC_URL",
    "TEMPLATES",
    "TIME_ZONE",
    "USE_TZ",
]

DEBUG = False
ROOT_URLCONF = "bench.database_urls"

# As the demo site parses DATABASE_URL: connections kept for 60 s between requests.
DATABASES = {
    alias: dj_database_url.parse(url, conn_max_age=60)
    for alias, url in orjson.loads(os.environ.get("BENCH_POSTGRES_DATABASES", "{}")).items()
}

#: Whether django-tasks-db (the baseline of the decisions' rate) is installed (the ``bench``
#: extra; on Django 5.2 it runs on the django-tasks backport).
TASKS_DB_INSTALLED = (
    find_spec("django_tasks_db") is not None and find_spec("django_tasks") is not None
)

INSTALLED_APPS = [*INSTALLED_APPS, "taskpool.stores.database"]
if TASKS_DB_INSTALLED and "tasks" in DATABASES:
    INSTALLED_APPS += ["django_tasks", "django_tasks_db"]
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}

DATABASE_ROUTERS = ["bench.database_routers.BenchRouter"]

TASKPOOL = {
    **TASKPOOL,
    "STORE": "taskpool.stores.database.DatabaseStore",
    "DATABASE": os.environ.get("BENCH_POOL_DATABASE", "pool_full"),
}
TASKPOOL.pop("DATA_DIR", None)
if os.environ.get("BENCH_DATA_DIR"):
    # The same site with the pool in day files there (to compare with the JSON Lines store).
    TASKPOOL = {
        **TASKPOOL,
        "STORE": "taskpool.stores.jsonl.JsonlStore",
        "DATA_DIR": os.environ["BENCH_DATA_DIR"],
    }
