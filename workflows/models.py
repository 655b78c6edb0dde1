"""Workflows (n8n JSON), their versions, executions, per-node runs and the MCP server registry.

The seed's ``workflows`` and ``executions`` tables are kept by name; ``node_runs``
holds one row per run of one node inside one execution.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MinLengthValidator
from django.db import models
from django.db.models import BooleanField, Exists, ExpressionWrapper, OuterRef, Q, Value

from hive_project.roles import ADMIN, role_of
from hive_project.validators import validate_no_nul

# What non-superusers see instead of an MCP server's command arguments and env values.
MASK = "***"
# Stored values shorter than this are not masked inside error messages (see MCPServer.redact).
MIN_REDACTED_LENGTH = 4


def is_workflow_admin(user: AbstractBaseUser | AnonymousUser | None) -> bool:
    """Superusers and the admin role manage every workflow, whoever owns it."""
    return bool(user is not None and user.is_authenticated and (user.is_superuser or role_of(user) == ADMIN))


class WorkflowQuerySet(models.QuerySet["Workflow"]):
    """The ownership rule in one place: a workflow is managed (changed, run, deleted, its webhook
    URL seen) by its owner, by members of the groups it is shared with, and by admins."""

    def _managed_q(self, user: Any) -> Q:
        shared = Exists(Workflow.shared_with_groups.through.objects.filter(workflow_id=OuterRef("pk"),
                                                                         group__user=user))
        return Q(created_by=user) | Q(shared)

    def manageable_by(self, user: AbstractBaseUser | AnonymousUser | None) -> WorkflowQuerySet:
        if user is None or not user.is_authenticated:
            return self.none()
        if is_workflow_admin(user):
            return self
        return self.filter(self._managed_q(user))

    def with_manageable(self, user: AbstractBaseUser | AnonymousUser | None) -> WorkflowQuerySet:
        """Annotate ``manageable`` (bool) for ``user``: one query for a whole list."""
        if user is None or not user.is_authenticated:
            return self.annotate(manageable=Value(False, output_field=BooleanField()))
        if is_workflow_admin(user):
            return self.annotate(manageable=Value(True, output_field=BooleanField()))
        return self.annotate(manageable=ExpressionWrapper(self._managed_q(user), output_field=BooleanField()))


class Workflow(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, validators=[MinLengthValidator(3)])
    slug = models.SlugField(max_length=255, unique=True,
                            help_text="Stable name for URLs and tools (derived from the name).")
    description = models.TextField(blank=True)
    n8n_data = models.JSONField(validators=[validate_no_nul],
                                help_text="The n8n workflow: nodes, connections, settings.")
    mcp_tools = models.JSONField(default=list, blank=True,
                                 help_text="The workflow exported as MCP tool specs (derived on save).")
    version = models.PositiveIntegerField(default=1)
    active = models.BooleanField(default=True,
                                 help_text="Inactive workflows keep their data but cannot be executed "
                                           "by triggers (schedule, webhook).")
    webhook_token = models.CharField(max_length=64, blank=True, db_index=True,
                                     help_text="Secret path segment of the workflow's webhook URL.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="hive_workflows", verbose_name="owner",
                                   help_text="The owner: set to whoever created the workflow, never from a request body.")
    shared_with_groups = models.ManyToManyField(
        Group, blank=True, related_name="shared_workflows",
        help_text="Members of these groups may change, run and delete the workflow like its owner "
                  "(as far as their role allows). Set by the owner or an admin.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WorkflowQuerySet.as_manager()

    class Meta:
        db_table = "workflows"
        ordering = ["name"]
        permissions = [("execute_workflow", "Can execute workflows")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"

    def is_manageable_by(self, user: AbstractBaseUser | AnonymousUser | None) -> bool:
        """May ``user`` change, run, delete this workflow and see its webhook URL (role permitting)?"""
        annotated = getattr(self, "manageable", None)
        if annotated is not None:
            return bool(annotated)
        return Workflow.objects.filter(pk=self.pk).manageable_by(user).exists()

    def is_shareable_by(self, user: AbstractBaseUser | AnonymousUser | None) -> bool:
        """Only the owner and admins choose who else manages a workflow, not the groups it is shared with."""
        if user is None or not user.is_authenticated:
            return False
        return (self.created_by_id is not None and self.created_by_id == user.pk) or is_workflow_admin(user)


class WorkflowVersion(models.Model):
    """Every stored state of a workflow; a new row each time its n8n data changes."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=255)
    n8n_data = models.JSONField()
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "workflow_versions"
        ordering = ["workflow", "-version"]
        constraints = [models.UniqueConstraint(fields=["workflow", "version"], name="uniq_workflow_version")]

    def __str__(self) -> str:
        return f"{self.workflow_id} v{self.version}"


