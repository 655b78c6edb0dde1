"""Celery side of workflows: the execution host task, its reconciler, retention, MCP checks.

Executions run on their own queue (``hive.workflows``): one may wait minutes for
an LLM task, and on the control queue it would block the scheduling passes that
place that very task.

A running execution holds a lease in Redis, renewed by a thread of its worker.
A worker that dies stops renewing; the reconciler then marks the execution failed
("worker lost while running node X") instead of leaving it running forever.
Claiming is a conditional update (pending -> running), so a duplicate delivery
does nothing.
"""
from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import Any

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from hive_project import queues
from hive_project.redis_client import get_redis
from workflows.models import Execution, NodeRun

logger = logging.getLogger(__name__)

_LEASE_KEY = "hive:workflows:lease:{id}"
_SENT_KEY = "hive:workflows:sent:{id}"
_SENT_TTL = 86400
SCHEDULE_TYPES = ("n8n-nodes-base.scheduleTrigger", "n8n-nodes-base.cron")
WEBHOOK_TYPE = "n8n-nodes-base.webhook"


def lease_seconds() -> int:
    return int(settings.HIVE_TASK_LEASE_SECONDS)


def enqueue(execution_id: Any, start_node: str | None = None) -> None:
    """Send the execution to the workflows queue (and remember it was sent: a lost message is re-sent)."""
    try:
        get_redis().set(_SENT_KEY.format(id=execution_id), "1", ex=_SENT_TTL)
    except Exception:  # the marker only speeds up recovery
        logger.warning("could not mark execution %s as sent", execution_id)
    run_execution.apply_async(args=[str(execution_id)], kwargs={"start_node": start_node}, queue=queues.WORKFLOWS)


class Lease(threading.Thread):
    """Renews the execution's lease until stopped."""

    def __init__(self, execution_id: Any) -> None:
        super().__init__(name=f"lease-{execution_id}", daemon=True)
        self.key = _LEASE_KEY.format(id=execution_id)
        self.stopped = threading.Event()

    def renew(self) -> None:
        try:
            get_redis().set(self.key, "1", ex=lease_seconds())
        except Exception:
            logger.warning("could not renew lease %s", self.key)

    def run(self) -> None:
        while not self.stopped.wait(max(lease_seconds() / 3, 0.5)):
            self.renew()

    def stop(self) -> None:
        self.stopped.set()
        try:
            get_redis().delete(self.key)
        except Exception:
            pass


def default_start_node(n8n_data: dict[str, Any], mode: str) -> str | None:
    """Webhook and schedule runs start at their trigger; the runtime picks one for manual runs."""
    wanted = {Execution.Mode.WEBHOOK: (WEBHOOK_TYPE,), Execution.Mode.SCHEDULE: SCHEDULE_TYPES}.get(mode)
    if not wanted:
        return None
    for node in n8n_data.get("nodes") or []:
        if isinstance(node, dict) and node.get("type") in wanted and not node.get("disabled"):
            return str(node.get("name"))
    return None


def execute(execution_id: str, start_node: str | None, worker: str) -> str:
    from workflows.engine.contract import ExecutionCancelled, WorkflowError
    from workflows.host import DjangoServices, cap_items, engine_settings, execution_completed, execution_started, jsonable

    now = timezone.now()
    claimed = Execution.objects.filter(pk=execution_id, status=Execution.Status.PENDING).update(
        status=Execution.Status.RUNNING, started_at=now, worker=worker)
    if not claimed:
        return "skipped"
    execution = Execution.objects.select_related("workflow", "created_by").get(pk=execution_id)
    lease = Lease(execution.pk)
    lease.renew()
    lease.start()
    execution_started(execution)
    services = DjangoServices(execution)
    status, output, error, error_node = Execution.Status.FAILED, None, "", ""
    try:
        from workflows.engine.runtime import run_workflow

        result = run_workflow(execution.n8n_data, input_items=execution.input_data or [{"json": {}}],
                              settings=engine_settings(), services=services, execution_id=str(execution.pk),
                              mode=execution.mode,
                              start_node=start_node or default_start_node(execution.n8n_data, execution.mode),
                              workflow_id=str(execution.workflow_id))
        status = {"success": Execution.Status.COMPLETED, "cancelled": Execution.Status.CANCELLED}.get(
            result.status, Execution.Status.FAILED)
        output = jsonable(cap_items(result.output))
        error, error_node = result.error or "", result.error_node or ""
    except ExecutionCancelled as exc:
        status, error = Execution.Status.CANCELLED, str(exc) or "cancelled"
    except SoftTimeLimitExceeded:
        error = f"the execution exceeded its time limit ({settings.HIVE_TASK_TIME_LIMIT}s, HIVE_TASK_TIME_LIMIT)"
    except WorkflowError as exc:
        error = str(exc)
        error_node = getattr(exc, "node", None) or ""
    except Exception as exc:  # a bug in a node or the runtime must still end the execution
        logger.exception("execution %s crashed", execution_id)
        error = f"internal error: {type(exc).__name__}: {exc}"
    finally:
        lease.stop()
    if status != Execution.Status.COMPLETED and Execution.objects.filter(pk=execution.pk, cancel_requested=True).exists():
        status = Execution.Status.CANCELLED
        error = error or "cancelled by user"
    leftover = NodeRun.Status.CANCELLED if status == Execution.Status.CANCELLED else NodeRun.Status.ERROR
    NodeRun.objects.filter(execution=execution, status=NodeRun.Status.RUNNING).update(
        status=leftover, error=error or leftover)
    with transaction.atomic():
        updated = Execution.objects.filter(pk=execution.pk, status=Execution.Status.RUNNING).update(
            status=status, completed_at=timezone.now(), output_data=output, error_message=error[:10000],
            error_node=error_node[:255])
        if updated:
            execution.refresh_from_db()
            execution_completed(execution)
    return status


