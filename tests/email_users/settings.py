"""A site whose user model has no username field (its email is the login), for the test
that taskpool installs and runs on such a site."""

import os

from project.settings import *  # noqa: F403

INSTALLED_APPS = [*INSTALLED_APPS, "tests.email_users.accounts"]  # noqa: F405
AUTH_USER_MODEL = "accounts.User"
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["EMAIL_USERS_DB"],
    }
}
MIGRATION_MODULES = {"accounts": None}  # made from the model as it is (migrate --run-syncdb)
