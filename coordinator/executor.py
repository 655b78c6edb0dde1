"""Running one placed task on its agent: claim, stream, renew the lease, finish.

The Celery task is a thin wrapper around ``execute``. The claim is a conditional
update on (status, dispatch id), so a redelivered or stale message does nothing.
While streaming, a watchdog thread renews the lease, saves the partial output and
watches for cancellation; to stop, it aborts the HTTP stream (shutting the socket
down), which also makes Ollama stop generating.
"""
from __future__ import annotations

import logging
import math
import os
import threading
import time
import uuid
from datetime import datetime, timedelta
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from agents.ollama import OllamaError, OllamaHTTPError, OllamaStream, OllamaStreamAborted, shared_client
from coordinator import events, handoff
from coordinator.dispatch import forget_marker_in, request_pass_in, request_scheduling_pass
from coordinator.models import Task, TaskAttempt, TaskDependency
from coordinator.scheduler import publish_cluster_status_soon, resolve_model
from coordinator.services import fail_dependents, return_to_pending_or_fail
from hive_project import fastsql

logger = logging.getLogger(__name__)

class LeaseHeld(Exception):
    """Another live process still holds the task's lease; try again when it may have expired."""

    def __init__(self, seconds_left: float) -> None:
        super().__init__(f"lease held for another {seconds_left:.1f}s")
        self.seconds_left = seconds_left


# What the worker reads of its task and agent when it claims the task; the rest
# (results, history, the agent's model lists) stays in the database and loads on
# first use.
CLAIM_FIELDS = ("title", "prompt", "system", "task_type", "model", "options", "priority", "metadata",
                "assigned_agent", "attempts", "attempt_offset", "max_attempts")
AGENT_FIELDS = ("slug", "name", "endpoint", "model", "status", "draining", "max_concurrency", "models_loaded",
                "tokens_per_second", "load_seconds", "consecutive_failures")


def attempt_number(row: dict[str, Any]) -> int:
    """The attempt row's number: this run's attempts after those of the runs before a retry."""
    return row["attempts"] + row["attempt_offset"]


def _running(worker: str) -> dict[str, Any]:
    """What every start writes: running, leased to this worker, one attempt more."""
    now = timezone.now()
    return {"status": Task.Status.RUNNING, "attempts": fastsql.Add(1), "worker": worker, "started_at": now,
            "lease_expires_at": now + timedelta(seconds=settings.HIVE_TASK_LEASE_SECONDS)}


def _started(row: dict[str, Any], task_id: Any, dispatch_id: Any, agent_id: Any, fields: dict[str, Any],
             **more: Any) -> Task:
    """After a start's conditional UPDATE (``fields``, returning CLAIM_FIELDS as ``row``):
    its attempt row, and the task as the executor needs it."""
    fastsql.insert(TaskAttempt, {"task": task_id, "number": attempt_number(row), "agent": agent_id,
                                 "dispatch_id": dispatch_id, "worker": fields["worker"],
                                 "started_at": fields["started_at"]})
    written = {name: value for name, value in fields.items() if not isinstance(value, fastsql.Add)}
    return fastsql.instance(Task, {**row, **written, "id": uuid.UUID(str(task_id)),
                                   "dispatch_id": uuid.UUID(str(dispatch_id)), **more})


def claim(task_id: str, dispatch_id: str, worker: str) -> Task | None:
    """Take the task for this delivery: running, leased to this worker, one attempt more.

    A conditional update on (id, dispatch id, status), so a duplicate or stale
    message changes nothing. The claim and its attempt row commit together. The
    statements are fastsql's: they run for every task (see hive_project.fastsql).
    """
    fields = _running(worker)
    now = fields["started_at"]
    with transaction.atomic():
        rows = fastsql.update(Task, fields, {"id": task_id, "dispatch_id": dispatch_id, "status": Task.Status.QUEUED,
                                             "cancel_requested": False}, returning=CLAIM_FIELDS)
        if not rows:
            rows = _take_over(task_id, dispatch_id, fields, now)
        if not rows:
            held_until = Task.objects.filter(pk=task_id, dispatch_id=dispatch_id, status=Task.Status.RUNNING) \
                .values_list("lease_expires_at", flat=True).first()
            if held_until is not None:
                raise LeaseHeld(max((held_until - now).total_seconds(), 0.5))
            return None
        (row,) = rows
        agent_id = row["assigned_agent_id"]
        task = _started(row, task_id, dispatch_id, agent_id, fields)
    task.assigned_agent = fastsql.get(Agent, agent_id, AGENT_FIELDS) if agent_id is not None else None
    events.task_event(events.TASK_STARTED, task, attempt=task.attempts, worker=worker,
                      model=task.metadata.get("model"), also=lambda batch: forget_marker_in(batch, dispatch_id))
    publish_cluster_status_soon()
    return task


