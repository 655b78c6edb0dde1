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
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from agents.models import Agent, parse_ollama_time
from coordinator import events, handoff
from coordinator.dispatch import DIRTY_KEY, PASS_REQUESTED_KEY, PASS_REQUESTED_TTL, send_executions, send_pass_message
from coordinator.models import Task, TaskDependency
from hive_project import fastsql, queues
from hive_project.redis_client import get_redis, script

logger = logging.getLogger(__name__)

LOCK_KEY = "hive:scheduler:lock"
QUEUE_INFO_KEY = "hive:scheduler:queue"
ROUND_ROBIN_KEY = "hive:scheduler:rr"
QUEUE_FRESH_KEY = "hive:scheduler:queue-fresh"
ROUNDS_KEY = "hive:scheduler:rounds"  # scheduling rounds run so far (the benchmarks read it)
# Short, and renewed by a live pass: a worker killed mid-pass frees the lock within this.
LOCK_TIMEOUT = 10
MAX_TASKS_PER_PASS = 1000
# Wait for a busy agent only when it is expected to finish this much sooner, so
# estimation noise does not leave a free slot idle for nothing.
WAIT_MARGIN = 0.15
# warm_first: what a cold load that would move capacity away from a model that needs
# it more is charged (seconds), so it is chosen only when nothing else can run the task.
UNWISE_EVICTION = 3600.0
EVICTION_HYSTERESIS = 1.25
# A running task that outlives its estimate is still expected to need this share of it.
OVERDUE_FLOOR = 0.25


@dataclass
class PassResult:
    placed: list[tuple[uuid.UUID, uuid.UUID]] = field(default_factory=list)
    waiting: int = 0
    failed_by_dependency: int = 0
    rounds: int = 0


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


_typical_tokens: tuple[float, float] = (float("-inf"), 0.0)  # (computed at, value)
TYPICAL_TOKENS_MAX_AGE = 5.0


def _typical_output_tokens() -> float:
    """Mean output length of the last 200 completed tasks: the guess for a task with
    no num_predict. Passes run many times a second under load; this changes slowly,
    so a process recomputes it at most every TYPICAL_TOKENS_MAX_AGE seconds."""
    global _typical_tokens
    computed_at, value = _typical_tokens
    now = time.monotonic()
    if now - computed_at < TYPICAL_TOKENS_MAX_AGE:
        return value
    recent = Task.objects.filter(status=Task.Status.COMPLETED, timings__eval_count__isnull=False) \
        .order_by("-completed_at").values_list("timings__eval_count", flat=True)[:200]
    counts = [c for c in recent if isinstance(c, int) and c > 0]
    value = sum(counts) / len(counts) if counts else float(settings.HIVE_DEFAULT_TOKENS)
    _typical_tokens = (now, value)
    return value


