"""Agent lifecycle: registration, probing, draining."""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Case, F, FloatField, Q, Value, When
from django.utils import timezone

from agents.models import Agent, AgentHealthCheck, parse_ollama_time
from agents.ollama import OllamaClient, OllamaError
from coordinator import events
from hive_project.errors import ConflictError

logger = logging.getLogger(__name__)

# Only what placement and operators need from /api/tags and /api/ps.
_TAG_FIELDS = ("name", "model", "size", "digest", "modified_at", "details")
_PS_FIELDS = ("name", "model", "size", "size_vram", "expires_at", "digest")


def _trim(entries: list[dict[str, Any]], fields: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{k: e[k] for k in fields if k in e} for e in entries if isinstance(e, dict)]


@dataclass
class ProbeResult:
    """What a node answered (network only; no database)."""

    version: str = ""
    response_time: float | None = None
    tags: list[dict[str, Any]] = field(default_factory=list)
    loaded: list[dict[str, Any]] = field(default_factory=list)
    error: str = ""

    @property
    def available(self) -> bool:
        return not self.error


def fetch_probe(endpoint: str, timeout: float) -> ProbeResult:
    """/api/version (its latency is the response time), /api/tags and /api/ps."""
    started = time.monotonic()
    try:
        with OllamaClient(endpoint, connect_timeout=timeout, read_timeout=timeout) as client:
            version = client.version()
            response_time = time.monotonic() - started
            return ProbeResult(version=version, response_time=response_time, tags=client.tags(), loaded=client.ps())
    except OllamaError as exc:
        return ProbeResult(error=str(exc))


def probe_agent(agent: Agent, timeout: float | None = None) -> AgentHealthCheck:
    """Ask the node what it is and what it has; record the answer (or the error)."""
    return apply_probe(agent, fetch_probe(agent.endpoint, timeout or settings.HIVE_PROBE_TIMEOUT))


def apply_probe(agent: Agent, result: ProbeResult) -> AgentHealthCheck:
    was_schedulable = agent.status != Agent.Status.OFFLINE
    previous_status = agent.display_status
    now = timezone.now()
    agent.last_probe_at = now
    if not result.available:
        agent.status = Agent.Status.OFFLINE
        agent.last_error = result.error
        agent.probe_failures += 1
        agent.next_probe_at = now + timedelta(seconds=probe_backoff(agent.probe_failures))
        agent.save(update_fields=["status", "last_error", "last_probe_at", "probe_failures", "next_probe_at",
                                  "updated_at"])
        check = AgentHealthCheck.objects.create(agent=agent, available=False, error_message=result.error)
        _status_changed(agent, previous_status)
        logger.info("agent %s is offline: %s (next probe in %.0fs)", agent.slug, result.error,
                    probe_backoff(agent.probe_failures))
        return check
    agent.status = Agent.Status.ONLINE
    agent.last_error = ""
    agent.last_seen = now
    agent.ollama_version = result.version
    agent.models_available = _trim(result.tags, _TAG_FIELDS)
    agent.models_loaded = _trim(result.loaded, _PS_FIELDS)
    # Half-open: an agent whose circuit tripped gets work again, but one more
    # failure trips it at once.
    agent.consecutive_failures = min(agent.consecutive_failures, settings.HIVE_CIRCUIT_FAILURES - 1)
    agent.probe_failures = 0
    agent.next_probe_at = None
    agent.save(update_fields=["status", "last_error", "last_seen", "last_probe_at", "ollama_version",
                              "models_available", "models_loaded", "consecutive_failures", "probe_failures",
                              "next_probe_at", "updated_at"])
    check = AgentHealthCheck.objects.create(
        agent=agent, available=True, response_time=result.response_time, models_loaded=agent.loaded_model_names,
    )
    _status_changed(agent, previous_status)
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
    events.agent_event(events.AGENT_REGISTERED, agent, endpoint=agent.endpoint,
                       models_available=agent.available_model_names, models_loaded=agent.loaded_model_names)
    return agent


def set_draining(agent: Agent, draining: bool) -> Agent:
    previous_status = agent.display_status
    Agent.objects.filter(pk=agent.pk).update(draining=draining, updated_at=timezone.now())
    agent.refresh_from_db()
    _status_changed(agent, previous_status)
    if not draining:
        from coordinator.dispatch import request_scheduling_pass

        request_scheduling_pass()
    return agent


def delete_agent(agent: Agent) -> None:
    with transaction.atomic():
        running = agent.assigned_tasks.holding_slot().count()
        if running:
            raise ConflictError(f"Agent '{agent.slug}' has {running} queued or running task(s); drain it and wait, or cancel them first.")
        events.agent_event("agent.deleted", agent)
        agent.delete()


