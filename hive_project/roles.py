"""The seed's role matrix as Django groups.

Seed names map to Django permissions. Admins get everything; the matrix is applied
after every migrate so new permissions reach existing groups.
"""
from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, Group, Permission

ADMIN = "admin"
DEVELOPER = "developer"
VIEWER = "viewer"
ROLES = (ADMIN, DEVELOPER, VIEWER)

# Seed permission -> Django permissions ("app_label.codename").
SEED_PERMISSIONS: dict[str, list[str]] = {
    "agents.view": ["agents.view_agent", "agents.view_agenthealthcheck"],
    "agents.manage": ["agents.add_agent", "agents.change_agent", "agents.delete_agent", "agents.drain_agent"],
    "tasks.view": ["coordinator.view_task", "coordinator.view_taskattempt"],
    "tasks.create": ["coordinator.add_task", "coordinator.cancel_task"],
    "workflows.view": ["workflows.view_workflow", "workflows.view_workflowversion", "workflows.view_mcpserver"],
    "workflows.create": ["workflows.add_workflow", "workflows.change_workflow", "workflows.delete_workflow"],
    "executions.view": ["workflows.view_execution", "workflows.view_noderun"],
    "executions.start": ["workflows.execute_workflow", "workflows.cancel_execution"],
    "mcp.manage": ["workflows.add_mcpserver", "workflows.change_mcpserver", "workflows.delete_mcpserver"],
    "tasks.manage": ["coordinator.change_task", "coordinator.delete_task", "coordinator.assign_task",
                     "coordinator.retry_task"],
}

ROLE_MATRIX: dict[str, list[str]] = {
    ADMIN: ["*"],
    # Developers submit and follow their work; the seed's read-only role sees the
    # cluster and its tasks.
    DEVELOPER: ["agents.view", "tasks.view", "tasks.create", "workflows.view", "workflows.create",
                "executions.view", "executions.start"],
    VIEWER: ["agents.view", "tasks.view", "workflows.view", "executions.view"],
}

HIVE_APPS = ("agents", "coordinator", "hive_project", "workflows", "django_celery_beat")


def ensure_roles() -> None:
    for role, seed_perms in ROLE_MATRIX.items():
        group, _ = Group.objects.get_or_create(name=role)
        if seed_perms == ["*"]:
            perms = list(Permission.objects.filter(content_type__app_label__in=HIVE_APPS))
        else:
            wanted = [p for name in seed_perms for p in SEED_PERMISSIONS[name]]
            perms = []
            for dotted in wanted:
                app_label, codename = dotted.split(".", 1)
                perms.extend(Permission.objects.filter(content_type__app_label=app_label, codename=codename))
        group.permissions.set(perms)


def role_of(user: AbstractBaseUser | AnonymousUser) -> str | None:
    if not user or not user.is_authenticated:
        return None
    if user.is_superuser:
        return ADMIN
    names = {g.name for g in user.groups.all()}  # type: ignore[attr-defined]
    for role in ROLES:
        if role in names:
            return role
    return None


def seed_permissions_of(user: AbstractBaseUser) -> list[str]:
    role = role_of(user)
    if role is None:
        return []
    return ROLE_MATRIX[role]