class Estimator:
    """Durations from what Hive measured, with settings as the prior."""

    def __init__(self, agents: list[Agent]) -> None:
        measured = sorted(a.tokens_per_second for a in agents if a.tokens_per_second > 0)
        self.default_tps = measured[len(measured) // 2] if measured else settings.HIVE_DEFAULT_TPS
        self.default_tokens = _typical_output_tokens()

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


def canonical(model: str) -> str:
    """Ollama's name for a model: a bare name means its ``latest`` tag."""
    return model if ":" in model else f"{model}:latest"


@dataclass
class Timeline:
    """One agent's slots as the times (seconds from now) at which each becomes free,
    and its memory: the resident models, least recently used first, at most
    ``capacity`` of them (loading one more evicts the LRU model, as Ollama does)."""

    agent: Agent
    free_at: list[float]
    warm: list[str]
    busy: int
    capacity: int = 3
    # model -> when the last task using it is expected to end; a model in use cannot be evicted before.
    held: dict[str, float] = field(default_factory=dict)

    # Tasks sent beyond the agent's slots, waiting in Ollama's own queue.
    ahead: int = 0
    ahead_limit: int = 0

    @property
    def free_now(self) -> bool:
        """A slot is free, or one frees so soon that a task sent now waits in Ollama's
        queue instead of waiting for the completion -> pass -> message round trip."""
        if self.free_at[0] <= 0.0:
            return True
        return self.ahead < self.ahead_limit and self.free_at[0] <= settings.HIVE_QUEUE_AHEAD_SECONDS

    def start(self) -> float:
        return max(self.free_at[0], 0.0)

    def is_warm(self, model: str) -> bool:
        return canonical(model) in self.warm

    def victim(self, start: float) -> str | None:
        """The model a cold load starting at ``start`` would evict (None: there is room).

        Ollama evicts the least recently used idle model; when every resident model
        is in use the load waits until one is idle, so prefer one idle by then."""
        if len(self.warm) < self.capacity:
            return None
        idle = [m for m in self.warm if self.held.get(m, 0.0) <= start]
        return idle[0] if idle else min(self.warm, key=lambda m: self.held.get(m, 0.0))

    def use(self, model: str, start: float, until: float) -> str | None:
        """Make ``model`` the most recently used; returns the model it evicted, if any."""
        name = canonical(model)
        evicted = None
        if name in self.warm:
            self.warm.remove(name)
        else:
            evicted = self.victim(start)
            if evicted is not None:
                self.warm.remove(evicted)
                self.held.pop(evicted, None)
        self.warm.append(name)
        self.held[name] = max(self.held.get(name, 0.0), until)
        return evicted

    def take(self, until: float, model: str, *, dispatched: bool = False) -> str | None:
        start = self.start()
        if dispatched and start > 0.0:
            self.ahead += 1
        heapq.heapreplace(self.free_at, until)
        self.busy += 1
        return self.use(model, start, until)


def resident_models(agent: Agent) -> list[str]:
    """The agent's loaded models, least recently used first (Ollama's expiry follows last use)."""
    now = timezone.now()
    entries = []
    for m in agent.models_loaded:
        if not isinstance(m, dict) or not (m.get("name") or m.get("model")):
            continue
        expires = parse_ollama_time(m.get("expires_at"))
        if expires is not None and expires < now:
            continue
        entries.append((expires or now, canonical(m.get("name") or m.get("model"))))
    entries.sort(key=lambda e: e[0])
    names: list[str] = []
    for _, name in entries:
        if name not in names:
            names.append(name)
    return names


def build_timelines(agents: list[Agent], estimator: Estimator, now: datetime) -> list[Timeline]:
    holding: dict[Any, list[Task]] = {}
    for task in Task.objects.holding_slot().filter(assigned_agent__in=agents).only(*HOLDING_FIELDS).order_by("queued_at"):
        holding.setdefault(task.assigned_agent_id, []).append(task)
    timelines = []
    for agent in agents:
        line = Timeline(agent=agent, free_at=[0.0] * agent.max_concurrency, warm=resident_models(agent), busy=0,
                        capacity=max(agent.max_loaded_models, 1), ahead_limit=settings.HIVE_QUEUE_AHEAD)
        # Oldest first: the first max_concurrency hold the slots, later ones (sent
        # ahead) start when a slot frees.
        for task in holding.get(agent.pk, []):
            model = task.metadata.get("model") or resolve_model(task, agent)
            expected = estimator.run_time(task, agent, warm=line.is_warm(model))
            slot = line.free_at[0]
            if slot > 0.0:
                until = slot + expected
                line.ahead += 1
            else:
                began = task.started_at or task.queued_at or now
                elapsed = (now - began).total_seconds()
                until = max(expected - elapsed, expected * OVERDUE_FLOOR)
            heapq.heapreplace(line.free_at, until)
            line.busy += 1
            line.use(model, 0.0, until)
        timelines.append(line)
    return timelines


def rank(task: Task, line: Timeline) -> tuple[bool, float, float, int]:
    """warm_first's preference among free agents: loaded model, proficiency, speed, fewer busy slots."""
    agent = line.agent
    return (line.is_warm(resolve_model(task, agent)), agent.proficiency(task.task_type) or 0.0,
            agent.tokens_per_second, -line.busy)


class Placement:
    """Chooses a timeline for a task, or says it should wait (and for which slot)."""

    def __init__(self, strategy: str, estimator: Estimator, demand: Counter[str] | None = None,
                 work: Counter[str] | None = None, lines: list[Timeline] | None = None) -> None:
        self.strategy = strategy
        self.estimator = estimator
        # Pending tasks per model not placed yet in this pass: evicting a model they
        # need costs them a reload.
        self.demand: Counter[str] = demand if demand is not None else Counter()
        # The same tasks' expected output tokens per model, and every agent's timeline:
        # what an eviction does to the model it throws out (see shifts_capacity_well).
        self.work: Counter[str] = work if work is not None else Counter()
        self.lines: list[Timeline] = lines or []
        self._warm_capacity: dict[tuple[str, int], float] = {}  # cleared when a booking loads a model
        self._rr_last = ""
        if strategy == "round_robin":
            self._rr_last = (get_redis().get(ROUND_ROBIN_KEY) or b"").decode()

    def finish(self, task: Task, line: Timeline) -> float:
        """Expected end of ``task`` on ``line``, counting what a cold load there costs."""
        agent = line.agent
        model = resolve_model(task, agent)
        start = line.start()
        if line.is_warm(model):
            return start + self.estimator.run_time(task, agent, warm=True)
        cost = self.estimator.run_time(task, agent, warm=False)
        victim = line.victim(start)
        if victim is not None:
            # Ollama holds the load (and the node's queue) until the victim is idle,
            # and evicting a model other pending work needs costs it a reload.
            start = max(start, line.held.get(victim, 0.0))
            if self.strategy == "warm_first" and self.demand.get(victim, 0) > 0:
                cost += self.estimator.load(agent)
                if not self.shifts_capacity_well(task, line, victim):
                    cost += UNWISE_EVICTION
        return start + cost

    def capacity(self, line: Timeline) -> float:
        return len(line.free_at) * self.estimator.tps(line.agent)

    def backlog(self, model: str, extra_tokens: float = 0.0, without: Timeline | None = None) -> float:
        """Seconds the pending work for ``model`` takes on the capacity where it is warm."""
        key = (canonical(model), id(without))
        warm = self._warm_capacity.get(key)
        if warm is None:
            warm = self._warm_capacity[key] = sum(
                self.capacity(other) for other in self.lines if other is not without and other.is_warm(model))
        work = self.work.get(canonical(model), 0.0) + extra_tokens
        return work / warm if warm > 0 else float("inf")

    def take(self, line: Timeline, until: float, model: str, *, dispatched: bool = False) -> None:
        """Book the slot on ``line``; a model it loads (and any it evicts) changes warm capacity."""
        loads = not line.is_warm(model)
        line.take(until, model, dispatched=dispatched)
        if loads:
            self._warm_capacity.clear()

    def shifts_capacity_well(self, task: Task, line: Timeline, victim: str) -> bool:
        """Would evicting ``victim`` from this agent to load the task's model help?

        Only if the victim's pending work, on the warm capacity it keeps elsewhere, is
        still better served than the task's model is now. Otherwise the load starts a
        chain: the victim's next task reloads it here and evicts a third model, and so
        on (seen as 6 loads in 5 s on the placement benchmark's fastest node)."""
        model = resolve_model(task, line.agent)
        needed = self.backlog(model, self.estimator.tokens(task))
        kept = self.backlog(victim, without=line)
        return kept * EVICTION_HYSTERESIS <= needed

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
        model_of = {id(line): resolve_model(task, line.agent) for line in free}
        warm_free = [line for line in free if line.is_warm(model_of[id(line)])]
        if warm_free:
            best_free = max(warm_free, key=lambda line: (rank(task, line), line.agent.name))
        else:
            # Every free slot means a cold load: the most proficient, then the one
            # that finishes first counting the eviction it causes.
            best_free = min(free, key=lambda line: (-(line.agent.proficiency(task.task_type) or 0.0),
                                                    self.finish(task, line), line.agent.name))
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
        .only(*PASS_FIELDS)
        .order_by("-priority", "created_at")[:MAX_TASKS_PER_PASS]
    )


