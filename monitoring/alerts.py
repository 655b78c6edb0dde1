"""Alert evaluation: fire once, stay quiet within the cooldown, resolve when clear."""
from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import httpx
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from coordinator import events
from monitoring import metrics
from monitoring.models import Alert, AlertRule

logger = logging.getLogger(__name__)


def current_values(rule: AlertRule, cache: dict[str, Any]) -> dict[str, float | None]:
    """Subject -> value of the rule's metric (None: no data, the rule cannot hold)."""
    window = timedelta(seconds=rule.window_seconds)
    metric = rule.metric
    if metric in (AlertRule.Metric.HOST_CPU, AlertRule.Metric.HOST_MEMORY, AlertRule.Metric.HOST_DISK):
        if "host" not in cache:
            cache["host"] = metrics.host_metrics(cpu_interval=0.5)
        return {"host": float(cache["host"][metric])}
    if metric in (AlertRule.Metric.QUEUE_PENDING, AlertRule.Metric.QUEUE_OLDEST_WAIT):
        key = f"cluster:{rule.window_seconds}"
        if key not in cache:
            cache[key] = metrics.cluster_metrics(window)
        return {"cluster": float(cache[key][metric])}
    key = f"agents:{rule.window_seconds}"
    if key not in cache:
        cache[key] = metrics.agent_metrics(window)
    values: dict[str, float | None] = {}
    field = "available" if metric == AlertRule.Metric.AGENT_AVAILABLE else metric
    for row in cache[key]:
        if not row["probed"]:  # registered a moment ago, not probed yet: no verdict
            continue
        value = row[field]
        values[row["agent_id"]] = float(value) if value is not None else None
    return values


def _message(rule: AlertRule, subject: str, value: float | None) -> str:
    where = {"host": "the Hive host", "cluster": "the cluster"}.get(subject, f"agent {subject}")
    shown = f"{value:g}" if value is not None else "n/a"
    return f"{rule.description or rule.name}: {rule.metric} is {shown} on {where} ({rule.condition})"


def evaluate() -> dict[str, int]:
    fired = resolved = 0
    cache: dict[str, Any] = {}
    now = timezone.now()
    for rule in AlertRule.objects.filter(enabled=True):
        values = current_values(rule, cache)
        firing = {a.subject: a for a in Alert.objects.filter(rule=rule, status=Alert.Status.FIRING)}
        for subject, value in values.items():
            holds = value is not None and rule.holds(value)
            if holds and subject not in firing:
                last = Alert.objects.filter(rule=rule, subject=subject).order_by("-fired_at").first()
                if last is not None and now - last.fired_at < timedelta(seconds=rule.cooldown_seconds):
                    continue
                alert = _fire(rule, subject, value)
                fired += alert is not None
            elif not holds and subject in firing and value is not None:
                _resolve(firing[subject], value)
                resolved += 1
        for subject, alert in firing.items():
            if subject not in values:  # the agent is gone
                _resolve(alert, None)
                resolved += 1
    return {"fired": fired, "resolved": resolved}


def _fire(rule: AlertRule, subject: str, value: float | None) -> Alert | None:
    try:
        with transaction.atomic():
            alert = Alert.objects.create(rule=rule, subject=subject, severity=rule.severity, value=value,
                                         message=_message(rule, subject, value))
            _announce(alert, "firing")
    except IntegrityError:  # another evaluator fired it first
        return None
    logger.warning("alert fired: %s", alert.message)
    alert.notified = notify(rule, _payload(alert, "firing"))
    Alert.objects.filter(pk=alert.pk).update(notified=alert.notified)
    return alert


def _resolve(alert: Alert, value: float | None) -> None:
    with transaction.atomic():
        updated = Alert.objects.filter(pk=alert.pk, status=Alert.Status.FIRING).update(
            status=Alert.Status.RESOLVED, resolved_at=timezone.now())
        if not updated:
            return
        alert.refresh_from_db()
        _announce(alert, "resolved", value=value)
    logger.info("alert resolved: %s", alert.message)
    notify(alert.rule, _payload(alert, "resolved", value=value))


def _payload(alert: Alert, state: str, **extra: Any) -> dict[str, Any]:
    return {"alert_id": alert.pk, "rule": alert.rule.name, "condition": alert.rule.condition, "state": state,
            "severity": alert.severity, "subject": alert.subject, "message": alert.message, "value": alert.value,
            "fired_at": alert.fired_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat() if alert.resolved_at else None, **extra}


def _announce(alert: Alert, state: str, **extra: Any) -> None:
    events.publish(events.SYSTEM_ALERT, "performance_monitor", _payload(alert, state, **extra),
                   [f"alerts.{alert.severity}"], correlation_id=str(alert.pk))


def notify(rule: AlertRule, payload: dict[str, Any]) -> bool:
    url = rule.webhook_url or settings.HIVE_ALERT_WEBHOOK_URL
    if not url:
        return False
    try:
        response = httpx.post(url, json=payload, timeout=5.0)
        response.raise_for_status()
        return True
    except httpx.HTTPError as exc:
        logger.warning("alert webhook %s failed: %s", url, exc)
        return False


def prune_resolved() -> int:
    cutoff = timezone.now() - timedelta(days=settings.HIVE_ALERT_RETENTION_DAYS)
    deleted, _ = Alert.objects.filter(status=Alert.Status.RESOLVED, resolved_at__lt=cutoff).delete()
    return deleted