@shared_task(name="hive.run_workflow_execution", bind=True, ignore_result=True,
             soft_time_limit=settings.HIVE_TASK_TIME_LIMIT, time_limit=settings.HIVE_TASK_TIME_LIMIT + 30)
def run_execution(self: Any, execution_id: str, start_node: str | None = None) -> str:
    return execute(execution_id, start_node, worker=self.request.hostname or "")


def _node_of(execution: Execution) -> str:
    run = (NodeRun.objects.filter(execution=execution, status=NodeRun.Status.RUNNING).order_by("-sequence").first()
           or NodeRun.objects.filter(execution=execution).order_by("-sequence").first())
    return run.node_name if run else ""


def reconcile_executions() -> dict[str, int]:
    """Fail executions whose worker died; re-send pending ones whose message was lost."""
    from workflows.host import execution_completed

    now = timezone.now()
    counts = {"lost": 0, "resent": 0}
    client = get_redis()
    grace = now - timedelta(seconds=lease_seconds())
    for execution in Execution.objects.filter(status__in=[Execution.Status.RUNNING, Execution.Status.WAITING],
                                              started_at__lt=grace):
        if client.exists(_LEASE_KEY.format(id=execution.pk)):
            continue
        node = _node_of(execution)
        error = (f"worker lost while running node '{node}'" if node else "worker lost before the first node ran")
        error += f" (worker {execution.worker or '?'} stopped renewing its lease)"
        with transaction.atomic():
            updated = Execution.objects.filter(pk=execution.pk, status=execution.status).update(
                status=Execution.Status.FAILED, completed_at=now, error_message=error, error_node=node)
            if updated:
                NodeRun.objects.filter(execution=execution, status=NodeRun.Status.RUNNING).update(
                    status=NodeRun.Status.ERROR, error=error)
                execution.refresh_from_db()
                execution_completed(execution)
                counts["lost"] += 1
                logger.warning("execution %s: %s", execution.pk, error)
    settle = now - timedelta(seconds=5)
    for pk in Execution.objects.filter(status=Execution.Status.PENDING, created_at__lt=settle).values_list("pk", flat=True):
        if not client.exists(_SENT_KEY.format(id=pk)):
            enqueue(pk)
            counts["resent"] += 1
    return counts


def cleanup_executions() -> int:
    """Retention: finished executions older than HIVE_EXECUTION_RETENTION_DAYS (node runs go with them)."""
    cutoff = timezone.now() - timedelta(days=settings.HIVE_EXECUTION_RETENTION_DAYS)
    old = Execution.objects.filter(status__in=Execution.Status.finished(), created_at__lt=cutoff)
    Execution.objects.filter(parent__in=old).update(parent=None)
    deleted, per_model = old.delete()
    return per_model.get(Execution._meta.label, 0)


@shared_task(name="hive.reconcile_workflows", ignore_result=True, soft_time_limit=50, time_limit=60)
def reconcile_workflows() -> dict[str, int]:
    return reconcile_executions()


@shared_task(name="hive.cleanup_executions", ignore_result=True, soft_time_limit=300, time_limit=330)
def cleanup_old_executions() -> int:
    return cleanup_executions()


@shared_task(name="hive.check_mcp_servers", ignore_result=True, soft_time_limit=120, time_limit=150)
def check_mcp_servers() -> dict[str, Any]:
    from workflows.mcp_bridge import check_all_servers

    return check_all_servers()


@shared_task(name="hive.fire_workflow_schedule", ignore_result=True, soft_time_limit=50, time_limit=60)
def fire_workflow_schedule(workflow_id: str, node: str, rule: int = 0) -> str | None:
    from workflows.triggers import fire_schedule

    return fire_schedule(workflow_id, node, rule)
