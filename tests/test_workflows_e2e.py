"""Workflows end to end: a real ASGI server, a Celery worker for hive.workflows, one for
the execution queues, and a simulated Ollama node. A workflow's LLM node runs as a
Hive task on the cluster; a WebSocket subscriber follows the execution."""
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

from coordinator.models import Task
from hive_project import queues
from tests.processes import Proc, simulator, start_web, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def llm_workflow(num_predict: int) -> dict[str, Any]:
    return {
        "nodes": [
            {"name": "Start", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0], "parameters": {}},
            {"name": "Topic", "type": "n8n-nodes-base.set", "typeVersion": 3.4, "position": [200, 0], "parameters": {
                "assignments": {"assignments": [{"id": "t", "name": "topic", "value": "={{ $json.subject || 'bees' }}",
                                                 "type": "string"}]}, "options": {}}},
            {"name": "Explain", "type": "@n8n/n8n-nodes-langchain.chainLlm", "typeVersion": 1.5, "position": [400, 0],
             "parameters": {"promptType": "define", "text": "=Explain {{ $json.topic }} in one paragraph."}},
            {"name": "Ollama", "type": "@n8n/n8n-nodes-langchain.lmChatOllama", "typeVersion": 1, "position": [400, 200],
             "parameters": {"model": "llama3.2:3b", "options": {"numPredict": num_predict, "temperature": 0}}},
        ],
        "connections": {
            "Start": {"main": [[{"node": "Topic", "type": "main", "index": 0}]]},
            "Topic": {"main": [[{"node": "Explain", "type": "main", "index": 0}]]},
            "Ollama": {"ai_languageModel": [[{"node": "Explain", "type": "ai_languageModel", "index": 0}]]},
        },
        "settings": {"executionOrder": "v1"},
    }


@pytest.fixture
def web(actors: Any) -> Iterator[str]:
    proc, url = start_web()
    yield url
    proc.stop()


@pytest.fixture
def workers(web: str) -> Iterator[list[Proc]]:
    procs = [start_worker("flows", (queues.WORKFLOWS,), concurrency=2),
             start_worker("exec", (queues.HIGH, queues.MEDIUM, queues.LOW, queues.CONTROL), concurrency=2)]
    yield procs
    for proc in procs:
        proc.stop()


def jwt(web: str, username: str, password: str) -> str:
    return httpx.post(f"{web}/api/auth/token/", json={"username": username, "password": password}).json()["access"]


def client(web: str, username: str, password: str) -> httpx.Client:
    return httpx.Client(base_url=web, headers={"Authorization": f"Bearer {jwt(web, username, password)}"}, timeout=15)


def register(web: str, node: str, agent_id: str) -> None:
    with client(web, "alice", "pw-alice") as admin:
        response = admin.post("/api/agents", json={"agent_id": agent_id, "name": agent_id.title(), "endpoint": node,
                                                    "model": "llama3.2:3b", "max_concurrency": 2})
        assert response.status_code == 201, response.text


