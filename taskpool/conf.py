"""The ``TASKPOOL`` settings dict, read through one lazy object with defaults.

``pool_settings.TASK_TTL`` reads ``settings.TASKPOOL["TASK_TTL"]`` the first
time it is asked for and keeps the value until ``TASKPOOL`` changes (the
``setting_changed`` signal, so ``override_settings`` just works).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver

DEFAULTS: dict[str, Any] = {
    "DATA_DIR": None,
    "STORE": "taskpool.stores.jsonl.JsonlStore",
    # The database alias DatabaseStore keeps the pool in.
    "DATABASE": "default",
    "TASK_TTL": timedelta(days=7),
    "FSYNC": True,
    "MAX_MESSAGE_BYTES": 64 * 1024,
    "ONLINE_WINDOW": timedelta(seconds=120),
    "DEVICE_TOKEN_LIFETIME": timedelta(days=30),
    "LONG_POLL_MAX": timedelta(seconds=60),
    # How often a device's accepted polls are written to last_seen, at most.
    "LAST_SEEN_INTERVAL": timedelta(seconds=45),
    # How often each server process writes the lines jobs are owed (timeouts, retries,
    # rollout steps, aborts, starts); 0 leaves it to the taskpool_tick command.
    "TICK_INTERVAL": timedelta(seconds=1),
    # A bearer token that may read /metrics (a Prometheus scraper); None: pool admins only.
    "METRICS_TOKEN": None,
    # Where taskpool_prune archives day files (.jsonl.gz); the log and the admin read them there.
    "ARCHIVE_DIR": None,
    # Whether devices may ask to join (POST enroll); staff still validate each one.
    "ENROLLMENT": True,
    # A shared key an enrollment must send as the Enrollment-Key header; None: no key.
    "ENROLLMENT_KEY": None,
    # Whether a task may name device ids that are not registered (yet).
    "ALLOW_UNREGISTERED_DEVICES": False,
}

# Durations may be given as a timedelta or as a number of seconds.
DURATIONS = frozenset(
    {
        "TASK_TTL",
        "ONLINE_WINDOW",
        "DEVICE_TOKEN_LIFETIME",
        "LONG_POLL_MAX",
        "LAST_SEEN_INTERVAL",
        "TICK_INTERVAL",
    }
)


class PoolSettings:
    """Attribute access to ``settings.TASKPOOL`` with defaults; durations are timedeltas."""

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown taskpool setting {name!r}.")
        value = getattr(settings, "TASKPOOL", {}).get(name, DEFAULTS[name])
        if name in DURATIONS and not isinstance(value, timedelta):
            value = timedelta(seconds=value)
        setattr(self, name, value)  # cached until reset()
        return value

    def reset(self) -> None:
        """Forget cached values, so the next read sees the current settings."""
        for name in DEFAULTS:
            self.__dict__.pop(name, None)


pool_settings = PoolSettings()


@receiver(setting_changed)
def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "TASKPOOL":
        pool_settings.reset()
        from taskpool.stores import reset_store

        reset_store()
