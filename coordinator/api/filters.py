from __future__ import annotations

import uuid
from datetime import UTC
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet

from coordinator.models import Task


class SafeIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO date-time whose UTC value falls outside years 1..9999 is bad input, not a crash."""

    def clean(self, value: Any) -> Any:
        cleaned = super().clean(value)
        if cleaned is not None:
            try:
                # In UTC: PostgreSQL refuses offsets beyond +-15:59 that ISO 8601 and Python allow.
                cleaned = cleaned.astimezone(UTC)
            except OverflowError:
                raise forms.ValidationError("date-time out of range once converted to UTC") from None
        return cleaned


class SafeIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = SafeIsoDateTimeField


class TaskFilter(django_filters.FilterSet):
    status = django_filters.MultipleChoiceFilter(choices=Task.Status.choices)
    agent = django_filters.CharFilter(method="filter_agent", help_text="Assigned agent: UUID or agent_id")
    priority = django_filters.NumberFilter(field_name="priority")
    priority_min = django_filters.NumberFilter(field_name="priority", lookup_expr="gte")
    task_type = django_filters.CharFilter(field_name="task_type")
    type = django_filters.CharFilter(field_name="task_type", help_text="Alias of task_type")
    created_after = SafeIsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = SafeIsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = Task
        fields = ["status", "agent", "priority", "task_type"]

    def filter_agent(self, queryset: QuerySet[Task], name: str, value: str) -> QuerySet[Task]:
        try:
            return queryset.filter(assigned_agent_id=uuid.UUID(value))
        except ValueError:
            return queryset.filter(Q(assigned_agent__slug=value))
