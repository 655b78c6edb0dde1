"""The /ws/events protocol against a real ASGI server with a real WebSocket client."""
from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from asgiref.sync import async_to_sync
from django.db import transaction

from coordinator import events
from hive_project.models import ApiToken
from tests.processes import start_web

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(actors: Any) -> Iterator[str]:
    proc, url = start_web()
    yield url
    proc.stop()


def ws_url(web: str, token: str | None) -> str:
    base = web.replace("http://", "ws://") + "/ws/events"
    return f"{base}?token={token}" if token else base


async def recv(ws: Any, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_type(ws: Any, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    while True:
        message = await recv(ws, timeout)
        if message["type"] == kind:
            return message


async def subscribe(ws: Any, topic: str, **extra: Any) -> int:
    """Subscribe and wait for the acknowledgement; returns the topic's current seq."""
    await ws.send(json.dumps({"type": "subscribe", "topic": topic, **extra}))
    return (await recv_type(ws, "subscribe"))["data"]["seq"]


def publish_now(event_type: str, topics: list[str], **data: Any) -> None:
    events.publish(event_type, "test", data, topics)  # outside a transaction: delivered at once
    events.flush()


def token_for(user: Any) -> str:
    return ApiToken.issue(user, "ws")[1]


def jwt_for(web: str, username: str, password: str) -> str:
    return httpx.post(f"{web}/api/auth/token/", json={"username": username, "password": password}).json()["access"]


def test_subscribe_receive_unsubscribe_and_ping(web, actors):
    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, jwt_for(web, "vic", "pw-vic"))) as ws:
            await ws.send(json.dumps({"id": "p1", "type": "ping"}))
            pong = await recv(ws)
            assert pong["type"] == "pong" and pong["id"] == "p1"
            await ws.send(json.dumps({"id": "s1", "type": "subscribe", "topic": "agent.acacia"}))
            ack = await recv(ws)
            assert ack["type"] == "subscribe" and ack["id"] == "s1" and ack["data"]["subscribed"] is True
            await asyncio.to_thread(publish_now, "agent.status_changed", ["agent.acacia"], status="busy")
            message = await recv(ws)
            assert message["type"] == "data" and message["topic"] == "agent.acacia"
            assert message["data"]["type"] == "agent.status_changed"
            assert message["data"]["data"] == {"status": "busy"}
            assert set(message["data"]) >= {"id", "type", "source", "timestamp", "data", "correlation_id"}
            assert message["seq"] == ack["data"]["seq"] + 1
            await ws.send(json.dumps({"id": "u1", "type": "unsubscribe", "topic": "agent.acacia"}))
            assert (await recv(ws))["type"] == "unsubscribe"
            await asyncio.to_thread(publish_now, "agent.status_changed", ["agent.acacia"], status="online")
            await ws.send(json.dumps({"id": "p2", "type": "ping"}))
            assert (await recv(ws))["id"] == "p2", "no event after unsubscribing"

    run()


def test_a_wildcard_subscription_gets_every_topic_of_its_family(web, actors):
    token = token_for(actors.viewer)

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, token)) as ws:
            await subscribe(ws, "task.*")
            await asyncio.to_thread(publish_now, "task.created", ["task.a1"], n=1)
            await asyncio.to_thread(publish_now, "task.created", ["task.b2"], n=2)
            first, second = await recv_type(ws, "data"), await recv_type(ws, "data")
            assert first["topic"] == second["topic"] == "task.*"
            assert [first["data"]["data"]["n"], second["data"]["data"]["n"]] == [1, 2]
            assert second["seq"] == first["seq"] + 1

    run()


def test_unauthenticated_connections_are_closed_with_4401(web, actors):
    @async_to_sync
    async def run() -> None:
        for token in (None, "not-a-token", "hive_wrong"):
            async with websockets.connect(ws_url(web, token)) as ws:
                message = await recv(ws)
                assert message["type"] == "error" and "Authentication required" in message["data"]["message"]
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.rcvd.code == 4401

    run()


@pytest.mark.parametrize("direct", [True, False], ids=["published-by-the-append-script", "sender-thread"])
def test_live_frames_are_the_same_whichever_way_events_are_published(web, actors, monkeypatch, direct):
    """With channels_redis' pub/sub layer on Hive's Redis the append script publishes
    the live message itself; any other layer gets group_send from the sender thread.
    Both must give subscribers the frame that catch-up would build from the log."""
    if not direct:
        monkeypatch.setattr(events, "_direct_channel_prefix", lambda: None)
    else:
        assert events._direct_channel_prefix() is not None, "the default settings publish from the script"
    token = token_for(actors.viewer)

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, token)) as ws:
            start = await subscribe(ws, "task.*")
            for n in range(3):
                await asyncio.to_thread(publish_now, "task.progress", [f"task.f{n}"], n=n, text="é \u2028 \"q\"")
            raw = [await asyncio.wait_for(ws.recv(), 5) for _ in range(3)]
            frames = [json.loads(r) for r in raw]
            assert [f["seq"] for f in frames] == [start + 1, start + 2, start + 3]
            assert [f["data"]["data"]["n"] for f in frames] == [0, 1, 2]
            stored = await asyncio.to_thread(events.events_after, "task.*", start)
            rebuilt = [events.data_frame("task.*", e.pop("seq"), json.dumps(e, separators=(",", ":"))) for e in stored]
            assert [json.loads(r) for r in rebuilt] == frames
            assert all(f["id"] == f["data"]["id"] and f["timestamp"] == f["data"]["timestamp"] for f in frames)

    run()


