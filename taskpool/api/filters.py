"""Filters of the task list (``GET /pool/tasks``), parsed and validated with django-filter."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms

from taskpool.api.serializers import checked_cursor_text
from taskpool.exceptions import InvalidCursor, InvalidMessage
from taskpool.jobs import JOB_KEYS
from taskpool.lifecycle import EXECUTION_STATUSES
from taskpool.messages import parse_address
from taskpool.stores.base import TaskQuery


class AddressField(forms.CharField):
    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            return parse_address(value)
        except InvalidMessage as error:
            raise forms.ValidationError(error.message) from None


class CursorField(forms.CharField):
    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            return checked_cursor_text(value)
        except InvalidCursor as error:
            raise forms.ValidationError(error.message) from None


class PageSizeField(forms.CharField):
    """A page size in plain digits, 1 to 1000."""

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        if not value.isascii() or not value.isdigit() or not 1 <= int(value) <= 1000:
            raise forms.ValidationError("Must be a whole number from 1 to 1000.")
        return int(value)


class PageSizeFilter(django_filters.Filter):
    field_class = PageSizeField


class AddressFilter(django_filters.Filter):
    field_class = AddressField


class CursorFilter(django_filters.Filter):
    field_class = CursorField


class _Pool:
    """Stands in for the queryset a FilterSet expects: the pool has no model."""

    model = None


class PoolFilterSet(django_filters.FilterSet):
    """A FilterSet over the pool: its form validates the query string, the store filters."""

    def __init__(self, data: Any = None, *, request: Any = None) -> None:
        super().__init__(data, queryset=_Pool(), request=request)


class TaskFilter(PoolFilterSet):
    """``status``, ``to``, ``from``, ``since``, ``until``, ``q``; paging with ``limit`` and ``before``.

    The pool is not a queryset: the validated values become a ``TaskQuery`` for the store.
    """

    status = django_filters.MultipleChoiceFilter(
        label="status",
        choices=[(status, status) for status in EXECUTION_STATUSES],
        help_text="Tasks with an execution in this status (repeat for several).",
    )
    to = AddressFilter(
        label="to", help_text="device:X: tasks that address X; other addresses match exactly."
    )
    since = django_filters.IsoDateTimeFilter(
        label="since", help_text="Tasks posted at or after (ISO 8601)."
    )
    until = django_filters.IsoDateTimeFilter(
        label="until", help_text="Tasks posted at or before (ISO 8601)."
    )
    q = django_filters.CharFilter(
        label="q", help_text="Text in the title or body (case-insensitive)."
    )
    job = django_filters.MultipleChoiceFilter(
        label="job",
        choices=[(key, key) for key in JOB_KEYS],
        help_text="Tasks with this job option (repeat for several): retries, timeout, rollout, "
        "abort, not_before.",
    )
    limit = PageSizeFilter(label="limit", help_text="Page size: 1 to 1000, default 50.")
    before = CursorFilter(label="before", help_text="next_cursor of the previous page.")


# "from" is a Python keyword: add it by name.
TaskFilter.base_filters["from"] = django_filters.CharFilter(
    label="from", help_text="The sender, exactly: user:<email> or backend."
)


def task_query(data: Any) -> tuple[TaskQuery, str | None, int]:
    """Validate the query string: the store query, the ``before`` cursor and the page size.

    Raises ``ValueError`` with ``{field: [messages]}`` for values that do not validate.
    """
    filterset = TaskFilter(data=data)
    form = filterset.form
    if not form.is_valid():
        raise ValueError({field: list(messages) for field, messages in form.errors.items()})
    values = form.cleaned_data
    limit = values.get("limit") or 50
    statuses = values.get("status")
    query = TaskQuery(
        statuses=frozenset(statuses) if statuses else None,
        to=values.get("to"),
        sender=values.get("from") or None,
        since=values.get("since"),
        until=values.get("until"),
        text=values.get("q") or None,
        options=frozenset(values["job"]) if values.get("job") else None,
    )
    return query, values.get("before"), limit
