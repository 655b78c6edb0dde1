from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions
from rest_framework.request import Request
from rest_framework_simplejwt.serializers import TokenObtainPairSerializer

from hive_project.models import TOKEN_PREFIX, ApiToken
from hive_project.roles import role_of, seed_permissions_of


class ApiTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Token hive_…` or `Bearer hive_…` (or `X-API-Key`)."""

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        key = self._key_from(request)
        if key is None:
            return None
        token = ApiToken.authenticate(key)
        if token is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked API token.")
        return token.user, token

    @staticmethod
    def _key_from(request: Request) -> str | None:
        header = authentication.get_authorization_header(request).decode(errors="replace").split()
        if len(header) == 2 and header[0].lower() in ("token", "bearer") and header[1].startswith(TOKEN_PREFIX):
            return header[1]
        if len(header) == 2 and header[0].lower() == "token":
            return header[1]
        api_key = request.META.get("HTTP_X_API_KEY")
        return api_key or None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class HiveTokenObtainPairSerializer(TokenObtainPairSerializer):
    """JWT carrying the seed's claims: roles and permissions."""

    @classmethod
    def get_token(cls, user: Any) -> Any:
        token = super().get_token(user)
        role = role_of(user)
        token["roles"] = [role] if role else []
        token["permissions"] = seed_permissions_of(user)
        token["username"] = user.get_username()
        return token
