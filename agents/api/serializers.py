from __future__ import annotations

from typing import Any

from django.utils.text import slugify
from rest_framework import serializers

from agents.models import Agent, AgentHealthCheck


class CapabilitySerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    proficiency = serializers.FloatField(min_value=0.0, max_value=1.0, default=1.0)


class AgentSerializer(serializers.ModelSerializer):
    """Accepts the seed's registration JSON; answers with the agent's live state."""

    agent_id = serializers.SlugField(source="slug", max_length=100, required=False,
                                     help_text="Short stable id, e.g. 'acacia'. Derived from the name if omitted.")
    capabilities = CapabilitySerializer(many=True, required=False)
    hardware = serializers.DictField(required=False, help_text="gpu_type, vram_gb, cpu_cores, ram_gb")
    performance_targets = serializers.DictField(required=False, help_text="min_tps, max_response_time (seconds)")
    status = serializers.CharField(source="display_status", read_only=True,
                                   help_text="online, busy, degraded, offline or draining")
    health_status = serializers.CharField(source="status", read_only=True)
    busy_slots = serializers.IntegerField(read_only=True, default=0)
    models_available = serializers.ListField(child=serializers.CharField(), source="available_model_names", read_only=True)
    models_loaded = serializers.ListField(child=serializers.CharField(), source="loaded_model_names", read_only=True)

    class Meta:
        model = Agent
        fields = [
            "id", "agent_id", "name", "endpoint", "model", "specialization", "capabilities", "hardware",
            "performance_targets", "max_concurrency", "max_loaded_models", "status", "health_status", "draining", "busy_slots",
            "models_available", "models_loaded", "tokens_per_second", "ollama_version", "last_seen",
            "last_probe_at", "last_error", "created_at", "updated_at",
        ]
        read_only_fields = ["draining", "tokens_per_second", "ollama_version", "last_seen", "last_probe_at",
                            "last_error", "created_at", "updated_at"]

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "endpoint" in attrs:
            attrs["endpoint"] = attrs["endpoint"].rstrip("/")
        if self.instance is None and not attrs.get("slug"):
            attrs["slug"] = slugify(attrs.get("name", ""))[:100]
            if not attrs["slug"]:
                raise serializers.ValidationError({"agent_id": ["Give an agent_id or a name made of letters or digits."]})
        slug = attrs.get("slug")
        if slug and Agent.objects.exclude(pk=getattr(self.instance, "pk", None)).filter(slug=slug).exists():
            raise serializers.ValidationError({"agent_id": [f"An agent with id '{slug}' already exists."]})
        instance = Agent(**{**self._current(), **attrs})
        instance.clean_fields(exclude=["id", "slug"] if not slug else ["id"])
        return attrs

    def _current(self) -> dict[str, Any]:
        if self.instance is None:
            return {}
        return {f.name: getattr(self.instance, f.name) for f in Agent._meta.concrete_fields if f.name != "id"}


class HealthCheckSerializer(serializers.ModelSerializer):
    class Meta:
        model = AgentHealthCheck
        fields = ["timestamp", "available", "response_time", "tokens_per_second", "models_loaded", "error_message"]
