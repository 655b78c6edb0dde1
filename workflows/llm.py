"""LLM nodes on the cluster: a prompt becomes a Hive task, and the node waits for it.

Running the prompt as an ordinary task (instead of calling Ollama from the workflow
worker) gives workflow prompts everything tasks have: placement by capability and
model, priorities, retries on another agent, cancellation, the dashboard and metrics.
The node run is linked to its task (``on_task_created``).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError

from workflows.engine.contract import ExecutionCancelled, NodeError

__all__ = ["checked_options", "run_llm_task"]

POLL_START = 0.05      # seconds; the first polls are quick (short prompts finish fast) ...
POLL_MAX = 1.0         # ... then back off to one poll a second
POLL_GROWTH = 1.5
TITLE_MAX = 255


def _validation_message(exc: ValidationError) -> str:
    if hasattr(exc, "message_dict"):
        return "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.message_dict.items())
    return " ".join(exc.messages)


def checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """Ollama options checked as a task's own are (``coordinator.options``): a bad one is
    a NodeError naming it, raised before any task is created."""
    from coordinator.options import validate_options

    try:
        return validate_options(options)
    except ValidationError as exc:
        raise NodeError(f"Invalid Ollama options: {'; '.join(exc.messages)}") from None


def _result(task: Any) -> dict[str, Any]:
    agent = task.assigned_agent if task.assigned_agent_id else None
    return {
        "response": task.result,
        "task_id": str(task.pk),
        "agent": agent.slug if agent is not None else None,
        "model": task.model or (agent.model if agent is not None else ""),
        "tokens_per_second": task.tokens_per_second,
        "timings": task.timings or {},
    }


def run_llm_task(*, prompt: str, model: str = "", system: str = "", task_type: str = "general",
                 priority: int = 3, options: dict[str, Any] | None = None, title: str = "",
                 user: Any = None, is_cancelled: Callable[[], bool] = lambda: False,
                 on_task_created: Callable[[Any], None] = lambda task: None) -> dict[str, Any]:
    """Create a Hive task for ``prompt``, wait until it finishes and return its result.

    Returns ``{"response", "task_id", "agent", "model", "tokens_per_second", "timings"}``.
    A failed or cancelled task raises NodeError with the task's error; ``is_cancelled()``
    turning true cancels the task and raises ExecutionCancelled; no result within
    ``HIVE_TASK_TIME_LIMIT`` seconds cancels the task and raises NodeError.
    """
    from coordinator.models import Task
    from coordinator.services import DependencyError, cancel_task, create_tasks
    from hive_project.errors import ConflictError

    if not isinstance(prompt, str) or not prompt.strip():
        raise NodeError("The prompt is empty")
    if options is not None and not isinstance(options, dict):
        raise NodeError("options must be an object of Ollama options, e.g. {\"temperature\": 0.2}")
    options = checked_options(options or {})
    try:
        priority = int(priority)
    except (TypeError, ValueError):
        raise NodeError(f"priority must be a whole number from 1 to 5, not {priority!r}") from None
    if not 1 <= priority <= 5:
        raise NodeError(f"priority must be from 1 to 5, not {priority}")
    title = (title or prompt.strip().splitlines()[0])[:TITLE_MAX]
    spec = {"title": title, "prompt": prompt, "system": system or "", "task_type": (task_type or "general").strip(),
            "model": model or "", "options": options, "priority": priority,
            "metadata": {"source": "workflow"}}
    try:
        task = create_tasks([spec], user=user)[0]
    except ValidationError as exc:
        raise NodeError(f"The Hive task could not be created: {_validation_message(exc)}") from None
    except DependencyError as exc:  # pragma: no cover - no dependencies are given
        raise NodeError(f"The Hive task could not be created: {exc}") from None
    on_task_created(task)

    def cancel(reason: str) -> None:
        try:
            cancel_task(task)
        except (ConflictError, Task.DoesNotExist):
            pass  # it finished (or vanished) in the meantime
        task.error = task.error or reason

    deadline = time.monotonic() + float(getattr(settings, "HIVE_TASK_TIME_LIMIT", 1800))
    interval = POLL_START
    while True:
        task.refresh_from_db()
        if task.status == Task.Status.COMPLETED:
            return _result(task)
        if task.status == Task.Status.FAILED:
            raise NodeError(f"The Hive task {task.pk} failed: {task.error or 'no error given'}")
        if task.status == Task.Status.CANCELLED:
            raise NodeError(f"The Hive task {task.pk} was cancelled: {task.error or 'cancelled'}")
        if is_cancelled():
            cancel("the workflow execution was cancelled")
            raise ExecutionCancelled(f"execution cancelled while waiting for Hive task {task.pk}")
        if time.monotonic() >= deadline:
            cancel("timed out")
            raise NodeError(f"The Hive task {task.pk} did not finish within {settings.HIVE_TASK_TIME_LIMIT}s "
                            "(HIVE_TASK_TIME_LIMIT); it was cancelled")
        time.sleep(interval)
        interval = min(POLL_MAX, interval * POLL_GROWTH)
