from __future__ import annotations

import logging
import uuid
from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from hive_project.lookups import by_id_or_slug
from hive_project.permissions import RoleModelPermissions
from workflows import services
from workflows.api.serializers import (
    ExecuteSerializer,
    ExecutionDetailSerializer,
    ExecutionSerializer,
    MCPServerSerializer,
    WorkflowPatchSerializer,
    WorkflowSerializer,
    WorkflowVersionSerializer,
    WorkflowWriteSerializer,
)
from workflows.models import Execution, MCPServer, Workflow

logger = logging.getLogger(__name__)

INVALID = OpenApiResponse(OpenApiTypes.OBJECT, description="Invalid workflow: `error` names the first problem, "
                                                            "`errors` lists every {node, parameter, message}")


def _invalid(exc: services.InvalidWorkflow) -> Response:
    return Response(exc.as_body(), status=status.HTTP_400_BAD_REQUEST)


def _guarded(call: Any) -> Any:
    """Validation must answer 400 whatever the body holds; an engine crash on odd data is still bad input."""
    try:
        return call()
    except services.InvalidWorkflow:
        raise
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as exc:
        logger.exception("workflow validation crashed")
        from workflows.engine.contract import ValidationIssue

        raise services.InvalidWorkflow([ValidationIssue(f"n8n_data could not be read: {type(exc).__name__}: {exc}",
                                                        parameter="n8n_data")]) from exc


class ManagesWorkflow(permissions.BasePermission):
    """Object-level half of the ownership rule (the role's model permissions are the other half):
    writes, runs and cancels need a workflow the user manages (Workflow.is_manageable_by)."""

    actions = frozenset({"update", "partial_update", "destroy", "execute", "cancel"})
    message = "You may not change this workflow."

    def has_object_permission(self, request: Request, view: Any, obj: Any) -> bool:
        if getattr(view, "action", None) not in self.actions:
            return True
        workflow = obj.workflow if isinstance(obj, Execution) else obj
        if workflow.is_manageable_by(request.user):
            return True
        owner = workflow.created_by.username if workflow.created_by else "nobody"
        what = "cancel executions of" if isinstance(obj, Execution) else "change, run or delete"
        self.message = (f"You may {what} only your own workflows and those shared with one of your groups; "
                        f"workflow '{workflow.name}' belongs to {owner}.")
        return False


class WorkflowFilter(django_filters.FilterSet):
    active = django_filters.BooleanFilter()
    search = django_filters.CharFilter(method="filter_search", help_text="Part of the name (or slug)")

    class Meta:
        model = Workflow
        fields = ["active"]

    def filter_search(self, queryset: QuerySet[Workflow], name: str, value: str) -> QuerySet[Workflow]:
        return queryset.filter(Q(name__icontains=value) | Q(slug__icontains=value))


class WorkflowViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """n8n workflows. Create and update accept Hive's body or a raw n8n export."""

    serializer_class = WorkflowSerializer
    queryset = Workflow.objects.all()
    filterset_class = WorkflowFilter
    permission_classes = [RoleModelPermissions, ManagesWorkflow]
    action_permissions = {
        "execute": ["workflows.execute_workflow"],
        "versions": ["workflows.view_workflow", "workflows.view_workflowversion"],
        "export": ["workflows.view_workflow"],
    }

    def get_queryset(self) -> QuerySet[Workflow]:
        return (Workflow.objects.with_manageable(getattr(self.request, "user", None)).select_related("created_by")
                .prefetch_related("shared_with_groups").order_by("name"))

    def get_object(self) -> Workflow:
        workflow = by_id_or_slug(self.get_queryset(), self.kwargs["pk"], what="workflow")
        self.check_object_permissions(self.request, workflow)
        return workflow

    def _detail(self, workflow: Workflow, code: int = status.HTTP_200_OK) -> Response:
        return Response(WorkflowSerializer(self.get_queryset().get(pk=workflow.pk),
                                           context=self.get_serializer_context()).data, status=code)

    @extend_schema(request=WorkflowWriteSerializer, responses={201: WorkflowSerializer, 400: INVALID})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        try:
            workflow = _guarded(lambda: services.create_workflow(request.data, request.user))
        except services.InvalidWorkflow as exc:
            return _invalid(exc)
        return self._detail(workflow, status.HTTP_201_CREATED)

    @extend_schema(request=WorkflowWriteSerializer, responses={200: WorkflowSerializer, 400: INVALID})
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Replace the workflow; a change of its n8n data or name is a new version."""
        workflow = self.get_object()
        partial = kwargs.get("partial", False)
        try:
            workflow = _guarded(lambda: services.update_workflow(workflow, request.data, request.user, partial=partial))
        except services.InvalidWorkflow as exc:
            return _invalid(exc)
        except services.NotAllowed as exc:
            raise PermissionDenied(str(exc)) from None
        return self._detail(workflow)

    @extend_schema(request=WorkflowPatchSerializer, responses={200: WorkflowSerializer, 400: INVALID})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Change some fields (name, description, active, n8n_data)."""
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Delete the workflow, its versions, executions and schedules (running executions are cancelled)."""
        services.delete_workflow(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=ExecuteSerializer, responses={202: ExecutionSerializer, 400: INVALID})
    @action(detail=True, methods=["post"], pagination_class=None, filter_backends=[])
    def execute(self, request: Request, pk: str | None = None) -> Response:
        """Start an execution; input is a list of objects (or n8n items), one object, or omitted."""
        workflow = self.get_object()
        if not isinstance(request.data, dict):
            return _invalid(services.InvalidWorkflow([services.ValidationIssue("the body must be a JSON object")]))
        try:
            items = services.normalize_input(request.data.get("input"))
        except services.InvalidWorkflow as exc:
            return Response({"error": str(exc.issues[0]), "status": 400, "errors": [i.as_dict() for i in exc.issues]},
                            status=status.HTTP_400_BAD_REQUEST)
        mode = request.data.get("mode", Execution.Mode.MANUAL)
        if mode not in (Execution.Mode.MANUAL, Execution.Mode.MCP):
            return Response({"error": f"mode must be 'manual' or 'mcp', not {mode!r}", "status": 400},
                            status=status.HTTP_400_BAD_REQUEST)
        execution = services.start_execution(workflow, items, request.user, mode=mode)
        execution = Execution.objects.select_related("workflow", "created_by").get(pk=execution.pk)
        return Response(ExecutionSerializer(execution).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses=WorkflowVersionSerializer(many=True))
    @action(detail=True, methods=["get"], filter_backends=[])
    def versions(self, request: Request, pk: str | None = None) -> Response:
        """Every stored version, newest first."""
        workflow = self.get_object()
        page = self.paginate_queryset(workflow.versions.select_related("created_by").order_by("-version"))
        return self.get_paginated_response(WorkflowVersionSerializer(page, many=True).data)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def export(self, request: Request, pk: str | None = None) -> Response:
        """The workflow as n8n JSON (importable into n8n)."""
        workflow = self.get_object()
        response = Response(services.export_workflow(workflow))
        response["Content-Disposition"] = f'attachment; filename="{workflow.slug}.json"'
        return response


class ExecutionFilter(django_filters.FilterSet):
    workflow = django_filters.CharFilter(method="filter_workflow", help_text="Workflow id or slug")
    status = django_filters.MultipleChoiceFilter(choices=Execution.Status.choices)
    mode = django_filters.ChoiceFilter(choices=Execution.Mode.choices)

    class Meta:
        model = Execution
        fields = ["workflow", "status", "mode"]

    def filter_workflow(self, queryset: QuerySet[Execution], name: str, value: str) -> QuerySet[Execution]:
        try:
            return queryset.filter(workflow_id=uuid.UUID(value))
        except ValueError:
            return queryset.filter(workflow__slug=value)


class ExecutionViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Runs of workflows, newest first. The detail has every node run."""

    serializer_class = ExecutionSerializer
    queryset = Execution.objects.all()
    filterset_class = ExecutionFilter
    permission_classes = [RoleModelPermissions, ManagesWorkflow]
    action_permissions = {"cancel": ["workflows.cancel_execution"]}

    def get_queryset(self) -> QuerySet[Execution]:
        return Execution.objects.select_related("workflow", "workflow__created_by", "created_by").order_by("-created_at")

    def get_serializer_class(self) -> type[ExecutionSerializer]:
        return ExecutionDetailSerializer if self.action in ("retrieve", "cancel") else ExecutionSerializer

    def get_object(self) -> Execution:
        raw = self.kwargs["pk"]
        try:
            execution = self.get_queryset().prefetch_related("node_runs").filter(pk=uuid.UUID(raw)).first()
        except ValueError:
            execution = None
        if execution is None:
            raise NotFound(f"No execution with id '{raw}'.")
        self.check_object_permissions(self.request, execution)
        return execution

    @extend_schema(request=None, responses={200: ExecutionDetailSerializer, 202: ExecutionDetailSerializer,
                                            409: OpenApiResponse(OpenApiTypes.OBJECT, description="Already finished")})
    @action(detail=True, methods=["post"])
    def cancel(self, request: Request, pk: str | None = None) -> Response:
        """Cancel: pending at once (200); running within a second, with its LLM tasks (202)."""
        execution = self.get_object()
        execution = services.cancel_execution(execution)
        fresh = self.get_object()
        return Response(ExecutionDetailSerializer(fresh).data,
                        status=status.HTTP_200_OK if execution.is_finished else status.HTTP_202_ACCEPTED)


class MCPServerViewSet(viewsets.ModelViewSet):
    """MCP servers workflows may call (n8n-nodes-hive.mcpToolCall).

    Admins manage HTTP servers; a stdio server runs a command on the Hive host, so only a
    superuser registers or changes one (MCPServer.check_change_allowed). Command arguments
    and env values are masked for everyone but superusers.
    """

    serializer_class = MCPServerSerializer
    queryset = MCPServer.objects.all()
    action_permissions = {"check": ["workflows.change_mcpserver"]}

    def get_queryset(self) -> QuerySet[MCPServer]:
        return MCPServer.objects.order_by("name")

    def get_object(self) -> MCPServer:
        raw = str(self.kwargs["pk"])
        server = None
        try:
            server = MCPServer.objects.filter(pk=uuid.UUID(raw)).first()
        except ValueError:
            if len(raw) <= 100:
                server = MCPServer.objects.filter(name=raw).first()
        if server is None:
            raise Http404(f"No MCP server with id or name '{raw}'.")
        self.check_object_permissions(self.request, server)
        return server

    @extend_schema(request=None, responses=MCPServerSerializer)
    @action(detail=True, methods=["post"])
    def check(self, request: Request, pk: str | None = None) -> Response:
        """Connect now and list its tools (status, tools, version, last_error are updated)."""
        from workflows.mcp_bridge import check_server

        server = self.get_object()
        check_server(server)
        server.refresh_from_db()
        return Response(self.get_serializer(server).data)
