"""The scheduling pass: the one place where tasks are placed on agents.

A pass runs on hive.control whenever work or capacity changes and on a short beat
interval as a safety net. Only one runs at a time (a Redis lock); a request that
arrives while a pass is running marks the scheduler dirty so the running pass
loops once more instead of the request being lost. Each pass is idempotent: it
reads the whole state from the database and claims slots with conditional updates.

Within a pass, pending tasks are taken in one order (priority plus aging, then
age) and each is placed on a *timeline* of every agent's slots: a slot is free now
or at the estimated end of the task holding it. A task placed on a slot that is
free now is dispatched; a task that is better off waiting (warm_first only: a busy
agent is expected to finish it sooner than any free one) reserves the future slot,
so a lower-priority task can never take it first. The same walk gives every
waiting task its queue position and estimated start, published to Redis for the API.
"""
from __future__ import annotations

import heapq
import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agents.models import Agent
from coordinator import events
from coordinator.dispatch import send_execution
from coordinator.models import Task, TaskDependency
from hive_project.redis_client import get_redis

logger = logging.getLogger(__name__)

LOCK_KEY = "hive:scheduler:lock"
DIRTY_KEY = "hive:scheduler:dirty"
QUEUE_INFO_KEY = "hive:scheduler:queue"
ROUND_ROBIN_KEY = "hive:scheduler:rr"
# Short, and renewed by a live pass: a worker killed mid-pass frees the lock within this.
LOCK_TIMEOUT = 10
MAX_TASKS_PER_PASS = 1000
# Wait for a busy agent only when it is expected to finish this much sooner, so
# estimation noise does not leave a free slot idle for nothing.
WAIT_MARGIN = 0.15
# A running task that outlives its estimate is still expected to need this share of it.
OVERDUE_FLOOR = 0.25


@dataclass
class PassResult:
    placed: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    waiting: int = 0
    failed_by_dependency: int = 0


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


def effective_priority(task: Task, now: datetime) -> float:
    waited = max((now - task.created_at).total_seconds(), 0.0) / 60.0
    return task.priority + settings.HIVE_AGING_PER_MINUTE * waited


def schedule_order(tasks: list[Task], now: datetime) -> list[Task]:
    """Higher (aged) priority first, then the oldest; the one rule every pass follows."""
    return sorted(tasks, key=lambda t: (-effective_priority(t, now), t.created_at, str(t.pk)))


