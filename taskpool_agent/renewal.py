"""Renewing the device's token before it expires, so that an agent runs for years unattended.

A device token lives the server's ``DEVICE_TOKEN_LIFETIME`` (30 days by
default). Once less than half of that is left (read from the token's own
``iat`` and ``exp``, without checking its signature: the server does), the
agent asks ``POST device/token`` for a new one of the same session, saves it
in its config file as ``enroll`` saves a token, and uses it from then on.
Those times are the server's: they are compared with the server's time as its
answers say it (``ServerClock``), not with the device's wall clock, which may be
days off until NTP sets it (each new token would look half used at once).
The token it renews keeps working until it expires, so a renewal whose
answer was lost, or whose save failed, costs nothing: it is asked again.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, TypeGuard

from taskpool_agent.config import Config, ConfigError, load, save, token_claims, token_device

#: How often (seconds) a running agent looks at its token's age, by default.
CHECK_INTERVAL_SECONDS = 300.0


def wants_renewal(token: str, now: float) -> bool:
    """Whether ``token`` has less than half of its lifetime left at ``now`` (epoch seconds,
    on the server's clock, which its ``iat`` and ``exp`` are on).

    A token that does not say when it was issued and when it expires (no
    ``iat`` or ``exp``, or not numbers, or ending before it starts) is left
    alone: it is not the server's device token, and asking would not help.
    """
    claims = token_claims(token)
    issued, expires = claims.get("iat"), claims.get("exp")
    if not (a_time(issued) and a_time(expires)) or expires <= issued:
        return False
    return now >= issued + (expires - issued) / 2


def a_time(value: Any) -> TypeGuard[float]:
    """Whether a claim is a time: a finite number of seconds (not ``true``)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def a_renewal(device_id: str) -> Any:
    """What tells the server's answer to a renewal from a page that is not the pool's: a
    token of the same device."""

    def check(data: Any) -> bool:
        token = data.get("token") if isinstance(data, dict) else None
        return isinstance(token, str) and token_device(token) == device_id

    return check


def save_token(path: Path, config: Config, token: str) -> None:
    """Put ``token`` in the config file at ``path``, durably (``save``), keeping what else
    the file says now (an operator may have changed it since the agent read it)."""
    try:
        current = load(path)
    except ConfigError:
        current = config  # gone or broken: written whole again, from what the agent runs with
    if current.server != config.server or current.device_id != config.device_id:
        raise ConfigError(
            f"{path} names another server or device than the agent runs as: the new token "
            "is not written there"
        )
    current.token = token
    save(path, current)
