from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hive_project.permissions import HasPerms
from monitoring.metrics import performance
from monitoring.models import Alert, AlertRule


class WindowSerializer(serializers.Serializer):
    window = serializers.IntegerField(min_value=10, max_value=30 * 86400, default=3600,
                                      help_text="Seconds to look back (default 3600)")


class PerformanceView(APIView):
    permission_classes = [HasPerms]
    required_perms = ["agents.view_agent"]

    @extend_schema(parameters=[WindowSerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        """Per agent: tokens/s, response time, success/error rates, busy slots; per cluster: queue per
        priority, active tasks, completion time; the Hive host's CPU, memory and disk."""
        query = WindowSerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(performance(timedelta(seconds=query.validated_data["window"])))


class AlertSerializer(serializers.ModelSerializer):
    rule = serializers.CharField(source="rule.name")
    condition = serializers.CharField(source="rule.condition")

    class Meta:
        model = Alert
        fields = ["id", "rule", "condition", "severity", "subject", "status", "message", "value", "fired_at",
                  "resolved_at", "notified"]


class AlertFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=Alert.Status.choices)
    severity = django_filters.ChoiceFilter(choices=AlertRule.Severity.choices)
    subject = django_filters.CharFilter()

    class Meta:
        model = Alert
        fields = ["status", "severity", "subject"]


class AlertViewSet(viewsets.ReadOnlyModelViewSet):
    """Alerts fired by the alert rules, newest first."""

    serializer_class = AlertSerializer
    filterset_class = AlertFilter
    permission_classes = [HasPerms]
    required_perms = ["agents.view_agent"]

    def get_queryset(self) -> Any:
        return Alert.objects.select_related("rule").order_by("-fired_at")
