"""The demo site: taskpool on the embedded defaults (SQLite + JSONL files under var/).

Environment: TASKPOOL_VAR_DIR (where all of it lives, var/ by default),
TASKPOOL_STORE (``jsonl``, the default, or ``database``: the pool in the
PostgreSQL of DATABASE_URL), TASKPOOL_DATA_DIR, TASKPOOL_ARCHIVE_DIR,
TASKPOOL_METRICS_TOKEN, TASKPOOL_ENROLLMENT_KEY, DATABASE_URL,
DJANGO_SECRET_KEY, DJANGO_DEBUG, DJANGO_ALLOWED_HOSTS. Without them the site
runs for local development only.
"""

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("TASKPOOL_VAR_DIR", BASE_DIR / "var"))
# Its owner's alone: it holds the secret key, the database (password hashes) and the pool.
VAR_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
if VAR_DIR.stat().st_uid == os.getuid() and VAR_DIR.stat().st_mode & 0o077:
    VAR_DIR.chmod(0o700)  # one made before the demo kept it so


def _development_secret_key() -> str:
    """A random key kept in var/, so sessions survive restarts without a key in the repo."""
    path = VAR_DIR / "secret_key"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or _development_secret_key()
DEBUG = os.environ.get("DJANGO_DEBUG", "0").lower() in {"1", "true", "yes", "on"}
ALLOWED_HOSTS = os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")

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
    "project",
]

# Where the pool lives: day files under var/ (one host), or PostgreSQL (any number).
STORES = {
    "jsonl": "taskpool.stores.jsonl.JsonlStore",
    "database": "taskpool.stores.database.DatabaseStore",
}
POOL_STORE = os.environ.get("TASKPOOL_STORE", "jsonl")
if POOL_STORE not in STORES:
    raise RuntimeError(f"TASKPOOL_STORE is {POOL_STORE!r}: use one of {', '.join(STORES)}.")
if POOL_STORE == "database":
    INSTALLED_APPS.append("taskpool.stores.database")

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"
ASGI_APPLICATION = "project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
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
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'db.sqlite3'}",
        conn_max_age=60,
        conn_health_checks=True,  # a connection a database restart cut is replaced, not used
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Threads and processes share the file: wait for locks instead of failing.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 20,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKPOOL = {
    "STORE": STORES[POOL_STORE],
    "DATA_DIR": os.environ.get("TASKPOOL_DATA_DIR") or str(VAR_DIR / "pool"),
    # A Prometheus scraper's bearer token for /pool/metrics (admins may read it without).
    "METRICS_TOKEN": os.environ.get("TASKPOOL_METRICS_TOKEN") or None,
    # Where taskpool_prune puts old day files; the log and the admin still read them there.
    "ARCHIVE_DIR": os.environ.get("TASKPOOL_ARCHIVE_DIR") or str(VAR_DIR / "archive"),
    # The key devices send as Enrollment-Key to ask to join (staff still approve each one).
    "ENROLLMENT_KEY": os.environ.get("TASKPOOL_ENROLLMENT_KEY") or None,
}

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}

SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=30),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=1),
    "CHECK_REVOKE_TOKEN": True,  # a new password ends the tokens issued before it
}

SPECTACULAR_SETTINGS = {
    "TITLE": "taskpool",
    "DESCRIPTION": "An append-only task pool for device fleets.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
