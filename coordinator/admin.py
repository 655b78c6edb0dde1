from __future__ import annotations

from django.contrib import admin, messages
from django.db import models
from django.db.models import QuerySet
from django.http import HttpRequest

from coordinator import services
from coordinator.models import Task, TaskAttempt, TaskDependency
from hive_project.errors import ConflictError
from hive_project.parsers import SafeJSONFormField


class AttemptInline(admin.TabularInline):
    model = TaskAttempt
    extra = 0
    max_num = 0
    can_delete = False
    fields = ["number", "agent", "worker", "outcome", "error", "started_at", "finished_at"]
    readonly_fields = fields


class DependencyInline(admin.TabularInline):
    model = TaskDependency
    fk_name = "task"
    extra = 0
    raw_id_fields = ["depends_on_task"]
    verbose_name_plural = "Depends on"


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["title", "status", "priority", "task_type", "assigned_agent", "attempts", "tokens_per_second",
                    "created_at", "completed_at"]
    list_filter = ["status", "priority", "task_type", "assigned_agent"]
    search_fields = ["id", "title", "prompt", "result", "error"]
    readonly_fields = ["status", "assigned_agent", "attempts", "result", "error", "timings", "tokens_per_second",
                       "excluded_agents", "dispatch_id", "lease_expires_at", "worker", "cancel_requested",
                       "created_by", "created_at", "queued_at", "started_at", "completed_at"]
    raw_id_fields = ["pinned_agent"]
    actions = ["cancel", "retry"]
    inlines = [DependencyInline, AttemptInline]
    date_hierarchy = "created_at"
    # Typed-in JSON obeys the API's rules (depth, no NaN); the options themselves are
    # checked by Task.clean(), which the admin form runs as the API does.
    formfield_overrides = {models.JSONField: {"form_class": SafeJSONFormField}}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Task]:
        return super().get_queryset(request).select_related("assigned_agent")

    def save_model(self, request: HttpRequest, obj: Task, form: object, change: bool) -> None:
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)
        if not change:
            from coordinator.dispatch import request_scheduling_pass

            request_scheduling_pass()

    @admin.action(description="Cancel selected tasks", permissions=["cancel"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._each(request, queryset, services.cancel_task, "cancelled (or cancelling)")

    @admin.action(description="Retry selected failed/cancelled tasks", permissions=["retry"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Task]) -> None:
        self._each(request, queryset, services.retry_task, "queued for another run")

    def _each(self, request: HttpRequest, queryset: QuerySet[Task], operation: object, verb: str) -> None:
        done, skipped = 0, []
        for task in queryset:
            try:
                operation(task)  # type: ignore[operator]
                done += 1
            except ConflictError as exc:
                skipped.append(f"{task.title}: {exc}")
        self.message_user(request, f"{done} task(s) {verb}.")
        for line in skipped:
            self.message_user(request, line, messages.WARNING)

    def has_cancel_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("coordinator.cancel_task")

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("coordinator.retry_task")
