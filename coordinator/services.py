"""Task lifecycle: submission, cancellation, assignment, retries, dependency failure.

Every state change is a conditional update on the status the change expects, so
two processes racing on the same task (a canceller and a worker, a reconciler and
a late message) cannot both win.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from agents.models import Agent
from coordinator import events
from coordinator.dispatch import missing_markers, request_pass_in, request_scheduling_pass, send_execution
from coordinator.handoff import order_key
from coordinator.models import Task, TaskAttempt, TaskDependency
from hive_project import fastsql
from hive_project.errors import ConflictError

logger = logging.getLogger(__name__)

_FAILED_OR_CANCELLED = [Task.Status.FAILED, Task.Status.CANCELLED]


class DependencyError(ValueError):
    """A depends_on entry that cannot be accepted (missing task, cycle, failed dependency)."""


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A cycle in a graph given as node -> dependencies, or None."""
    white, grey, black = 0, 1, 2
    colour = {node: white for node in edges}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        colour[node] = grey
        path.append(node)
        for dep in edges.get(node, []):
            if colour.get(dep, black) == grey:
                return path[path.index(dep):] + [dep]
            if colour.get(dep) == white:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        colour[node] = black
        return None

    for node in edges:
        if colour[node] == white:
            found = visit(node)
            if found:
                return found
    return None


def _check_dependencies(dependencies: Iterable[Task]) -> None:
    for dep in dependencies:
        if dep.status in _FAILED_OR_CANCELLED:
            raise DependencyError(f"task {dep.pk} ('{dep.title}') is already {dep.status}; a task cannot wait for it")


def create_tasks(specs: list[dict[str, Any]], user: Any = None) -> list[Task]:
    """Create one task or a whole graph in one transaction.

    Each spec holds model fields plus ``depends_on``: existing Task objects and/or
    ``("new", index)`` references to other specs of the same call.
    """
    edges = {str(i): [str(ref[1]) for ref in spec.get("depends_on", []) if isinstance(ref, tuple)]
             for i, spec in enumerate(specs)}
    cycle = find_cycle(edges)
    if cycle:
        raise DependencyError("dependency cycle: " + " -> ".join(f"tasks[{i}]" for i in cycle))
    created: list[Task] = []
    with transaction.atomic():
        for spec in specs:
            fields = {k: v for k, v in spec.items() if k != "depends_on"}
            fields.setdefault("max_attempts", settings.HIVE_MAX_ATTEMPTS)
            task = Task(created_by=user if user is not None and user.is_authenticated else None, **fields)
            # The id is a fresh uuid4 (and the primary key): no uniqueness query for it.
            task.full_clean(exclude=["depends_on", "id"])
            fastsql.insert_instance(task)  # task.save() without compiling an INSERT per task
            created.append(task)
        announced = []
        for task, spec in zip(created, specs, strict=True):
            deps = [created[ref[1]] if isinstance(ref, tuple) else ref for ref in spec.get("depends_on", [])]
            if deps:
                _check_dependencies(deps)
                TaskDependency.objects.bulk_create(
                    [TaskDependency(task=task, depends_on_task=dep) for dep in {d.pk: d for d in deps}.values()])
            announced.append(events.task_event_args(events.TASK_CREATED, task, model=task.model,
                                                    depends_on=[str(d.pk) for d in deps],
                                                    created_by=getattr(user, "username", None)))
        # The events and the pass request: one round trip to Redis after commit. Its
        # news is the best of the new tasks: a reservation they outrank is not handed off.
        news = max((order_key(t.priority, t.created_at) for t in created), default=None)
        events.publish_many(announced, also=lambda batch: request_pass_in(batch, news))
    return created


def would_create_cycle(task: Task, new_dependencies: list[Task]) -> list[Task] | None:
    """Walk the dependency graph from the new dependencies; reaching ``task`` is a cycle."""
    frontier = [d.pk for d in new_dependencies]
    seen: set[uuid.UUID] = set()
    parents: dict[uuid.UUID, uuid.UUID | None] = {pk: None for pk in frontier}
    while frontier:
        if task.pk in frontier:
            chain = [task.pk]
            node = parents.get(task.pk)
            while node is not None:
                chain.append(node)
                node = parents.get(node)
            return list(Task.objects.filter(pk__in=chain))
        seen.update(frontier)
        links = TaskDependency.objects.filter(task_id__in=frontier).values_list("task_id", "depends_on_task_id")
        frontier = []
        for child, dep in links:
            if dep not in seen:
                parents.setdefault(dep, child)
                frontier.append(dep)
    return None


