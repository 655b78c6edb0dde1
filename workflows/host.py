"""The engine's host inside Hive: one :class:`DjangoServices` per Execution.

It records every node run as a NodeRun row, publishes the execution's events on
``execution.<id>`` (the seed's WorkflowEvent: execution_id, workflow_id, data),
runs LLM prompts as Hive tasks and MCP tool calls through the registry.
"""
from __future__ import annotations

import json
import time
from typing import Any

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import Max
from django.http import Http404

from coordinator import events
from hive_project.lookups import by_id_or_slug
from workflows.engine.contract import EngineServices, EngineSettings, Items, NodeError, NodeSpec, Outputs
from workflows.models import Execution, NodeRun, Workflow

SOURCE = "workflow_engine"
# Node runs keep at most this many items (and bytes) per list; the rest is replaced by a marker item.
MAX_STORED_ITEMS = 200
MAX_STORED_BYTES = 512 * 1024
# Items of the output summary in execution_completed events.
EVENT_OUTPUT_ITEMS = 5
CANCEL_CHECK_SECONDS = 0.5


def engine_settings() -> EngineSettings:
    return EngineSettings(
        timezone=settings.HIVE_WORKFLOW_TIMEZONE,
        js_timeout_ms=settings.HIVE_WORKFLOW_JS_TIMEOUT_MS,
        js_memory_mb=settings.HIVE_WORKFLOW_JS_MEMORY_MB,
        python_code_enabled=settings.HIVE_WORKFLOW_PYTHON_ENABLED,
        python_timeout_s=settings.HIVE_WORKFLOW_PYTHON_TIMEOUT,
        python_memory_mb=settings.HIVE_WORKFLOW_PYTHON_MEMORY_MB,
        http_timeout_s=settings.HIVE_WORKFLOW_HTTP_TIMEOUT,
        http_max_bytes=settings.HIVE_WORKFLOW_HTTP_MAX_BYTES,
        http_allow=tuple(settings.HIVE_WORKFLOW_HTTP_ALLOW),
        max_node_runs=settings.HIVE_WORKFLOW_MAX_NODE_RUNS,
        max_wait_s=settings.HIVE_WORKFLOW_MAX_WAIT_SECONDS,
    )


def _size(value: Any) -> int:
    return len(json.dumps(value, cls=DjangoJSONEncoder, default=str))


def cap_items(items: Items | None) -> Items:
    """Items as stored: a long or huge list keeps its head and ends with a marker item saying so."""
    if not items:
        return []
    kept: Items = []
    used = 0
    for item in items:
        size = _size(item)
        if len(kept) >= MAX_STORED_ITEMS or used + size > MAX_STORED_BYTES:
            kept.append({"json": {"_hive_truncated": True, "total_items": len(items), "stored_items": len(kept),
                                  "note": f"{len(items) - len(kept)} more item(s) not stored "
                                          f"(limits: {MAX_STORED_ITEMS} items, {MAX_STORED_BYTES} bytes)"}})
            return kept
        kept.append(item)
        used += size
    return kept


def jsonable(value: Any) -> Any:
    """Round-trip through JSON so dates, decimals and bytes from nodes can be stored."""
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder, default=str))


def publish(event_type: str, execution: Execution, **data: Any) -> None:
    events.publish(event_type, SOURCE,
                   {"execution_id": str(execution.pk), "workflow_id": str(execution.workflow_id),
                    "data": {"status": execution.status, **data}},
                   [f"execution.{execution.pk}"], correlation_id=str(execution.pk))


def execution_started(execution: Execution) -> None:
    publish(events.WORKFLOW_EXECUTION_STARTED, execution, mode=execution.mode, version=execution.workflow_version,
            worker=execution.worker, input_items=len(execution.input_data or []))


def execution_completed(execution: Execution) -> None:
    """The terminal event, and the metric (counted once, by whoever finished it)."""
    from monitoring.prometheus import WORKFLOW_EXECUTIONS

    output = execution.output_data or []
    duration = ((execution.completed_at - execution.started_at).total_seconds()
                if execution.completed_at and execution.started_at else None)
    publish(events.WORKFLOW_EXECUTION_COMPLETED, execution, output_items=len(output),
            output=output[:EVENT_OUTPUT_ITEMS], error=execution.error_message or None,
            error_node=execution.error_node or None, duration=duration)
    WORKFLOW_EXECUTIONS.labels(status=execution.status).inc()


