from __future__ import annotations

from django.urls import path

from monitoring.views import dashboard

app_name = "monitoring"

urlpatterns = [
    path("", dashboard, name="dashboard"),
]
