from __future__ import annotations

from django.apps import AppConfig


class CoordinatorConfig(AppConfig):
    name = "coordinator"
    default_auto_field = "django.db.models.BigAutoField"
