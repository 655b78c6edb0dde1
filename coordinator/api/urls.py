from __future__ import annotations

from django.urls import re_path

from coordinator.api.views import AgentStatusView, ClusterStatusView, EventListView, TaskViewSet
from hive_project.routers import OptionalSlashRouter

router = OptionalSlashRouter()
router.register("tasks", TaskViewSet, basename="task")

urlpatterns = [
    re_path(r"^status/cluster/?$", ClusterStatusView.as_view(), name="status-cluster"),
    re_path(r"^status/agents/?$", AgentStatusView.as_view(), name="status-agents"),
    re_path(r"^events/?$", EventListView.as_view(), name="events"),
    *router.urls,
]
