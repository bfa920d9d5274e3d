"""Settings for the servers the live tests start: a shared SQLite file and pool directory.

``TASKPOOL_TEST_SERVER_DB`` and ``TASKPOOL_TEST_SERVER_DATA_DIR`` name them
(see ``tests/live.py``).
"""

import os

from tests.settings import *  # noqa: F403
from tests.settings import TASKPOOL

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ["TASKPOOL_TEST_SERVER_DB"],
        # Several server processes share the file: wait for locks instead of failing.
        "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;"},
    }
}
TASKPOOL = {
    **TASKPOOL,
    "DATA_DIR": os.environ["TASKPOOL_TEST_SERVER_DATA_DIR"],
    "ENROLLMENT_KEY": os.environ.get("TASKPOOL_TEST_SERVER_ENROLLMENT_KEY") or None,
    # Jobs' time-driven lines (retries, timeouts) when a test asks for them.
    "TICK_INTERVAL": float(os.environ.get("TASKPOOL_TEST_SERVER_TICK_INTERVAL", "0")),
}
if os.environ.get("TASKPOOL_TEST_SERVER_DEVICE_TOKEN_LIFETIME"):
    # Seconds: device tokens short-lived enough for a test to see the agent renew them.
    TASKPOOL["DEVICE_TOKEN_LIFETIME"] = float(
        os.environ["TASKPOOL_TEST_SERVER_DEVICE_TOKEN_LIFETIME"]
    )
if os.environ.get("TASKPOOL_TEST_SERVER_MAX_MESSAGE_BYTES"):
    # A site that raised the limit: tasks whose arguments no program can be given.
    TASKPOOL["MAX_MESSAGE_BYTES"] = int(os.environ["TASKPOOL_TEST_SERVER_MAX_MESSAGE_BYTES"])
