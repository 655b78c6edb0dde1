"""Performance numbers for a time window: per agent, per cluster, for the Hive host."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

import psutil
from django.conf import settings
from django.db.models import Avg, Count, Q
from django.utils import timezone

from agents.models import Agent, AgentHealthCheck
from coordinator.models import Task, TaskAttempt


def host_metrics(cpu_interval: float | None = None) -> dict[str, Any]:
    """CPU, memory and disk of the machine Hive runs on (psutil)."""
    disk_path = settings.VAR_DIR if settings.VAR_DIR.exists() else settings.BASE_DIR
    net = psutil.net_io_counters()
    return {
        "cpu_usage": psutil.cpu_percent(interval=cpu_interval),
        "memory_usage": psutil.virtual_memory().percent,
        "disk_usage": psutil.disk_usage(str(disk_path)).percent,
        "load_average": list(psutil.getloadavg()),
        "network_io": {"bytes_sent": net.bytes_sent, "bytes_recv": net.bytes_recv} if net else {},
    }


def agent_metrics(window: timedelta) -> list[dict[str, Any]]:
    since = timezone.now() - window
    agents = list(Agent.objects.with_busy_slots().order_by("name"))
    response = dict(AgentHealthCheck.objects.filter(timestamp__gte=since, available=True)
                    .values_list("agent_id").annotate(avg=Avg("response_time")))
    tps = dict(Task.objects.filter(completed_at__gte=since, status=Task.Status.COMPLETED, tokens_per_second__isnull=False)
               .values_list("assigned_agent_id").annotate(avg=Avg("tokens_per_second")))
    outcomes: dict[Any, dict[str, int]] = {}
    for agent_id, outcome, n in (TaskAttempt.objects.filter(finished_at__gte=since)
                                 .values_list("agent_id", "outcome").annotate(n=Count("id"))):
        outcomes.setdefault(agent_id, {})[outcome] = n
    rows = []
    for agent in agents:
        done = outcomes.get(agent.pk, {})
        ok = done.get(TaskAttempt.Outcome.SUCCEEDED, 0)
        bad = done.get(TaskAttempt.Outcome.FAILED, 0) + done.get(TaskAttempt.Outcome.LOST, 0)
        rows.append({
            "agent_id": agent.slug, "name": agent.name, "status": agent.display_status,
            "available": agent.status != Agent.Status.OFFLINE,
            "probed": agent.last_probe_at is not None,
            "tokens_per_second": round(tps.get(agent.pk) or agent.tokens_per_second, 2),
            "avg_response_time": round(response[agent.pk], 4) if response.get(agent.pk) is not None else None,
            "tasks_succeeded": ok, "tasks_failed": bad,
            "success_rate": round(ok / (ok + bad), 4) if ok + bad else None,
            "error_rate": round(bad / (ok + bad), 4) if ok + bad else None,
            "busy_slots": agent.busy_slots, "max_slots": agent.max_concurrency,
            "utilization_percent": round(100.0 * agent.busy_slots / agent.max_concurrency, 1),
        })
    return rows


def cluster_metrics(window: timedelta) -> dict[str, Any]:
    now = timezone.now()
    since = now - window
    pending = Task.objects.filter(status=Task.Status.PENDING)
    per_priority = {str(p): 0 for p in range(5, 0, -1)}
    for priority, n in pending.values_list("priority").annotate(n=Count("id")):
        per_priority[str(priority)] = n
    oldest = pending.order_by("created_at").values_list("created_at", flat=True).first()
    finished = Task.objects.filter(completed_at__gte=since)
    counts = finished.aggregate(completed=Count("id", filter=Q(status=Task.Status.COMPLETED)),
                                failed=Count("id", filter=Q(status=Task.Status.FAILED)),
                                cancelled=Count("id", filter=Q(status=Task.Status.CANCELLED)))
    # Averaged here rather than in SQL: duration arithmetic differs between SQLite
    # and PostgreSQL, and the last 1000 tasks are plenty for a mean.
    times = list(finished.filter(status=Task.Status.COMPLETED, started_at__isnull=False)
                 .order_by("-completed_at").values_list("created_at", "started_at", "completed_at")[:1000])
    took = [(done - started).total_seconds() for _, started, done in times]
    waited = [max((started - created).total_seconds(), 0.0) for created, started, _ in times]
    decided = counts["completed"] + counts["failed"]
    return {
        "queue_length": sum(per_priority.values()),
        "queue_by_priority": per_priority,
        "oldest_wait": round((now - oldest).total_seconds(), 1) if oldest else 0.0,
        "active_tasks": Task.objects.filter(status__in=Task.Status.holding_slot()).count(),
        **counts,
        "success_rate": round(counts["completed"] / decided, 4) if decided else None,
        "average_completion_time": round(sum(took) / len(took), 3) if took else None,
        "average_wait_time": round(sum(waited) / len(waited), 3) if waited else None,
    }


def performance(window: timedelta) -> dict[str, Any]:
    return {
        "timestamp": timezone.now(),
        "window_seconds": int(window.total_seconds()),
        "host": host_metrics(),
        "cluster": cluster_metrics(window),
        "agents": agent_metrics(window),
    }
