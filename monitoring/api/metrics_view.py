from __future__ import annotations

import hmac

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from drf_spectacular.utils import extend_schema
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework import authentication, permissions
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from monitoring.prometheus import exposition


class PrometheusRenderer(BaseRenderer):
    media_type = "text/plain"
    format = "prometheus"
    charset = "utf-8"

    def render(self, data: object, accepted_media_type: str | None = None, renderer_context: dict | None = None) -> bytes:
        return data if isinstance(data, bytes) else str(data).encode()


METRICS_SCRAPER = "metrics-scraper"


class MetricsTokenAuthentication(authentication.BaseAuthentication):
    """Prometheus presents ``Authorization: Bearer <HIVE_METRICS_TOKEN>``."""

    def authenticate(self, request: Request) -> tuple[AnonymousUser, str] | None:
        token = settings.HIVE_METRICS_TOKEN
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if token and hmac.compare_digest(header.encode(), f"Bearer {token}".encode()):
            return AnonymousUser(), METRICS_SCRAPER
        return None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="metrics"'


class MetricsAccess(permissions.BasePermission):
    """The scraper's token, or a user who may see agents."""

    def has_permission(self, request: Request, view: object) -> bool:
        if request.auth == METRICS_SCRAPER:
            return True
        return bool(request.user and request.user.is_authenticated and request.user.has_perm("agents.view_agent"))


class MetricsView(APIView):
    """Prometheus exposition format."""

    authentication_classes = [MetricsTokenAuthentication, *api_settings.DEFAULT_AUTHENTICATION_CLASSES]
    permission_classes = [MetricsAccess]
    renderer_classes = [PrometheusRenderer]
    throttle_classes: list[type] = []

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        return Response(exposition(), content_type=CONTENT_TYPE_LATEST)