def test_a_forbidden_or_invalid_topic_gets_an_error_and_the_connection_stays(web, actors):
    token = token_for(actors.outsider)

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, token)) as ws:
            await ws.send(json.dumps({"id": "s1", "type": "subscribe", "topic": "task.*"}))
            error = await recv(ws)
            assert error["type"] == "error" and error["id"] == "s1" and "may not" in error["data"]["message"]
            await ws.send(json.dumps({"id": "s2", "type": "subscribe", "topic": "bogus topic"}))
            assert "invalid topic" in (await recv(ws))["data"]["message"]
            await ws.send(json.dumps({"id": "p", "type": "ping"}))
            assert (await recv(ws))["type"] == "pong"

    run()


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', '{"type": "dance"}',
                                 '{"type": "subscribe", "topic": "task.x", "last_seq": -3}',
                                 '{"type": "unsubscribe", "topic": "task.never"}'])
def test_malformed_messages_get_an_error_never_a_dropped_connection(web, actors, raw):
    token = token_for(actors.developer)

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, token)) as ws:
            await ws.send(raw)
            assert (await recv(ws))["type"] == "error"
            await ws.send(b"\x00\x01")
            assert (await recv(ws))["type"] == "error"
            await ws.send(json.dumps({"type": "ping"}))
            assert (await recv(ws))["type"] == "pong"

    run()


def test_a_reconnecting_subscriber_gets_what_it_missed_then_live_events_without_duplicates(web, actors):
    token = token_for(actors.developer)

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, token)) as ws:
            await subscribe(ws, "task.r1")
            await asyncio.to_thread(publish_now, "task.progress", ["task.r1"], n=1)
            seen = (await recv_type(ws, "data"))["seq"]
        for n in (2, 3, 4):  # while disconnected
            await asyncio.to_thread(publish_now, "task.progress", ["task.r1"], n=n)
        async with websockets.connect(ws_url(web, token)) as ws:
            await subscribe(ws, "task.r1", last_seq=seen)
            replayed = [(await recv_type(ws, "data"))["data"]["data"]["n"] for _ in range(3)]
            assert replayed == [2, 3, 4]
            await asyncio.to_thread(publish_now, "task.progress", ["task.r1"], n=5)
            live = await recv_type(ws, "data")
            assert live["data"]["data"]["n"] == 5 and live["seq"] == seen + 4

    run()


def test_a_gap_in_live_delivery_is_filled_from_the_log(web, actors):
    """Events stored but never sent over the channel layer (as when it drops them)
    reach the subscriber when the next live event shows the gap."""

    token = token_for(actors.developer)

    @async_to_sync
    async def run() -> None:
        async with websockets.connect(ws_url(web, token)) as ws:
            start = await subscribe(ws, "task.g1")
            # Simulate a dropped message: append to the log without a channel-layer send.
            event = events.HiveEvent(type="task.progress", source="test", data={"n": "dropped"})
            await asyncio.to_thread(events.append, ["task.g1"], event.to_json())
            await asyncio.to_thread(publish_now, "task.progress", ["task.g1"], n="live")
            got = [await recv_type(ws, "data"), await recv_type(ws, "data")]
            assert [m["data"]["data"]["n"] for m in got] == ["dropped", "live"]
            assert [m["seq"] for m in got] == [start + 1, start + 2]

    run()


def test_rest_lists_events_after_a_sequence_number(actors):
    client = actors.client(actors.developer)
    for n in range(3):
        publish_now("task.progress", ["task.rest1"], n=n)
    body = client.get("/api/events", {"topic": "task.rest1", "after": 1}).json()
    assert [e["seq"] for e in body["events"]] == [2, 3]
    assert body["events"][0]["data"] == {"n": 1}
    assert client.get("/api/events", {"topic": "task.*", "after": 0}).status_code == 200
    assert client.get("/api/events", {"topic": "bad topic"}).status_code == 400
    assert actors.client(actors.outsider).get("/api/events", {"topic": "task.rest1"}).status_code == 403


def test_events_published_together_keep_their_order_and_sequence_numbers(actors):
    with transaction.atomic():
        events.publish_many([("task.assigned", "test", {"n": n}, [f"task.many{n % 2}"], None) for n in range(4)])
        assert events.current_seq("task.many0") == 0, "nothing goes out before the commit"
    assert [(e["seq"], e["data"]["n"]) for e in events.events_after("task.many0", 0)] == [(1, 0), (2, 2)]
    assert [(e["seq"], e["data"]["n"]) for e in events.events_after("task.many1", 0)] == [(1, 1), (2, 3)]
    assert [e["data"]["n"] for e in events.events_after("task.*", 0)] == [0, 1, 2, 3]

    with pytest.raises(RuntimeError), transaction.atomic():
        events.publish_many([("task.assigned", "test", {"n": 9}, ["task.many0"], None)])
        raise RuntimeError("rolled back")
    assert events.current_seq("task.many0") == 2, "a rolled-back transaction publishes nothing"
