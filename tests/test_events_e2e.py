"""Events end to end: a real ASGI server, a real Celery worker and a simulated Ollama
node; a WebSocket subscriber follows a task it submitted from creation to result."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from asgiref.sync import async_to_sync

from tests.processes import Proc, simulator, start_web, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

NUM_PREDICT = 40


@pytest.fixture
def web(actors: Any) -> Iterator[str]:
    proc, url = start_web()
    yield url
    proc.stop()


@pytest.fixture
def worker(web: str) -> Iterator[Proc]:
    proc = start_worker("events")
    yield proc
    proc.stop()


def jwt(web: str, username: str, password: str) -> str:
    return httpx.post(f"{web}/api/auth/token/", json={"username": username, "password": password}).json()["access"]


def register(web: str, node: str, agent_id: str) -> None:
    admin = {"Authorization": f"Bearer {jwt(web, 'alice', 'pw-alice')}"}
    response = httpx.post(f"{web}/api/agents", headers=admin, timeout=10, json={
        "agent_id": agent_id, "name": agent_id.title(), "endpoint": node, "model": "llama3.2:3b",
        "max_concurrency": 2})
    assert response.status_code == 201, response.text


def ws_url(web: str, token: str) -> str:
    return web.replace("http://", "ws://") + f"/ws/events?token={token}"


async def recv(ws: Any, timeout: float = 20.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def subscribe(ws: Any, topic: str, last_seq: int | None = None) -> int:
    message: dict[str, Any] = {"id": "s", "type": "subscribe", "topic": topic}
    if last_seq is not None:
        message["last_seq"] = last_seq
    await ws.send(json.dumps(message))
    ack = await recv(ws)
    assert ack["type"] == "subscribe" and ack["topic"] == topic, ack
    return ack["data"]["seq"]


async def submit(web: str, token: str, title: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=web, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        response = await client.post("/api/tasks", json={"title": title, "prompt": "Explain event sourcing",
                                                         "priority": 5,
                                                         "options": {"num_predict": NUM_PREDICT, "temperature": 0}})
        assert response.status_code == 201, response.text
        return response.json()


async def fetch(web: str, token: str, task_id: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=web, headers={"Authorization": f"Bearer {token}"}, timeout=10) as client:
        return (await client.get(f"/api/tasks/{task_id}")).json()


def check_story(messages: list[dict[str, Any]], start_seq: int, task_id: str) -> dict[str, Any]:
    """The events of one task, in order, contiguous and complete; returns task.completed's data."""
    seqs = [m["seq"] for m in messages]
    assert seqs == list(range(start_seq + 1, start_seq + 1 + len(messages))), f"not contiguous: {seqs}"
    ids = [m["data"]["id"] for m in messages]
    assert len(set(ids)) == len(ids), "an event arrived twice"
    events = [m["data"] for m in messages]
    for event in events:
        assert set(event) >= {"id", "type", "source", "timestamp", "data", "correlation_id"}, event
        assert event["data"]["task_id"] == task_id and event["correlation_id"] == task_id
    types = [e["type"] for e in events]
    assert types[:3] == ["task.created", "task.assigned", "task.started"], types
    assert types[-1] == "task.completed", types
    progress = events[3:-1]
    assert progress and all(e["type"] == "task.progress" for e in progress), types
    offset = 0
    for event in progress:
        assert event["data"]["offset"] == offset, "each delta starts where the previous one ended"
        offset += len(event["data"]["delta"])
    completed = events[-1]["data"]
    assert "".join(e["data"]["delta"] for e in progress) == completed["result"]
    assert completed["status"] == "completed" and completed["agent_id"] == "birch"
    assert completed["timings"]["eval_count"] == NUM_PREDICT
    assert completed["timings"]["tokens_per_second"] > 0
    return completed


def test_a_subscriber_sees_a_task_from_creation_to_its_streamed_result(web: str, worker: Proc) -> None:
    """Then a second task, during which the subscriber drops off mid-stream and resumes
    with last_seq: it still gets every event exactly once (one cluster for both, to
    save starting the processes twice)."""
    with simulator(tps=40, name="birch") as node:
        register(web, node, "birch")
        token = jwt(web, "dev", "pw-dev")

        @async_to_sync
        async def follow_one_task() -> int:
            async with websockets.connect(ws_url(web, token)) as ws:
                start = await subscribe(ws, "task.*")
                task = await submit(web, token, "Follow me")
                messages: list[dict[str, Any]] = []
                while not messages or messages[-1]["data"]["type"] not in ("task.completed", "task.failed"):
                    message = await recv(ws)
                    assert message["type"] == "data", message
                    assert message["topic"] == "task.*"
                    messages.append(message)
                completed = check_story(messages, start, task["id"])
                assert len(messages) >= 5, "at least one progress event between start and completion"
                stored = await fetch(web, token, task["id"])
                assert stored["status"] == "completed" and stored["result"] == completed["result"]
                # Nothing else follows for this task.
                await ws.send(json.dumps({"id": "p", "type": "ping"}))
                assert (await recv(ws, 5))["type"] == "pong"
                return messages[-1]["seq"]

        @async_to_sync
        async def drop_and_resume(start: int) -> None:
            messages: list[dict[str, Any]] = []
            async with websockets.connect(ws_url(web, token)) as ws:
                assert await subscribe(ws, "task.*", last_seq=start) == start
                task = await submit(web, token, "Resume me")
                while len(messages) < 5:  # created, assigned, started and two pieces of output
                    messages.append(await recv(ws))
            await asyncio.sleep(0.4)  # offline while the task keeps streaming
            async with websockets.connect(ws_url(web, token)) as ws:
                await subscribe(ws, "task.*", last_seq=messages[-1]["seq"])
                deadline = time.monotonic() + 30
                while messages[-1]["data"]["type"] != "task.completed":
                    assert time.monotonic() < deadline, "the task did not complete"
                    message = await recv(ws)
                    assert message["type"] == "data", message
                    messages.append(message)
            check_story(messages, start, task["id"])

        drop_and_resume(follow_one_task())
