"""Periodic jobs, defined once and stored as django-celery-beat rows.

They are created idempotently at setup; operators edit them in the admin and beat
(DatabaseScheduler) picks changes up without a restart. Existing rows keep their
edited interval: we only create what is missing.
"""
from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from hive_project import queues

MCP_CHECK_INTERVAL = 300.0


@dataclass(frozen=True)
class Job:
    name: str
    task: str
    seconds: float
    queue: str = queues.CONTROL


def jobs() -> list[Job]:
    return [
        Job("hive: scheduling pass (safety net)", "hive.run_scheduling_pass", settings.HIVE_SCHEDULER_INTERVAL),
        Job("hive: reconciler", "hive.reconcile", settings.HIVE_RECONCILE_INTERVAL),
        Job("hive: agent health sweep", "hive.health_sweep", settings.HIVE_HEALTH_INTERVAL),
        Job("hive: retention cleanup", "hive.cleanup", settings.HIVE_CLEANUP_INTERVAL),
        Job("hive: alert evaluation", "hive.evaluate_alerts", settings.HIVE_ALERT_INTERVAL),
        # Executions whose worker died are failed; pending ones whose message was lost are re-sent.
        Job("hive: workflow reconciler", "hive.reconcile_workflows", settings.HIVE_RECONCILE_INTERVAL),
        Job("hive: execution retention cleanup", "hive.cleanup_executions", settings.HIVE_CLEANUP_INTERVAL),
        # Talks to MCP servers (slow ones time out): kept off the control queue.
        Job("hive: MCP server check", "hive.check_mcp_servers", MCP_CHECK_INTERVAL, queues.WORKFLOWS),
    ]


def ensure_schedules() -> list[str]:
    created = []
    for job in jobs():
        if PeriodicTask.objects.filter(name=job.name).exists():
            continue
        # IntervalSchedule counts whole units; sub-second intervals use microseconds.
        if job.seconds == int(job.seconds):
            every, period = int(job.seconds), IntervalSchedule.SECONDS
        else:
            every, period = int(job.seconds * 1_000_000), IntervalSchedule.MICROSECONDS
        interval, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.create(name=job.name, task=job.task, interval=interval, queue=job.queue,
                                    expire_seconds=max(int(job.seconds * 3), 5))
        created.append(job.name)
    return created
