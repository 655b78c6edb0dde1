from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse


class BodySizeLimitMiddleware:
    """Refuse oversized bodies with 413 before anything reads them.

    Django's own DATA_UPLOAD_MAX_MEMORY_SIZE check answers 400 and only when the
    body is parsed; clients deserve the right status and a message.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.HIVE_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"error": "Content-Length header is not a number", "status": 400}, status=400)
        if length > limit:
            return JsonResponse(
                {"error": f"Request body is {length} bytes; the limit is {limit} bytes (HIVE_MAX_BODY_BYTES).",
                 "status": 413},
                status=413,
            )
        return self.get_response(request)
