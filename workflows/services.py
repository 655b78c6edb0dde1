"""Workflow lifecycle: storing (validated, versioned), executing and cancelling.

Both body shapes are accepted: Hive's (the seed's) ``{"name", "description",
"n8n_data": {...}}`` and a raw n8n export ``{"name", "nodes", "connections",
"settings", ...}`` (what n8n's "Download" gives and what the MCP shim sends).
Nothing is stored unless the engine's validation finds no issue, so a stored
workflow can always be run.
"""
from __future__ import annotations

import logging
import secrets
from typing import Any

from django.contrib.auth.models import Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from hive_project.errors import ConflictError
from hive_project.validators import validate_no_nul
from workflows.engine.contract import ValidationIssue
from workflows.models import Execution, NodeRun, Workflow, WorkflowVersion

logger = logging.getLogger(__name__)

WEBHOOK_TYPE = "n8n-nodes-base.webhook"
NAME_MIN, NAME_MAX = 3, 255
# Top-level keys of Hive's body shape; everything else of a raw export is n8n data.
_HIVE_KEYS = {"name", "description", "n8n_data", "active", "shared_with_groups"}
MAX_SHARED_GROUPS = 100
# n8n export keys that describe the n8n instance, not the workflow.
_INSTANCE_KEYS = {"id", "active", "versionId", "createdAt", "updatedAt", "shared", "isArchived", "triggerCount"}


class InvalidWorkflow(ValueError):
    """The body cannot be stored; ``issues`` name the node and parameter of each problem."""

    def __init__(self, issues: list[ValidationIssue]) -> None:
        self.issues = issues
        super().__init__(f"workflow is invalid: {issues[0]}")

    def as_body(self) -> dict[str, Any]:
        return {"error": str(self), "status": 400, "errors": [issue.as_dict() for issue in self.issues]}


class NotAllowed(PermissionDenied):
    """The user may not do this to this workflow; the message says why (the API answers 403)."""


# --------------------------------------------------------------------------- body shapes


def split_body(data: Any, *, partial: bool = False) -> dict[str, Any]:
    """The Hive fields of a request body, whichever shape it has.

    Returns a dict with any of ``name``, ``description``, ``active``, ``n8n_data``.
    """
    if not isinstance(data, dict):
        raise InvalidWorkflow([ValidationIssue("the body must be a JSON object")])
    out: dict[str, Any] = {}
    raw = "n8n_data" not in data and ("nodes" in data or "connections" in data)
    if raw:
        out["n8n_data"] = {k: v for k, v in data.items()
                           if k not in _INSTANCE_KEYS and k not in ("description", "shared_with_groups")}
    else:
        extra = sorted(k for k in data if k not in _HIVE_KEYS)
        if extra:
            raise InvalidWorkflow([ValidationIssue(f"unknown field(s) {', '.join(extra)}; send either "
                                                   f"{{name, description, active, n8n_data}} or a raw n8n export",
                                                   parameter=extra[0])])
        if "n8n_data" in data:
            out["n8n_data"] = data["n8n_data"]
        elif not partial:
            raise InvalidWorkflow([ValidationIssue("n8n_data is required (or send a raw n8n export with nodes and "
                                                   "connections)", parameter="n8n_data")])
        if "active" in data:
            out["active"] = data["active"]
    for key in ("name", "description", "shared_with_groups"):
        if key in data:
            out[key] = data[key]
    if "name" not in out and isinstance(out.get("n8n_data"), dict) and "name" in out["n8n_data"]:
        out["name"] = out["n8n_data"]["name"]
    return out


def _check_fields(fields: dict[str, Any]) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    if "name" in fields:
        name = fields["name"]
        if not isinstance(name, str):
            issues.append(ValidationIssue("name must be a string", parameter="name"))
        elif not NAME_MIN <= len(name.strip()) <= NAME_MAX:
            issues.append(ValidationIssue(f"name must be {NAME_MIN} to {NAME_MAX} characters long", parameter="name"))
        elif "\x00" in name:
            issues.append(ValidationIssue("name must not contain NUL (\\u0000) characters", parameter="name"))
    if "description" in fields:
        description = fields["description"]
        if description is None:
            fields["description"] = ""
        elif not isinstance(description, str):
            issues.append(ValidationIssue("description must be a string", parameter="description"))
        elif "\x00" in description:
            issues.append(ValidationIssue("description must not contain NUL (\\u0000) characters",
                                          parameter="description"))
    if "active" in fields and not isinstance(fields["active"], bool):
        issues.append(ValidationIssue("active must be true or false", parameter="active"))
    if "shared_with_groups" in fields:
        names = fields["shared_with_groups"]
        if names is None:
            fields["shared_with_groups"] = []
        elif (not isinstance(names, list) or len(names) > MAX_SHARED_GROUPS
              or not all(isinstance(n, str) and 0 < len(n) <= 150 and "\x00" not in n for n in names)):
            issues.append(ValidationIssue(f"shared_with_groups must be a list of at most {MAX_SHARED_GROUPS} group "
                                          "names", parameter="shared_with_groups"))
    if "n8n_data" in fields:
        data = fields["n8n_data"]
        if not isinstance(data, dict):
            issues.append(ValidationIssue("n8n_data must be a JSON object with nodes and connections",
                                          parameter="n8n_data"))
        else:
            try:
                validate_no_nul(data)
            except ValidationError:
                issues.append(ValidationIssue("n8n_data must not contain NUL (\\u0000) characters",
                                              parameter="n8n_data"))
    return issues


