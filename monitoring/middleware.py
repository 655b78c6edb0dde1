from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from monitoring.prometheus import API_ERRORS, API_REQUEST_DURATION

_SKIP = ("/static/", "/metrics")


class RequestMetricsMiddleware:
    """Duration and errors of every request, labelled by route pattern (bounded cardinality)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(_SKIP):
            return self.get_response(request)
        started = time.perf_counter()
        response = self.get_response(request)
        match = getattr(request, "resolver_match", None)
        route = (match.route or match.view_name) if match else "unmatched"
        labels = (request.method or "", route[:100], str(response.status_code))
        API_REQUEST_DURATION.labels(*labels).observe(time.perf_counter() - started)
        if response.status_code >= 400:
            API_ERRORS.labels(*labels).inc()
        return response
