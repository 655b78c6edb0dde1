from __future__ import annotations

import operator
from collections.abc import Callable

from django.core.validators import MinValueValidator
from django.db import models
from django.db.models import Q


class AlertRule(models.Model):
    """A condition on one metric, e.g. ``cpu_usage > 85``, evaluated on beat.

    Per-agent metrics are evaluated for every agent (one alert per agent); the
    others once for the cluster or the Hive host.
    """

    class Metric(models.TextChoices):
        HOST_CPU = "cpu_usage", "Hive host CPU usage (%)"
        HOST_MEMORY = "memory_usage", "Hive host memory usage (%)"
        HOST_DISK = "disk_usage", "Hive host disk usage (%)"
        AGENT_AVAILABLE = "agent_available", "Agent available (1/0)"
        AGENT_RESPONSE_TIME = "avg_response_time", "Agent average response time (s)"
        AGENT_ERROR_RATE = "error_rate", "Agent task error rate (0..1)"
        QUEUE_PENDING = "queue_length", "Pending tasks"
        QUEUE_OLDEST_WAIT = "oldest_wait", "Oldest pending task's wait (s)"

    class Operator(models.TextChoices):
        GT = ">", ">"
        GTE = ">=", ">="
        LT = "<", "<"
        LTE = "<=", "<="
        EQ = "==", "=="
        NE = "!=", "!="

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    name = models.SlugField(max_length=100, unique=True)
    description = models.CharField(max_length=255, blank=True)
    metric = models.CharField(max_length=32, choices=Metric.choices)
    operator = models.CharField(max_length=2, choices=Operator.choices, default=Operator.GT)
    threshold = models.FloatField()
    window_seconds = models.PositiveIntegerField(
        default=300, validators=[MinValueValidator(10)],
        help_text="Look-back for averages and rates (response time, error rate).")
    severity = models.CharField(max_length=16, choices=Severity.choices, default=Severity.WARNING)
    cooldown_seconds = models.PositiveIntegerField(default=300, help_text="No new alert for the same subject within this.")
    enabled = models.BooleanField(default=True)
    webhook_url = models.URLField(blank=True, help_text="Optional: POST each firing and resolution here as JSON.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "alert_rules"
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.name}: {self.condition}"

    @property
    def condition(self) -> str:
        return f"{self.metric} {self.operator} {self.threshold:g}"

    def holds(self, value: float) -> bool:
        compare: Callable[[float, float], bool] = {
            ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le,
            "==": operator.eq, "!=": operator.ne,
        }[self.operator]
        return compare(value, self.threshold)

    @property
    def per_agent(self) -> bool:
        return self.metric in (self.Metric.AGENT_AVAILABLE, self.Metric.AGENT_RESPONSE_TIME, self.Metric.AGENT_ERROR_RATE)


class Alert(models.Model):
    class Status(models.TextChoices):
        FIRING = "firing", "Firing"
        RESOLVED = "resolved", "Resolved"

    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="alerts")
    subject = models.CharField(max_length=120, help_text="The agent id, 'cluster' or 'host'.")
    severity = models.CharField(max_length=16, choices=AlertRule.Severity.choices)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.FIRING, db_index=True)
    message = models.TextField()
    value = models.FloatField(null=True, blank=True)
    fired_at = models.DateTimeField(auto_now_add=True, db_index=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    notified = models.BooleanField(default=False, help_text="The webhook accepted the firing.")

    class Meta:
        db_table = "alerts"
        ordering = ["-fired_at"]
        constraints = [
            # At most one firing alert per rule and subject, whatever races.
            models.UniqueConstraint(fields=["rule", "subject"], condition=Q(status="firing"), name="one_firing_alert"),
        ]

    def __str__(self) -> str:
        return f"[{self.severity}] {self.rule.name} on {self.subject} ({self.status})"