def validate_n8n(data: dict[str, Any]) -> list[ValidationIssue]:
    """The engine's checks, then the trigger checks Hive adds (schedules it can run)."""
    from workflows.engine.validation import validate_workflow
    from workflows.triggers import validate_triggers

    issues = list(validate_workflow(data))
    if not issues:
        issues.extend(validate_triggers(data))
    return issues


def clean(fields: dict[str, Any]) -> dict[str, Any]:
    """Raise InvalidWorkflow unless every given field is acceptable."""
    issues = _check_fields(fields)
    if not issues and "n8n_data" in fields:
        issues = validate_n8n(fields["n8n_data"])
    if issues:
        raise InvalidWorkflow(issues)
    if "name" in fields:
        fields["name"] = fields["name"].strip()
    return fields


# --------------------------------------------------------------------------- storing


def unique_slug(name: str, *, exclude: Any = None) -> str:
    base = slugify(name)[:200].strip("-") or "workflow"
    taken = set(Workflow.objects.exclude(pk=exclude).filter(slug__startswith=base).values_list("slug", flat=True))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def has_webhook(n8n_data: dict[str, Any]) -> bool:
    return any(isinstance(n, dict) and n.get("type") == WEBHOOK_TYPE and not n.get("disabled")
               for n in n8n_data.get("nodes") or [])


def _derive(workflow: Workflow) -> None:
    """Fields computed from the n8n data: MCP tool spec, webhook token."""
    from workflows.mcp_bridge import workflow_tool_spec

    workflow.mcp_tools = [workflow_tool_spec(name=workflow.name, slug=workflow.slug, description=workflow.description,
                                             n8n_data=workflow.n8n_data)]
    if has_webhook(workflow.n8n_data) and not workflow.webhook_token:
        workflow.webhook_token = secrets.token_urlsafe(24)


def _snapshot(workflow: Workflow, user: Any) -> None:
    WorkflowVersion.objects.create(workflow=workflow, version=workflow.version, name=workflow.name,
                                   n8n_data=workflow.n8n_data, created_by=_user(user))


def data_author(workflow: Any, version: int, n8n_data: Any) -> tuple[bool, Any]:
    """Who wrote ``n8n_data``, the data ``workflow`` had at ``version``: ``(known, user)``.

    Every change of the name or the n8n data records a version (see update_workflow), so the
    author of the data is the author of the earliest version of the unbroken run of versions
    up to ``version`` that hold this same data: someone who only renamed the workflow afterwards
    did not write it. ``known`` is False when no stored version holds that data; ``user`` is
    None for a version stored without a user (or whose user was deleted).
    """
    known, author = False, None
    versions = (WorkflowVersion.objects.filter(workflow_id=getattr(workflow, "pk", workflow), version__lte=version)
                .select_related("created_by").order_by("-version"))
    for row in versions.iterator(chunk_size=20):
        if row.n8n_data != n8n_data:
            break
        known, author = True, row.created_by
    return known, author


def _user(user: Any) -> Any:
    return user if user is not None and getattr(user, "is_authenticated", False) else None


def _groups(names: list[str]) -> list[Group]:
    groups = list(Group.objects.filter(name__in=set(names)))
    missing = sorted(set(names) - {g.name for g in groups})
    if missing:
        raise InvalidWorkflow([ValidationIssue(f"no group named {', '.join(repr(n) for n in missing)}",
                                               parameter="shared_with_groups")])
    return groups


def create_workflow(data: Any, user: Any = None) -> Workflow:
    """Store a new workflow owned by ``user`` (the body cannot name another owner)."""
    fields = clean(split_body(data))
    if "name" not in fields:
        raise InvalidWorkflow([ValidationIssue("name is required", parameter="name")])
    groups = _groups(fields["shared_with_groups"]) if "shared_with_groups" in fields else []
    for attempt in range(3):
        try:
            with transaction.atomic():
                workflow = Workflow(name=fields["name"], description=fields.get("description", ""),
                                    n8n_data=fields["n8n_data"], active=fields.get("active", True), version=1,
                                    slug=unique_slug(fields["name"]), created_by=_user(user))
                _derive(workflow)
                workflow.save()
                workflow.shared_with_groups.set(groups)
                _snapshot(workflow, user)
                _sync_triggers(workflow)
            return workflow
        except IntegrityError:  # two creations raced for the same slug
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def update_workflow(workflow: Workflow, data: Any, user: Any = None, *, partial: bool = False) -> Workflow:
    """Change a workflow; whether ``user`` may change it at all is the caller's check, sharing is checked here."""
    fields = clean(split_body(data, partial=partial))
    if not partial and "name" not in fields:
        raise InvalidWorkflow([ValidationIssue("name is required", parameter="name")])
    groups: list[Group] | None = None
    if "shared_with_groups" in fields:
        if not workflow.is_shareable_by(user):
            raise NotAllowed(f"Only the owner of workflow '{workflow.name}' or an admin may change "
                             "shared_with_groups.")
        groups = _groups(fields["shared_with_groups"])
    with transaction.atomic():
        locked = Workflow.objects.select_for_update().get(pk=workflow.pk)
        changed = (("n8n_data" in fields and fields["n8n_data"] != locked.n8n_data)
                   or ("name" in fields and fields["name"] != locked.name))
        for key in ("name", "description", "n8n_data", "active"):
            if key in fields:
                setattr(locked, key, fields[key])
        if changed:
            locked.version += 1
        _derive(locked)
        locked.save()
        if groups is not None:
            locked.shared_with_groups.set(groups)
        if changed:
            _snapshot(locked, user)
        _sync_triggers(locked)
    return locked


