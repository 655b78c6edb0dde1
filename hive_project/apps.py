from __future__ import annotations

from django.apps import AppConfig


class HiveProjectConfig(AppConfig):
    name = "hive_project"
    verbose_name = "Hive"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from hive_project import schema, signals  # noqa: F401