class Execution(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        RUNNING = "running", "Running"
        WAITING = "waiting", "Waiting"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

        @classmethod
        def active(cls) -> list[str]:
            return [cls.PENDING, cls.RUNNING, cls.WAITING]

        @classmethod
        def finished(cls) -> list[str]:
            return [cls.COMPLETED, cls.FAILED, cls.CANCELLED]

    class Mode(models.TextChoices):
        MANUAL = "manual", "Manual (API)"
        WEBHOOK = "webhook", "Webhook"
        SCHEDULE = "schedule", "Schedule"
        SUBWORKFLOW = "subworkflow", "Sub-workflow"
        MCP = "mcp", "MCP tool call"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="executions")
    workflow_version = models.PositiveIntegerField(help_text="Version of the workflow that ran.")
    n8n_data = models.JSONField(help_text="The workflow as it was when the execution started.")
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.MANUAL)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    input_data = models.JSONField(default=list, blank=True, validators=[validate_no_nul],
                                  help_text="Input items ([{\"json\": {...}}, ...]).")
    output_data = models.JSONField(null=True, blank=True, help_text="Items of the last node that ran.")
    error_message = models.TextField(blank=True)
    error_node = models.CharField(max_length=255, blank=True)
    cancel_requested = models.BooleanField(default=False)
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="children",
                               help_text="The execution whose Execute Workflow node started this one.")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="hive_executions")
    worker = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "executions"
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["workflow", "status"], name="idx_executions_workflow_status")]
        permissions = [("cancel_execution", "Can cancel executions")]

    def __str__(self) -> str:
        return f"{self.workflow_id} execution {self.id} [{self.status}]"

    @property
    def is_finished(self) -> bool:
        return self.status in self.Status.finished()


