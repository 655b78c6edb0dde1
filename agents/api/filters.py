from __future__ import annotations

import django_filters
from django.db.models import F, Q, QuerySet

from agents.models import Agent

DISPLAY_STATUSES = [("online", "online"), ("busy", "busy"), ("degraded", "degraded"), ("offline", "offline"),
                    ("draining", "draining")]


class AgentFilter(django_filters.FilterSet):
    """``status`` filters by the status the API shows (draining and busy included)."""

    status = django_filters.ChoiceFilter(choices=DISPLAY_STATUSES, method="filter_status")
    health_status = django_filters.ChoiceFilter(field_name="status", choices=Agent.Status.choices)

    class Meta:
        model = Agent
        fields = ["status", "health_status", "draining", "specialization"]

    def filter_status(self, queryset: QuerySet[Agent], name: str, value: str) -> QuerySet[Agent]:
        if value == "draining":
            return queryset.filter(draining=True)
        queryset = queryset.filter(draining=False)
        full = Q(status=Agent.Status.ONLINE, busy_slots__gte=F("max_concurrency"))
        if value == "busy":
            return queryset.filter(full)
        if value == "online":
            return queryset.filter(status=Agent.Status.ONLINE).exclude(full)
        return queryset.filter(status=value)
