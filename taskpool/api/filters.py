"""The filters of the endpoints that list rows of the site's database (django-filter).

Only the devices are such rows: tasks and messages are the pool's, read
from the store, and their query strings are serializers (``queries``).
"""

from __future__ import annotations

from typing import Any

import django_filters
from django_filters.rest_framework import DjangoFilterBackend
from rest_framework import serializers

from taskpool.api.queries import QueryChoiceField, QuerySerializer, QueryTextField
from taskpool.models import DeviceUser

_TRUE_OR_FALSE = (("false", "false"), ("true", "true"))


class FilterSetWithoutCycles(django_filters.FilterSet):
    """A filter set whose form class is made once, not at each request.

    django-filter makes a new form class for every filter set it builds, and a
    class is a reference cycle of its own: every listing left one (with the
    form, its fields and the request around it) for Python's cyclic collector.
    The fields are the class's own: they are the same at every request.
    """

    @classmethod
    def _form_class(cls) -> type:
        if "_cached_form_class" not in cls.__dict__:
            fields = {name: query_filter.field for name, query_filter in cls.base_filters.items()}
            cls._cached_form_class = type(f"{cls.__name__}Form", (cls._meta.form,), fields)
        return cls._cached_form_class

    def get_form_class(self) -> type:
        return self._form_class()


class FilterBackendWithoutCycles(DjangoFilterBackend):
    """django-filter's backend, taking its filter set apart once the rows are chosen.

    A filter set points at its filters, which point back at it, and its form at
    its bound fields, which point back at the form: taken apart, the request and
    the rest of what a listing made go as soon as the answer is sent.
    """

    def filter_queryset(self, request: Any, queryset: Any, view: Any) -> Any:
        try:
            return super().filter_queryset(request, queryset, view)
        finally:
            filterset = self.__dict__.pop("filterset", None)
            if filterset is not None:
                if "_form" in filterset.__dict__:
                    filterset.form.__dict__.clear()
                filterset.__dict__.clear()

    def get_filterset(self, request: Any, queryset: Any, view: Any) -> Any:
        self.filterset = super().get_filterset(request, queryset, view)
        return self.filterset


class DeviceFilter(FilterSetWithoutCycles):
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
