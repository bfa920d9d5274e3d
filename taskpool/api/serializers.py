"""Request and response shapes. Requests are strict: JSON types are never coerced
(DRF's ``CharField`` would turn ``5`` into ``"5"``) and unknown fields are refused."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import PolymorphicProxySerializer, extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer, TokenRefreshSerializer
from rest_framework_simplejwt.settings import api_settings as jwt_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from taskpool.conf import pool_settings
from taskpool.exceptions import InvalidMessage
from taskpool.executions import EXECUTION_STATUSES
from taskpool.fleet import check_registered
from taskpool.jobs import check_option
from taskpool.messages import DEVICE_STATUSES, is_device_id
from taskpool.stores.validation import (
    TASK_ADDRESSES,
    TASK_META_RESERVED,
    check_meta_depth,
    deadline,
    own_meta,
    task_address,
    task_title,
)


class StrictCharField(serializers.CharField):
    """A JSON string, kept exactly as sent (no trimming, no coercion)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trim_whitespace", False)
        kwargs.setdefault("allow_blank", True)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        return super().to_internal_value(data)


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        if data not in self.choices:
            raise serializers.ValidationError(f"Must be one of: {', '.join(self.choices)}.")
        return data


def holds_nul(value: Any) -> bool:
    """Whether a JSON value has the NUL character in a string or a key, at any depth."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(key) or holds_nul(item) for key, item in value.items())
    if isinstance(value, list):
        return any(holds_nul(item) for item in value)
    return False


@extend_schema_field(OpenApiTypes.OBJECT)
class JSONObjectField(serializers.Field):
    """A JSON object (``meta``, a job's options); a string or a list is refused, and so is
    deep nesting."""

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        return by_the_rule(check_meta_depth, data, self.field_name) or data

    def to_representation(self, value: Any) -> Any:
        return value


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer: ``"5"``, ``5.0`` and ``true`` are refused."""

    def to_internal_value(self, data: Any) -> int:
        if type(data) is not int:
            raise serializers.ValidationError("Must be an integer.")
        return super().to_internal_value(data)


@extend_schema_field(OpenApiTypes.DATETIME)
class UTCDateTimeField(serializers.Field):
    """An ISO 8601 date and time with a time zone, as an aware UTC ``datetime``."""

    def to_internal_value(self, data: Any) -> datetime:
        if not isinstance(data, str):
            raise serializers.ValidationError("Must be a string.")
        if data.endswith("z"):
            data = data[:-1] + "Z"  # RFC 3339 allows either, as it allows a lower-case t
        try:
            moment = datetime.fromisoformat(data)
        except ValueError:
            raise serializers.ValidationError(
                "Must be an ISO 8601 date and time, like 2026-06-03T12:00:00Z."
            ) from None
        if moment.tzinfo is None:
            raise serializers.ValidationError("Must say its time zone (end it with Z for UTC).")
        return in_utc(moment)

    def to_representation(self, value: Any) -> Any:
        return value


def in_utc(moment: datetime) -> datetime:
    """An aware ``moment`` in UTC; refused if UTC has no such date (before year 1, after 9999)."""
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise serializers.ValidationError(
            "Must be a time between the years 1 and 9999 in UTC."
        ) from None


def by_the_rule(rule: Callable[..., Any], *args: Any) -> Any:
    """``rule(*args)``, one of the pool's shared rules, its refusal as a field error.

    The store applies the same rules; checking them here too lets a request
    (or the admin's form) hear of every field at fault at once.
    """
    try:
        return rule(*args)
    except InvalidMessage as error:
        raise serializers.ValidationError(error.message) from None


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not declare."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = [name for name in data if name not in self.fields]
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


# Requests ------------------------------------------------------------------


class TaskRequestSerializer(StrictSerializer):
    to = StrictCharField(help_text=f"{TASK_ADDRESSES}.")
    title = StrictCharField(help_text="What to do, in a few words (not empty).")
    body = StrictCharField(required=False, default="")
    meta = JSONObjectField(required=False, default=dict)
    ttl = StrictIntegerField(
        required=False, min_value=1, help_text="Seconds until the task expires (at most TASK_TTL)."
    )
    expires_at = UTCDateTimeField(required=False, help_text="When the task expires (ISO 8601).")
    mode = StrictChoiceField(
        choices=["any"], required=False, help_text='"any": one device does it.'
    )
    retries = JSONObjectField(
        required=False,
        help_text='{"max_attempts": 1-10, "on": ["failed", "timed_out"], "backoff": seconds}: '
        "a failed or timed-out attempt is offered again after the backoff.",
    )
    timeout = JSONObjectField(
        required=False,
        help_text='{"in_progress": seconds}: once claimed or in progress, the time to finish.',
    )
    rollout = JSONObjectField(
        required=False,
        help_text='{"max_per_minute": n}, or {"base_per_minute": n, "increment_factor": f, '
        '"after_succeeded": k}: offer the task to its devices at that rate.',
    )
    abort = JSONObjectField(
        required=False,
        help_text='{"failure_percentage": p, "min_executed": n, "on": ["failed", ...]}: '
        "past it, cancel the executions not started.",
    )
    not_before = UTCDateTimeField(
        required=False,
        help_text="Pending for no device before then (ISO 8601, at most TASK_TTL ahead).",
    )

    def validate_to(self, value: str) -> str:
        by_the_rule(check_registered, by_the_rule(task_address, value))
        return value

    def validate_title(self, value: str) -> str:
        return by_the_rule(task_title, value)

    def validate_meta(self, value: dict[str, Any]) -> dict[str, Any]:
        by_the_rule(own_meta, value, TASK_META_RESERVED)
        return value

    def validate_ttl(self, value: int) -> int:
        by_the_rule(deadline, 0.0, pool_settings.TASK_TTL.total_seconds(), value, None)
        return value

    # Each job option on its own, so that all of those at fault are named at once.

    def validate_retries(self, value: dict[str, Any]) -> dict[str, Any]:
        by_the_rule(check_option, "retries", value)
        return value

    def validate_timeout(self, value: dict[str, Any]) -> dict[str, Any]:
        by_the_rule(check_option, "timeout", value)
        return value

    def validate_rollout(self, value: dict[str, Any]) -> dict[str, Any]:
        by_the_rule(check_option, "rollout", value)
        return value

    def validate_abort(self, value: dict[str, Any]) -> dict[str, Any]:
        by_the_rule(check_option, "abort", value)
        return value


class ResponseRequestSerializer(StrictSerializer):
    parent_id = StrictCharField(allow_blank=False)
    status = StrictChoiceField(choices=list(DEVICE_STATUSES))
    title = StrictCharField(required=False, default="")
    body = StrictCharField(required=False, default="")
    meta = JSONObjectField(required=False, default=dict)


class HeartbeatRequestSerializer(StrictSerializer):
    body = StrictCharField(required=False, default="")
    meta = JSONObjectField(required=False, default=dict)


class ClaimRequestSerializer(StrictSerializer):
    parent_id = StrictCharField(required=False, allow_blank=False)


class CancelRequestSerializer(StrictSerializer):
    reason = StrictCharField(required=False, default="")


class DeviceTokenRenewalRequestSerializer(StrictSerializer):
    """No fields: the token renewed is the one the request is made with."""


class EnrollRequestSerializer(StrictSerializer):
    device_id = StrictCharField(
        allow_blank=False, help_text="The id to join as: [A-Za-z0-9][A-Za-z0-9._-]{0,63}."
    )
    kind = StrictCharField(
        required=False,
        default="",
        max_length=64,
        help_text="What the device is (raspberry-pi ...).",
    )
    meta = JSONObjectField(
        required=False, default=dict, help_text="Anything staff should see before approving it."
    )

    def validate_device_id(self, value: str) -> str:
        if not is_device_id(value):
            raise serializers.ValidationError("Not a device id: [A-Za-z0-9][A-Za-z0-9._-]{0,63}.")
        return value

    def validate_meta(self, value: dict[str, Any]) -> dict[str, Any]:
        # Kept in the site's database for staff to read, where PostgreSQL's JSON cannot
        # hold it (a task's meta, kept as the line's text, can).
        if holds_nul(value):
            raise serializers.ValidationError("Cannot hold the NUL character (\\u0000).")
        return value


class LoginSerializer(StrictSerializer, TokenObtainPairSerializer):
    """simplejwt's login, with strict string fields."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields[self.username_field] = StrictCharField(allow_blank=False, write_only=True)
        self.fields["password"] = StrictCharField(allow_blank=False, write_only=True)


class RefreshSerializer(StrictSerializer, TokenRefreshSerializer):
    """simplejwt's refresh, with a strict string field, which refuses the token of a user
    who no longer exists and, with ``CHECK_REVOKE_TOKEN``, one issued before the user's
    password last changed.

    (simplejwt would hand out an access token that every request then refuses.)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["refresh"] = StrictCharField(allow_blank=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, str]:
        payload = self.token_class(attrs["refresh"]).payload
        user_id = payload.get(jwt_settings.USER_ID_CLAIM)
        user = (
            get_user_model().objects.filter(**{jwt_settings.USER_ID_FIELD: user_id}).first()
            if user_id
            else None
        )
        if user_id and user is None:
            # simplejwt looks the user up with ``get()``: a deleted user was a server error.
            raise AuthenticationFailed(
                self.error_messages["no_active_account"], code="no_active_account"
            )
        if (
            jwt_settings.CHECK_REVOKE_TOKEN
            and user is not None
            and payload.get(jwt_settings.REVOKE_TOKEN_CLAIM) != get_md5_hash_password(user.password)
        ):
            raise AuthenticationFailed(
                "The user's password has been changed.", code="password_changed"
            )
        return super().validate(attrs)


# Responses (for the schema) ------------------------------------------------


class TokenPairSerializer(serializers.Serializer):
    access = serializers.CharField(help_text="Send as Authorization: Bearer <access>.")
    refresh = serializers.CharField(help_text="For auth/token/refresh.")


class AccessTokenSerializer(serializers.Serializer):
    access = serializers.CharField()
    refresh = serializers.CharField(
        required=False, help_text="A new refresh token, where SIMPLE_JWT rotates them."
    )


class EnrollmentSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    enrollment_secret = serializers.CharField(
        help_text="Keep it: send it as Enrollment-Secret to collect the token. Shown only once."
    )


class EnrollmentWaitingSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    status = serializers.ChoiceField(
        choices=["waiting"], help_text="Staff have not approved the device yet: ask again later."
    )


class DeviceTokenSerializer(serializers.Serializer):
    device_id = serializers.CharField()
    token = serializers.CharField(
        help_text="The device's token (Authorization: Bearer <token>). Handed out only once."
    )


class RenewedDeviceTokenSerializer(serializers.Serializer):
    token = serializers.CharField(
        help_text="A new token for the same device and session: the one it renews still works."
    )
    expires_at = serializers.CharField(help_text="UTC, second precision: 2026-06-03T12:34:56Z")


class MessageSerializer(serializers.Serializer):
    """One message of the pool: one line of a day file."""

    id = serializers.CharField()
    ts = serializers.CharField(help_text="UTC, second precision: 2026-06-03T12:34:56Z")
    to = serializers.CharField()
    type = serializers.ChoiceField(choices=["task", "response", "info", "heartbeat", "error"])
    title = serializers.CharField()
    body = serializers.CharField()
    parent_id = serializers.CharField(allow_null=True)
    meta = serializers.DictField()

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        fields["from"] = serializers.CharField()  # a keyword in Python
        return fields


class DeviceRowSerializer(serializers.Serializer):
    id = serializers.CharField()
    kind = serializers.CharField()
    validated = serializers.BooleanField()
    last_seen = serializers.CharField(allow_null=True)
    last_heartbeat = serializers.CharField(allow_null=True)
    online = serializers.BooleanField()
    pending = serializers.IntegerField()


_EXECUTION_HELP = "One of: " + ", ".join(EXECUTION_STATUSES)


class AttemptSerializer(serializers.Serializer):
    attempt = serializers.IntegerField()
    status = serializers.CharField(help_text="How the attempt ended.")
    updated = serializers.CharField()


class ExecutionSerializer(serializers.Serializer):
    device = serializers.CharField()
    status = serializers.CharField(help_text=_EXECUTION_HELP)
    updated = serializers.CharField()
    attempt = serializers.IntegerField(
        required=False, help_text="For a task with retries: the attempt the device is on."
    )
    attempts = AttemptSerializer(
        many=True, required=False, help_text="For a task with retries: each ended attempt."
    )


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()
    errors = serializers.DictField(  # type: ignore[assignment]  # the error body's field, not Serializer.errors
        child=serializers.ListField(child=serializers.CharField()), required=False
    )


class TaskDetailSerializer(serializers.Serializer):
    """A device asking is given its own part: its answers, the cancels and the job's moves
    that concern it, and its own execution."""

    task = MessageSerializer()
    responses = MessageSerializer(many=True)
    executions = ExecutionSerializer(many=True)
    claimed_by = serializers.CharField(allow_null=True, help_text="The holder of an any-one task.")


class TaskSummarySerializer(serializers.Serializer):
    task = MessageSerializer()
    statuses = serializers.ListField(child=serializers.CharField(help_text=_EXECUTION_HELP))


class TaskPageSerializer(serializers.Serializer):
    results = TaskSummarySerializer(many=True)
    next_cursor = serializers.CharField(allow_null=True)
    has_more = serializers.BooleanField()


class ClaimSerializer(serializers.Serializer):
    task = MessageSerializer()
    claim = MessageSerializer()


# The log ------------------------------------------------------------------------


class LogPageSerializer(serializers.Serializer):
    """A page of the log (for the schema)."""

    results = MessageSerializer(many=True)
    next_cursor = serializers.CharField(
        allow_null=True, help_text="Where to continue: the cursor given when nothing is new."
    )
    has_more = serializers.BooleanField()


#: ``GET log`` answers the day as a plain array without ``limit`` and ``after``, a page with
#: either: the schema says ``oneOf`` the two.
LogSerializer = PolymorphicProxySerializer(
    component_name="Log",
    serializers=[MessageSerializer(many=True), LogPageSerializer],
    resource_type_field_name=None,
    many=False,
)


# Operations ------------------------------------------------------------------


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    detail = serializers.CharField(
        required=False, help_text="The first failing check, in a sentence."
    )
    checks = serializers.DictField(
        child=serializers.CharField(),
        required=False,
        help_text="Each failing check by name, and what fails.",
    )