class Estimator:
    """Durations from what Hive measured, with settings as the prior."""

    def __init__(self, agents: list[Agent]) -> None:
        measured = sorted(a.tokens_per_second for a in agents if a.tokens_per_second > 0)
        self.default_tps = measured[len(measured) // 2] if measured else settings.HIVE_DEFAULT_TPS
        recent = Task.objects.filter(status=Task.Status.COMPLETED, timings__eval_count__isnull=False) \
            .order_by("-completed_at").values_list("timings__eval_count", flat=True)[:200]
        counts = [c for c in recent if isinstance(c, int) and c > 0]
        self.default_tokens = sum(counts) / len(counts) if counts else float(settings.HIVE_DEFAULT_TOKENS)

    def tokens(self, task: Task) -> float:
        limit = (task.options or {}).get("num_predict")
        if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
            return float(limit)
        return self.default_tokens

    def tps(self, agent: Agent) -> float:
        return agent.tokens_per_second if agent.tokens_per_second > 0 else self.default_tps

    def load(self, agent: Agent) -> float:
        return agent.load_seconds if agent.load_seconds > 0 else settings.HIVE_DEFAULT_LOAD_SECONDS

    def run_time(self, task: Task, agent: Agent, warm: bool) -> float:
        return (0.0 if warm else self.load(agent)) + self.tokens(task) / self.tps(agent)


@dataclass
class Timeline:
    """One agent's slots as the times (seconds from now) at which each becomes free."""

    agent: Agent
    free_at: list[float]
    warm: set[str]
    busy: int

    @property
    def free_now(self) -> bool:
        return self.free_at[0] <= 0.0

    def start(self) -> float:
        return max(self.free_at[0], 0.0)

    def take(self, until: float, model: str) -> None:
        heapq.heapreplace(self.free_at, until)
        self.warm.add(model)
        self.busy += 1


def build_timelines(agents: list[Agent], estimator: Estimator, now: datetime) -> list[Timeline]:
    holding: dict[Any, list[Task]] = {}
    for task in Task.objects.holding_slot().filter(assigned_agent__in=agents):
        holding.setdefault(task.assigned_agent_id, []).append(task)
    timelines = []
    for agent in agents:
        warm = {m for m in agent.loaded_model_names if m}
        free_at: list[float] = []
        for task in holding.get(agent.pk, []):
            model = task.metadata.get("model") or resolve_model(task, agent)
            expected = estimator.run_time(task, agent, warm=model in warm)
            began = task.started_at or task.queued_at or now
            elapsed = (now - began).total_seconds()
            free_at.append(max(expected - elapsed, expected * OVERDUE_FLOOR))
            warm.add(model)
        busy = len(free_at)
        free_at.extend([0.0] * max(agent.max_concurrency - busy, 0))
        if not free_at:
            continue
        heapq.heapify(free_at)
        timelines.append(Timeline(agent=agent, free_at=free_at, warm=warm, busy=busy))
    return timelines


def _warm(line: Timeline, model: str) -> bool:
    wanted = model if ":" in model else f"{model}:latest"
    return model in line.warm or wanted in line.warm


def rank(task: Task, line: Timeline) -> tuple[bool, float, float, int]:
    """warm_first's preference among free agents: loaded model, proficiency, speed, fewer busy slots."""
    agent = line.agent
    return (_warm(line, resolve_model(task, agent)), agent.proficiency(task.task_type) or 0.0,
            agent.tokens_per_second, -line.busy)


class Placement:
    """Chooses a timeline for a task, or says it should wait (and for which slot)."""

    def __init__(self, strategy: str, estimator: Estimator) -> None:
        self.strategy = strategy
        self.estimator = estimator
        self._rr_last = ""
        if strategy == "round_robin":
            self._rr_last = (get_redis().get(ROUND_ROBIN_KEY) or b"").decode()

    def finish(self, task: Task, line: Timeline) -> float:
        model = resolve_model(task, line.agent)
        return line.start() + self.estimator.run_time(task, line.agent, _warm(line, model))

    def choose(self, task: Task, lines: list[Timeline]) -> tuple[Timeline, bool]:
        """(timeline, dispatch now?)."""
        free = [line for line in lines if line.free_now]
        soonest = min(lines, key=lambda line: (self.finish(task, line), line.agent.name))
        if self.strategy == "least_busy":
            # LiteLLM's least-busy: the deployment with the fewest requests in flight.
            return (min(free, key=lambda line: (line.busy, line.agent.name)), True) if free else (soonest, False)
        if self.strategy == "round_robin":
            if not free:
                return soonest, False
            names = sorted(line.agent.slug for line in free)
            after = [n for n in names if n > self._rr_last]
            pick = (after or names)[0]
            self._rr_last = pick
            return next(line for line in free if line.agent.slug == pick), True
        if not free:
            return soonest, False
        best_free = max(free, key=lambda line: (rank(task, line), line.agent.name))
        if soonest is not best_free and not soonest.free_now and \
                self.finish(task, soonest) < self.finish(task, best_free) * (1 - WAIT_MARGIN):
            return soonest, False
        return best_free, True

    def save(self) -> None:
        if self.strategy == "round_robin" and self._rr_last:
            get_redis().set(ROUND_ROBIN_KEY, self._rr_last)


def waiting_reason(task: Task, lines: list[Timeline]) -> str:
    if task.pinned_agent_id is not None:
        if not any(line.agent.pk == task.pinned_agent_id for line in lines):
            return "the pinned agent is offline or draining"
        return "waiting for a free slot on the pinned agent"
    capable = [line for line in lines if line.agent.proficiency(task.task_type) is not None]
    if not capable:
        return f"no online agent offers capability '{task.task_type}'"
    if task.model and not any(line.agent.has_model(task.model) for line in capable):
        return f"no online agent with capability '{task.task_type}' has model '{task.model}'"
    return "no online agent can run it"


def ready_tasks() -> list[Task]:
    """Pending tasks whose dependencies have all completed (unordered; see schedule_order)."""
    unfinished_dependency = TaskDependency.objects.filter(task=OuterRef("pk")).exclude(
        depends_on_task__status=Task.Status.COMPLETED
    )
    return list(
        Task.objects.filter(status=Task.Status.PENDING, cancel_requested=False)
        .exclude(Exists(unfinished_dependency))
        .order_by("-priority", "created_at")[:MAX_TASKS_PER_PASS]
    )


def schedule_once(strategy: str | None = None) -> PassResult:
    """One pass. Callers hold the lock (see run_pass); tests may call it directly."""
    from coordinator.services import fail_blocked_dependents

    result = PassResult(failed_by_dependency=fail_blocked_dependents())
    now = timezone.now()
    tasks = schedule_order(ready_tasks(), now)
    if not tasks:
        publish_queue_info({})
        return result
    agents = list(Agent.objects.schedulable().order_by("name"))
    estimator = Estimator(agents)
    lines = build_timelines(agents, estimator, now)
    placement = Placement(strategy or settings.HIVE_PLACEMENT, estimator)
    info: dict[str, dict[str, Any]] = {}
    competitors: dict[frozenset[Any], int] = {}
    for task in tasks:
        possible = [line for line in lines if can_run(task, line.agent)]
        # An agent that failed this task is used again only when nothing else could run it.
        preferred = [line for line in possible if str(line.agent.pk) not in task.excluded_agents] or possible
        if not preferred:
            info[str(task.pk)] = {"reason": waiting_reason(task, lines), "position": None, "eta": None}
            result.waiting += 1
            continue
        line, dispatch = placement.choose(task, preferred)
        model = resolve_model(task, line.agent)
        finish = placement.finish(task, line)
        if dispatch and _claim(task, line.agent, model):
            line.take(finish, model)
            result.placed.append((task.pk, line.agent.pk))
            continue
        start = line.start()
        line.take(finish, model)
        group = frozenset(p.agent.pk for p in preferred)
        position = 1 + sum(n for other, n in competitors.items() if other & group)
        competitors[group] = competitors.get(group, 0) + 1
        info[str(task.pk)] = {
            "reason": f"waiting for a slot on {line.agent.slug}" if not dispatch else "waiting for a free slot",
            "position": position,
            "eta": (now + timedelta(seconds=start)).isoformat(),
            "agent": line.agent.slug,
        }
        result.waiting += 1
    placement.save()
    publish_queue_info(info)
    return result


def publish_queue_info(info: dict[str, dict[str, Any]]) -> None:
    """Queue positions and ETAs of waiting tasks, replaced wholesale by every pass."""
    client = get_redis()
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(QUEUE_INFO_KEY)
        if info:
            pipe.hset(QUEUE_INFO_KEY, mapping={k: json.dumps(v) for k, v in info.items()})
        pipe.execute()


def queue_info(task_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not task_ids:
        return {}
    values = get_redis().hmget(QUEUE_INFO_KEY, task_ids)
    return {tid: json.loads(v) for tid, v in zip(task_ids, values, strict=True) if v}


def _claim(task: Task, agent: Agent, model: str) -> bool:
    dispatch_id = uuid.uuid4()
    metadata = {**task.metadata, "model": model}
    with transaction.atomic():
        claimed = Task.objects.filter(pk=task.pk, status=Task.Status.PENDING, cancel_requested=False).update(
            status=Task.Status.QUEUED, assigned_agent=agent, dispatch_id=dispatch_id,
            queued_at=timezone.now(), metadata=metadata,
        )
        if claimed:
            send_execution(task.pk, dispatch_id, task.priority)
            task.status, task.assigned_agent = Task.Status.QUEUED, agent
            events.task_event(events.TASK_ASSIGNED, task, model=model, agent=agent.name)
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
                lock.reacquire()
                result = schedule_once()
                total.placed.extend(result.placed)
                total.waiting = result.waiting
                total.failed_by_dependency += result.failed_by_dependency
        finally:
            lock.release()
        # A request that set the flag between our last check and the release found
        # the lock still taken; pick it up here.
        if not client.exists(DIRTY_KEY):
            publish_cluster_status()
            return total


def publish_cluster_status() -> None:
    """A snapshot for cluster.status subscribers, after every pass (passes coalesce)."""
    from coordinator.status import cluster_status

    events.publish("cluster.status", "coordinator", cluster_status(), [events.CLUSTER_STATUS])
