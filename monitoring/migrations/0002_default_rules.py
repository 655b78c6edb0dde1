"""The seed's alert rules (high CPU, agent down, slow response, high error rate) plus
queue backlog. Created once; operators edit them in the admin afterwards."""
from __future__ import annotations

from django.db import migrations

RULES = [
    ("high-cpu", "High CPU on the Hive host", "cpu_usage", ">", 85, 300, "warning", 300),
    ("agent-down", "Agent down", "agent_available", "==", 0, 60, "critical", 60),
    ("slow-response", "Slow agent response", "avg_response_time", ">", 60, 300, "warning", 180),
    ("high-error-rate", "High task error rate on an agent", "error_rate", ">", 0.1, 300, "warning", 300),
    ("queue-backlog", "Queue backlog: a task has waited over 10 minutes", "oldest_wait", ">", 600, 300, "warning", 600),
]


def create(apps, schema_editor):
    AlertRule = apps.get_model("monitoring", "AlertRule")
    for name, description, metric, op, threshold, window, severity, cooldown in RULES:
        AlertRule.objects.get_or_create(name=name, defaults={
            "description": description, "metric": metric, "operator": op, "threshold": threshold,
            "window_seconds": window, "severity": severity, "cooldown_seconds": cooldown})


def remove(apps, schema_editor):
    apps.get_model("monitoring", "AlertRule").objects.filter(name__in=[r[0] for r in RULES]).delete()


class Migration(migrations.Migration):
    dependencies = [("monitoring", "0001_alerts")]
    operations = [migrations.RunPython(create, remove)]
