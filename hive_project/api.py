"""What every API view shares: pagination and one JSON error shape.

Errors look like ``{"error": "priority: Ensure this value is less than or equal
to 5.", "status": 400, "errors": {"priority": ["…"]}}`` — ``error`` is a sentence
a person can act on and names the field; ``errors`` keeps DRF's per-field detail.
"""
from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.pagination import PageNumberPagination
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from hive_project.errors import ConflictError


class Pagination(PageNumberPagination):
    page_size_query_param = "page_size"
    max_page_size = 500


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "The request conflicts with the current state."
    default_code = "conflict"


class PayloadTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "payload_too_large"


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            if isinstance(key, int):  # DRF keys a list's item errors by index
                out.extend(_flatten(value, f"{prefix}[{key}]"))
                continue
            name = "" if key == "non_field_errors" else str(key)
            out.extend(_flatten(value, f"{prefix}.{name}" if prefix and name else (name or prefix)))
        return out
    if isinstance(detail, list):
        out = []
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)):
                out.extend(_flatten(value, f"{prefix}[{index}]"))
            else:
                out.extend(_flatten(value, prefix))
        return out
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def error_body(detail: Any, status_code: int) -> dict[str, Any]:
    body: dict[str, Any] = {"error": "; ".join(_flatten(detail)) or "Error", "status": status_code}
    if isinstance(detail, (dict, list)):
        body["errors"] = detail
    return body


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, ConflictError):
        exc = Conflict(str(exc))
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge()
    elif isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(exc.message_dict if hasattr(exc, "error_dict") else exc.messages)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound(str(exc) or "Not found.")
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    data = response.data
    # {"detail": ...} alone, or with simplejwt's "code"/"messages", is one message, not fields.
    if isinstance(data, dict) and "detail" in data and set(data) <= {"detail", "code", "messages"}:
        data = data["detail"]
    response.data = error_body(data, response.status_code)
    return response