def _take_over(task_id: str, dispatch_id: str, fields: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """The same message again after the process running it was killed: take the task
    over once its lease has run out; the dead process's attempt is marked lost."""
    base = Task.objects.filter(pk=task_id, dispatch_id=dispatch_id, status=Task.Status.RUNNING,
                               lease_expires_at__lt=now)
    if not base.update(**{**fields, "attempts": F("attempts") + 1}):
        return []
    TaskAttempt.objects.filter(task_id=task_id, outcome=TaskAttempt.Outcome.RUNNING).update(
        outcome=TaskAttempt.Outcome.LOST, finished_at=now, error="the worker process running it died")
    return list(Task.objects.filter(pk=task_id).values(*(Task._meta.get_field(name).attname
                                                         for name in CLAIM_FIELDS)))


class Watch:
    """One running task as the lease keeper sees it."""

    def __init__(self, task_id: uuid.UUID, dispatch_id: uuid.UUID, parts: list[str], interval: float) -> None:
        self.task_id = task_id
        self.dispatch_id = dispatch_id
        self.parts = parts
        self.interval = interval
        self.due = time.monotonic() + interval
        self.stream: OllamaStream | None = None
        self.cancelled = False
        self.lost = False
        self.saved = 0
        self.stopped = False

    def abort(self) -> None:
        if self.stream is not None:
            self.stream.abort()

    def renew(self) -> bool:
        """Extend the lease and save the partial output; False once the task is no longer ours."""
        count = len(self.parts)
        update: dict[str, Any] = {
            "lease_expires_at": timezone.now() + timedelta(seconds=settings.HIVE_TASK_LEASE_SECONDS)}
        if count != self.saved:
            update["result"] = "".join(self.parts[:count])
        renewed = Task.objects.filter(pk=self.task_id, dispatch_id=self.dispatch_id,
                                      status=Task.Status.RUNNING, cancel_requested=False).update(**update)
        if renewed:
            self.saved = count
            return True
        still_ours = Task.objects.filter(pk=self.task_id, dispatch_id=self.dispatch_id,
                                         status=Task.Status.RUNNING).exists()
        if still_ours:
            self.cancelled = True
        else:
            self.lost = True
        return False


class LeaseKeeper(threading.Thread):
    """One thread per process renews the leases of the tasks running in it, saves their
    partial output, and stops a stream on cancel or a lost lease.

    Long-lived rather than one thread per task: starting and joining a thread per task
    was a measurable part of a short task. It uses the database only while a task runs
    longer than the renewal interval, and closes its connection when nothing is left.
    """

    def __init__(self) -> None:
        super().__init__(name="hive-lease-keeper", daemon=True)
        self.watches: dict[uuid.UUID, Watch] = {}
        self.wakeup = threading.Condition()
        self.busy = threading.Lock()  # held while one watch is being renewed

    def watch(self, task_id: uuid.UUID, dispatch_id: uuid.UUID, parts: list[str]) -> Watch:
        entry = Watch(task_id, dispatch_id, parts, min(0.5, settings.HIVE_TASK_LEASE_SECONDS / 4))
        with self.wakeup:
            self.watches[task_id] = entry
            self.wakeup.notify()
        return entry

    def forget(self, entry: Watch) -> None:
        """After this returns, no renewal of ``entry`` is running or will run."""
        with self.busy:
            entry.stopped = True
            with self.wakeup:
                if self.watches.get(entry.task_id) is entry:
                    del self.watches[entry.task_id]

    def run(self) -> None:
        while True:
            try:
                self._round()
            except Exception:  # never die silently: every later task's lease depends on this thread
                logger.exception("the lease keeper failed a round; carrying on")
                time.sleep(0.1)

    def _round(self) -> None:
        with self.wakeup:
            while not self.watches:
                self.wakeup.wait()
            now = time.monotonic()
            due = [w for w in self.watches.values() if w.due <= now]
            if not due:
                self.wakeup.wait(min(w.due for w in self.watches.values()) - now)
                return
        for entry in due:
            self._renew(entry)
        with self.wakeup:
            idle = not self.watches
        if idle:
            connection.close()

    def _renew(self, entry: Watch) -> None:
        with self.busy:
            if entry.stopped:
                return
            entry.due = time.monotonic() + entry.interval
            try:
                if entry.renew():
                    return
            except Exception:  # a database hiccup must not leave the stream running unwatched
                logger.exception("renewing the lease of task %s failed; aborting the stream", entry.task_id)
                entry.lost = True
                connection.close()
            entry.stopped = True
            with self.wakeup:
                if self.watches.get(entry.task_id) is entry:
                    del self.watches[entry.task_id]
        entry.abort()


_keepers: dict[int, LeaseKeeper] = {}
_keepers_lock = threading.Lock()


def lease_keeper() -> LeaseKeeper:
    pid = os.getpid()  # a forked worker child needs its own thread
    with _keepers_lock:
        keeper = _keepers.get(pid)
        if keeper is None or not keeper.is_alive():
            keeper = _keepers[pid] = LeaseKeeper()
            keeper.start()
        return keeper


def execute(task_id: str, dispatch_id: str, worker: str) -> str:
    """Run the task this message is for, then, while its agent's next reserved task can
    take the slot at once (coordinator.handoff), that one, and so on for up to
    HIVE_HANDOFF_SECONDS. Returns what became of the first."""
    task = claim(task_id, dispatch_id, worker)
    if task is None:
        return "skipped"
    handoff_until = time.monotonic() + settings.HIVE_HANDOFF_SECONDS
    outcome, task = run(task, worker, handoff_until)
    while task is not None:
        _, task = run(task, worker, handoff_until)
    return outcome


def run(task: Task, worker: str, handoff_until: float) -> tuple[str, Task | None]:
    """Stream a claimed task and record how it ended; returns that and the task handed
    this slot next, if any."""
    agent = task.assigned_agent
    if agent is None:  # the agent was deleted between placement and start
        return _fail_attempt(task, "its agent was deleted before the task started"), None
    model = task.metadata.get("model") or resolve_model(task, agent)
    parts: list[str] = []
    keeper = lease_keeper()
    watch = keeper.watch(task.pk, task.dispatch_id, parts)
    client = shared_client(agent.endpoint, connect_timeout=settings.HIVE_OLLAMA_CONNECT_TIMEOUT,
                           read_timeout=settings.HIVE_OLLAMA_READ_TIMEOUT)
    try:
        # Without num_predict Ollama generates until the model stops, which a looping model
        # never does: every task carries the cap unless it asked for less.
        options = {"num_predict": settings.HIVE_MAX_NUM_PREDICT, **(task.options or {})}
        stream = client.generate(model, task.prompt, options=options, system=task.system or None)
        watch.stream = stream
        if watch.cancelled or watch.lost:
            stream.abort()
        progress = Progress(task)
        with stream:
            for chunk in stream:
                piece = chunk.get("response")
                if piece:
                    parts.append(piece)
                    progress.maybe_publish(parts)
        progress.finish(parts)
    except OllamaStreamAborted:
        keeper.forget(watch)
        if watch.cancelled:
            return _finish_cancelled(task, "".join(parts)), None
        return "lost", None
    except OllamaError as exc:
        keeper.forget(watch)
        if watch.cancelled:
            return _finish_cancelled(task, "".join(parts)), None
        if _is_the_requests_fault(exc):
            # Ollama refused this request itself (bad options, say): another node would too.
            return _fail_attempt(task, str(exc), final=True), None
        agent_services.record_failure(agent, str(exc))
        return _fail_attempt(task, str(exc)), None
    except SoftTimeLimitExceeded:
        keeper.forget(watch)
        return _fail_attempt(task, f"took longer than the task time limit ({settings.HIVE_TASK_TIME_LIMIT}s)"), None
    except Exception as exc:
        # A bug must not leave the task "running" until its lease runs out.
        logger.exception("task %s: unexpected error while running", task.pk)
        keeper.forget(watch)
        return _fail_attempt(task, f"internal error in the worker: {exc!r}"), None
    finally:
        keeper.forget(watch)
    return _finish_completed(task, agent, model, "".join(parts), stream, worker,
                             handoff=time.monotonic() < handoff_until)


class Progress:
    """Publishes a running task's new output at most every HIVE_PROGRESS_INTERVAL."""

    def __init__(self, task: Task) -> None:
        self.task = task
        self.sent = 0
        self.offset = 0
        self.due = time.monotonic() + settings.HIVE_PROGRESS_INTERVAL

    def finish(self, parts: list[str]) -> None:
        """The tail, if any progress went out: then the deltas add up to the result.
        A task done within one interval sends none; task.completed carries its result."""
        if self.sent:
            self.publish(parts)

    def maybe_publish(self, parts: list[str]) -> None:
        if time.monotonic() >= self.due:
            self.publish(parts)

    def publish(self, parts: list[str]) -> None:
        count = len(parts)
        if count == self.sent:
            return
        delta = "".join(parts[self.sent:count])
        events.task_event(events.TASK_PROGRESS, self.task, delta=delta, offset=self.offset, tokens=count)
        self.sent = count
        self.offset += len(delta)
        self.due = time.monotonic() + settings.HIVE_PROGRESS_INTERVAL


def _is_the_requests_fault(exc: OllamaError) -> bool:
    return isinstance(exc, OllamaHTTPError) and 400 <= exc.status_code < 500 and exc.status_code not in (404, 408, 429)


def _finish_completed(task: Task, agent: Agent, model: str, text: str, stream: OllamaStream, worker: str, *,
                      handoff: bool) -> tuple[str, Task | None]:
    timings = stream.timings.as_dict()
    tps = timings.get("tokens_per_second") or None
    now = timezone.now()
    free, has_dependents = _slot_after(task, agent)
    # Tasks released by this one are news the reservations did not see (coordinator.handoff).
    news = math.inf if has_dependents else None
    # The first reservation is taken before the transaction: on SQLite a write
    # transaction holds the database's one write lock, no Redis round trip inside it.
    reserved = _next_reserved(agent, worker) if handoff and free > 0 and not has_dependents else None
    following: Task | None = None
    with transaction.atomic():
        # The completion and the next task's claim commit together: a round sees the
        # slot either held by the finished task or by the next one, never free.
        done = fastsql.update(Task, {"status": Task.Status.COMPLETED, "result": text, "timings": timings,
                                     "tokens_per_second": tps, "completed_at": now, "lease_expires_at": None,
                                     "error": ""},
                              {"id": task.pk, "dispatch_id": task.dispatch_id, "status": Task.Status.RUNNING})
        if done:
            fastsql.update(TaskAttempt, {"outcome": TaskAttempt.Outcome.SUCCEEDED, "finished_at": now},
                           {"task": task.pk, "dispatch_id": task.dispatch_id,
                            "outcome": TaskAttempt.Outcome.RUNNING})
            task.status = Task.Status.COMPLETED
            announced = [events.task_event_args(events.TASK_COMPLETED, task, result=text, timings=timings,
                                                model=model)]
            if reserved is not None:
                following = _take_handed_off(agent, worker, reserved, announced)
            # A pass either way: it refreshes the queue positions and the reservations.
            events.publish_many(announced, also=lambda batch: request_pass_in(batch, news))
    if not done:
        if reserved is not None:  # the slot is not ours to give: nothing behind the popped task may pass it
            handoff.drop(agent.pk)
        return "lost", None
    agent_services.record_success(agent, model, tps=tps, load_seconds=timings.get("load_duration", 0) / 1e9,
                                  was_warm=not task.metadata.get("cold_load", not agent.has_loaded(model)))
    if following is not None:
        publish_cluster_status_soon()
    return Task.Status.COMPLETED, following


def _slot_state_sql() -> str:
    tasks, agents, links = Task._meta.db_table, Agent._meta.db_table, TaskDependency._meta.db_table
    col = lambda model, name: model._meta.get_field(name).column  # noqa: E731
    holding = ", ".join(f"'{status}'" for status in Task.Status.holding_slot())
    schedulable = ", ".join(f"'{status}'" for status in Agent.SCHEDULABLE_STATUSES)
    return (
        f"SELECT (SELECT COUNT(*) FROM {tasks} WHERE {col(Task, 'assigned_agent')} = %s"
        f" AND {col(Task, 'status')} IN ({holding})),"
        f" (SELECT {col(Agent, 'max_concurrency')} FROM {agents} WHERE {col(Agent, 'id')} = %s"
        f" AND {col(Agent, 'status')} IN ({schedulable}) AND NOT {col(Agent, 'draining')}),"
        f" EXISTS (SELECT 1 FROM {links} WHERE {col(TaskDependency, 'depends_on_task')} = %s)"
    )


_SLOT_STATE: dict[str, str] = {}


def _slot_after(task: Task, agent: Agent) -> tuple[int, bool]:
    """(Slots the agent has free once ``task`` is done, 0 if it takes no new work;
    whether other tasks depend on ``task``): one query, before the completion."""
    alias = connection.alias
    sql = _SLOT_STATE.get(alias)
    if sql is None:
        sql = _SLOT_STATE[alias] = _slot_state_sql()
    agent_id = Agent._meta.pk.get_db_prep_value(agent.pk, connection)
    task_id = Task._meta.pk.get_db_prep_value(task.pk, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, [agent_id, agent_id, task_id])
        holding, slots, has_dependents = cursor.fetchone()
    if slots is None:
        return 0, bool(has_dependents)
    return slots - (holding - 1), bool(has_dependents)


def _next_reserved(agent: Agent, worker: str) -> tuple[str, str] | None:
    try:
        return handoff.take(agent.pk, worker)
    except Exception:  # Redis trouble must not cost the completion: the pass places the work
        logger.exception("taking the next reserved task for %s failed", agent.slug)
        return None


def _take_handed_off(agent: Agent, worker: str, reserved: tuple[str, str] | None, announced: list[Any]) -> Task | None:
    """Inside the completion's transaction: claim the task reserved for the slot being
    freed, straight to running on this agent; its events join ``announced``."""
    for _ in range(handoff.MAX_POPS):
        if reserved is None:
            return None
        task_id, model = reserved
        dispatch_id = uuid.uuid4()
        fields = _running(worker)
        fields.update(assigned_agent=agent.pk, dispatch_id=dispatch_id, queued_at=fields["started_at"])
        rows = fastsql.update(Task, fields, {"id": task_id, "status": Task.Status.PENDING, "cancel_requested": False},
                              returning=CLAIM_FIELDS)
        if not rows:
            # Placed or cancelled since the round reserved it: not waiting any more.
            reserved = _next_reserved(agent, worker)
            continue
        (row,) = rows
        metadata = {**row["metadata"], "model": model, "cold_load": False}
        fastsql.update(Task, {"metadata": metadata}, {"id": task_id})
        task = _started(row, task_id, dispatch_id, agent.pk, fields, metadata=metadata)
        task.assigned_agent = agent
        announced.append(events.task_event_args(events.TASK_ASSIGNED, task, model=model, agent=agent.name))
        announced.append(events.task_event_args(events.TASK_STARTED, task, attempt=task.attempts, worker=worker,
                                                model=model))
        return task
    return None


def _finish_cancelled(task: Task, partial: str) -> str:
    now = timezone.now()
    with transaction.atomic():
        done = Task.objects.filter(pk=task.pk, dispatch_id=task.dispatch_id, status=Task.Status.RUNNING).update(
            status=Task.Status.CANCELLED, result=partial, completed_at=now, lease_expires_at=None,
            error="cancelled by user",
        )
        if not done:
            return "lost"
        TaskAttempt.objects.filter(task=task, dispatch_id=task.dispatch_id, outcome=TaskAttempt.Outcome.RUNNING).update(
            outcome=TaskAttempt.Outcome.CANCELLED, finished_at=now)
        task.status = Task.Status.CANCELLED
        events.task_event(events.TASK_CANCELLED, task, result=partial)
        fail_dependents(task)
        request_scheduling_pass(news=None)  # a cancelled task frees a slot; it outranks nothing
    return Task.Status.CANCELLED


def _fail_attempt(task: Task, error: str, *, final: bool = False) -> str:
    task.refresh_from_db()
    TaskAttempt.objects.filter(task=task, dispatch_id=task.dispatch_id, outcome=TaskAttempt.Outcome.RUNNING).update(
        outcome=TaskAttempt.Outcome.FAILED, finished_at=timezone.now(), error=error)
    logger.warning("task %s attempt %s on %s failed: %s", task.pk, task.attempts, task.assigned_agent_id, error)
    return return_to_pending_or_fail(task, task.dispatch_id, error, exclude_agent=True, final=final) or "lost"
