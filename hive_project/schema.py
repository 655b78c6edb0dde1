"""OpenAPI descriptions for Hive's own authentication classes."""
from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "hive_project.auth.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "http", "scheme": "bearer", "description": "A Hive API token (hive_…) as a bearer token."}


ERROR_SCHEMA = {
    "type": "object",
    "description": "Every error: a sentence naming the problem, the HTTP status, and per-field details.",
    "properties": {
        "error": {"type": "string", "example": "priority: Ensure this value is less than or equal to 5."},
        "status": {"type": "integer", "example": 400},
        "errors": {"description": "Per-field messages, as DRF reports them"},
    },
    "required": ["error", "status"],
}

_DESCRIPTIONS = {
    "400": "Invalid input; `error` names the field",
    "401": "Not authenticated",
    "403": "Authenticated but not allowed",
    "404": "No such object (or page)",
    "409": "The object's current state does not allow this",
    "413": "Request body too large",
    "429": "Too many requests for this role",
}


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular documents success responses only; add the JSON errors each operation can answer."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    for path, item in result.get("paths", {}).items():
        for method, operation in item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            codes: set[str] = set()
            writes = method in ("post", "put", "patch")
            params = operation.get("parameters", [])
            if writes or any(p.get("in") == "query" for p in params):
                codes.add("400")
            if writes:
                codes.add("413")
            if operation.get("security") != [{}] and operation.get("security") != []:
                codes.update({"401", "403", "429"})
            if "{" in path or any(p.get("name") == "page" for p in params):
                codes.add("404")
            if "{" in path and method in ("post", "put", "patch", "delete"):
                codes.add("409")
            for code in sorted(codes):
                operation["responses"].setdefault(code, {"description": _DESCRIPTIONS[code], "content": content})
    return result
