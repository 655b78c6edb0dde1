"""Celery entry points for monitoring (thin)."""
from __future__ import annotations

from celery import shared_task

from agents.services import prune_health_checks
from monitoring import alerts


@shared_task(name="hive.evaluate_alerts", ignore_result=True, soft_time_limit=60, time_limit=90)
def evaluate_alerts() -> dict[str, int]:
    return alerts.evaluate()


@shared_task(name="hive.cleanup", ignore_result=True, soft_time_limit=300, time_limit=330)
def cleanup() -> dict[str, int]:
    """Retention: health history and resolved alerts past their keep-by dates."""
    return {"health_checks": prune_health_checks(), "alerts": alerts.prune_resolved()}
