from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from agents.models import GENERAL, Agent
from coordinator.options import validate_options as validate_ollama_options
from hive_project.validators import validate_no_nul


def validate_options(value: Any) -> None:
    if not isinstance(value, dict):
        raise ValidationError("options must be a JSON object of Ollama options, e.g. {\"temperature\": 0.2}")


class TaskQuerySet(models.QuerySet["Task"]):
    def active(self) -> TaskQuerySet:
        return self.filter(status__in=Task.Status.active())

    def holding_slot(self) -> TaskQuerySet:
        return self.filter(status__in=Task.Status.holding_slot())

    def in_schedule_order(self) -> TaskQuerySet:
        return self.order_by("-priority", "created_at")


class Task(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        COMPLETED = "completed", "Completed"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

        @classmethod
        def holding_slot(cls) -> list[str]:
            return [cls.QUEUED, cls.RUNNING]

        @classmethod
        def active(cls) -> list[str]:
            return [cls.PENDING, cls.QUEUED, cls.RUNNING]

        @classmethod
        def finished(cls) -> list[str]:
            return [cls.COMPLETED, cls.FAILED, cls.CANCELLED]

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=255)
    prompt = models.TextField(help_text="What the model is asked to do.")
    system = models.TextField(blank=True, help_text="Optional system prompt.")
    task_type = models.CharField(max_length=100, default=GENERAL, db_index=True,
                                 help_text="Capability the task needs; 'general' runs on any agent.")
    model = models.CharField(max_length=255, blank=True, help_text="Ollama model; empty = the agent's default.")
    options = models.JSONField(default=dict, blank=True, validators=[validate_options, validate_no_nul],
                               help_text="Ollama options passed through (temperature, num_predict, ...).")
    priority = models.PositiveSmallIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(5)],
                                                help_text="1..5, 5 most urgent.")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    assigned_agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="assigned_tasks")
    pinned_agent = models.ForeignKey(Agent, null=True, blank=True, on_delete=models.SET_NULL, related_name="pinned_tasks",
                                     help_text="Manual assignment: only this agent may run the task.")
    excluded_agents = models.JSONField(default=list, blank=True, help_text="Agents that failed this task.")
    depends_on = models.ManyToManyField("self", symmetrical=False, through="TaskDependency",
                                        related_name="dependents", blank=True)
    attempts = models.PositiveIntegerField(default=0)
    # Attempts of the runs before the last retry (which restarts ``attempts`` at 0): the
    # next attempt row is numbered after them, so the history keeps every one.
    attempt_offset = models.PositiveIntegerField(default=0, editable=False)
    max_attempts = models.PositiveIntegerField(default=3, validators=[MinValueValidator(1), MaxValueValidator(20)])
    result = models.TextField(blank=True)
    error = models.TextField(blank=True)
    timings = models.JSONField(default=dict, blank=True, help_text="Ollama's timings of the final chunk.")
    tokens_per_second = models.FloatField(null=True, blank=True)
    metadata = models.JSONField(default=dict, blank=True, validators=[validate_no_nul])
    # Execution bookkeeping: which dispatch may run the task and until when the
    # running worker's claim holds.
    dispatch_id = models.UUIDField(null=True, blank=True, editable=False)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    worker = models.CharField(max_length=255, blank=True)
    cancel_requested = models.BooleanField(default=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
                                   related_name="hive_tasks")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = TaskQuerySet.as_manager()

    class Meta:
        db_table = "tasks"
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["-priority", "created_at"], name="idx_tasks_priority"),
            # Not a partial index on the active statuses: SQLite uses a partial index only
            # when the query repeats its condition word for word, so "status = 'pending'"
            # scanned every task ever run. Finished rows cost index space, not lookups.
            models.Index(fields=["status", "completed_at"], name="idx_tasks_status_completed"),
            models.Index(fields=["assigned_agent", "status"]),
            # Status, metrics and the scheduler's output-length estimate read recent
            # completions; without it each read scans every task ever run.
            models.Index(fields=["completed_at"], name="idx_tasks_completed_at"),
        ]
        permissions = [
            ("cancel_task", "Can cancel tasks"),
            ("assign_task", "Can pin tasks to agents"),
            ("retry_task", "Can retry failed tasks"),
        ]

    def __str__(self) -> str:
        return f"{self.title} [{self.status}]"

    def clean(self) -> None:
        super().clean()
        # Here and not in a field validator: validation also normalises (num_predict -1
        # becomes HIVE_MAX_NUM_PREDICT, a stop string a list), which validators cannot.
        # A non-object is reported by the field's own validate_options.
        if isinstance(self.options, dict):
            try:
                self.options = validate_ollama_options(self.options)
            except ValidationError as exc:
                raise ValidationError({"options": exc.error_list}) from None

    @property
    def is_finished(self) -> bool:
        return self.status in self.Status.finished()


class TaskDependency(models.Model):
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dependency_links")
    depends_on_task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="dependent_links")

    class Meta:
        db_table = "task_dependencies"
        constraints = [models.UniqueConstraint(fields=["task", "depends_on_task"], name="uniq_task_dependency")]

    def __str__(self) -> str:
        return f"{self.task_id} -> {self.depends_on_task_id}"


class TaskAttempt(models.Model):
    """One try of a task on one agent. No attempt is ever deleted from a task's history."""

    class Outcome(models.TextChoices):
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"
        LOST = "lost", "Lost (worker died)"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveIntegerField()
    agent = models.ForeignKey(Agent, null=True, on_delete=models.SET_NULL, related_name="attempts")
    dispatch_id = models.UUIDField()
    worker = models.CharField(max_length=255, blank=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, default=Outcome.RUNNING)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "task_attempts"
        ordering = ["task", "number"]
        constraints = [models.UniqueConstraint(fields=["task", "number"], name="uniq_attempt_number")]
        indexes = [models.Index(fields=["finished_at"], name="idx_attempts_finished_at")]  # metrics read recent ones

    def __str__(self) -> str:
        return f"{self.task_id} #{self.number} {self.outcome}"

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()