# What a pass reads of each task holding a slot (for its expected end and its model).
HOLDING_FIELDS = ("id", "task_type", "model", "options", "metadata", "assigned_agent", "started_at", "queued_at",
                  "status")

# What a pass reads of each pending task (the prompt and results stay in the database).
PASS_FIELDS = ("id", "title", "status", "priority", "task_type", "model", "options", "pinned_agent",
               "excluded_agents", "metadata", "created_at", "assigned_agent")


def schedule_once(strategy: str | None = None) -> PassResult:
    """One pass. Callers hold the lock (see run_pass); tests may call it directly."""
    from coordinator.services import fail_blocked_dependents

    seq, reserved_at = handoff.round_state()  # before reading the database: see coordinator.handoff
    result = PassResult(failed_by_dependency=fail_blocked_dependents())
    now = timezone.now()
    tasks = schedule_order(ready_tasks(), now)
    if not tasks:
        publish_queue_info({}, seq)
        return result
    agents = list(Agent.objects.schedulable().order_by("name"))
    estimator = Estimator(agents)
    lines = build_timelines(agents, estimator, now)
    if not any(line.free_now for line in lines) and seq == reserved_at and \
            not get_redis().set(QUEUE_FRESH_KEY, 1, nx=True, px=1000):
        # Nothing can start, nothing arrived since the reservations were made and the
        # queue positions are under a second old: a burst of requests costs no walk
        # over every pending task.
        result.waiting = len(tasks)
        return result
    demand = Counter(canonical(t.model) for t in tasks if t.model)
    work: Counter[str] = Counter()
    for t in tasks:
        if t.model:
            work[canonical(t.model)] += estimator.tokens(t)
    placement = Placement(strategy or settings.HIVE_PLACEMENT, estimator, demand, work, lines)
    info: dict[str, dict[str, Any]] = {}
    competitors: dict[frozenset[Any], int] = {}
    reservations: dict[Any, list[tuple[uuid.UUID, str, bool, float, str]]] = {}
    capable: dict[tuple[str, str, Any], list[Timeline]] = {}
    # One transaction for the pass's claims: their messages go out together at commit.
    outbox = Outbox()
    with transaction.atomic():
        for task in tasks:
            if task.model:
                demand[canonical(task.model)] -= 1
                work[canonical(task.model)] -= estimator.tokens(task)
            # Tasks alike (type, model, pin) can run on the same agents: work that out once.
            kind = (task.task_type, task.model, task.pinned_agent_id)
            possible = capable.get(kind)
            if possible is None:
                possible = capable[kind] = [line for line in lines if can_run(task, line.agent)]
            # An agent that failed this task is used again only when nothing else could run it.
            preferred = possible
            if task.excluded_agents:
                preferred = [line for line in possible if str(line.agent.pk) not in task.excluded_agents] or possible
            if not preferred:
                info[str(task.pk)] = {"reason": waiting_reason(task, lines), "position": None, "eta": None}
                result.waiting += 1
                continue
            line, dispatch = placement.choose(task, preferred)
            model = resolve_model(task, line.agent)
            finish = placement.finish(task, line)
            if dispatch:
                cold = not line.is_warm(model)
                if _claim(task, line.agent, model, cold=cold, outbox=outbox):
                    if cold:
                        record_residency(line.agent, model, line)
                    placement.take(line, finish, model, dispatched=True)
                    result.placed.append((task.pk, line.agent.pk))
                    continue
            start = line.start()
            if not dispatch:
                # This slot is the task's next: the execution that frees it may start it (handoff).
                reservations.setdefault(line.agent.pk, []).append(
                    (task.pk, model, not line.is_warm(model), handoff.order_key(task.priority, task.created_at),
                     queues.queue_for_priority(task.priority)))
            placement.take(line, finish, model)
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
        outbox.send_at_commit()
    placement.save()
    publish_queue_info(info, seq, [line.agent.pk for line in lines], reservations)
    return result


