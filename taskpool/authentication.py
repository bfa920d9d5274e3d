"""``DeviceJWTAuthentication``: a device token in ``Authorization: Bearer`` -> ``DeviceUser``;
``UserJWTAuthentication``: a user's token from ``/pool/auth/token``, as simplejwt's;
``CookieSessionAuthentication``: the admin's session, as DRF's, refusing a cookie that names
no session; ``MetricsTokenAuthentication``: the metrics scraper's token (``METRICS_TOKEN``)."""

from __future__ import annotations

import hmac
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext_lazy as _
from rest_framework.authentication import (
    BaseAuthentication,
    SessionAuthentication,
    get_authorization_header,
)
from rest_framework.request import Request
from rest_framework_simplejwt import authentication as simplejwt_authentication
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import AuthenticationFailed, InvalidToken, TokenError

from taskpool.conf import pool_settings
from taskpool.device_queries import device_by_id
from taskpool.models import DeviceUser
from taskpool.tokens import DeviceToken


class BearerHeader:
    """Tokens in ``Authorization: Bearer <token>``, as the pool's API documents and its agent
    sends them, whatever header the site's ``SIMPLE_JWT`` names for its own tokens (whose
    schemes are taken too)."""

    www_authenticate_realm = "taskpool"

    def get_header(self, request: Request) -> bytes:
        return get_authorization_header(request)  # b"" without one: no token here

    def get_raw_token(self, header: bytes) -> bytes | None:
        parts = header.split()
        if not parts:
            return None
        # A scheme's case says nothing (HTTP): "bearer" is "Bearer".
        schemes = {b"bearer", *(s.lower() for s in simplejwt_authentication.AUTH_HEADER_TYPE_BYTES)}
        if parts[0].lower() not in schemes:
            return None  # not a token of ours: the next class may know it
        if len(parts) != 2:
            raise AuthenticationFailed(
                str(_("Authorization header must contain two space-delimited values")),
                code="bad_authorization_header",
            )
        return parts[1]

    def authenticate_header(self, request: Request) -> str:
        return f'Bearer realm="{self.www_authenticate_realm}"'


class UserJWTAuthentication(BearerHeader, JWTAuthentication):
    """simplejwt's user tokens, read from the pool's own header (``BearerHeader``)."""


class DeviceJWTAuthentication(BearerHeader, JWTAuthentication):
    """Authenticates device tokens and leaves every other token to the next class.

    Put it before simplejwt's ``JWTAuthentication`` (which takes user tokens).
    An unvalidated device authenticates: permissions refuse it with 403. A
    token whose ``sid`` no longer matches the device's session is not valid (401).
    """

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
        device = device_by_id(device_id) if device_id else None
        if device is None:
            raise AuthenticationFailed(str(_("No such device.")), code="device_not_found")
        if not session or session != device.user_session:
            raise AuthenticationFailed(str(_("Token has been revoked.")), code="token_revoked")
        # For a request that waits (a long-poll, a stream): the token may expire meanwhile.
        device.token_expires_at = validated_token.get("exp")
        return device


class CookieSessionAuthentication(SessionAuthentication):
    """DRF's session authentication, where a session cookie holding a NUL character is no
    session: PostgreSQL refuses even to look such a key up, which was a 500 for anyone."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        key = request._request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if key is not None and "\x00" in key:
            return None
        return super().authenticate(request)


class MetricsToken:
    """``request.auth`` of a request that showed the metrics token (see ``CanReadMetrics``)."""

    def __repr__(self) -> str:
        return "<MetricsToken>"


class MetricsTokenAuthentication(BaseAuthentication):
    """``Authorization: Bearer <METRICS_TOKEN>``, compared in constant time; else the next class.

    The caller stays anonymous, with a ``MetricsToken`` as ``request.auth``:
    only the metrics endpoint's permission lets that in.
    """

    def authenticate(self, request: Request) -> tuple[AnonymousUser, MetricsToken] | None:
        expected = pool_settings.METRICS_TOKEN
        if not expected:
            return None
        scheme, _space, credential = get_authorization_header(request).partition(b" ")
        if scheme.lower() != b"bearer":
            return None
        if hmac.compare_digest(credential.strip(), str(expected).encode()):
            return AnonymousUser(), MetricsToken()
        return None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="taskpool"'
