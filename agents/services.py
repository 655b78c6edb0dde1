"""Agent lifecycle: registration, probing, draining."""
from __future__ import annotations

import logging
import time
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from agents.models import Agent, AgentHealthCheck
from agents.ollama import OllamaClient, OllamaError
from hive_project.errors import ConflictError

logger = logging.getLogger(__name__)

# Only what placement and operators need from /api/tags and /api/ps.
_TAG_FIELDS = ("name", "model", "size", "digest", "modified_at", "details")
_PS_FIELDS = ("name", "model", "size", "size_vram", "expires_at", "digest")


def _trim(entries: list[dict[str, Any]], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{k: e[k] for k in fields if k in e} for e in entries if isinstance(e, dict)]


def probe_agent(agent: Agent) -> AgentHealthCheck:
    """Ask the node what it is and what it has; record the answer (or the error)."""
    timeout = settings.HIVE_PROBE_TIMEOUT
    started = time.monotonic()
    was_schedulable = agent.status != Agent.Status.OFFLINE
    try:
        with OllamaClient(agent.endpoint, connect_timeout=timeout, read_timeout=timeout) as client:
            version = client.version()
            response_time = time.monotonic() - started
            tags = client.tags()
            loaded = client.ps()
    except OllamaError as exc:
        agent.status = Agent.Status.OFFLINE
        agent.last_error = str(exc)
        agent.last_probe_at = timezone.now()
        agent.save(update_fields=["status", "last_error", "last_probe_at", "updated_at"])
        check = AgentHealthCheck.objects.create(agent=agent, available=False, error_message=str(exc))
        logger.info("agent %s is offline: %s", agent.slug, exc)
        return check
    now = timezone.now()
    agent.status = Agent.Status.ONLINE
    agent.last_error = ""
    agent.last_seen = now
    agent.last_probe_at = now
    agent.ollama_version = version
    agent.models_available = _trim(tags, _TAG_FIELDS)
    agent.models_loaded = _trim(loaded, _PS_FIELDS)
    agent.consecutive_failures = 0
    agent.save(update_fields=["status", "last_error", "last_seen", "last_probe_at", "ollama_version",
                              "models_available", "models_loaded", "consecutive_failures", "updated_at"])
    check = AgentHealthCheck.objects.create(
        agent=agent, available=True, response_time=response_time, models_loaded=agent.loaded_model_names,
    )
    if not was_schedulable:
        from coordinator.dispatch import request_scheduling_pass

        request_scheduling_pass()
    return check


def register_agent(fields: dict[str, Any]) -> Agent:
    """Create an agent from validated registration data and probe it at once."""
    agent = Agent(**fields)
    agent.full_clean()
    agent.save()
    probe_agent(agent)
    agent.refresh_from_db()
    return agent


def set_draining(agent: Agent, draining: bool) -> Agent:
    Agent.objects.filter(pk=agent.pk).update(draining=draining, updated_at=timezone.now())
    agent.refresh_from_db()
    if not draining:
        from coordinator.dispatch import request_scheduling_pass

        request_scheduling_pass()
    return agent


def delete_agent(agent: Agent) -> None:
    with transaction.atomic():
        running = agent.assigned_tasks.holding_slot().count()
        if running:
            raise ConflictError(f"Agent '{agent.slug}' has {running} queued or running task(s); drain it and wait, or cancel them first.")
        agent.delete()


def health_sweep() -> int:
    """Probe every agent concurrently; a hanging node cannot hold up the others."""
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    agents = list(Agent.objects.all())

    def probe(agent: Agent) -> bool:
        try:
            return probe_agent(agent).available
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(agents)))) as pool:
        return sum(pool.map(probe, agents))
