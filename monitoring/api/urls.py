from __future__ import annotations

from django.urls import re_path

from hive_project.routers import OptionalSlashRouter
from monitoring.api.views import AlertViewSet, PerformanceView

router = OptionalSlashRouter()
router.register("alerts", AlertViewSet, basename="alert")

urlpatterns = [
    re_path(r"^metrics/performance/?$", PerformanceView.as_view(), name="metrics-performance"),
    *router.urls,
]