class DjangoServices(EngineServices):
    """EngineServices for one Execution (used by one worker thread)."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution
        last = NodeRun.objects.filter(execution=execution).aggregate(m=Max("sequence"))["m"]
        self._sequence = -1 if last is None else last
        self._runs: dict[tuple[str, int], NodeRun] = {}
        self._current: NodeRun | None = None
        self._cancel_checked = 0.0
        self._cancelled = False
        self._acting_for: list[tuple[Any, str]] | None = None

    # --- node runs -------------------------------------------------------------------

    def on_node_start(self, node: NodeSpec, run_index: int, input_items: Items) -> None:
        self._sequence += 1
        run = NodeRun.objects.create(execution=self.execution, node_name=node.name, node_type=node.type,
                                     run_index=run_index, sequence=self._sequence, status=NodeRun.Status.RUNNING,
                                     input_items=jsonable(cap_items(input_items)))
        self._runs[(node.name, run_index)] = run
        self._current = run

    def on_node_finish(self, node: NodeSpec, run_index: int, *, status: str, outputs: Outputs | None,
                       error: str | None, duration_ms: float) -> None:
        run = self._runs.pop((node.name, run_index), None)
        if run is None:  # the runtime reported a finish without a start: record it anyway
            self.on_node_start(node, run_index, [])
            run = self._runs.pop((node.name, run_index))
        if status not in NodeRun.Status.values:
            status = NodeRun.Status.ERROR
        run.status = status
        run.output_items = jsonable([cap_items(items) for items in outputs or []])
        run.error = error or ""
        run.duration_ms = round(duration_ms, 3)
        run.save(update_fields=["status", "output_items", "error", "duration_ms"])
        if self._current is run:
            self._current = None
        publish(events.WORKFLOW_NODE_COMPLETED, self.execution, node=node.name, node_type=node.type,
                run_index=run_index, node_status=status, sequence=run.sequence,
                input_items=len(run.input_items), output_items=[len(items) for items in outputs or []],
                duration_ms=run.duration_ms, error=error)

    # --- cancellation ----------------------------------------------------------------

    def is_cancelled(self) -> bool:
        if self._cancelled:
            return True
        now = time.monotonic()
        if now - self._cancel_checked >= CANCEL_CHECK_SECONDS:
            self._cancel_checked = now
            self._cancelled = Execution.objects.filter(pk=self.execution.pk, cancel_requested=True).exists()
        return self._cancelled

    # --- stored workflows, LLM, MCP --------------------------------------------------

    def load_workflow(self, reference: str) -> dict[str, Any]:
        """A stored workflow for an Execute Workflow node, if whoever the execution acts for may run it.

        A run started by a user (manual, API, MCP) acts for that user. A run nobody started
        (webhook, schedule) acts for the workflow's owner *and* for whoever wrote the n8n data it
        runs (services.data_author): a member of a group the workflow is shared with may change
        it, and must not make it run the owner's unshared workflows for them. Without a user, only
        other ownerless (admin-managed) workflows load. Otherwise a sub-workflow would run
        workflows its author may not execute.
        """
        try:
            workflow = by_id_or_slug(Workflow.objects.all(), str(reference), what="workflow")
        except Http404:
            raise NodeError(f"No stored workflow with id or slug '{reference}'") from None
        for principal, role in self._principals():
            if principal is not None:
                allowed = workflow.is_manageable_by(principal)
            else:
                allowed = workflow.created_by_id is None
            if not allowed and principal is not None:
                raise NodeError(f"Workflow '{workflow.name}' may not be run from here: {principal.get_username()} "
                                f"({role}) may run only their own workflows and those shared with one of their "
                                "groups")
            if not allowed:
                raise NodeError(f"Workflow '{workflow.name}' may not be run from here: {role} is not known, so "
                                "only ownerless workflows may be run")
        return {**workflow.n8n_data, "name": workflow.name, "id": str(workflow.pk)}

    def _principals(self) -> list[tuple[Any, str]]:
        """Whom the execution acts for, each with the reason, for load_workflow."""
        if self._acting_for is None:
            execution = self.execution
            if execution.created_by is not None:
                self._acting_for = [(execution.created_by, "who started this execution")]
            else:
                from workflows.services import data_author

                known, author = data_author(execution.workflow_id, execution.workflow_version, execution.n8n_data)
                self._acting_for = [(execution.workflow.created_by, "the owner of this workflow"),
                                    (author if known else None, "who last changed this workflow")]
        return self._acting_for

    def run_llm(self, *, prompt: str, model: str = "", system: str = "", task_type: str = "general",
                priority: int = 3, options: dict[str, Any] | None = None, title: str = "") -> dict[str, Any]:
        from workflows.llm import run_llm_task

        run = self._current

        def link(task: Any) -> None:
            if run is not None:
                NodeRun.objects.filter(pk=run.pk).update(task=task)

        return run_llm_task(prompt=prompt, model=model, system=system, task_type=task_type, priority=priority,
                            options=options, title=(title or f"{self.execution.workflow.name}: {run.node_name if run else 'LLM'}")[:200],
                            user=self.execution.created_by, is_cancelled=self.is_cancelled, on_task_created=link)

    def call_mcp_tool(self, server: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        from workflows.mcp_bridge import call_tool

        return call_tool(server, tool, arguments)
