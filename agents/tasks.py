"""Celery entry points for agents (thin; see agents.services)."""
from __future__ import annotations

from celery import shared_task

from agents import services
from agents.models import Agent


@shared_task(name="hive.probe_agent", ignore_result=True, soft_time_limit=60, time_limit=90)
def probe_agent(agent_id: str) -> bool | None:
    agent = Agent.objects.filter(pk=agent_id).first()
    if agent is None:
        return None
    return services.probe_agent(agent).available


@shared_task(name="hive.health_sweep", ignore_result=True, soft_time_limit=120, time_limit=150)
def health_sweep() -> int:
    return services.health_sweep()
