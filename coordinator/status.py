"""Read-only summaries of the cluster for the status endpoints and the dashboard."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from agents.models import Agent
from coordinator.models import Task


def agent_statuses() -> list[dict[str, Any]]:
    running: dict[Any, list[str]] = {}
    for task_id, agent_id in Task.objects.holding_slot().values_list("id", "assigned_agent_id"):
        running.setdefault(agent_id, []).append(str(task_id))
    return [
        {
            "id": str(agent.pk), "agent_id": agent.slug, "name": agent.name, "endpoint": agent.endpoint,
            "status": agent.display_status, "draining": agent.draining,
            "slots": {"busy": agent.busy_slots, "total": agent.max_concurrency,
                      "free": max(agent.max_concurrency - agent.busy_slots, 0)},
            "models_loaded": agent.loaded_model_names, "models_available": agent.available_model_names,
            "tokens_per_second": round(agent.tokens_per_second, 2), "last_seen": agent.last_seen,
            "last_error": agent.last_error, "tasks": running.get(agent.pk, []),
        }
        for agent in Agent.objects.with_busy_slots().order_by("name")
    ]


def cluster_status() -> dict[str, Any]:
    now = timezone.now()
    agents = agent_statuses()
    by_status: dict[str, int] = {}
    for a in agents:
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
    schedulable = [a for a in agents if a["status"] in ("online", "busy", "degraded")]
    pending = Task.objects.filter(status=Task.Status.PENDING)
    per_priority = {str(p): 0 for p in range(5, 0, -1)}
    for row in pending.values("priority").annotate(n=Count("id")):
        per_priority[str(row["priority"])] = row["n"]
    oldest = pending.aggregate(oldest=Min("created_at"))["oldest"]
    counts = dict(Task.objects.active().values_list("status").annotate(n=Count("id")))
    hour_ago = now - timedelta(hours=1)
    finished = dict(Task.objects.filter(completed_at__gte=hour_ago).values_list("status").annotate(n=Count("id")))
    running = Task.objects.filter(status=Task.Status.RUNNING).select_related("assigned_agent").order_by("started_at")
    return {
        "timestamp": now,
        "agents": {"total": len(agents), **{k: by_status.get(k, 0) for k in
                                             ("online", "busy", "degraded", "offline", "draining")}},
        "slots": {"total": sum(a["slots"]["total"] for a in schedulable),
                  "busy": sum(a["slots"]["busy"] for a in agents),
                  "free": sum(a["slots"]["free"] for a in schedulable)},
        "queue": {
            "pending": sum(per_priority.values()),
            "pending_by_priority": per_priority,
            "queued": counts.get(Task.Status.QUEUED, 0),
            "running": counts.get(Task.Status.RUNNING, 0),
            "oldest_pending_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
        },
        "last_hour": {"completed": finished.get(Task.Status.COMPLETED, 0),
                      "failed": finished.get(Task.Status.FAILED, 0),
                      "cancelled": finished.get(Task.Status.CANCELLED, 0)},
        "running_tasks": [
            {"id": str(t.pk), "title": t.title, "agent_id": t.assigned_agent.slug if t.assigned_agent else None,
             "priority": t.priority, "started_at": t.started_at}
            for t in running[:100]
        ],
    }