def health_sweep() -> int:
    """Probe every due agent at once; a dead or hanging node costs HIVE_HEALTH_TIMEOUT, not the sweep.

    The network part runs on a thread per agent (bounded); the database part
    afterwards in this thread, so a large cluster needs no pile of connections.
    """
    now = timezone.now()
    # An agent in probe backoff is skipped until its time comes.
    agents = list(Agent.objects.filter(Q(next_probe_at__isnull=True) | Q(next_probe_at__lte=now)))
    if not agents:
        return 0
    timeout = settings.HIVE_HEALTH_TIMEOUT
    available = 0
    with ThreadPoolExecutor(max_workers=min(settings.HIVE_HEALTH_CONCURRENCY, len(agents))) as pool:
        futures = {pool.submit(fetch_probe, agent.endpoint, timeout): agent for agent in agents}
        # Record each answer as it arrives, while slow nodes are still timing out.
        for future in as_completed(futures):
            available += apply_probe(futures[future], future.result()).available
    return available


def probe_backoff(failures: int) -> float:
    return min(settings.HIVE_PROBE_BACKOFF_SECONDS * 2 ** max(failures - 1, 0), settings.HIVE_PROBE_BACKOFF_MAX_SECONDS)


SMOOTHING = 0.3


def _smooth(previous: float, sample: float, count: int = 1) -> float:
    """The speed after ``count`` samples averaging ``sample``: exactly the one-by-one
    smoothing when they are alike."""
    return sample if previous <= 0 else previous + _weight(count) * (sample - previous)


def _weight(count: int) -> float:
    return 1 - (1 - SMOOTHING) ** count


# A worker process finishing many short tasks on one agent writes the agent's speed
# at most once per this many seconds; the samples in between are folded into its
# next write for that agent (a process that exits first drops them: the speed is an
# estimate, and the next tasks measure it again). A success after failures always
# writes at once: it closes the circuit.
SPEED_WRITE_INTERVAL = 1.0


@dataclass
class _Samples:
    written_at: float = float("-inf")
    count: int = 0
    total: float = 0.0

    def add(self, tps: float | None) -> None:
        if tps:
            self.count += 1
            self.total += tps

    def take(self) -> tuple[int, float]:
        """(count, mean) of the samples folded since the last write; starts a new interval."""
        taken = (self.count, self.total / self.count if self.count else 0.0)
        self.count, self.total, self.written_at = 0, 0.0, time.monotonic()
        return taken


_speed_samples: dict[Any, _Samples] = {}


# A warm task rewrites the agent's models_loaded entry (pushing its expiry forward)
# only when the recorded expiry is this far behind a fresh one: under load, one
# locked JSON rewrite per agent and model every 2 s instead of one per task. The
# scheduler orders idle resident models by expiry to predict Ollama's LRU eviction,
# so this is also how stale that order may be.
EXPIRY_REFRESH_SECONDS = 2.0


def _expiry_is_fresh(agent: Agent, model: str, now: datetime) -> bool:
    for entry in agent.models_loaded:
        if isinstance(entry, dict) and (entry.get("name") or entry.get("model")) == model:
            expires = parse_ollama_time(entry.get("expires_at"))
            keep_alive = settings.HIVE_KEEP_ALIVE_SECONDS
            slack = min(EXPIRY_REFRESH_SECONDS, keep_alive / 10)
            return expires is not None and expires >= now + timedelta(seconds=keep_alive - slack)
    return False


