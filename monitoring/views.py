"""The live dashboard: one page, filled from the REST API and kept current over /ws/events."""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from hive_project.roles import role_of


@login_required
@ensure_csrf_cookie
def dashboard(request: HttpRequest) -> HttpResponse:
    user = request.user
    config = {
        "username": user.get_username(),
        "role": role_of(user),
        "canSubmit": user.has_perm("coordinator.add_task"),
        "canCancel": user.has_perm("coordinator.cancel_task"),
        "canSeeTasks": user.has_perm("coordinator.view_task"),
        "canSeeAgents": user.has_perm("agents.view_agent"),
        "wsPath": "/ws/events",
        "apiRoot": "/api",
    }
    return render(request, "monitoring/dashboard.html", {"config": config})
