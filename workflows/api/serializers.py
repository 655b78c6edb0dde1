from __future__ import annotations

import copy
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import exceptions, serializers

from workflows.models import Execution, MCPServer, NodeRun, Workflow, WorkflowVersion


@extend_schema_field(OpenApiTypes.OBJECT)
class ObjectField(serializers.JSONField):
    """A JSON object (n8n data)."""


class WorkflowSerializer(serializers.ModelSerializer):
    n8n_data = ObjectField(read_only=True)
    mcp_tools = serializers.ListField(child=serializers.DictField(), read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None,
                                       help_text="The owner (whoever created the workflow).")
    shared_with_groups = serializers.SerializerMethodField(
        help_text="Names of the groups whose members may change, run and delete the workflow like its owner.")
    can_change = serializers.SerializerMethodField(
        help_text="Whether you may change, run and delete this workflow (and see its webhook URL).")
    webhook_url = serializers.SerializerMethodField(
        help_text="Base URL of the workflow's webhook nodes (append the node's path); only for users who may "
                  "change this workflow, since the token is a secret.")
    last_execution = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = ["id", "name", "slug", "description", "n8n_data", "mcp_tools", "version", "active", "webhook_url",
                  "last_execution", "created_by", "shared_with_groups", "can_change", "created_at", "updated_at"]
        read_only_fields = fields

    def get_shared_with_groups(self, workflow: Workflow) -> list[str]:
        return sorted(group.name for group in workflow.shared_with_groups.all())

    def get_can_change(self, workflow: Workflow) -> bool:
        request = self.context.get("request")
        return bool(request is not None and request.user.has_perm("workflows.change_workflow")
                    and workflow.is_manageable_by(request.user))

    def get_webhook_url(self, workflow: Workflow) -> str | None:
        request = self.context.get("request")
        if not workflow.webhook_token or request is None or not self.get_can_change(workflow):
            return None
        return request.build_absolute_uri(f"/webhook/{workflow.webhook_token}/")

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "id": {"type": "string", "format": "uuid"}, "status": {"type": "string"},
        "created_at": {"type": "string", "format": "date-time"}}})
    def get_last_execution(self, workflow: Workflow) -> dict[str, Any] | None:
        last = getattr(workflow, "last_execution_cache", None)
        if last is None:
            last = workflow.executions.order_by("-created_at").values("id", "status", "created_at").first()
        if not last:
            return None
        return {"id": str(last["id"]), "status": last["status"], "created_at": serializers.DateTimeField().to_representation(
            last["created_at"])}


class WorkflowWriteSerializer(serializers.Serializer):
    """Hive's body. A raw n8n export ({name, nodes, connections, settings, ...}) is accepted too.

    The owner is whoever creates the workflow; no body field sets it.
    """

    name = serializers.CharField(min_length=3, max_length=255)
    description = serializers.CharField(required=False, allow_blank=True)
    n8n_data = ObjectField(help_text="The n8n workflow: nodes, connections, settings.")
    active = serializers.BooleanField(required=False)
    shared_with_groups = serializers.ListField(
        child=serializers.CharField(max_length=150), required=False, max_length=100,
        help_text="Group names whose members may change, run and delete the workflow; only the owner or an admin "
                  "may set it.")


class WorkflowPatchSerializer(WorkflowWriteSerializer):
    name = serializers.CharField(min_length=3, max_length=255, required=False)
    n8n_data = ObjectField(required=False, help_text="The n8n workflow: nodes, connections, settings.")


