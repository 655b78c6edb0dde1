from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from hive_project.roles import VIEWER, role_of


class RoleRateThrottle(SimpleRateThrottle):
    """A general request rate per role (HIVE_THROTTLE_*), counted per user in Redis."""

    scope = "role"

    def get_rate(self) -> str | None:  # the rate depends on the request; chosen in allow_request
        return None

    def allow_request(self, request: Request, view: Any) -> bool:
        rate = self.rate_for(request, view)
        if rate is None:
            return True
        self.rate = rate
        self.num_requests, self.duration = self.parse_rate(rate)
        return super().allow_request(request, view)

    def rate_for(self, request: Request, view: Any) -> str | None:
        if not request.user or not request.user.is_authenticated:
            return settings.HIVE_THROTTLE_RATES.get("anon", "120/min")
        return settings.HIVE_THROTTLE_RATES.get(role_of(request.user) or VIEWER)

    def get_cache_key(self, request: Request, view: Any) -> str:
        ident = request.user.pk if request.user and request.user.is_authenticated else self.get_ident(request)
        return f"throttle:{self.scope}:{ident}"


class ActionRateThrottle(RoleRateThrottle):
    """The seed's per-endpoint limits: views name them with ``throttle_actions``."""

    scope = "action"

    def rate_for(self, request: Request, view: Any) -> str | None:
        action_name = getattr(view, "throttle_actions", {}).get(getattr(view, "action", None))
        if action_name is None or not request.user or not request.user.is_authenticated:
            return None
        self.scope = f"action:{action_name}"
        return settings.HIVE_ACTION_THROTTLE_RATES.get(action_name, {}).get(role_of(request.user) or VIEWER)
