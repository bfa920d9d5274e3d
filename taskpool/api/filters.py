"""The filters of the endpoints that list rows of the site's database (django-filter).

Only the devices are such rows: tasks and messages are the pool's, read
from the store, and their query strings are serializers (``queries``).
"""

from __future__ import annotations

from typing import Any

import django_filters
from rest_framework import serializers

from taskpool.api.queries import QueryChoiceField, QuerySerializer, QueryTextField
from taskpool.models import DeviceUser

_TRUE_OR_FALSE = (("false", "false"), ("true", "true"))


class DeviceFilter(django_filters.FilterSet):
    """``GET /pool/devices?kind=raspberry-pi&validated=true``."""

    kind = django_filters.CharFilter(
        max_length=64, help_text="Only the devices of this kind (as registered, exactly)."
    )
    # A choice, not a BooleanFilter: that one takes any other word for "no filter".
    validated = django_filters.TypedChoiceFilter(
        choices=_TRUE_OR_FALSE,
        coerce=lambda value: value == "true",
        help_text="true: only the devices allowed to use the pool; false: only the others.",
    )

    class Meta:
        model = DeviceUser
        fields = ["kind", "validated"]


def filter_parameters(filterset_class: type[django_filters.FilterSet]) -> type[QuerySerializer]:
    """The query serializer of an endpoint filtered by ``filterset_class``, so that its query
    string is judged as every endpoint's is: any other parameter refused by name, a choice
    refused when empty or not one of its words, text that filters nothing when empty (as
    a search form sends it)."""

    class FilterParameters(QuerySerializer):
        def get_fields(self) -> dict[str, Any]:
            return {
                name: _parameter(query_filter)
                for name, query_filter in filterset_class.base_filters.items()
            }

    FilterParameters.__name__ = f"{filterset_class.__name__}Parameters"
    return FilterParameters


def _parameter(query_filter: django_filters.Filter) -> serializers.Field:
    if "choices" in query_filter.extra:  # ChoiceFilter, TypedChoiceFilter
        choices = [value for value, _label in query_filter.extra["choices"]]
        return QueryChoiceField(choices=choices, required=False)
    return QueryTextField(max_length=query_filter.extra.get("max_length"))
