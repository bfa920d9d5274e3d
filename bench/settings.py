"""Django settings for the benchmark: the demo site's stack on a throw-away SQLite file.

``bench.run`` sets ``BENCH_DATABASE`` before Django starts and points
``TASKPOOL["DATA_DIR"]`` at each size's pool in turn.
"""

import os
import tempfile
from datetime import timedelta

SECRET_KEY = "bench-only-not-a-secret-0123456789abcdef0123456789"
DEBUG = False
ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
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
]

# The demo site's middleware, so a request pays what it pays there.
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bench.urls"

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
        "NAME": os.environ.get(
            "BENCH_DATABASE", os.path.join(tempfile.gettempdir(), "taskpool-bench.sqlite3")
        ),
    }
}

STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

TASKPOOL = {
    "DATA_DIR": os.environ.get(
        "BENCH_DATA_DIR", os.path.join(tempfile.gettempdir(), "taskpool-bench-pool")
    ),
    "FSYNC": False,
    # Off: between rounds a device would otherwise write last_seen on its first
    # request (one UPDATE), which costs the same at every size but blurs the p50.
    "LAST_SEEN_INTERVAL": timedelta(days=1),
    # No ticker thread: the benchmark's pools hold no jobs, and it would add a look a second.
    "TICK_INTERVAL": 0,
}

REST_FRAMEWORK = {"DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema"}
SPECTACULAR_SETTINGS = {"SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR"}