def update_pending_task(task: Task, fields: dict[str, Any], dependencies: list[Task] | None) -> Task:
    with transaction.atomic():
        locked = Task.objects.select_for_update().get(pk=task.pk)
        if locked.status != Task.Status.PENDING:
            raise ConflictError(f"Task is {locked.status}; only pending tasks can be changed.")
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.full_clean(exclude=["depends_on"])
        if dependencies is not None:
            if any(d.pk == locked.pk for d in dependencies):
                raise DependencyError("a task cannot depend on itself")
            cycle = would_create_cycle(locked, dependencies)
            if cycle:
                raise DependencyError("dependency cycle through " + ", ".join(str(t.pk) for t in cycle))
            _check_dependencies(dependencies)
            TaskDependency.objects.filter(task=locked).delete()
            TaskDependency.objects.bulk_create([TaskDependency(task=locked, depends_on_task=d) for d in dependencies])
        locked.save()
        events.task_event("task.updated", locked, changed=sorted(fields) + (["depends_on"] if dependencies is not None else []))
        request_scheduling_pass()
    return locked


def fail_dependents(task: Task) -> int:
    """Fail every pending task that (transitively) waits for ``task``."""
    count = 0
    frontier = [task]
    while frontier:
        parent = frontier.pop()
        for child in Task.objects.filter(dependency_links__depends_on_task=parent, status=Task.Status.PENDING):
            reason = f"dependency {parent.pk} ('{parent.title}') {parent.status}"
            updated = Task.objects.filter(pk=child.pk, status=Task.Status.PENDING).update(
                status=Task.Status.FAILED, error=reason, completed_at=timezone.now()
            )
            if updated:
                count += 1
                child.status = Task.Status.FAILED
                events.task_event(events.TASK_FAILED, child, error=reason)
                frontier.append(child)
    return count


def fail_blocked_dependents() -> int:
    """Safety net for the pass: pending tasks waiting on a failed or cancelled task."""
    count = 0
    # Runs every pass and almost always finds nothing: ask for ids only, then load those.
    blocking = TaskDependency.objects.filter(depends_on_task__status__in=_FAILED_OR_CANCELLED,
                                             task__status=Task.Status.PENDING).values_list("depends_on_task", flat=True)
    ids = set(blocking)
    for dep in Task.objects.filter(pk__in=ids) if ids else []:
        count += fail_dependents(dep)
    return count


def cancel_task(task: Task) -> Task:
    """Pending/queued: cancelled at once. Running: flagged; the worker stops within a second."""
    now = timezone.now()
    with transaction.atomic():
        cancelled = Task.objects.filter(pk=task.pk, status__in=[Task.Status.PENDING, Task.Status.QUEUED]).update(
            status=Task.Status.CANCELLED, cancel_requested=True, completed_at=now, error="cancelled by user",
            lease_expires_at=None,
        )
        if not cancelled:
            flagged = Task.objects.filter(pk=task.pk, status=Task.Status.RUNNING).update(cancel_requested=True)
            if not flagged:
                task.refresh_from_db()
                raise ConflictError(f"Task is already {task.status}; only pending, queued or running tasks can be cancelled.")
        task.refresh_from_db()
        if task.status == Task.Status.CANCELLED:
            events.task_event(events.TASK_CANCELLED, task)
            fail_dependents(task)
            request_scheduling_pass(news=None)  # a cancelled task frees a slot; it outranks nothing
    return task


def assign_task(task: Task, agent: Agent) -> Task:
    from coordinator.scheduler import can_run

    if not can_run(Task(task_type=task.task_type, model=task.model, pinned_agent=agent), agent):
        wanted = f"model '{task.model}'" if task.model else "a model"
        raise ConflictError(
            f"Agent '{agent.slug}' cannot run this task: it needs capability '{task.task_type}' and {wanted}; "
            f"the agent offers {[c.get('name') for c in agent.capabilities]} and models {agent.available_model_names}."
        )
    with transaction.atomic():
        updated = Task.objects.filter(pk=task.pk, status=Task.Status.PENDING).update(pinned_agent=agent)
        if not updated:
            task.refresh_from_db()
            raise ConflictError(f"Task is {task.status}; only pending tasks can be assigned.")
        events.task_event("task.pinned", task, pinned_agent=agent.slug)
        request_scheduling_pass()
    task.refresh_from_db()
    return task


def retry_task(task: Task) -> Task:
    with transaction.atomic():
        updated = Task.objects.filter(pk=task.pk, status__in=_FAILED_OR_CANCELLED).update(
            # A fresh budget of attempts; the history keeps the earlier ones, numbered first.
            status=Task.Status.PENDING, attempt_offset=F("attempt_offset") + F("attempts"), attempts=0,
            error="", result="", excluded_agents=[], cancel_requested=False,
            assigned_agent=None, dispatch_id=None, completed_at=None, started_at=None, queued_at=None, timings={},
            tokens_per_second=None,
        )
        if not updated:
            task.refresh_from_db()
            raise ConflictError(f"Task is {task.status}; only failed or cancelled tasks can be retried.")
        task.refresh_from_db()
        events.task_event("task.retried", task)
        # It was in no reservation (not pending): it outranks exactly what its own key does.
        request_scheduling_pass(news=order_key(task.priority, task.created_at))
    task.refresh_from_db()
    return task


