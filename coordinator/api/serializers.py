from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from agents.models import GENERAL
from coordinator.models import Task, TaskAttempt
from coordinator.options import validate_options as validate_ollama_options
from coordinator.scheduler import queue_info

TASK_TYPE_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")


class AgentRefSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    agent_id = serializers.CharField(source="slug")
    name = serializers.CharField()


class AttemptSerializer(serializers.ModelSerializer):
    agent = AgentRefSerializer(allow_null=True)
    duration = serializers.FloatField(allow_null=True, help_text="Seconds")

    class Meta:
        model = TaskAttempt
        fields = ["number", "agent", "worker", "outcome", "error", "started_at", "finished_at", "duration"]


class TimingsSerializer(serializers.Serializer):
    """Ollama's own timings from the final chunk (durations in nanoseconds)."""

    total_duration = serializers.IntegerField(required=False)
    load_duration = serializers.IntegerField(required=False)
    prompt_eval_count = serializers.IntegerField(required=False)
    prompt_eval_duration = serializers.IntegerField(required=False)
    eval_count = serializers.IntegerField(required=False)
    eval_duration = serializers.IntegerField(required=False)
    tokens_per_second = serializers.FloatField(required=False)


class TaskSerializer(serializers.ModelSerializer):
    depends_on = serializers.ListField(
        child=serializers.UUIDField(), required=False, write_only=True,
        help_text="Ids of tasks that must complete first.",
    )
    dependencies = serializers.SerializerMethodField()
    assigned_agent = AgentRefSerializer(read_only=True, allow_null=True)
    pinned_agent = AgentRefSerializer(read_only=True, allow_null=True)
    timings = TimingsSerializer(read_only=True)
    attempt_log = AttemptSerializer(many=True, read_only=True)
    waiting_reason = serializers.SerializerMethodField()
    queue_position = serializers.SerializerMethodField(
        help_text="Pending only: 1 + the number of waiting tasks ahead of it that compete for the same agents.")
    estimated_start_at = serializers.SerializerMethodField(
        help_text="Pending only: when it is expected to start, from measured token rates.")
    created_by = serializers.CharField(source="created_by.username", read_only=True, allow_null=True, default=None)
    model_used = serializers.SerializerMethodField()

    class Meta:
        model = Task
        fields = [
            "id", "title", "prompt", "system", "task_type", "model", "options", "priority", "depends_on",
            "dependencies", "status", "assigned_agent", "pinned_agent", "model_used", "attempts", "max_attempts",
            "result", "error", "timings", "tokens_per_second", "metadata", "waiting_reason", "queue_position",
            "estimated_start_at", "cancel_requested",
            "attempt_log", "created_by", "created_at", "queued_at", "started_at", "completed_at",
        ]
        read_only_fields = ["status", "attempts", "result", "error", "tokens_per_second", "cancel_requested",
                            "created_at", "queued_at", "started_at", "completed_at"]
        extra_kwargs = {
            "task_type": {"default": GENERAL},
            "priority": {"default": 3},
            "max_attempts": {"required": False},
        }

    def get_dependencies(self, task: Task) -> list[str]:
        return [str(link.depends_on_task_id) for link in task.dependency_links.all()]

    def _queue(self, task: Task) -> dict[str, Any]:
        if task.status != Task.Status.PENDING:
            return {}
        known = self.context.setdefault("queue_info", {})
        if str(task.pk) not in known:
            known.update(queue_info([str(task.pk)]))
        return known.get(str(task.pk), {})

    def get_waiting_reason(self, task: Task) -> str | None:
        if task.status != Task.Status.PENDING:
            return None
        return self._queue(task).get("reason") or "waiting for the scheduler or for its dependencies"

    def get_queue_position(self, task: Task) -> int | None:
        return self._queue(task).get("position")

    def get_estimated_start_at(self, task: Task) -> str | None:
        return self._queue(task).get("eta")

    def get_model_used(self, task: Task) -> str | None:
        return task.metadata.get("model")

    def validate_task_type(self, value: str) -> str:
        if not TASK_TYPE_RE.match(value):
            raise serializers.ValidationError(
                "Use a capability name: lowercase letters, digits, '.', '_' or '-' (e.g. 'code' or 'general').")
        return value

    def validate_prompt(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The prompt may not be blank.")
        return value

    def validate_options(self, value: Any) -> dict[str, Any]:
        try:
            return validate_ollama_options(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_max_attempts(self, value: int) -> int:
        return value or settings.HIVE_MAX_ATTEMPTS

    def validate_depends_on(self, value: list[Any]) -> list[Task]:
        ids = list(dict.fromkeys(value))
        found = {t.pk: t for t in Task.objects.filter(pk__in=ids)}
        missing = [str(i) for i in ids if i not in found]
        if missing:
            raise serializers.ValidationError(f"No task with id {', '.join(missing)}.")
        return [found[i] for i in ids]


class TaskUpdateSerializer(TaskSerializer):
    class Meta(TaskSerializer.Meta):
        read_only_fields = [*TaskSerializer.Meta.read_only_fields, "task_type", "model"]
        extra_kwargs: dict[str, Any] = {}


class AssignSerializer(serializers.Serializer):
    agent = serializers.CharField(help_text="Agent UUID or agent_id")


class BatchItemSerializer(TaskSerializer):
    key = serializers.CharField(required=False, max_length=100, help_text="Name other items use in depends_on.")
    depends_on = serializers.ListField(  # type: ignore[assignment]
        child=serializers.CharField(), required=False,
        help_text="Existing task ids, or the key or 0-based index of another item of this batch.",
    )

    class Meta(TaskSerializer.Meta):
        fields = ["key", *TaskSerializer.Meta.fields]

    def validate_depends_on(self, value: list[Any]) -> list[str]:
        return value


class BatchSerializer(serializers.Serializer):
    tasks = BatchItemSerializer(many=True, allow_empty=False)

    def validate_tasks(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import uuid as uuid_mod

        keys: dict[str, int] = {}
        for index, item in enumerate(items):
            key = item.pop("key", None)
            if key is not None:
                if key in keys:
                    raise serializers.ValidationError(f"tasks[{index}].key '{key}' is used twice")
                keys[key] = index
        existing_ids: list[uuid_mod.UUID] = []
        for index, item in enumerate(items):
            refs = []
            for ref in item.get("depends_on", []):
                if ref in keys:
                    refs.append(("new", keys[ref]))
                elif ref.isdigit() and int(ref) < len(items):
                    refs.append(("new", int(ref)))
                else:
                    try:
                        refs.append(uuid_mod.UUID(ref))
                        existing_ids.append(uuid_mod.UUID(ref))
                    except ValueError:
                        raise serializers.ValidationError(
                            f"tasks[{index}].depends_on: '{ref}' is not a task id, a key or an index of this batch"
                        ) from None
                if refs[-1] == ("new", index):
                    raise serializers.ValidationError(f"tasks[{index}].depends_on: a task cannot depend on itself")
            item["depends_on"] = refs
        found = {t.pk: t for t in Task.objects.filter(pk__in=existing_ids)}
        for index, item in enumerate(items):
            resolved = []
            for ref in item["depends_on"]:
                if isinstance(ref, tuple):
                    resolved.append(ref)
                elif ref in found:
                    resolved.append(found[ref])
                else:
                    raise serializers.ValidationError(f"tasks[{index}].depends_on: no task with id {ref}")
            item["depends_on"] = resolved
        return items
