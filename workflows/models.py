"""Workflows (n8n JSON), their versions, executions, per-node runs and the MCP server registry.

The seed's ``workflows`` and ``executions`` tables are kept by name; ``node_runs``
holds one row per run of one node inside one execution.
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.core.validators import MinLengthValidator
from django.db import models

from hive_project.validators import validate_no_nul


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
                                   related_name="hive_workflows")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        db_table = "workflows"
        ordering = ["name"]
        permissions = [("execute_workflow", "Can execute workflows")]

    def __str__(self) -> str:
        return f"{self.name} v{self.version}"


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
