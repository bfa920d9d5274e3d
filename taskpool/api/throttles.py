"""Throttles for the endpoints anyone may call: enrolling, and logging in.

Each counts requests per client address in Django's default cache (per
process with the local-memory cache; one count for the site with a shared
one). Its rate is DRF's ``DEFAULT_THROTTLE_RATES`` for its scope, read at
each request, or the default here.
"""

from __future__ import annotations

from typing import Any

from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


class AddressThrottle(SimpleRateThrottle):
    """Requests per client address, at ``default_rate`` unless the site's settings name
    ``scope``."""

    scope = ""
    default_rate = "30/min"

    def get_rate(self) -> str | None:
        # Read at each request, not at import (DRF's class attribute), so settings may change.
        rate = api_settings.DEFAULT_THROTTLE_RATES.get(self.scope, self.default_rate)
        return None if rate is None else str(rate)

    def get_cache_key(self, request: Any, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}

    def get_ident(self, request: Any) -> str:
        """The client's address: ``REMOTE_ADDR``, or with ``NUM_PROXIES`` set, the address that
        many proxies from the right of ``X-Forwarded-For``.

        Not DRF's default, which without ``NUM_PROXIES`` takes the whole header the client
        sent as its address: a new header each time would never be throttled.
        """
        if api_settings.NUM_PROXIES:
            return super().get_ident(request)
        return str(request.META.get("REMOTE_ADDR") or "")


class EnrollmentThrottle(AddressThrottle):
    """``POST enroll``: a device asking to join, with or without the site's key."""

    scope = "taskpool_enroll"


class LoginThrottle(AddressThrottle):
    """``POST auth/token``: a password guessed at, as many times as it is asked."""

    scope = "taskpool_login"