def record_success(agent: Agent, model: str, *, tps: float | None, load_seconds: float, was_warm: bool) -> None:
    """After a task completed: speed, load time, and which model is now resident.

    ``agent`` is the row as the task's claim read it. The common case (a warm model
    whose recorded expiry is recent) is one UPDATE that smooths the speed in SQL, so
    the workers finishing tasks on one agent never queue for its row lock, and each
    worker process makes it at most once per SPEED_WRITE_INTERVAL for an agent."""
    now = timezone.now()
    samples = _speed_samples.setdefault(agent.pk, _Samples())
    samples.add(tps)
    if was_warm and _expiry_is_fresh(agent, model, now):
        if agent.consecutive_failures == 0 and time.monotonic() - samples.written_at < SPEED_WRITE_INTERVAL:
            return
        count, mean = samples.take()
        update: dict[str, Any] = {"consecutive_failures": 0, "last_seen": now}
        if count:
            update["tokens_per_second"] = Case(
                When(tokens_per_second__lte=0, then=Value(mean)),
                default=F("tokens_per_second") + _weight(count) * (Value(mean) - F("tokens_per_second")),
                output_field=FloatField())
        if not Agent.objects.filter(pk=agent.pk).update(**update):
            return
        smoothed = _smooth(agent.tokens_per_second, mean, count) if count else agent.tokens_per_second
        agent.consecutive_failures, agent.tokens_per_second = 0, smoothed
        events.agent_event(events.AGENT_PERFORMANCE_UPDATE, agent, tokens_per_second=round(smoothed, 2),
                           last_tps=tps, samples=count, model=model, cold_load=False, load_seconds=None)
        return
    count, mean = samples.take()
    refreshed: list[dict[str, Any]] | None = None
    if not was_warm:
        # A cold load may have evicted other models; ask the node what it holds now.
        try:
            with OllamaClient(agent.endpoint, connect_timeout=settings.HIVE_PROBE_TIMEOUT,
                              read_timeout=settings.HIVE_PROBE_TIMEOUT) as client:
                refreshed = _trim(client.ps(), _PS_FIELDS)
        except OllamaError:
            refreshed = None
    with transaction.atomic():
        fresh = Agent.objects.select_for_update().filter(pk=agent.pk).first()
        if fresh is None:
            return
        update = {"consecutive_failures": 0, "last_seen": now}
        if count:
            update["tokens_per_second"] = _smooth(fresh.tokens_per_second, mean, count)
        if not was_warm and load_seconds > 0:
            update["load_seconds"] = _smooth(fresh.load_seconds, load_seconds)
        if refreshed is not None:
            update["models_loaded"] = refreshed
        else:
            expires = now + timedelta(seconds=settings.HIVE_KEEP_ALIVE_SECONDS)
            others = [m for m in fresh.models_loaded if isinstance(m, dict) and (m.get("name") or m.get("model")) != model]
            update["models_loaded"] = [*others, {"name": model, "model": model, "expires_at": expires.isoformat()}]
        Agent.objects.filter(pk=agent.pk).update(**update)
        fresh.tokens_per_second = update.get("tokens_per_second", fresh.tokens_per_second)
        # The caller's copy too: an execution handing its slot on keeps using it.
        for name, value in update.items():
            if not hasattr(value, "resolve_expression"):
                setattr(agent, name, value)
        events.agent_event(events.AGENT_PERFORMANCE_UPDATE, fresh, tokens_per_second=round(fresh.tokens_per_second, 2),
                           last_tps=tps, samples=count, model=model, cold_load=not was_warm,
                           load_seconds=round(load_seconds, 3) if not was_warm else None)


def record_failure(agent: Agent, error: str) -> bool:
    """Count a failed attempt; after HIVE_CIRCUIT_FAILURES in a row the circuit opens.

    An open circuit means the agent is offline: it gets no work until a probe
    succeeds, and probes back off exponentially. Returns True if it opened now.
    """
    threshold = settings.HIVE_CIRCUIT_FAILURES
    now = timezone.now()
    with transaction.atomic():
        Agent.objects.filter(pk=agent.pk).update(consecutive_failures=F("consecutive_failures") + 1)
        failures = Agent.objects.filter(pk=agent.pk).values_list("consecutive_failures", flat=True).first() or 0
        if failures < threshold:
            return False
        backoff = probe_backoff(1)
        opened = Agent.objects.filter(pk=agent.pk).exclude(status=Agent.Status.OFFLINE).update(
            status=Agent.Status.OFFLINE, next_probe_at=now + timedelta(seconds=backoff), probe_failures=1,
            last_error=f"circuit open after {failures} consecutive failures; last: {error}")
    if opened:
        agent.refresh_from_db()
        events.agent_event(events.AGENT_STATUS_CHANGED, agent, previous="online", reason=agent.last_error)
        logger.warning("agent %s: circuit open after %d consecutive failures (%s)", agent.slug, failures, error)
        from agents.tasks import probe_agent as probe_task

        transaction.on_commit(lambda: probe_task.apply_async(args=(str(agent.pk),), countdown=backoff))
    return bool(opened)


def _status_changed(agent: Agent, previous: str) -> None:
    if agent.display_status != previous:
        events.agent_event(events.AGENT_STATUS_CHANGED, agent, previous=previous, reason=agent.last_error)


def prune_health_checks() -> int:
    """Health history older than HIVE_HEALTH_RETENTION_DAYS goes; the table stays bounded."""
    cutoff = timezone.now() - timedelta(days=settings.HIVE_HEALTH_RETENTION_DAYS)
    deleted, _ = AgentHealthCheck.objects.filter(timestamp__lt=cutoff).delete()
    return deleted
