"""Device tokens: simplejwt access tokens carrying ``device_id`` and ``sid``."""

from __future__ import annotations

import base64
import binascii
from datetime import timedelta

import orjson
from rest_framework_simplejwt.tokens import Token

from taskpool.conf import pool_settings
from taskpool.messages import format_timestamp
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

    @property
    def expires_at(self) -> str:
        """When the token stops working, as the pool writes times (``2026-06-03T12:34:56Z``)."""
        return format_timestamp(self["exp"])

    @staticmethod
    def claims_to_be_one(raw_token: bytes | str) -> bool:
        """Whether an unverified token says it is a device token (verification comes after).

        Only a look at the claims, for which PyJWT's decoding (a check of every
        character of the token) would be the second of two on every request.
        """
        token = raw_token.encode(errors="replace") if isinstance(raw_token, str) else raw_token
        parts = token.split(b".")
        if len(parts) != 3:
            return False
        try:
            claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + b"=" * (-len(parts[1]) % 4)))
        except (ValueError, binascii.Error, orjson.JSONDecodeError):
            return False
        return isinstance(claims, dict) and claims.get("token_type") == DEVICE_TOKEN_TYPE