def publish_queue_info(info: dict[str, dict[str, Any]], seq: int | None = None, agent_ids: Sequence[Any] = (),
                       reservations: dict[Any, list[tuple[uuid.UUID, str, bool, float, str]]] | None = None) -> None:
    """Queue positions and ETAs of waiting tasks, replaced wholesale by every pass, and
    (given the round's sequence number) its reservations for the handoff, together."""
    client = get_redis()
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(QUEUE_INFO_KEY)
        if info:
            pipe.hset(QUEUE_INFO_KEY, mapping={k: json.dumps(v) for k, v in info.items()})
        if seq is not None:
            handoff.reserve_in(pipe, seq, list(agent_ids), reservations or {})
        pipe.execute()


def queue_info(task_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not task_ids:
        return {}
    values = get_redis().hmget(QUEUE_INFO_KEY, task_ids)
    return {tid: json.loads(v) for tid, v in zip(task_ids, values, strict=True) if v}


def record_residency(agent: Agent, model: str, line: Timeline) -> None:
    """After dispatching a cold load: the agent's expected memory, so the next pass
    does not count the model it evicts as warm. Probes and completions correct it
    from /api/ps."""
    entries = {canonical(m.get("name") or m.get("model")): m for m in agent.models_loaded
               if isinstance(m, dict) and (m.get("name") or m.get("model"))}
    order = [name for name in resident_models(agent) if name in entries]
    name = canonical(model)
    if name not in order and len(order) >= max(agent.max_loaded_models, 1):
        idle = [m for m in order if line.held.get(m, 0.0) <= 0.0]
        order.remove(idle[0] if idle else order[0])
    if name in order:
        order.remove(name)
    expires = (timezone.now() + timedelta(seconds=settings.HIVE_KEEP_ALIVE_SECONDS)).isoformat()
    resident = [entries[m] for m in order] + [{"name": name, "model": name, "expires_at": expires}]
    agent.models_loaded = resident
    Agent.objects.filter(pk=agent.pk).update(models_loaded=resident)


@dataclass
class Outbox:
    """What a pass's claims send once its transaction commits, in one go: the
    task.assigned events first (so each precedes its task.started), then the
    execution messages."""

    messages: list[tuple[uuid.UUID, uuid.UUID, int]] = field(default_factory=list)
    events: list[tuple[str, str, dict[str, Any], list[str], str]] = field(default_factory=list)

    def send_at_commit(self) -> None:
        events.publish_many(self.events)
        send_executions(self.messages)


def _claim(task: Task, agent: Agent, model: str, *, cold: bool, outbox: Outbox) -> bool:
    dispatch_id = uuid.uuid4()
    # cold_load tells the executor whether to measure a load time from this run.
    metadata = {**task.metadata, "model": model, "cold_load": cold}
    claimed = fastsql.update(Task, {"status": Task.Status.QUEUED, "assigned_agent": agent.pk,
                                    "dispatch_id": dispatch_id, "queued_at": timezone.now(), "metadata": metadata},
                             {"id": task.pk, "status": Task.Status.PENDING, "cancel_requested": False})
    if claimed:
        task.status, task.assigned_agent, task.metadata = Task.Status.QUEUED, agent, metadata
        outbox.messages.append((task.pk, dispatch_id, task.priority))
        outbox.events.append(events.task_event_args(events.TASK_ASSIGNED, task, model=model, agent=agent.name))
    return bool(claimed)


# The pass lock in three scripts, one round trip each: start (note the request, try
# the lock), next (take the dirty note, keep the lock and the requested flag alive)
# and end (release; clear the requested flag unless a note arrived meanwhile, so a
# request either finds the flag gone and sends a message, or leaves a note this
# pass sees). Same semantics as redis-py's Lock plus the separate commands they
# replace, at a third of the round trips.
_PASS_START = """
redis.call('SET', KEYS[1], 1)
return redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_PASS_NEXT = """
if not redis.call('GETDEL', KEYS[1]) then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('INCR', KEYS[4])
return 1
"""
_PASS_END = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
redis.call('DEL', KEYS[3])
return 0
"""
# One pass task keeps looping while requests arrive, for at most this long; then it
# queues its successor, so the control worker's other jobs (probes, the reconciler,
# workflow schedules, alerts) get their turn under a steady stream of work.
PASS_TASK_BUDGET = 1.0


def run_pass() -> PassResult | None:
    """Run rounds until no request arrived meanwhile; None if another process holds the lock.

    Rounds start at least HIVE_PASS_INTERVAL apart: under a stream of submissions and
    completions one round places everything that arrived in the interval, instead of
    one round (reading every pending task and agent) per event."""
    token = uuid.uuid4().hex
    ttl_ms = LOCK_TIMEOUT * 1000
    keys = [DIRTY_KEY, LOCK_KEY, PASS_REQUESTED_KEY, ROUNDS_KEY]
    total = PassResult()
    began = time.monotonic()
    next_round = began

    def over_budget() -> bool:
        return time.monotonic() - began > PASS_TASK_BUDGET

    while True:
        if not script(_PASS_START)(keys=[DIRTY_KEY, LOCK_KEY], args=[token, ttl_ms]):
            # The holder will see the dirty flag and run once more for us.
            return None
        try:
            while True:
                time.sleep(max(next_round - time.monotonic(), 0.0))
                step = script(_PASS_NEXT)(keys=keys, args=[token, ttl_ms, PASS_REQUESTED_TTL * 1000])
                if step == 0:
                    break
                if step < 0:
                    raise RuntimeError(f"the scheduling lock expired during a pass (longer than {LOCK_TIMEOUT}s)")
                next_round = time.monotonic() + settings.HIVE_PASS_INTERVAL
                result = schedule_once()
                total.placed.extend(result.placed)
                total.waiting = result.waiting
                total.failed_by_dependency += result.failed_by_dependency
                total.rounds += 1
                publish_cluster_status_soon()  # queue depths changed; at most one snapshot per window
                if over_budget():
                    break
        finally:
            # A request that set the flag between our last check and the release found
            # the lock still taken; pick it up with another round.
            again = script(_PASS_END)(keys=[LOCK_KEY, DIRTY_KEY, PASS_REQUESTED_KEY], args=[token])
        if again and over_budget():
            send_pass_message()  # the requested flag stays set: it stands for this message now
            again = 0
        if not again:
            return total


def rounds_so_far() -> int:
    """Scheduling rounds run in this cluster since Redis was last emptied."""
    return int(get_redis().get(ROUNDS_KEY) or 0)


def publish_cluster_status() -> None:
    """A snapshot for cluster.status subscribers, after every pass (passes coalesce)."""
    from coordinator.status import cluster_status

    events.publish("cluster.status", "coordinator", cluster_status(), [events.CLUSTER_STATUS])


STATUS_SOON_KEY = "hive:scheduler:status-soon"


def publish_cluster_status_soon() -> None:
    """A snapshot within HIVE_STATUS_INTERVAL, one for all the changes in that window.

    Passes and task starts happen many times per second under load; one process in
    the cluster takes the window (SET NX) and publishes when it ends, so the snapshot
    includes every change that committed before it. 0 publishes at once, every time."""
    global _status_window_ends
    delay = settings.HIVE_STATUS_INTERVAL
    if delay <= 0:
        publish_cluster_status()
        return
    now = time.monotonic()
    if now < _status_window_ends:
        return  # a snapshot is already due after this change; no need to ask Redis
    with get_redis().pipeline(transaction=False) as pipe:
        pipe.set(STATUS_SOON_KEY, 1, nx=True, px=max(int(delay * 1000), 1))
        pipe.pttl(STATUS_SOON_KEY)
        taken, left_ms = pipe.execute()
    # Remember until when the window that will publish runs, ours or another process's.
    _status_window_ends = now + (delay if taken else max(left_ms, 0) / 1000)
    if taken:
        timer = threading.Timer(delay, _publish_cluster_status_in_thread)
        timer.daemon = True
        timer.start()


_status_window_ends = 0.0


def _publish_cluster_status_in_thread() -> None:
    try:
        publish_cluster_status()
    except Exception:  # a status snapshot is best effort; the next pass sends another
        logger.exception("publishing the cluster status failed")
    finally:
        connection.close()
