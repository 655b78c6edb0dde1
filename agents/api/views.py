from __future__ import annotations

from typing import Any

from django.db.models import Model
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from agents import services
from agents.api.filters import AgentFilter
from agents.api.serializers import AgentSerializer, HealthCheckSerializer
from agents.models import Agent
from hive_project.lookups import by_id_or_slug


class AgentViewSet(viewsets.ModelViewSet):
    """Ollama nodes. Address an agent by its UUID or its agent_id."""

    serializer_class = AgentSerializer
    queryset = Agent.objects.all()
    lookup_value_regex = "[^/]+"
    filterset_class = AgentFilter
    action_permissions = {
        "drain": ["agents.drain_agent"], "undrain": ["agents.drain_agent"], "probe": ["agents.change_agent"],
        "health": ["agents.view_agenthealthcheck"],
    }
    throttle_actions = {"create": "agents.register"}

    def get_queryset(self) -> Any:
        return Agent.objects.with_busy_slots().order_by("name")

    def get_object(self) -> Model:
        agent = by_id_or_slug(self.get_queryset(), self.kwargs["pk"], what="agent")
        self.check_object_permissions(self.request, agent)
        return agent

    def perform_create(self, serializer: Serializer) -> None:
        serializer.instance = services.register_agent(dict(serializer.validated_data))

    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        self.perform_create(serializer)
        agent = by_id_or_slug(self.get_queryset(), str(serializer.instance.pk), what="agent")
        return Response(self.get_serializer(agent).data, status=status.HTTP_201_CREATED)

    def perform_update(self, serializer: Serializer) -> None:
        endpoint_changed = "endpoint" in serializer.validated_data and \
            serializer.validated_data["endpoint"] != serializer.instance.endpoint
        agent = serializer.save()
        if endpoint_changed:
            services.probe_agent(agent)

    def perform_destroy(self, instance: Agent) -> None:
        services.delete_agent(instance)

    def _state(self, agent: Agent) -> Response:
        return Response(self.get_serializer(by_id_or_slug(self.get_queryset(), str(agent.pk), what="agent")).data)

    @extend_schema(request=None, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def drain(self, request: Request, pk: str | None = None) -> Response:
        """Stop giving the agent new work; what runs there finishes."""
        return self._state(services.set_draining(self.get_object(), True))

    @extend_schema(request=None, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def undrain(self, request: Request, pk: str | None = None) -> Response:
        return self._state(services.set_draining(self.get_object(), False))

    @extend_schema(request=None, responses=AgentSerializer)
    @action(detail=True, methods=["post"])
    def probe(self, request: Request, pk: str | None = None) -> Response:
        """Probe the node now (/api/version, /api/tags, /api/ps)."""
        agent = self.get_object()
        services.probe_agent(agent)
        return self._state(agent)

    @extend_schema(responses=HealthCheckSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def health(self, request: Request, pk: str | None = None) -> Response:
        """The agent's recent health checks, newest first."""
        checks = self.get_object().health_checks.all()[:100]
        return Response(HealthCheckSerializer(checks, many=True).data)
