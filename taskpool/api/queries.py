"""The query strings the endpoints take, one serializer each; any other parameter is refused.

A query-string value is text: numbers, times and cursors are written in
ASCII digits only (``int()``, ``float()`` and ``\\d`` would also take
Arabic-Indic or full-width ones), and a parameter an endpoint does not
declare is a 400 that names it, as an unknown body field is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

from django.utils.dateparse import parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from taskpool.api.serializers import in_utc
from taskpool.conf import pool_settings
from taskpool.days import parse_day
from taskpool.exceptions import InvalidCursor, InvalidMessage
from taskpool.executions import EXECUTION_STATUSES
from taskpool.jobs import JOB_KEYS
from taskpool.messages import Address, parse_address
from taskpool.stores.base import TaskQuery

_DIGITS = re.compile(r"[0-9]{1,9}")
_SECONDS = re.compile(r"[0-9]{1,6}(\.[0-9]{1,3})?")


class QuerySerializer(serializers.Serializer):
    """A query string: the declared parameters, and a 400 naming any other one, or one given
    twice that takes one value (the last would be taken, as a key twice in a JSON body)."""

    def to_internal_value(self, data: Any) -> Any:
        unknown = [name for name in data if name not in self.fields]
        if unknown:
            raise serializers.ValidationError(
                {name: ["Unknown query parameter."] for name in unknown}
            )
        repeated = [
            name
            for name in data
            if not isinstance(
                self.fields[name], serializers.MultipleChoiceField | serializers.ListField
            )
            and len(data.getlist(name)) > 1
        ]
        if repeated:
            raise serializers.ValidationError(
                {name: ["Given more than once."] for name in repeated}
            )
        return super().to_internal_value(data)


class NoQuerySerializer(QuerySerializer):
    """The query string of an endpoint that takes no parameters."""


# Fields ---------------------------------------------------------------------


class QueryField(serializers.Field):
    """A query-string value; present but empty (``?limit=``) is a bad value, not absent."""

    def get_value(self, dictionary: Any) -> Any:
        # DRF reads an empty form value as absent; in a query string it is a bad value.
        return dictionary.get(self.field_name, serializers.empty)

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(OpenApiTypes.INT)
class QueryIntegerField(QueryField):
    """A whole number written in ASCII digits, from ``min_value`` to ``max_value``."""

    def __init__(self, *, min_value: int, max_value: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_value, self.max_value = min_value, max_value

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and _DIGITS.fullmatch(data):
            value = int(data)
            if self.min_value <= value <= self.max_value:
                return value
        raise serializers.ValidationError(
            f"Must be a whole number from {self.min_value} to {self.max_value}."
        )


def page_size(default: int) -> QueryIntegerField:
    """``limit``: a page of 1 to 1000 items."""
    return QueryIntegerField(
        min_value=1,
        max_value=1000,
        required=False,
        default=default,
        help_text=f"Page size: 1 to 1000 (default {default}).",
    )


@extend_schema_field(OpenApiTypes.FLOAT)
class QuerySecondsField(QueryField):
    """A duration in seconds, ``0`` to ``maximum()``: ``30`` or ``2.5``."""

    def __init__(self, *, maximum: Callable[[], float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.maximum = maximum

    def to_internal_value(self, data: Any) -> float:
        limit = self.maximum()
        if isinstance(data, str) and _SECONDS.fullmatch(data) and float(data) <= limit:
            return float(data)
        raise serializers.ValidationError(
            f"Must be a number of seconds from 0 to {limit:g} (LONG_POLL_MAX), like 30 or 2.5."
        )


#: What any store's cursor looks like: a short run of visible ASCII (so no other
#: script's digits). Whether it names a position is the store's to say
#: (``BaseStore.check_cursor``).
_CURSOR_TEXT = re.compile(r"[\x21-\x7e]{1,64}")


def checked_cursor_text(text: object) -> str:
    """``text`` if it can be a cursor at all; ``InvalidCursor`` otherwise."""
    if not isinstance(text, str) or not _CURSOR_TEXT.fullmatch(text):
        raise InvalidCursor(f"{text!r} is not a cursor.")
    return text


@extend_schema_field(OpenApiTypes.STR)
class CursorField(QueryField):
    """A cursor as the stream and the log give them (opaque: only the store reads it)."""

    def to_internal_value(self, data: Any) -> str:
        try:
            return checked_cursor_text(data)
        except InvalidCursor as error:
            raise serializers.ValidationError(error.message) from None


@extend_schema_field(OpenApiTypes.DATE)
class DayField(QueryField):
    """A real, zero-padded ``YYYY-MM-DD``."""

    def to_internal_value(self, data: Any) -> date:
        try:
            return parse_day(data)
        except ValueError:
            raise serializers.ValidationError(
                "Must be a real date written YYYY-MM-DD, like 2026-06-03."
            ) from None

    def to_representation(self, value: Any) -> Any:
        return value.isoformat()


@extend_schema_field(OpenApiTypes.DATETIME)
class QueryDateTimeField(QueryField):
    """An ISO 8601 date and time; without a time zone it is UTC."""

    def to_internal_value(self, data: Any) -> datetime:
        moment = None
        if isinstance(data, str) and data.isascii():
            try:
                moment = parse_datetime(data)
            except ValueError:  # well formed, but no such day or time
                moment = None
        if moment is None:
            raise serializers.ValidationError(
                "Must be an ISO 8601 date and time, like 2026-06-03T12:00:00Z."
            )
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return in_utc(moment)


class QueryChoiceField(serializers.ChoiceField):
    """One of a few words."""

    def __init__(self, *, choices: list[str], **kwargs: Any) -> None:
        message = f"Must be one of: {', '.join(choices)}."
        super().__init__(choices=choices, error_messages={"invalid_choice": message}, **kwargs)

    def get_value(self, dictionary: Any) -> Any:
        return dictionary.get(self.field_name, serializers.empty)


@extend_schema_field(OpenApiTypes.BOOL)
class QueryFlagField(QueryField):
    """A query-string switch: present (``?ready``, ``?ready=1``, ``?ready=true``) or not."""

    def to_internal_value(self, data: Any) -> bool:
        if data in ("", "1", "true"):
            return True
        if data in ("0", "false"):
            return False
        raise serializers.ValidationError("Must be empty, 1, true, 0 or false.")


class QueryTextField(serializers.CharField):
    """Text to filter by; empty means no filter (a search form sends its empty fields)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, allow_blank=True, trim_whitespace=False, **kwargs)


