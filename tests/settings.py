"""Settings for the test suite. Each test gets its own pool directory (see conftest)."""

import os
import tempfile
from datetime import timedelta

SECRET_KEY = "tests-only-not-a-secret-0123456789abcdef"
DEBUG = False
ALLOWED_HOSTS = ["*"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "taskpool",
    "taskpool.stores.database",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("TASKPOOL_TEST_SQLITE", ":memory:"),
        "TEST": {"NAME": os.environ.get("TASKPOOL_TEST_SQLITE")}
        if os.environ.get("TASKPOOL_TEST_SQLITE")
        else {},
    }
}

# The PostgreSQL the database store's tests use, when TASKPOOL_TEST_POSTGRES names one.
# Its test database is named for this process, so that runs side by side do not meet.
if os.environ.get("TASKPOOL_TEST_POSTGRES"):
    import dj_database_url

    DATABASES["pool"] = {
        **dj_database_url.parse(os.environ["TASKPOOL_TEST_POSTGRES"]),
        "TEST": {"NAME": f"test_taskpool_pool_{os.getpid()}"},
    }
DATABASE_ROUTERS = ["taskpool.stores.database.routers.PoolDatabaseRouter"]

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

TASKPOOL = {
    # Replaced per test by the `pool_dir` fixture; this default keeps imports working.
    "DATA_DIR": os.path.join(tempfile.gettempdir(), "taskpool-tests-default"),
    "FSYNC": False,
    # The database store's tests use the alias above.
    "DATABASE": "pool",
    "LAST_SEEN_INTERVAL": timedelta(seconds=5),
    # Tests tick by hand (taskpool.ticker.tick), on a clock they control.
    "TICK_INTERVAL": 0,
}

REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
SIMPLE_JWT = {"ACCESS_TOKEN_LIFETIME": timedelta(minutes=30), "CHECK_REVOKE_TOKEN": True}
SPECTACULAR_SETTINGS = {"SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR"}
