"""The scheduling pass: the one place where tasks are placed on agents.

A pass runs on hive.control whenever work or capacity changes and on a short beat
interval as a safety net. Only one runs at a time (a Redis lock); a request that
arrives while a pass is running marks the scheduler dirty so the running pass
loops once more instead of the request being lost. Each pass is idempotent: it
reads the whole state from the database and claims slots with conditional updates.

Placement is pluggable (see ``rank``) so the placement strategies of the next
issue slot in without touching the pass itself.
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agents.models import Agent
from coordinator.dispatch import send_execution
from coordinator.models import Task, TaskDependency
from hive_project.redis_client import get_redis

logger = logging.getLogger(__name__)

LOCK_KEY = "hive:scheduler:lock"
DIRTY_KEY = "hive:scheduler:dirty"
LOCK_TIMEOUT = 60
MAX_TASKS_PER_PASS = 1000


@dataclass
class PassResult:
    placed: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    failed_by_dependency: int = 0


@dataclass
class Slot:
    agent: Agent
    busy: int

    @property
    def free(self) -> int:
        return self.agent.max_concurrency - self.busy


def resolve_model(task: Task, agent: Agent) -> str:
    if task.model:
        return task.model
    if agent.model:
        return agent.model
    names = agent.available_model_names
    return names[0] if names else ""


def can_run(task: Task, agent: Agent) -> bool:
    """Capability and model, ignoring load: could this agent ever run this task?"""
    if task.pinned_agent_id is not None and task.pinned_agent_id != agent.pk:
        return False
    if agent.proficiency(task.task_type) is None:
        return False
    model = resolve_model(task, agent)
    return bool(model) and agent.has_model(model)


def rank(task: Task, slot: Slot) -> tuple[bool, float, float, int]:
    """Higher is better: model already loaded, proficiency, measured speed, fewer busy slots."""
    agent = slot.agent
    return (
        agent.has_loaded(resolve_model(task, agent)),
        agent.proficiency(task.task_type) or 0.0,
        agent.tokens_per_second,
        -slot.busy,
    )


def waiting_reason(task: Task, slots: list[Slot]) -> str:
    capable = [s for s in slots if s.agent.proficiency(task.task_type) is not None]
    if task.pinned_agent_id is not None:
        if not any(s.agent.pk == task.pinned_agent_id for s in slots):
            return "the pinned agent is offline or draining"
        return "waiting for a free slot on the pinned agent"
    if not capable:
        return f"no online agent offers capability '{task.task_type}'"
    if task.model and not any(s.agent.has_model(task.model) for s in capable):
        return f"no online agent with capability '{task.task_type}' has model '{task.model}'"
    return "waiting for a free slot"


def ready_tasks() -> list[Task]:
    """Pending tasks whose dependencies have all completed, in schedule order."""
    unfinished_dependency = TaskDependency.objects.filter(task=OuterRef("pk")).exclude(
        depends_on_task__status=Task.Status.COMPLETED
    )
    return list(
        Task.objects.filter(status=Task.Status.PENDING, cancel_requested=False)
        .exclude(Exists(unfinished_dependency))
        .in_schedule_order()[:MAX_TASKS_PER_PASS]
    )


def current_slots() -> list[Slot]:
    return [Slot(agent=a, busy=a.busy_slots) for a in Agent.objects.schedulable().with_busy_slots()]


def schedule_once() -> PassResult:
    """One pass. Callers hold the lock (see run_pass); tests may call it directly."""
    from coordinator.services import fail_blocked_dependents

    result = PassResult(failed_by_dependency=fail_blocked_dependents())
    slots = current_slots()
    for task in ready_tasks():
        possible = [s for s in slots if can_run(task, s.agent)]
        # An agent that failed this task is used again only when nothing else could run it.
        preferred = [s for s in possible if str(s.agent.pk) not in task.excluded_agents] or possible
        free = [s for s in preferred if s.free > 0]
        if not free:
            reason = waiting_reason(task, slots)
            if task.metadata.get("waiting_reason") != reason:
                task.metadata["waiting_reason"] = reason
                Task.objects.filter(pk=task.pk, status=Task.Status.PENDING).update(metadata=task.metadata)
            continue
        best = max(free, key=lambda s: rank(task, s))
        if _claim(task, best.agent):
            best.busy += 1
            result.placed.append((task.pk, best.agent.pk))
    return result


def _claim(task: Task, agent: Agent) -> bool:
    dispatch_id = uuid.uuid4()
    metadata = {k: v for k, v in task.metadata.items() if k != "waiting_reason"}
    metadata["model"] = resolve_model(task, agent)
    with transaction.atomic():
        claimed = Task.objects.filter(pk=task.pk, status=Task.Status.PENDING, cancel_requested=False).update(
            status=Task.Status.QUEUED, assigned_agent=agent, dispatch_id=dispatch_id,
            queued_at=timezone.now(), metadata=metadata,
        )
        if claimed:
            send_execution(task.pk, dispatch_id, task.priority)
    return bool(claimed)


def run_pass() -> PassResult | None:
    """Run passes until no request arrived meanwhile; None if another process holds the lock."""
    client = get_redis()
    lock = client.lock(LOCK_KEY, timeout=LOCK_TIMEOUT)
    total = PassResult()
    while True:
        client.set(DIRTY_KEY, 1)
        if not lock.acquire(blocking=False):
            # The holder will see the dirty flag and run once more for us.
            return None
        try:
            while client.getdel(DIRTY_KEY):
                result = schedule_once()
                total.placed.extend(result.placed)
                total.failed_by_dependency += result.failed_by_dependency
        finally:
            lock.release()
        # A request that set the flag between our last check and the release found
        # the lock still taken; pick it up here.
        if not client.exists(DIRTY_KEY):
            return total
