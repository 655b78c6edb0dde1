from __future__ import annotations

from django.contrib import admin

from monitoring.models import Alert, AlertRule


@admin.register(AlertRule)
class AlertRuleAdmin(admin.ModelAdmin):
    list_display = ["name", "condition", "severity", "window_seconds", "cooldown_seconds", "enabled"]
    list_filter = ["severity", "enabled", "metric"]
    list_editable = ["enabled"]
    search_fields = ["name", "description"]


@admin.register(Alert)
class AlertAdmin(admin.ModelAdmin):
    list_display = ["fired_at", "severity", "rule", "subject", "status", "message", "resolved_at", "notified"]
    list_filter = ["status", "severity", "rule"]
    search_fields = ["subject", "message"]
    date_hierarchy = "fired_at"
    readonly_fields = ["rule", "subject", "severity", "status", "message", "value", "fired_at", "resolved_at", "notified"]

    def has_add_permission(self, request: object) -> bool:
        return False