def set_active(workflow: Workflow, active: bool) -> Workflow:
    with transaction.atomic():
        Workflow.objects.filter(pk=workflow.pk).update(active=active, updated_at=timezone.now())
        workflow.refresh_from_db()
        _sync_triggers(workflow)
    return workflow


def delete_workflow(workflow: Workflow) -> None:
    from workflows.triggers import remove_schedules

    with transaction.atomic():
        running = list(workflow.executions.filter(status__in=Execution.Status.active()))
        for execution in running:
            try:
                cancel_execution(execution)
            except ConflictError:
                pass
        remove_schedules(workflow.pk)
        workflow.delete()


def _sync_triggers(workflow: Workflow) -> None:
    from workflows.triggers import sync_schedules

    sync_schedules(workflow)


def export_workflow(workflow: Workflow) -> dict[str, Any]:
    """The workflow as n8n imports it (File > Import from file)."""
    data = dict(workflow.n8n_data)
    data["name"] = workflow.name
    data.setdefault("nodes", [])
    data.setdefault("connections", {})
    data.setdefault("settings", {})
    data["active"] = False  # n8n activates imported workflows only on request
    data.setdefault("meta", {})
    data["meta"] = {**(data["meta"] if isinstance(data["meta"], dict) else {}), "hive": {
        "id": str(workflow.pk), "slug": workflow.slug, "version": workflow.version, "description": workflow.description}}
    return data


# --------------------------------------------------------------------------- executions


def normalize_input(value: Any) -> list[dict[str, Any]]:
    """Plain objects become n8n items; ``{"json": {...}}`` items are kept as they are.

    Omitted input is one empty item, as n8n's manual trigger gives.
    """
    if value is None:
        return [{"json": {}}]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise InvalidWorkflow([ValidationIssue("input must be an object or a list of objects", parameter="input")])
    items = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise InvalidWorkflow([ValidationIssue(f"input[{index}] must be an object", parameter=f"input[{index}]")])
        if isinstance(entry.get("json"), dict) and set(entry) <= {"json", "binary", "pairedItem"}:
            items.append({k: v for k, v in entry.items() if k != "pairedItem"})
        else:
            items.append({"json": entry})
    try:
        validate_no_nul(items)
    except ValidationError:
        raise InvalidWorkflow([ValidationIssue("input must not contain NUL (\\u0000) characters",
                                               parameter="input")]) from None
    return items


def start_execution(workflow: Workflow, input_items: list[dict[str, Any]], user: Any = None,
                    mode: str = Execution.Mode.MANUAL, parent: Execution | None = None,
                    start_node: str | None = None) -> Execution:
    """Create the row (a snapshot of the workflow) and enqueue it once the transaction commits."""
    from workflows.tasks import enqueue

    with transaction.atomic():
        execution = Execution.objects.create(
            workflow=workflow, workflow_version=workflow.version, n8n_data=workflow.n8n_data, mode=mode,
            input_data=input_items, parent=parent, created_by=_user(user),
        )
        transaction.on_commit(lambda: enqueue(execution.pk, start_node))
    return execution


def cancel_execution(execution: Execution) -> Execution:
    """Pending: cancelled at once. Running: flagged, and its running LLM tasks are cancelled."""
    from coordinator.services import cancel_task
    from workflows.host import execution_completed

    now = timezone.now()
    with transaction.atomic():
        done = Execution.objects.filter(pk=execution.pk, status=Execution.Status.PENDING).update(
            status=Execution.Status.CANCELLED, cancel_requested=True, completed_at=now,
            error_message="cancelled by user")
        if not done:
            flagged = Execution.objects.filter(pk=execution.pk, status__in=Execution.Status.active()).update(
                cancel_requested=True)
            if not flagged:
                execution.refresh_from_db()
                raise ConflictError(f"Execution is already {execution.status}; only pending or running executions "
                                    f"can be cancelled.")
        execution.refresh_from_db()
        if done:
            execution_completed(execution)
    runs = NodeRun.objects.filter(execution=execution, status=NodeRun.Status.RUNNING, task__isnull=False
                                  ).select_related("task")
    for run in runs:
        try:
            cancel_task(run.task)
        except ConflictError:
            pass  # the task finished meanwhile
    return execution
