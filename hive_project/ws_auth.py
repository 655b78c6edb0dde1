"""WebSocket authentication: a JWT or API token (query ``token=`` or Authorization
header), else the Django session of a logged-in user.

A socket outlives the moment it was authenticated, so the middleware records which
credential opened it (``scope["hive_credential"]``) and the consumer asks
:func:`recheck` again every ``HIVE_WS_RECHECK_SECONDS``: a revoked, deleted or
expired token, a logged-out session or a deactivated user ends the socket, and a
lost permission shows in the returned :class:`Grants`. :func:`claim_connection`
caps the sockets one user holds open across every web process.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Literal
from urllib.parse import parse_qs

from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.security.websocket import OriginValidator
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser, Permission
from django.db.models import Exists, OuterRef, Q
from django.utils.crypto import constant_time_compare

from hive_project.models import TOKEN_PREFIX, ApiToken
from hive_project.redis_client import get_redis

CREDENTIAL_SCOPE_KEY = "hive_credential"
CONNECTIONS_KEY = "hive:ws:connections:{user_id}"


@dataclass(frozen=True)
class Credential:
    """What authenticated a WebSocket, so that it can be checked again later."""

    kind: Literal["jwt", "api_token", "session"]
    user_id: Any
    token_id: int | None = None  # the ApiToken row
    expires_at: float | None = None  # the JWT's exp (a JWT cannot be revoked, only outlived)
    session_key: str | None = None


@dataclass(frozen=True)
class Grants:
    """The user as the last check found them: what ``coordinator.events.may_see`` asks
    of a user (``pk``, ``is_superuser``, ``has_perm``), without a query per question."""

    pk: Any
    is_superuser: bool
    perms: frozenset[str]  # those of the permissions asked about that the user holds

    def has_perm(self, perm: str) -> bool:
        return self.is_superuser or perm in self.perms

    @property
    def sees_anything(self) -> bool:
        return self.is_superuser or bool(self.perms)


@database_sync_to_async
def user_for_token(raw: str) -> tuple[Any, Credential | None]:
    if raw.startswith(TOKEN_PREFIX):
        token = ApiToken.authenticate(raw)
        if token is None:
            return AnonymousUser(), None
        return token.user, Credential("api_token", token.user_id, token_id=token.pk)
    from rest_framework.exceptions import AuthenticationFailed
    from rest_framework_simplejwt.authentication import JWTAuthentication
    from rest_framework_simplejwt.exceptions import InvalidToken, TokenError

    auth = JWTAuthentication()
    try:
        validated = auth.get_validated_token(raw.encode())
        user = auth.get_user(validated)
    except (InvalidToken, TokenError, AuthenticationFailed):
        return AnonymousUser(), None
    return user, Credential("jwt", user.pk, expires_at=float(validated["exp"]))


def _token_from(scope: dict[str, Any]) -> str | None:
    query = parse_qs(scope.get("query_string", b"").decode(errors="replace"))
    if query.get("token"):
        return query["token"][0]
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            parts = value.decode(errors="replace").split()
            if len(parts) == 2 and parts[0].lower() in ("bearer", "token"):
                return parts[1]
    return None


def _session_credential(scope: dict[str, Any]) -> Credential | None:
    user, session = scope.get("user"), scope.get("session")
    if user is None or not user.is_authenticated or session is None or not session.session_key:
        return None
    return Credential("session", user.pk, session_key=session.session_key)


class TokenAuthMiddleware:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        token = _token_from(scope)
        if token is not None:
            user, credential = await user_for_token(token)
            scope = {**scope, "user": user, CREDENTIAL_SCOPE_KEY: credential}
        else:
            scope = {**scope, CREDENTIAL_SCOPE_KEY: _session_credential(scope)}
        return await self.inner(scope, receive, send)


def HiveAuthStack(inner: Any) -> Any:  # noqa: N802 - mirrors channels' AuthMiddlewareStack
    # Session auth fills scope["user"] first; a token, when given, decides instead.
    return AuthMiddlewareStack(TokenAuthMiddleware(inner))


def _holds(permission: str) -> Exists:
    app_label, codename = permission.split(".", 1)
    return Exists(Permission.objects.filter(Q(user=OuterRef("pk")) | Q(group__user=OuterRef("pk")),
                                            content_type__app_label=app_label, codename=codename))


def recheck(credential: Credential, permissions: Iterable[str]) -> Grants | None:
    """The user's grants among ``permissions`` if ``credential`` still holds, else None
    (token revoked, deleted or expired; session ended; user deactivated or deleted).

    One query (the user, the token's validity and the permissions together); a
    session adds the read of the session itself."""
    asked = sorted(set(permissions))
    users = get_user_model().objects.filter(pk=credential.user_id, is_active=True)
    session: dict[str, Any] = {}
    if credential.kind == "jwt":
        if credential.expires_at is None or time.time() >= credential.expires_at:
            return None
    elif credential.kind == "api_token":
        users = users.filter(Exists(ApiToken.objects.usable().filter(pk=credential.token_id, user=OuterRef("pk"))))
    else:
        store = import_module(settings.SESSION_ENGINE).SessionStore(credential.session_key)
        session = store.load()  # {} once the session is deleted (logout) or expired
        if session.get(SESSION_KEY) != str(credential.user_id):
            return None
    user = users.annotate(**{f"holds_{n}": _holds(perm) for n, perm in enumerate(asked)}).first()
    if user is None:
        return None
    # As at login: a password change ends the user's other sessions.
    if credential.kind == "session" and not constant_time_compare(session.get(HASH_SESSION_KEY) or "",
                                                                  user.get_session_auth_hash()):
        return None
    held = frozenset(perm for n, perm in enumerate(asked) if getattr(user, f"holds_{n}"))
    return Grants(pk=user.pk, is_superuser=user.is_superuser, perms=held)


# Open sockets per user, counted in Redis so that every web process sees them: a
# sorted set per user of channel name -> expiry time. The re-check loop pushes its
# socket's expiry forward; a process that dies without saying goodbye leaves entries
# that lapse after a few missed re-checks and are removed before counting.

def _connection_ttl() -> float:
    return max(30.0, 3 * settings.HIVE_WS_RECHECK_SECONDS)


def claim_connection(user_id: Any, channel_name: str) -> bool:
    """Count this socket against the user's limit; False (and not counted) when over it."""
    key, ttl, now = CONNECTIONS_KEY.format(user_id=user_id), _connection_ttl(), time.time()
    # MULTI: concurrent claims are counted one after the other, so the limit cannot be
    # overshot (two racing for the last place may both be refused, never both admitted).
    with get_redis().pipeline(transaction=True) as pipe:
        pipe.zremrangebyscore(key, "-inf", now)
        pipe.zadd(key, {channel_name: now + ttl})
        pipe.zcard(key)
        pipe.expire(key, math.ceil(ttl))
        count = pipe.execute()[2]
    if count > settings.HIVE_WS_MAX_CONNECTIONS_PER_USER:
        release_connection(user_id, channel_name)
        return False
    return True


def refresh_connection(user_id: Any, channel_name: str) -> None:
    key, ttl = CONNECTIONS_KEY.format(user_id=user_id), _connection_ttl()
    with get_redis().pipeline(transaction=False) as pipe:
        # XX: only an entry still there. A refresh runs in a thread that the socket's
        # close cannot stop, and must not bring back a place the close just released.
        pipe.zadd(key, {channel_name: time.time() + ttl}, xx=True)
        pipe.expire(key, math.ceil(ttl))
        pipe.execute()


def release_connection(user_id: Any, channel_name: str) -> None:
    get_redis().zrem(CONNECTIONS_KEY.format(user_id=user_id), channel_name)


class BrowserOriginValidator(OriginValidator):
    """Browsers must come from an allowed host (no cross-site WebSocket hijacking of a
    session); programs send no Origin header and authenticate with a token."""

    def valid_origin(self, parsed_origin: Any) -> bool:
        if parsed_origin is None:
            return True
        return self.validate_origin(parsed_origin)


def OriginCheck(inner: Any) -> Any:  # noqa: N802
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(inner, allowed)
