from __future__ import annotations

from typing import Any

from django.db.models.signals import post_migrate
from django.dispatch import receiver


@receiver(post_migrate)
def apply_role_matrix(sender: Any, **kwargs: Any) -> None:
    # post_migrate fires once per app; the matrix needs every app's permissions,
    # which exist by the time the last app (ours, or any) has migrated.
    from hive_project.roles import ensure_roles

    ensure_roles()