@extend_schema_field(OpenApiTypes.STR)
class QueryAddressField(QueryField):
    """An address to filter by (``device:pi-1``); empty means no filter."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(required=False, **kwargs)

    def to_internal_value(self, data: Any) -> Address | None:
        if data == "":
            return None
        try:
            return parse_address(data)
        except InvalidMessage as error:
            raise serializers.ValidationError(error.message) from None


# One serializer per endpoint -------------------------------------------------------


class PendingQuerySerializer(QuerySerializer):
    limit = page_size(100)
    wait = QuerySecondsField(
        maximum=lambda: pool_settings.LONG_POLL_MAX.total_seconds(),
        required=False,
        help_text="Hold the request until a task is pending, at most this many seconds "
        "(0 to LONG_POLL_MAX); then answer [].",
    )


class StreamQuerySerializer(QuerySerializer):
    after = CursorField(
        required=False,
        help_text="Replay what came after this cursor, then go live (the Last-Event-ID header wins).",
    )
    all = QueryFlagField(
        required=False,
        default=False,
        help_text="1: a master gets every task and response, not only its own tasks' thread.",
    )


class LogQuerySerializer(QuerySerializer):
    date = DayField(
        required=False, help_text="YYYY-MM-DD: that day (default today, UTC); with limit, a page."
    )
    after = CursorField(
        required=False, help_text="The page after this cursor, running on into later days."
    )
    limit = page_size(100)
    format = QueryChoiceField(
        choices=["json", "jsonl"],
        required=False,
        help_text="jsonl: the day's lines as stored (application/x-ndjson).",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "date" in attrs and "after" in attrs:
            raise serializers.ValidationError({"after": ["Give date or after, not both."]})
        return attrs


class TaskListQuerySerializer(QuerySerializer):
    """``status`` and ``job`` (repeatable), ``to``, ``from``, ``since``, ``until``, ``q``;
    ``limit``, ``before``."""

    status = serializers.MultipleChoiceField(
        choices=EXECUTION_STATUSES,
        required=False,
        error_messages={"invalid_choice": f"Must be one of: {', '.join(EXECUTION_STATUSES)}."},
        help_text="Tasks with an execution in this status (repeat for several).",
    )
    to = QueryAddressField(
        help_text="device:X: tasks that address X; other addresses match exactly."
    )
    since = QueryDateTimeField(required=False, help_text="Tasks posted at or after (ISO 8601).")
    until = QueryDateTimeField(required=False, help_text="Tasks posted at or before (ISO 8601).")
    q = QueryTextField(help_text="Text in the title or body (case-insensitive).")
    job = serializers.MultipleChoiceField(
        choices=JOB_KEYS,
        required=False,
        error_messages={"invalid_choice": f"Must be one of: {', '.join(JOB_KEYS)}."},
        help_text="Tasks with this job option (repeat for several): retries, timeout, rollout, "
        "abort, not_before.",
    )
    limit = page_size(50)
    before = CursorField(required=False, help_text="next_cursor of the previous page.")

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        # "from" is a Python keyword: added by name.
        fields["from"] = QueryTextField(help_text="The sender, exactly: user:<email> or backend.")
        return fields


def task_query(values: dict[str, Any]) -> TaskQuery:
    """A ``TaskListQuerySerializer``'s validated filters, as the store takes them."""
    return TaskQuery(
        statuses=frozenset(values["status"]) if values.get("status") else None,
        to=values.get("to") or None,
        sender=values.get("from") or None,
        since=values.get("since"),
        until=values.get("until"),
        text=values.get("q") or None,
        options=frozenset(values["job"]) if values.get("job") else None,
    )


class HealthQuerySerializer(QuerySerializer):
    ready = QueryFlagField(
        required=False,
        default=False,
        help_text="Also fail while the store is getting ready (the day files' index being built).",
    )


class SchemaQuerySerializer(QuerySerializer):
    """What drf-spectacular's schema view reads."""

    format = serializers.CharField(required=False, help_text="json or yaml (the default).")
    lang = serializers.CharField(required=False)
    version = serializers.CharField(required=False)


class DocsQuerySerializer(QuerySerializer):
    """What drf-spectacular's docs page reads."""

    lang = serializers.CharField(required=False)
    version = serializers.CharField(required=False)