class WorkflowVersionSerializer(serializers.ModelSerializer):
    n8n_data = ObjectField(read_only=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = WorkflowVersion
        fields = ["version", "name", "n8n_data", "created_by", "created_at"]
        read_only_fields = fields


class ExecuteSerializer(serializers.Serializer):
    input = serializers.JSONField(required=False, allow_null=True,
                                  help_text="Input items: a list of objects (or n8n items {json: {...}}), one object, "
                                            "or omitted for one empty item.")
    mode = serializers.ChoiceField(choices=["manual", "mcp"], required=False, default="manual",
                                   help_text="How the execution was started: 'manual' (API) or 'mcp' (an MCP tool call).")


class NodeRunSerializer(serializers.ModelSerializer):
    input_items = serializers.ListField(child=serializers.DictField(), read_only=True)
    output_items = serializers.ListField(child=serializers.ListField(child=serializers.DictField()), read_only=True,
                                         help_text="One list of items per output.")
    task = serializers.UUIDField(source="task_id", read_only=True, allow_null=True)

    class Meta:
        model = NodeRun
        fields = ["sequence", "node_name", "node_type", "run_index", "status", "input_items", "output_items", "error",
                  "task", "started_at", "duration_ms"]
        read_only_fields = fields


class ExecutionSerializer(serializers.ModelSerializer):
    workflow = serializers.UUIDField(source="workflow_id", read_only=True)
    workflow_name = serializers.CharField(source="workflow.name", read_only=True)
    workflow_slug = serializers.CharField(source="workflow.slug", read_only=True)
    input_data = serializers.ListField(child=serializers.DictField(), read_only=True)
    output_data = serializers.ListField(child=serializers.DictField(), read_only=True, allow_null=True)
    parent = serializers.UUIDField(source="parent_id", read_only=True, allow_null=True)
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    duration = serializers.SerializerMethodField(help_text="Seconds from start to completion")

    class Meta:
        model = Execution
        fields = ["id", "workflow", "workflow_name", "workflow_slug", "workflow_version", "mode", "status", "input_data",
                  "output_data", "error_message", "error_node", "cancel_requested", "parent", "created_by", "worker",
                  "created_at", "started_at", "completed_at", "duration"]
        read_only_fields = fields

    def get_duration(self, execution: Execution) -> float | None:
        if execution.started_at and execution.completed_at:
            return (execution.completed_at - execution.started_at).total_seconds()
        return None


class ExecutionDetailSerializer(ExecutionSerializer):
    node_runs = NodeRunSerializer(many=True, read_only=True)

    class Meta(ExecutionSerializer.Meta):
        fields = [*ExecutionSerializer.Meta.fields, "node_runs"]
        read_only_fields = fields


class MCPServerSerializer(serializers.ModelSerializer):
    command = serializers.ListField(child=serializers.CharField(max_length=4096), required=False, max_length=100,
                                    help_text="argv of the server process (transport=stdio); the arguments after "
                                              "the executable are shown as '***' except to superusers.")
    env = serializers.DictField(child=serializers.CharField(allow_blank=True, max_length=4096), required=False,
                                help_text="Extra environment of a stdio server (values shown as '***' except to "
                                          "superusers; '***' sent back keeps the stored value).")
    capabilities = serializers.ListField(child=serializers.CharField(max_length=100), required=False, max_length=100)
    tools = serializers.ListField(child=serializers.DictField(), read_only=True)

    class Meta:
        model = MCPServer
        fields = ["id", "name", "description", "transport", "endpoint", "command", "env", "capabilities", "tools",
                  "version", "status", "last_error", "last_checked", "created_at"]
        read_only_fields = ["tools", "version", "status", "last_error", "last_checked", "created_at"]

    def _user(self) -> Any:
        request = self.context.get("request")
        return getattr(request, "user", None)

    def to_representation(self, instance: MCPServer) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["last_error"] = instance.redact(data.get("last_error") or "")  # also rows stored before it was redacted
        user = self._user()
        if user is None or not user.is_superuser:
            data["command"] = instance.masked_command()
            data["env"] = instance.masked_env()
        return data

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        """The stdio rule first (403, whatever else is wrong), then a switch to stdio must set the
        command, then masked values keep the stored ones, then the model's clean() (400)."""
        previous: MCPServer | None = self.instance
        candidate = copy.copy(previous) if previous is not None else MCPServer()
        for key, value in attrs.items():
            setattr(candidate, key, value)
        user = self._user()
        if user is None:
            raise exceptions.NotAuthenticated()
        try:
            candidate.check_change_allowed(user, previous)
        except DjangoPermissionDenied as exc:
            raise exceptions.PermissionDenied(str(exc)) from None
        try:
            candidate.check_transport_change(previous, attrs)
            if previous is not None:
                command, env = previous.unmask(attrs.get("command"), attrs.get("env"))
                for key, value in (("command", command), ("env", env)):
                    if value is not None:
                        attrs[key] = value
                        setattr(candidate, key, value)
            candidate.clean()
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages) from None
        return attrs