def wait_execution(api: httpx.Client, execution_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get(f"/api/executions/{execution_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.2)
    raise AssertionError(f"execution {execution_id} still {body.get('status')} after {timeout}s: {body}")


async def recv(ws: Any, timeout: float = 30.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_an_llm_workflow_runs_on_the_cluster_and_streams_its_events(web: str, workers: list[Proc]) -> None:
    with simulator(tps=60, name="pine") as node:
        register(web, node, "pine")
        dev = client(web, "dev", "pw-dev")
        created = dev.post("/api/workflows", json={"name": "Explainer", "n8n_data": llm_workflow(24)})
        assert created.status_code == 201, created.text
        workflow = created.json()
        token = jwt(web, "dev", "pw-dev")

        @async_to_sync
        async def follow() -> tuple[str, list[dict[str, Any]]]:
            async with websockets.connect(web.replace("http://", "ws://") + f"/ws/events?token={token}") as ws:
                await ws.send(json.dumps({"id": "s", "type": "subscribe", "topic": "execution.*"}))
                ack = await recv(ws)
                assert ack["type"] == "subscribe", ack
                async with httpx.AsyncClient(base_url=web, headers={"Authorization": f"Bearer {token}"}, timeout=15) as api:
                    started = await api.post(f"/api/workflows/{workflow['slug']}/execute", json={"input": {"subject": "ants"}})
                assert started.status_code == 202, started.text
                execution_id = started.json()["id"]
                events: list[dict[str, Any]] = []
                while not events or events[-1]["type"] != "workflow.execution_completed":
                    message = await recv(ws, 60)
                    assert message["type"] == "data", message
                    events.append(message["data"])
                return execution_id, events

        execution_id, events = follow()
        assert all(e["data"]["execution_id"] == execution_id and e["data"]["workflow_id"] == workflow["id"]
                   and e["correlation_id"] == execution_id for e in events)
        types = [e["type"] for e in events]
        assert types == ["workflow.execution_started"] + ["workflow.node_completed"] * 3 + ["workflow.execution_completed"]
        nodes = [e["data"]["data"] for e in events[1:4]]
        assert [n["node"] for n in nodes] == ["Start", "Topic", "Explain"]
        assert all(n["node_status"] == "success" and n["output_items"] == [1] for n in nodes)
        completed = events[-1]["data"]["data"]
        assert completed["status"] == "completed" and completed["output_items"] == 1

        execution = wait_execution(dev, execution_id, {"completed", "failed", "cancelled"}, 10)
        assert execution["status"] == "completed", execution
        text = execution["output_data"][0]["json"]["text"]
        assert len(text.split()) >= 6 and completed["output"][0]["json"]["text"] == text
        runs = {r["node_name"]: r for r in execution["node_runs"]}
        assert list(runs) == ["Start", "Topic", "Explain"]
        assert runs["Topic"]["output_items"][0][0]["json"] == {"topic": "ants"}
        task = Task.objects.get(pk=runs["Explain"]["task"])
        assert task.status == Task.Status.COMPLETED and "ants" in task.prompt
        assert task.result.strip() == text and task.options.get("num_predict") == 24
        assert execution["worker"].startswith("flows@")


def test_cancelling_a_running_execution_cancels_its_hive_task(web: str, workers: list[Proc]) -> None:
    with simulator(tps=20, name="fir") as node:
        register(web, node, "fir")
        dev = client(web, "dev", "pw-dev")
        workflow = dev.post("/api/workflows", json={"name": "Long story", "n8n_data": llm_workflow(3000)}).json()
        execution_id = dev.post(f"/api/workflows/{workflow['id']}/execute", json={}).json()["id"]
        deadline = time.monotonic() + 30
        task_id = None
        while time.monotonic() < deadline and task_id is None:
            runs = dev.get(f"/api/executions/{execution_id}").json()["node_runs"]
            task_id = next((r["task"] for r in runs if r["node_name"] == "Explain" and r["task"]), None)
            time.sleep(0.2)
        assert task_id, "the LLM node never created its task"
        while Task.objects.get(pk=task_id).status != Task.Status.RUNNING:
            assert time.monotonic() < deadline, "the task never started"
            time.sleep(0.1)
        response = dev.post(f"/api/executions/{execution_id}/cancel")
        assert response.status_code == 202, response.text
        execution = wait_execution(dev, execution_id, {"completed", "failed", "cancelled"}, 15)
        assert execution["status"] == "cancelled", execution
        explain = next(r for r in execution["node_runs"] if r["node_name"] == "Explain")
        assert explain["status"] in ("cancelled", "error")
        deadline = time.monotonic() + 10
        while Task.objects.get(pk=task_id).status != Task.Status.CANCELLED:
            assert time.monotonic() < deadline, f"task is {Task.objects.get(pk=task_id).status}"
            time.sleep(0.1)
        assert dev.post(f"/api/executions/{execution_id}/cancel").status_code == 409
