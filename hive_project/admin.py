from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.http import HttpRequest

from hive_project.models import ApiToken

admin.site.site_header = "Hive administration"
admin.site.site_title = "Hive"
admin.site.index_title = "Cluster"


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "created_at", "last_used_at", "expires_at", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["name", "user__username", "prefix"]
    fields = ["user", "name", "expires_at", "revoked", "prefix", "created_at", "last_used_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at"]

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        key = obj.set_new_key()
        super().save_model(request, obj, form, change)
        self.message_user(request, f"Token created. Copy it now, it is not shown again: {key}", messages.WARNING)
