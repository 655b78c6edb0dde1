from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import m2m_changed, post_migrate
from django.dispatch import receiver


@receiver(post_migrate)
def apply_role_matrix(sender: Any, **kwargs: Any) -> None:
    # post_migrate fires once per app; the matrix needs every app's permissions,
    # which exist by the time the last app (ours, or any) has migrated.
    from hive_project.roles import ensure_roles

    ensure_roles()


@receiver(m2m_changed, sender=get_user_model().groups.through)
def admins_are_staff(sender: Any, instance: Any, action: str, pk_set: set[int] | None, **kwargs: Any) -> None:
    """Operators in the admin role manage the cluster in the Django admin."""
    from django.contrib.auth.models import Group

    from hive_project.roles import ADMIN

    if action != "post_add" or not pk_set or not hasattr(instance, "is_staff") or instance.is_staff:
        return
    if Group.objects.filter(pk__in=pk_set, name=ADMIN).exists():
        type(instance).objects.filter(pk=instance.pk).update(is_staff=True)
        instance.is_staff = True
