from __future__ import annotations

from typing import Any

import redis
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from hive_project.redis_client import get_redis


class HealthView(APIView):
    """Liveness and readiness: the database and Redis answer. No authentication."""

    permission_classes = [AllowAny]
    authentication_classes: list[Any] = []
    throttle_classes: list[Any] = []

    @extend_schema(responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT}, auth=[])
    def get(self, request: Request) -> Response:
        checks = {"database": "ok", "redis": "ok"}
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
        except DatabaseError as exc:
            checks["database"] = f"error: {exc}"
        try:
            get_redis().ping()
        except (redis.RedisError, OSError) as exc:
            checks["redis"] = f"error: {exc}"
        healthy = all(v == "ok" for v in checks.values())
        return Response({"status": "ok" if healthy else "unavailable", **checks}, status=200 if healthy else 503)


@csrf_exempt  # an unknown route is a 404 whatever the method, not a CSRF failure
def api_not_found(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return JsonResponse({"error": f"No API route {request.path}", "status": 404}, status=404)


def server_error(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"error": "Internal server error; the details are in the server log.", "status": 500}, status=500)
