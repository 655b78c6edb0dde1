from __future__ import annotations

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView

from hive_project.views import HealthView, api_not_found
from monitoring.api.metrics_view import MetricsView
from workflows.triggers import webhook_view

api_patterns = [
    re_path(r"^health/?$", HealthView.as_view(), name="health"),
    re_path(r"^auth/token/?$", TokenObtainPairView.as_view(), name="token-obtain"),
    re_path(r"^auth/token/refresh/?$", TokenRefreshView.as_view(), name="token-refresh"),
    re_path(r"^schema/?$", SpectacularAPIView.as_view(), name="schema"),
    re_path(r"^docs/?$", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("agents.api.urls")),
    path("", include("coordinator.api.urls")),
    path("", include("monitoring.api.urls")),
    path("", include("workflows.api.urls")),
    re_path(r"^.*$", api_not_found),
]

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include(api_patterns)),
    # n8n's production webhook URL: /webhook/<token>/<the node's path>.
    re_path(r"^webhook/(?P<token>[-A-Za-z0-9_]{1,64})/(?P<path>.*)$", webhook_view, name="workflow-webhook"),
    re_path(r"^metrics/?$", MetricsView.as_view(), name="prometheus-metrics"),
    path("accounts/login/", auth_views.LoginView.as_view(next_page="/", redirect_authenticated_user=True),
         name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(next_page="/accounts/login/"), name="logout"),
    path("", include("monitoring.urls")),
]

handler500 = "hive_project.views.server_error"