def return_to_pending_or_fail(task: Task, dispatch_id: uuid.UUID, error: str, *, exclude_agent: bool,
                              extra_filter: dict[str, Any] | None = None, final: bool = False) -> str:
    """After a failed or lost attempt: try again elsewhere, or fail when attempts are used up.

    Returns the new status, or "" if the task had moved on (someone else won).
    """
    excluded = list(task.excluded_agents)
    if exclude_agent and task.assigned_agent_id and str(task.assigned_agent_id) not in excluded:
        excluded.append(str(task.assigned_agent_id))
    retry = task.attempts < task.max_attempts and not task.cancel_requested and not final
    base = Task.objects.filter(pk=task.pk, dispatch_id=dispatch_id, status__in=Task.Status.holding_slot(),
                               **(extra_filter or {}))
    now = timezone.now()
    with transaction.atomic():
        if retry:
            updated = base.update(status=Task.Status.PENDING, assigned_agent=None, dispatch_id=None,
                                  lease_expires_at=None, excluded_agents=excluded, error=error, worker="")
            new_status = Task.Status.PENDING
        elif task.cancel_requested:
            updated = base.update(status=Task.Status.CANCELLED, lease_expires_at=None, completed_at=now,
                                  error="cancelled by user")
            new_status = Task.Status.CANCELLED
        else:
            updated = base.update(status=Task.Status.FAILED, lease_expires_at=None, completed_at=now,
                                  error=error if final else f"failed after {task.attempts} attempt(s): {error}")
            new_status = Task.Status.FAILED
        if not updated:
            return ""
        task.status = new_status
        if new_status == Task.Status.PENDING:
            events.task_event("task.retrying", task, error=error, attempts=task.attempts)
        else:
            events.task_event(events.TASK_FAILED if new_status == Task.Status.FAILED else events.TASK_CANCELLED,
                              task, error=error, attempts=task.attempts)
            fail_dependents(task)
        # Back to pending it outranks what its own key does (it was in no reservation);
        # failed or cancelled it only frees a slot.
        request_scheduling_pass(news=order_key(task.priority, task.created_at)
                                if new_status == Task.Status.PENDING else None)
    return new_status


def reconcile() -> dict[str, int]:
    """Repair what crashes and lost messages leave behind. Idempotent; runs on beat."""
    now = timezone.now()
    counts = {"expired_leases": 0, "redispatched": 0}
    expired = Task.objects.filter(status=Task.Status.RUNNING, lease_expires_at__lt=now).select_related("assigned_agent")
    for task in expired:
        lost = f"worker {task.worker or '?'} stopped renewing its lease (it died or lost its connection)"
        new_status = return_to_pending_or_fail(task, task.dispatch_id, lost, exclude_agent=False,
                                               extra_filter={"lease_expires_at__lt": now})
        if new_status:
            counts["expired_leases"] += 1
            TaskAttempt.objects.filter(task=task, dispatch_id=task.dispatch_id, outcome=TaskAttempt.Outcome.RUNNING).update(
                outcome=TaskAttempt.Outcome.LOST, error=lost, finished_at=now)
            logger.warning("task %s: %s; now %s", task.pk, lost, new_status)
    # A queued task whose message Redis lost (flushed, restarted) would wait forever:
    # its marker is gone with it, so send the same dispatch again. Duplicates are
    # harmless because claiming is conditional on the dispatch id. Very old queued
    # tasks are re-sent too, in case a message was consumed without being claimed.
    settle = now - timedelta(seconds=2)
    stale = now - timedelta(seconds=settings.HIVE_QUEUED_REDISPATCH_SECONDS)
    queued = list(Task.objects.filter(status=Task.Status.QUEUED, queued_at__lt=settle)
                  .values_list("pk", "dispatch_id", "priority", "queued_at"))
    lost = missing_markers([str(d) for _, d, _, _ in queued])
    for pk, dispatch_id, priority, queued_at in queued:
        if str(dispatch_id) not in lost and queued_at >= stale:
            continue
        with transaction.atomic():
            if Task.objects.filter(pk=pk, status=Task.Status.QUEUED, dispatch_id=dispatch_id).update(queued_at=now):
                send_execution(pk, dispatch_id, priority)
                counts["redispatched"] += 1
    with transaction.atomic():
        request_scheduling_pass(news=None)  # what it returned to pending made its own requests
    return counts


def recover_orphans() -> int:
    """At start-up of the embedded mode no worker can be alive: running work goes back."""
    count = 0
    for task in Task.objects.filter(status=Task.Status.RUNNING):
        if return_to_pending_or_fail(task, task.dispatch_id, "Hive restarted while the task ran", exclude_agent=False):
            TaskAttempt.objects.filter(task=task, dispatch_id=task.dispatch_id, outcome=TaskAttempt.Outcome.RUNNING).update(
                outcome=TaskAttempt.Outcome.LOST, error="Hive restarted while the task ran", finished_at=timezone.now())
            count += 1
    # Their messages may not have survived the broker's restart; duplicates are no-ops.
    for task in Task.objects.filter(status=Task.Status.QUEUED):
        send_execution(task.pk, task.dispatch_id, task.priority)
    return count
