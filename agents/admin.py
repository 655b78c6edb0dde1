from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from agents import services
from agents.models import Agent, AgentHealthCheck
from hive_project.errors import ConflictError


class HealthCheckInline(admin.TabularInline):
    model = AgentHealthCheck
    extra = 0
    max_num = 0
    can_delete = False
    fields = ["timestamp", "available", "response_time", "models_loaded", "error_message"]
    readonly_fields = fields
    ordering = ["-timestamp"]
    verbose_name_plural = "Recent health checks"

    def get_queryset(self, request: HttpRequest) -> QuerySet[AgentHealthCheck]:
        # The inline cannot slice; keep it to the last day so the page stays small.
        from datetime import timedelta

        from django.utils import timezone

        return super().get_queryset(request).filter(timestamp__gte=timezone.now() - timedelta(days=1))


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "endpoint", "status_badge", "slots", "loaded_models", "tokens_per_second",
                    "last_seen"]
    list_filter = ["status", "draining", "specialization"]
    search_fields = ["name", "slug", "endpoint", "model", "specialization"]
    readonly_fields = ["status", "last_error", "last_seen", "last_probe_at", "ollama_version", "models_available",
                       "models_loaded", "tokens_per_second", "consecutive_failures", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["slug", "name", "endpoint", "model", "specialization", "max_concurrency", "max_loaded_models", "draining"]}),
        ("Capabilities and hardware", {"fields": ["capabilities", "hardware", "performance_targets"]}),
        ("Live state (from probes)", {"fields": readonly_fields}),
    ]
    actions = ["drain", "undrain", "probe"]
    inlines = [HealthCheckInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Agent]:
        return Agent.objects.with_busy_slots()

    @admin.display(description="status", ordering="status")
    def status_badge(self, agent: Agent) -> str:
        return agent.display_status if not agent.last_error else f"{agent.display_status} ({agent.last_error[:60]})"

    @admin.display(description="slots (busy/total)")
    def slots(self, agent: Agent) -> str:
        return f"{getattr(agent, 'busy_slots', 0)}/{agent.max_concurrency}"

    @admin.display(description="loaded models")
    def loaded_models(self, agent: Agent) -> str:
        return ", ".join(agent.loaded_model_names) or "—"

    def save_model(self, request: HttpRequest, obj: Agent, form: Any, change: bool) -> None:
        probe = not change or "endpoint" in form.changed_data
        super().save_model(request, obj, form, change)
        if probe:
            check = services.probe_agent(obj)
            if check.available:
                self.message_user(request, f"{obj.slug} answered: {len(obj.available_model_names)} model(s) available.")
            else:
                self.message_user(request, f"{obj.slug} is offline: {check.error_message}", messages.WARNING)

    @admin.action(description="Drain (no new work; running work finishes)", permissions=["drain"])
    def drain(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            services.set_draining(agent, True)
        self.message_user(request, f"Draining {queryset.count()} agent(s).")

    @admin.action(description="Undrain (accept work again)", permissions=["drain"])
    def undrain(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            services.set_draining(agent, False)
        self.message_user(request, f"{queryset.count()} agent(s) accept work again.")

    @admin.action(description="Probe now", permissions=["change"])
    def probe(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        results = [services.probe_agent(agent) for agent in queryset]
        up = sum(1 for r in results if r.available)
        self.message_user(request, f"{up} of {len(results)} agent(s) answered.")

    def has_drain_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("agents.drain_agent")

    def get_deleted_objects(self, objs: Any, request: HttpRequest) -> Any:
        # Work queued or running on an agent protects it: Django's delete page and
        # bulk action then refuse and list the tasks instead of orphaning them.
        deleted, model_count, perms_needed, protected = super().get_deleted_objects(objs, request)
        protected = list(protected)
        for agent in objs:
            for task in agent.assigned_tasks.holding_slot():
                protected.append(f"Task '{task.title}' ({task.status}) on {agent.slug}")
        return deleted, model_count, perms_needed, protected

    def delete_model(self, request: HttpRequest, obj: Agent) -> None:
        try:
            services.delete_agent(obj)
        except ConflictError as exc:
            self.message_user(request, str(exc), messages.ERROR)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Agent]) -> None:
        for agent in queryset:
            self.delete_model(request, agent)


@admin.register(AgentHealthCheck)
class AgentHealthCheckAdmin(admin.ModelAdmin):
    list_display = ["agent", "timestamp", "available", "response_time", "error_message"]
    list_filter = ["available", "agent"]
    date_hierarchy = "timestamp"
    readonly_fields = ["agent", "timestamp", "available", "response_time", "tokens_per_second", "models_loaded",
                       "error_message"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
