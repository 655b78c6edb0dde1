from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from hive_project.bootstrap import ensure_setup


class Command(BaseCommand):
    help = "Create the roles (admin/developer/viewer) and Hive's periodic schedules. Idempotent."

    def handle(self, *args: Any, **options: Any) -> None:
        admin = ensure_setup()
        self.stdout.write(self.style.SUCCESS("Roles and periodic schedules are in place."))
        if admin and admin[1]:
            self.stdout.write(f"Created admin user '{admin[0]}'.")
