from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Count, Q
from django.utils import timezone

from hive_project.validators import validate_no_nul

GENERAL = "general"


def validate_endpoint(value: str) -> None:
    """An Ollama base URL: http(s)://host[:port] with nothing after the authority."""
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(f"'{value}' is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationError(f"'{value}' must start with http:// or https://")
    if not parts.hostname:
        raise ValidationError(f"'{value}' has no host")
    if port == 0:
        raise ValidationError(f"'{value}' has port 0")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValidationError(f"'{value}' must be a base URL like http://host:11434 (no path or query)")
    if any(ch.isspace() for ch in value):
        raise ValidationError(f"'{value}' contains whitespace")


def validate_capabilities(value: Any) -> None:
    if not isinstance(value, list):
        raise ValidationError("capabilities must be a list of {name, proficiency} objects")
    seen: set[str] = set()
    for index, item in enumerate(value):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ValidationError(f"capabilities[{index}] needs a non-empty string 'name'")
        proficiency = item.get("proficiency", 1.0)
        if isinstance(proficiency, bool) or not isinstance(proficiency, (int, float)) or not 0 <= proficiency <= 1:
            raise ValidationError(f"capabilities[{index}].proficiency must be a number between 0 and 1")
        if item["name"] in seen:
            raise ValidationError(f"capability '{item['name']}' is listed twice")
        seen.add(item["name"])


def validate_json_object(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("must be a JSON object")


class AgentQuerySet(models.QuerySet["Agent"]):
    def with_busy_slots(self) -> AgentQuerySet:
        from coordinator.models import Task

        return self.annotate(
            busy_slots=Count("assigned_tasks", filter=Q(assigned_tasks__status__in=Task.Status.holding_slot()))
        )

    def schedulable(self) -> AgentQuerySet:
        """Agents that may receive new work: reachable and not draining."""
        return self.filter(status__in=Agent.SCHEDULABLE_STATUSES, draining=False)


class Agent(models.Model):
    class Status(models.TextChoices):
        ONLINE = "online", "Online"
        DEGRADED = "degraded", "Degraded"
        OFFLINE = "offline", "Offline"

    SCHEDULABLE_STATUSES = (Status.ONLINE, Status.DEGRADED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(
        "agent id", max_length=100, unique=True,
        help_text="Short stable identifier, e.g. 'acacia'. Used in URLs and event topics.",
    )
    name = models.CharField(max_length=255)
    endpoint = models.CharField(max_length=512, validators=[validate_endpoint], help_text="Ollama base URL, e.g. http://192.168.1.72:11434")
    model = models.CharField("default model", max_length=255, blank=True, help_text="Used when a task names no model.")
    specialization = models.CharField(max_length=100, blank=True)
    capabilities = models.JSONField(default=list, blank=True, validators=[validate_capabilities, validate_no_nul],
                                    help_text='List of {"name": ..., "proficiency": 0..1}.')
    hardware = models.JSONField(default=dict, blank=True, validators=[validate_json_object, validate_no_nul],
                                help_text="gpu_type, vram_gb, cpu_cores, ram_gb")
    performance_targets = models.JSONField(default=dict, blank=True, validators=[validate_json_object, validate_no_nul],
                                           help_text="min_tps, max_response_time (seconds)")
    max_concurrency = models.PositiveSmallIntegerField(
        default=1, validators=[MinValueValidator(1), MaxValueValidator(64)],
        help_text="Parallel generations this node runs (Ollama's OLLAMA_NUM_PARALLEL).",
    )
    max_loaded_models = models.PositiveSmallIntegerField(
        default=3, validators=[MinValueValidator(1), MaxValueValidator(64)],
        help_text="Models the node keeps in memory at once (Ollama's OLLAMA_MAX_LOADED_MODELS, 3 per GPU by "
                  "default). Loading one more evicts the least recently used idle model.",
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.OFFLINE, db_index=True)
    draining = models.BooleanField(default=False, help_text="Draining agents get no new work; running work finishes.")
    last_error = models.TextField(blank=True)
    last_seen = models.DateTimeField(null=True, blank=True)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    ollama_version = models.CharField(max_length=50, blank=True)
    models_available = models.JSONField(default=list, blank=True, help_text="From /api/tags")
    models_loaded = models.JSONField(default=list, blank=True, help_text="From /api/ps")
    tokens_per_second = models.FloatField(default=0.0, help_text="Moving average of measured generation speed.")
    load_seconds = models.FloatField(default=0.0, help_text="Moving average of measured cold-load time (0 = not measured yet).")
    consecutive_failures = models.PositiveIntegerField(default=0, help_text="Failed task attempts in a row (circuit breaker).")
    probe_failures = models.PositiveIntegerField(default=0, help_text="Failed probes in a row (probe backoff).")
    next_probe_at = models.DateTimeField(null=True, blank=True, help_text="An offline agent is not probed before this.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = AgentQuerySet.as_manager()

    class Meta:
        db_table = "agents"
        ordering = ["name"]
        permissions = [("drain_agent", "Can drain and undrain agents")]

    def __str__(self) -> str:
        return f"{self.name} ({self.slug})"

    def clean(self) -> None:
        self.endpoint = (self.endpoint or "").rstrip("/")

    @property
    def available_model_names(self) -> list[str]:
        return [m.get("name") or m.get("model") for m in self.models_available if isinstance(m, dict)]

    @property
    def loaded_model_names(self) -> list[str]:
        now = timezone.now()
        names = []
        for m in self.models_loaded:
            if not isinstance(m, dict):
                continue
            expires = parse_ollama_time(m.get("expires_at"))
            if expires is not None and expires < now:
                continue
            names.append(m.get("name") or m.get("model"))
        return names

    def has_model(self, model: str) -> bool:
        return _model_in(model, self.available_model_names)

    def has_loaded(self, model: str) -> bool:
        return _model_in(model, self.loaded_model_names)

    def proficiency(self, task_type: str) -> float | None:
        """Proficiency for a capability; None if the agent lacks it. General work fits anyone."""
        for cap in self.capabilities:
            if cap.get("name") == task_type:
                return float(cap.get("proficiency", 1.0))
        if task_type == GENERAL:
            return 0.5
        return None

    @property
    def display_status(self) -> str:
        if self.draining:
            return "draining"
        busy = getattr(self, "busy_slots", None)
        if self.status == self.Status.ONLINE and busy is not None and busy >= self.max_concurrency:
            return "busy"
        return self.status


_FRACTION = re.compile(r"(\.\d{6})\d+")


def parse_ollama_time(value: Any) -> datetime | None:
    """Ollama writes Go's RFC 3339 with up to nine fractional digits; Python takes six."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(_FRACTION.sub(r"\1", value.replace("Z", "+00:00")))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _model_in(model: str, names: list[str]) -> bool:
    """Ollama treats 'llama3' and 'llama3:latest' as the same model."""
    wanted = model if ":" in model else f"{model}:latest"
    return any(n == model or n == wanted for n in names if n)


class AgentHealthCheck(models.Model):
    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="health_checks")
    timestamp = models.DateTimeField(default=timezone.now, db_index=True)
    available = models.BooleanField()
    response_time = models.FloatField(null=True, blank=True, help_text="Seconds for /api/version")
    tokens_per_second = models.FloatField(null=True, blank=True)
    models_loaded = models.JSONField(default=list, blank=True)
    error_message = models.TextField(blank=True)

    class Meta:
        db_table = "agent_health_checks"
        ordering = ["-timestamp"]
        indexes = [models.Index(fields=["agent", "-timestamp"])]

    def __str__(self) -> str:
        return f"{self.agent_id} @ {self.timestamp:%Y-%m-%d %H:%M:%S} {'up' if self.available else 'down'}"
