from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import Agent
from coordinator import events, services
from coordinator.api.filters import TaskFilter
from coordinator.api.serializers import AssignSerializer, BatchSerializer, TaskSerializer, TaskUpdateSerializer
from coordinator.models import Task
from coordinator.scheduler import queue_info
from coordinator.status import agent_statuses, cluster_status
from hive_project.lookups import by_id_or_slug
from hive_project.permissions import HasPerms


def _dependency_error(exc: services.DependencyError) -> serializers.ValidationError:
    return serializers.ValidationError({"depends_on": [str(exc)]})


class TaskViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                  mixins.UpdateModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet):
    """Work for the cluster. DELETE cancels (the row is kept)."""

    serializer_class = TaskSerializer
    queryset = Task.objects.all()
    filterset_class = TaskFilter
    http_method_names = ["get", "post", "patch", "put", "delete", "head", "options"]
    action_permissions = {
        "destroy": ["coordinator.cancel_task"], "assign": ["coordinator.assign_task"],
        "retry": ["coordinator.retry_task"], "batch": ["coordinator.add_task"],
    }
    throttle_actions = {"create": "tasks.create", "batch": "tasks.create"}

    def get_queryset(self) -> QuerySet[Task]:
        return Task.objects.select_related("assigned_agent", "pinned_agent", "created_by").prefetch_related(
            "dependency_links", "attempt_log__agent").order_by("-created_at")

    def get_object(self) -> Task:
        raw = self.kwargs["pk"]
        try:
            task = self.get_queryset().filter(pk=uuid.UUID(raw)).first()
        except ValueError:
            task = None
        if task is None:
            raise NotFound(f"No task with id '{raw}'.")
        self.check_object_permissions(self.request, task)
        return task

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        if self.action == "partial_update":
            return TaskUpdateSerializer
        return super().get_serializer_class()

    def _detail(self, task: Task, code: int = status.HTTP_200_OK) -> Response:
        return Response(TaskSerializer(self.get_queryset().get(pk=task.pk), context=self.get_serializer_context()).data,
                        status=code)

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset())) or []
        context = self.get_serializer_context()
        context["queue_info"] = queue_info([str(t.pk) for t in page if t.status == Task.Status.PENDING])
        return self.get_paginated_response(TaskSerializer(page, many=True, context=context).data)

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        data["depends_on"] = list(data.get("depends_on", []))
        try:
            (task,) = services.create_tasks([data], user=request.user)
        except services.DependencyError as exc:
            raise _dependency_error(exc) from exc
        return self._detail(task, status.HTTP_201_CREATED)

    @extend_schema(request=BatchSerializer, responses={201: TaskSerializer(many=True)})
    @action(detail=False, methods=["post"], pagination_class=None, filter_backends=[])
    def batch(self, request: Request) -> Response:
        """Create a dependency graph of tasks in one transaction; depends_on may name items of the batch."""
        serializer = BatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            tasks = services.create_tasks([dict(i) for i in serializer.validated_data["tasks"]], user=request.user)
        except services.DependencyError as exc:
            raise serializers.ValidationError({"tasks": [str(exc)]}) from exc
        ordered = {t.pk: t for t in self.get_queryset().filter(pk__in=[t.pk for t in tasks])}
        context = self.get_serializer_context()
        return Response([TaskSerializer(ordered[t.pk], context=context).data for t in tasks], status=status.HTTP_201_CREATED)

    @extend_schema(exclude=True)
    def update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.http_method_not_allowed(request)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Change a pending task (title, prompt, priority, options, depends_on …)."""
        task = self.get_object()
        serializer = self.get_serializer(task, data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        deps = data.pop("depends_on", None)
        try:
            task = services.update_pending_task(task, data, list(deps) if deps is not None else None)
        except services.DependencyError as exc:
            raise _dependency_error(exc) from exc
        return self._detail(task)

    @extend_schema(responses={200: TaskSerializer, 202: TaskSerializer,
                              409: OpenApiResponse(OpenApiTypes.OBJECT, description="Already finished")})
    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Cancel: pending or queued at once (200); running within two seconds (202)."""
        task = self.get_object()
        if task.created_by_id != request.user.pk and not request.user.has_perm("coordinator.change_task"):
            raise PermissionDenied("You may cancel only your own tasks.")
        task = services.cancel_task(task)
        return self._detail(task, status.HTTP_200_OK if task.status == Task.Status.CANCELLED else status.HTTP_202_ACCEPTED)

    @extend_schema(request=AssignSerializer, responses=TaskSerializer)
    @action(detail=True, methods=["put"])
    def assign(self, request: Request, pk: str | None = None) -> Response:
        """Pin a pending task to one agent; it runs there when a slot is free."""
        task = self.get_object()
        serializer = AssignSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            agent = by_id_or_slug(Agent.objects.all(), serializer.validated_data["agent"], what="agent")
        except Http404 as exc:
            raise serializers.ValidationError({"agent": [str(exc)]}) from exc
        return self._detail(services.assign_task(task, agent))

    @extend_schema(request=None, responses=TaskSerializer)
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Run a failed or cancelled task again."""
        return self._detail(services.retry_task(self.get_object()))


class ClusterStatusView(APIView):
    permission_classes = [HasPerms]
    required_perms = ["agents.view_agent", "coordinator.view_task"]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        """Agents by status, slots, queue depth per priority, running tasks."""
        return Response(cluster_status())


class AgentStatusView(APIView):
    permission_classes = [HasPerms]
    required_perms = ["agents.view_agent"]

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        """Every agent with status, busy/total slots, loaded models and its running tasks."""
        return Response({"agents": agent_statuses()})


class EventQuerySerializer(serializers.Serializer):
    topic = serializers.CharField(help_text="e.g. task.<id>, task.*, agent.<agent_id>, cluster.status")
    after = serializers.IntegerField(min_value=0, default=0, help_text="Last sequence number seen")
    limit = serializers.IntegerField(min_value=1, max_value=500, default=100)

    def validate_topic(self, value: str) -> str:
        if not events.valid_topic(value):
            raise serializers.ValidationError(f"'{value}' is not a topic; use e.g. task.<id>, task.*, cluster.status")
        return value


class EventListView(APIView):
    """Stored events of one topic after a sequence number (what a WebSocket subscriber missed)."""

    permission_classes = [IsAuthenticated]

    @extend_schema(parameters=[EventQuerySerializer], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        query = EventQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        topic = query.validated_data["topic"]
        if not events.may_see(request.user, topic):
            raise PermissionDenied(f"You may not see {topic}.")
        stored = events.events_after(topic, query.validated_data["after"], query.validated_data["limit"])
        return Response({"topic": topic, "seq": events.current_seq(topic), "events": stored})
