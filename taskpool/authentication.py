"""``DeviceJWTAuthentication``: a device token in ``Authorization: Bearer`` -> ``DeviceUser``."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.request import Request
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError

from taskpool.models import DeviceUser
from taskpool.tokens import DeviceToken


class DeviceJWTAuthentication(JWTAuthentication):
    """Authenticates device tokens and leaves every other token to the next class.

    Put it before simplejwt's ``JWTAuthentication`` (which takes user tokens).
    An unvalidated device authenticates: permissions refuse it with 403. A
    token whose ``sid`` no longer matches the device's session is not valid (401).
    """

    www_authenticate_realm = "taskpool"

    def authenticate(self, request: Request) -> tuple[DeviceUser, DeviceToken] | None:  # type: ignore[override]
        header = self.get_header(request)
        if header is None:
            return None
        raw_token = self.get_raw_token(header)
        if raw_token is None or not DeviceToken.claims_to_be_one(raw_token):
            return None
        token = self.get_validated_token(raw_token)
        return self.get_user(token), token

    def get_validated_token(self, raw_token: bytes) -> DeviceToken:
        try:
            return DeviceToken(raw_token)  # type: ignore[arg-type]  # the stubs forget raw tokens
        except TokenError as error:
            raise InvalidToken({"detail": str(error.args[0])}) from error

    def get_user(self, validated_token: Any) -> DeviceUser:  # type: ignore[override]
        device_id = validated_token.get("device_id")
        session = validated_token.get("sid")
        device = DeviceUser.objects.filter(pk=device_id).first() if device_id else None
        if device is None:
            raise AuthenticationFailed(str(_("No such device.")), code="device_not_found")
        if not session or session != device.user_session:
            raise AuthenticationFailed(str(_("Token has been revoked.")), code="token_revoked")
        return device
