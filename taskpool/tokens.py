"""Device tokens: simplejwt access tokens carrying ``device_id`` and ``sid``."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import jwt
from rest_framework_simplejwt.tokens import Token

from taskpool.conf import pool_settings
from taskpool.models import DeviceUser

DEVICE_TOKEN_TYPE = "device"


class DeviceToken(Token):
    """A device's access token, valid while its ``sid`` matches the device's session."""

    token_type = DEVICE_TOKEN_TYPE

    @property
    def lifetime(self) -> timedelta:  # type: ignore[override]
        return pool_settings.DEVICE_TOKEN_LIFETIME

    @classmethod
    def for_device(cls, device: DeviceUser) -> DeviceToken:
        token = cls()
        token["device_id"] = device.id
        token["sid"] = device.user_session
        return token

    @staticmethod
    def claims_to_be_one(raw_token: bytes | str) -> bool:
        """Whether an unverified token says it is a device token (verification comes after)."""
        try:
            claims: dict[str, Any] = jwt.decode(raw_token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return claims.get("token_type") == DEVICE_TOKEN_TYPE
