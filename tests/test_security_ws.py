"""/ws/events sockets follow their credentials, are capped per user and survive bad
frames: a real ASGI server re-checking every 0.2 s, real Redis, real WebSocket clients."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack
from datetime import timedelta
from typing import Any

import pytest
import websockets
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.models import Session
from django.test import Client
from django.utils import timezone
from rest_framework_simplejwt.tokens import AccessToken

from coordinator import events
from hive_project import ws_auth
from hive_project.models import ApiToken
from hive_project.redis_client import get_redis
from tests.processes import start_web
from tests.test_events_ws import jwt_for, publish_now, recv, recv_type, subscribe, ws_url

pytestmark = [pytest.mark.django_db(transaction=True)]

RECHECK = 0.2


@pytest.fixture
def web(actors: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("HIVE_WS_RECHECK_SECONDS", str(RECHECK))
    proc, url = start_web()
    yield url
    proc.stop()


async def pong(ws: Any) -> None:
    await ws.send(json.dumps({"id": "p", "type": "ping"}))
    assert (await recv_type(ws, "pong"))["id"] == "p"


async def closed_with(ws: Any, timeout: float = 10.0) -> tuple[dict[str, Any], int]:
    """The error frame that announces the close, and the close code."""
    error = await recv_type(ws, "error", timeout)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        while True:
            await recv(ws, timeout)
    return error, closed.value.rcvd.code


def connections_of(user: Any) -> int:
    return get_redis().zcard(ws_auth.CONNECTIONS_KEY.format(user_id=user.pk))


def wait_for_connections(user: Any, count: int, timeout: float = 5.0) -> None:
    """The server releases a place just after the client sees the close."""
    deadline = time.monotonic() + timeout
    while connections_of(user) != count:
        assert time.monotonic() < deadline, f"{connections_of(user)} places taken, not {count}"
        time.sleep(0.05)


def expire_token(token: ApiToken) -> None:
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


@pytest.mark.e2e
@pytest.mark.parametrize("end", [
    lambda token: ApiToken.objects.filter(pk=token.pk).update(revoked=True),
    lambda token: ApiToken.objects.filter(pk=token.pk).delete(),
    expire_token,
], ids=["revoked", "deleted", "expired"])
def test_a_socket_is_closed_with_4401_when_its_api_token_ends(web, actors, end):
    token, key = ApiToken.issue(actors.viewer, "ws")

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, key)) as ws:
            await subscribe(ws, "task.*")
            await pong(ws)
            started = time.monotonic()
            await sync_to_async(end)(token)
            error, code = await closed_with(ws)
            assert code == 4401 and error["data"]["code"] == 4401
            assert "revoked" in error["data"]["message"]
            assert time.monotonic() - started < 5

    run()
    wait_for_connections(actors.viewer, 0)


@pytest.mark.e2e
def test_deactivating_the_user_closes_an_api_token_socket_with_4401(web, actors):
    key = ApiToken.issue(actors.developer, "ws")[1]

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, key)) as ws:
            await pong(ws)
            await sync_to_async(User.objects.filter(pk=actors.developer.pk).update)(is_active=False)
            assert (await closed_with(ws))[1] == 4401

    run()


@pytest.mark.e2e
@pytest.mark.parametrize("end", ["deactivated", "deleted"])
def test_a_jwt_socket_is_closed_with_4401_when_its_user_is_deactivated_or_deleted(web, actors, end):
    jwt = jwt_for(web, "vic", "pw-vic")

    def end_user() -> None:
        users = User.objects.filter(pk=actors.viewer.pk)
        users.update(is_active=False) if end == "deactivated" else users.delete()

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, jwt)) as ws:
            await pong(ws)
            await sync_to_async(end_user)()
            assert (await closed_with(ws))[1] == 4401

    run()


@pytest.mark.e2e
def test_a_jwt_socket_is_closed_with_4401_when_the_jwt_expires(web, actors):
    jwt = AccessToken.for_user(actors.viewer)
    jwt.set_exp(lifetime=timedelta(seconds=2))

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, str(jwt))) as ws:
            await pong(ws)
            assert (await closed_with(ws))[1] == 4401

    run()


@pytest.mark.e2e
def test_a_session_socket_is_closed_with_4401_when_the_user_logs_out(web, actors):
    browser = Client()
    assert browser.login(username="vic", password="pw-vic")
    cookie = f"{settings.SESSION_COOKIE_NAME}={browser.cookies[settings.SESSION_COOKIE_NAME].value}"

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, None), additional_headers={"Cookie": cookie}) as ws:
            await subscribe(ws, "agent.*")
            await pong(ws)
            await sync_to_async(browser.logout)()
            assert (await closed_with(ws))[1] == 4401

    run()
    assert not Session.objects.exists()


@pytest.mark.e2e
def test_removing_the_users_role_closes_the_socket_with_4403(web, actors):
    key = ApiToken.issue(actors.viewer, "ws")[1]

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, key)) as ws:
            await subscribe(ws, "task.*")
            await sync_to_async(actors.viewer.groups.clear)()
            error, code = await closed_with(ws)
            assert code == 4403 and "no longer see any events" in error["data"]["message"]

    run()


@pytest.mark.e2e
def test_losing_one_permission_drops_that_subscription_and_keeps_the_socket(web, actors):
    user = User.objects.create_user("tess")
    view_task = Permission.objects.get(content_type__app_label="coordinator", codename="view_task")
    user.user_permissions.add(view_task, Permission.objects.get(content_type__app_label="agents", codename="view_agent"))
    key = ApiToken.issue(user, "ws")[1]

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, key)) as ws:
            await subscribe(ws, "task.*")
            await subscribe(ws, "agent.*")
            await sync_to_async(user.user_permissions.remove)(view_task)
            error = await recv_type(ws, "error", 10)
            assert error["data"] == {"message": "you may no longer see task.*; unsubscribed", "topic": "task.*",
                                     "code": 403}
            await asyncio.to_thread(publish_now, "task.created", ["task.l1"], n=1)
            await asyncio.to_thread(publish_now, "agent.status_changed", ["agent.l1"], n=2)
            assert (await recv_type(ws, "data"))["topic"] == "agent.*", "no task event after the drop"
            await ws.send(json.dumps({"id": "s", "type": "subscribe", "topic": "task.*"}))
            assert "may not" in (await recv_type(ws, "error"))["data"]["message"]
            await pong(ws)

    run()


@pytest.mark.e2e
def test_the_21st_socket_of_a_user_gets_4429_another_user_connects_and_closing_one_frees_a_place(web, actors):
    limit = settings.HIVE_WS_MAX_CONNECTIONS_PER_USER
    assert limit == 20
    dev_key, viewer_key = ApiToken.issue(actors.developer, "ws")[1], ApiToken.issue(actors.viewer, "ws")[1]

    @async_to_sync
    async def run() -> None:
        async with AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(websockets.connect(ws_url(web, dev_key))) for _ in range(limit)]
            for ws in sockets:
                await pong(ws)
            async with websockets.connect(ws_url(web, dev_key)) as extra:
                error, code = await closed_with(extra)
                assert code == 4429 and "at most 20" in error["data"]["message"]
            async with websockets.connect(ws_url(web, viewer_key)) as other:
                await pong(other)
            await sockets.pop().close()
            await asyncio.to_thread(wait_for_connections, actors.developer, limit - 1)
            async with websockets.connect(ws_url(web, dev_key)) as again:
                await pong(again)
                await asyncio.sleep(3 * RECHECK)  # still open after a few re-checks
                await pong(again)

    run()
    wait_for_connections(actors.developer, 0)


@pytest.mark.e2e
def test_entries_left_by_a_crashed_process_do_not_count_once_expired(web, actors):
    """Entries of another (live) process count; those it left behind when it crashed
    stop counting when they expire."""
    key = ApiToken.issue(actors.developer, "ws")[1]
    now = time.time()
    get_redis().zadd(ws_auth.CONNECTIONS_KEY.format(user_id=actors.developer.pk),
                     {**{f"crashed-{n}": now - 1 for n in range(20)}, **{f"elsewhere-{n}": now + 60 for n in range(19)}})

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, key)) as twentieth:
            await pong(twentieth)
            async with websockets.connect(ws_url(web, key)) as extra:
                assert (await closed_with(extra))[1] == 4429

    run()
    wait_for_connections(actors.developer, 19)  # the expired entries removed, the live ones kept


@pytest.mark.e2e
@pytest.mark.parametrize(("raw", "problem"), [
    ("[" * 100_000, "message too large"),
    ("[" * 30_000 + "]" * 30_000, "nested deeper than"),
    ('{"type": "ping", "data": NaN}', "NaN is not valid JSON"),
    ('{"type": "ping", "data": [-Infinity]}', "-Infinity is not valid JSON"),
], ids=["100000-deep", "30000-deep", "nan", "infinity"])
def test_a_deep_or_non_finite_frame_gets_an_error_and_the_socket_stays(web, actors, raw, problem):
    key = ApiToken.issue(actors.developer, "ws")[1]

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, key)) as ws:
            await ws.send(raw)
            error = await recv(ws)
            assert error["type"] == "error" and problem in error["data"]["message"]
            await pong(ws)

    run()


def test_closing_the_socket_ends_its_recheck_task(actors):
    from asgiref.testing import ApplicationCommunicator  # channels.testing needs daphne

    from hive_project.asgi import application

    key = ApiToken.issue(actors.developer, "ws")[1]

    def rechecks() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t.get_name().startswith("ws-recheck:") and not t.done()]

    @async_to_sync
    async def run() -> None:
        socket = ApplicationCommunicator(application, {
            "type": "websocket", "path": "/ws/events", "query_string": f"token={key}".encode(), "headers": [],
            "subprotocols": []})
        await socket.send_input({"type": "websocket.connect"})
        assert (await socket.receive_output(5))["type"] == "websocket.accept"
        await socket.send_input({"type": "websocket.receive", "text": json.dumps({"type": "ping"})})
        assert json.loads((await socket.receive_output(5))["text"])["type"] == "pong"
        assert len(rechecks()) == 1
        await socket.send_input({"type": "websocket.disconnect", "code": 1000})
        await socket.wait(5)
        assert rechecks() == []

    run()
    assert connections_of(actors.developer) == 0


# The re-check itself, called directly: what it refuses, and what it costs.

def test_a_recheck_of_an_api_token_is_one_query(actors, django_assert_num_queries):
    token = ApiToken.issue(actors.viewer, "ws")[0]
    credential = ws_auth.Credential("api_token", actors.viewer.pk, token_id=token.pk)
    with django_assert_num_queries(1):
        grants = ws_auth.recheck(credential, events.TOPIC_PERMISSIONS.values())
    assert grants is not None and grants.has_perm("coordinator.view_task") and not grants.is_superuser
    assert not grants.has_perm("coordinator.add_task"), "only the permissions asked about are loaded"
    expire_token(token)
    assert ws_auth.recheck(credential, events.TOPIC_PERMISSIONS.values()) is None


def test_a_recheck_of_a_jwt_is_one_query_and_refuses_an_expired_one(actors, django_assert_num_queries):
    credential = ws_auth.Credential("jwt", actors.developer.pk, expires_at=time.time() + 60)
    with django_assert_num_queries(1):
        assert ws_auth.recheck(credential, events.TOPIC_PERMISSIONS.values()) is not None
    with django_assert_num_queries(0):
        expired = ws_auth.Credential("jwt", actors.developer.pk, expires_at=time.time() - 1)
        assert ws_auth.recheck(expired, events.TOPIC_PERMISSIONS.values()) is None


def test_a_recheck_of_a_session_is_two_queries_and_a_password_change_ends_it(actors, django_assert_num_queries):
    browser = Client()
    assert browser.login(username="alice", password="pw-alice")
    credential = ws_auth.Credential("session", actors.admin.pk,
                                    session_key=browser.cookies[settings.SESSION_COOKIE_NAME].value)
    with django_assert_num_queries(2):
        grants = ws_auth.recheck(credential, events.TOPIC_PERMISSIONS.values())
    assert grants is not None and grants.sees_anything
    actors.admin.set_password("new-pw")
    actors.admin.save()
    assert ws_auth.recheck(credential, events.TOPIC_PERMISSIONS.values()) is None


def test_a_refresh_that_lands_after_the_close_does_not_bring_the_place_back(actors):
    """The re-check's refresh runs in a thread the close cannot stop; it may finish last."""
    assert ws_auth.claim_connection(actors.developer.pk, "chan-1")
    ws_auth.release_connection(actors.developer.pk, "chan-1")
    ws_auth.refresh_connection(actors.developer.pk, "chan-1")
    assert connections_of(actors.developer) == 0