class NodeRun(models.Model):
    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCESS = "success", "Success"
        ERROR = "error", "Error"
        CANCELLED = "cancelled", "Cancelled"

    execution = models.ForeignKey(Execution, on_delete=models.CASCADE, related_name="node_runs")
    node_name = models.CharField(max_length=255)
    node_type = models.CharField(max_length=255)
    run_index = models.PositiveIntegerField(default=0, help_text="0 for a node's first run; loops run nodes again.")
    sequence = models.PositiveIntegerField(help_text="Order in which node runs started within the execution.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RUNNING)
    input_items = models.JSONField(default=list, blank=True)
    output_items = models.JSONField(default=list, blank=True, help_text="One list of items per output.")
    error = models.TextField(blank=True)
    task = models.ForeignKey("coordinator.Task", null=True, blank=True, on_delete=models.SET_NULL,
                             related_name="node_runs", help_text="Hive task this node ran as (LLM nodes).")
    started_at = models.DateTimeField(auto_now_add=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta:
        db_table = "node_runs"
        ordering = ["execution", "sequence"]
        constraints = [models.UniqueConstraint(fields=["execution", "sequence"], name="uniq_node_run_sequence")]

    def __str__(self) -> str:
        return f"{self.node_name}#{self.run_index} [{self.status}]"


class MCPServer(models.Model):
    class Transport(models.TextChoices):
        STDIO = "stdio", "stdio (command)"
        HTTP = "http", "Streamable HTTP (URL)"

    class Status(models.TextChoices):
        UNKNOWN = "unknown", "Not checked yet"
        ACTIVE = "active", "Active"
        ERROR = "error", "Error"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.SlugField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    transport = models.CharField(max_length=8, choices=Transport.choices)
    endpoint = models.URLField(max_length=512, blank=True, help_text="Streamable-HTTP URL (transport=http).")
    command = models.JSONField(default=list, blank=True,
                               help_text="argv of the server process (transport=stdio), e.g. [\"uvx\", \"server\"].")
    env = models.JSONField(default=dict, blank=True, help_text="Extra environment for a stdio server.")
    capabilities = models.JSONField(default=list, blank=True, help_text="Operator labels, e.g. [\"code_analysis\"].")
    tools = models.JSONField(default=list, blank=True, help_text="Tools the server listed at its last check.")
    version = models.CharField(max_length=64, blank=True, help_text="Server version reported at its last check.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.UNKNOWN)
    last_error = models.TextField(blank=True)
    last_checked = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        db_table = "mcp_servers"
        ordering = ["name"]
        verbose_name = "MCP server"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        """The rules the admin and the API share (the executable allowlist is checked again before spawning)."""
        errors: dict[str, list[str]] = {}
        for key in ("name", "description", "endpoint", "command", "env", "capabilities"):
            try:
                validate_no_nul(getattr(self, key))
            except ValidationError:
                errors.setdefault(key, []).append("must not contain NUL (\\u0000) characters")
        if self.transport == self.Transport.HTTP and not self.endpoint:
            errors.setdefault("endpoint", []).append("An HTTP MCP server needs its URL (endpoint).")
        command = self.command
        if not isinstance(command, list) or not all(isinstance(arg, str) for arg in command):
            errors.setdefault("command", []).append("The command must be a list of strings (argv).")
        elif self.transport == self.Transport.STDIO:
            if not command or not command[0]:
                errors.setdefault("command", []).append("A stdio MCP server needs its command (argv list).")
            elif resolve_stdio_executable(command[0]) is None:
                errors.setdefault("command", []).append(stdio_refusal(command[0]))
        if not isinstance(self.env, dict) or not all(isinstance(v, str) for v in self.env.values()):
            errors.setdefault("env", []).append("The environment must be an object of strings.")
        if self.transport != self.Transport.STDIO:
            # Only a superuser may set what a stdio server runs; values stored on an HTTP server
            # (which anyone with the admin role may change) must never be there to run later.
            for key in ("command", "env"):
                if getattr(self, key) and key not in errors:
                    errors.setdefault(key, []).append(
                        f"command and env are for stdio servers only: an HTTP MCP server must have an empty {key}.")
        if errors:
            raise ValidationError(errors)

    def check_transport_change(self, previous: MCPServer | None, given: Any) -> None:
        """A server switched to stdio gets its command (and env) in that same change.

        ``given`` are the names of the fields the change sets. Whatever the row held while it used
        another transport was not set by someone allowed to choose what runs on the host, so it is
        never carried over (nor restored from a mask). Raises ValidationError naming the field.
        """
        if previous is None or previous.transport == self.Transport.STDIO or self.transport != self.Transport.STDIO:
            return
        given = set(given)
        errors: dict[str, list[str]] = {}
        if "command" not in given:
            errors["command"] = ["A server switched to transport 'stdio' needs its command in the same change."]
        elif isinstance(self.command, list) and MASK in self.command:
            errors["command"] = [f"A server switched to transport 'stdio' needs its command in clear, not '{MASK}'."]
        if "env" not in given and previous.env:
            errors["env"] = ["A server switched to transport 'stdio' needs its env in the same change (the env "
                             "stored while it used another transport is not carried over)."]
        elif isinstance(self.env, dict) and MASK in self.env.values():
            errors["env"] = [f"A server switched to transport 'stdio' needs its env values in clear, not '{MASK}'."]
        if errors:
            raise ValidationError(errors)

    def check_change_allowed(self, user: AbstractBaseUser | AnonymousUser | None, previous: MCPServer | None) -> None:
        """A stdio server runs its command on the Hive host: only a superuser registers or changes one.

        ``previous`` is the stored row (None when creating); a server that is or was stdio counts.
        Raises PermissionDenied with a message naming the rule.
        """
        if user is not None and user.is_authenticated and user.is_superuser:
            return
        stdio = self.Transport.STDIO
        if self.transport == stdio or (previous is not None and previous.transport == stdio):
            raise PermissionDenied("Only a superuser may register or change a stdio MCP server (it runs a command "
                                   "on the Hive host); admins may manage servers with transport 'http'.")

    def redact(self, text: str) -> str:
        """``text`` with every stored argument and env value replaced by the mask.

        A stdio server's stderr (or its error message) often echoes its argv or environment;
        it ends up in ``last_error`` and node-run errors, which every viewer reads. Values
        shorter than MIN_REDACTED_LENGTH are left ("-v" or "1" are no secrets, and masking
        them would ruin the message); JSON- and repr-escaped forms are masked too.
        """
        command = self.command if isinstance(self.command, list) else []
        env = self.env if isinstance(self.env, dict) else {}
        forms: set[str] = set()
        for value in {v for v in [*command[1:], *env.values()] if isinstance(v, str)}:
            if len(value) >= MIN_REDACTED_LENGTH:
                forms.update({value, json.dumps(value)[1:-1], repr(value)[1:-1]})
        for secret in sorted(forms, key=len, reverse=True):   # longest first: no partial leftovers
            text = text.replace(secret, MASK)
        return text

    def masked_command(self) -> list[Any]:
        """argv with every argument after the executable masked (arguments often carry tokens)."""
        command = self.command if isinstance(self.command, list) else []
        return [*command[:1], *(MASK for _ in command[1:])]

    def masked_env(self) -> dict[str, str]:
        return {str(key): MASK for key in (self.env if isinstance(self.env, dict) else {})}

    def unmask(self, command: list[Any] | None, env: dict[str, Any] | None) -> tuple[list[Any] | None, dict[str, Any] | None]:
        """Masked values sent back (a client saving what it was shown) keep the stored ones.

        Raises ValidationError when a mask stands where nothing is stored to keep.
        """
        errors: dict[str, list[str]] = {}
        stored_command = self.command if isinstance(self.command, list) else []
        stored_env = self.env if isinstance(self.env, dict) else {}
        if command is not None:
            command = list(command)
            for index, arg in enumerate(command):
                if arg == MASK:
                    if index < len(stored_command):
                        command[index] = stored_command[index]
                    else:
                        errors.setdefault("command", []).append(
                            f"command[{index}] is the mask '{MASK}' but the server has no argument there to keep.")
        if env is not None:
            env = dict(env)
            for key, value in env.items():
                if value == MASK:
                    if key in stored_env:
                        env[key] = stored_env[key]
                    else:
                        errors.setdefault("env", []).append(
                            f"env.{key} is the mask '{MASK}' but the server has no value for it to keep.")
        if errors:
            raise ValidationError(errors)
        return command, env


def resolve_stdio_executable(executable: Any) -> str | None:
    """The file to spawn for a stdio server's argv[0], or None when settings.HIVE_MCP_STDIO_ALLOWED refuses it.

    An empty allowlist allows any executable (registering one needs a superuser anyway).
    An absolute entry allows that path; a bare name allows what Hive's own PATH resolves it
    to, never another file of that name (``/tmp/x/python`` is not ``python``). A bare argv[0]
    is returned resolved: the server's ``env`` may set PATH, and the file that runs must be
    the file that was checked.
    """
    allowed = [str(entry) for entry in settings.HIVE_MCP_STDIO_ALLOWED if str(entry)]
    if not isinstance(executable, str) or not executable or "\x00" in executable:
        return None
    if not allowed:
        return executable
    if os.path.isabs(executable):
        path: str | None = os.path.normpath(executable)
    elif os.sep in executable:
        return None  # relative to whatever directory the process starts in: nothing to check
    else:
        path = shutil.which(executable)
    if path is None:
        return None
    for entry in allowed:
        if os.path.isabs(entry) and os.path.normpath(entry) == path:
            return path
        if os.sep not in entry and shutil.which(entry) == path:
            return path
    return None


def stdio_refusal(executable: str) -> str:
    return (f"The executable '{executable}' is not allowed for stdio MCP servers (or not found on PATH); "
            f"allowed: {', '.join(settings.HIVE_MCP_STDIO_ALLOWED)} (HIVE_MCP_STDIO_ALLOWED).")
