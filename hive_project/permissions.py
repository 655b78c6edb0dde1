from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request


class RoleModelPermissions(permissions.DjangoModelPermissions):
    """Model permissions (groups carry the role matrix), including view for reads.

    A view may declare ``action_permissions = {"drain": ["agents.drain_agent"]}`` for
    actions that are not plain CRUD.
    """

    perms_map = {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "POST": ["%(app_label)s.add_%(model_name)s"],
        "PUT": ["%(app_label)s.change_%(model_name)s"],
        "PATCH": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s"],
    }

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        action = getattr(view, "action", None)
        declared = getattr(view, "action_permissions", {})
        if action in declared:
            return request.user.has_perms(declared[action])
        if getattr(view, "queryset", None) is None and not hasattr(view, "get_queryset"):
            return True
        return super().has_permission(request, view)


class HasPerms(permissions.BasePermission):
    """For plain APIViews: ``required_perms = [...]`` on the view."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        return request.user.has_perms(getattr(view, "required_perms", []))
