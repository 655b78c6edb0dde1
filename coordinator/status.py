"""Read-only summaries of the cluster for the status endpoints and the dashboard."""
from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db.models import Count
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
    """One consistent snapshot: every active task is read by a single query."""
    agents = agent_statuses()
    active = list(Task.objects.active().order_by("started_at", "created_at").values_list(
        "id", "title", "status", "priority", "created_at", "started_at", "assigned_agent__slug"))
    now = timezone.now()
    hour_ago = now - timedelta(hours=1)
    # Naming the statuses lets the database count along its (status, completed_at) index.
    finished = dict(Task.objects.filter(status__in=Task.Status.finished(), completed_at__gte=hour_ago)
                    .values_list("status").annotate(n=Count("id")).order_by())
    by_status: dict[str, int] = {}
    for a in agents:
        by_status[a["status"]] = by_status.get(a["status"], 0) + 1
    schedulable = [a for a in agents if a["status"] in ("online", "busy", "degraded")]
    per_priority = {str(p): 0 for p in range(5, 0, -1)}
    counts = {Task.Status.QUEUED: 0, Task.Status.RUNNING: 0}
    oldest = None
    running = []
    for task_id, title, status, priority, created_at, started_at, agent_slug in active:
        if status == Task.Status.PENDING:
            per_priority[str(priority)] += 1
            oldest = created_at if oldest is None else min(oldest, created_at)
            continue
        counts[status] += 1
        if status == Task.Status.RUNNING:
            running.append({"id": str(task_id), "title": title, "agent_id": agent_slug, "priority": priority,
                            "started_at": started_at})
    return {
        "timestamp": now,
        "agents": {"total": len(agents), **{k: by_status.get(k, 0) for k in
                                             ("online", "busy", "degraded", "offline", "draining")}},
        "agent_list": agents,
        "slots": {"total": sum(a["slots"]["total"] for a in schedulable),
                  "busy": sum(a["slots"]["busy"] for a in agents),
                  "free": sum(a["slots"]["free"] for a in schedulable)},
        "queue": {
            "pending": sum(per_priority.values()),
            "pending_by_priority": per_priority,
            "queued": counts[Task.Status.QUEUED],
            "running": counts[Task.Status.RUNNING],
            "oldest_pending_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
        },
        "last_hour": {"completed": finished.get(Task.Status.COMPLETED, 0),
                      "failed": finished.get(Task.Status.FAILED, 0),
                      "cancelled": finished.get(Task.Status.CANCELLED, 0)},
        "running_tasks": running[:100],
    }
