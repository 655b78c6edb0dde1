"""End to end: real ASGI server, real Celery worker (and beat), simulated Ollama nodes,
driven over HTTP with a JWT like a user would."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from coordinator.models import Task, TaskAttempt
from hive_project.bootstrap import ensure_setup
from tests.processes import Proc, simulator, start_beat, start_web, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def web(actors: Any) -> Iterator[str]:
    proc, url = start_web()
    yield url
    proc.stop()


def login(url: str, username: str, password: str) -> httpx.Client:
    tokens = httpx.post(f"{url}/api/auth/token/", json={"username": username, "password": password}).json()
    return httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tokens['access']}"}, timeout=10)


def wait_status(client: httpx.Client, task_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/tasks/{task_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} still {body.get('status')} after {timeout}s: {body}")


def register(admin: httpx.Client, url: str, agent_id: str, **extra: Any) -> dict[str, Any]:
    response = admin.post("/api/agents", json={"agent_id": agent_id, "name": agent_id.title(), "endpoint": url,
                                               "model": "llama3.2:3b", "max_concurrency": 2, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_task_runs_to_completion_and_a_running_task_can_be_cancelled(web: str) -> None:
    worker = start_worker()
    try:
        with simulator(tps=40, name="oak") as node:
            admin = login(web, "alice", "pw-alice")
            agent = register(admin, node, "oak")
            assert agent["status"] == "online" and "llama3.2:3b" in agent["models_available"]

            dev = login(web, "dev", "pw-dev")
            created = dev.post("/api/tasks", json={"title": "Hello", "prompt": "Say hello", "priority": 5,
                                                   "options": {"num_predict": 12, "temperature": 0}})
            assert created.status_code == 201, created.text
            done = wait_status(dev, created.json()["id"], {"completed", "failed"}, 30)
            assert done["status"] == "completed", done
            assert done["assigned_agent"]["agent_id"] == "oak"
            assert done["attempts"] == 1
            assert len(done["result"].split()) >= 6
            assert done["timings"]["eval_count"] == 12
            assert done["timings"]["tokens_per_second"] > 0
            assert done["timings"]["load_duration"] >= 0

            long = dev.post("/api/tasks", json={"title": "Long", "prompt": "Write a book",
                                                "options": {"num_predict": 2000}}).json()
            wait_status(dev, long["id"], {"running"}, 20)
            time.sleep(0.5)
            disconnects_before = httpx.get(f"{node}/_sim/stats").json()["disconnects"]
            started = time.monotonic()
            assert dev.delete(f"/api/tasks/{long['id']}").status_code in (200, 202)
            cancelled = wait_status(dev, long["id"], {"cancelled", "completed", "failed"}, 5)
            assert cancelled["status"] == "cancelled"
            assert time.monotonic() - started < 2.0
            assert cancelled["result"], "the partial output is kept"
            deadline = time.monotonic() + 2
            while httpx.get(f"{node}/_sim/stats").json()["disconnects"] <= disconnects_before:
                assert time.monotonic() < deadline, "the Ollama stream was not closed"
                time.sleep(0.05)
            assert httpx.get(f"{node}/_sim/stats").json()["active"] == 0
    finally:
        worker.stop()


def test_a_task_interrupted_by_a_killed_worker_completes_after_restart_once(web: str) -> None:
    ensure_setup()  # periodic jobs for beat: the reconciler returns expired leases
    beat = start_beat()
    worker: Proc | None = start_worker("first")
    try:
        with simulator(tps=25, name="elm") as node:
            admin = login(web, "alice", "pw-alice")
            register(admin, node, "elm")
            dev = login(web, "dev", "pw-dev")
            task = dev.post("/api/tasks", json={"title": "Survive", "prompt": "keep going",
                                                "options": {"num_predict": 100}}).json()
            wait_status(dev, task["id"], {"running"}, 20)
            time.sleep(0.5)
            assert worker is not None
            worker.kill()  # SIGKILL to the worker and its pool children: nothing gets to clean up
            worker = start_worker("second")
            done = wait_status(dev, task["id"], {"completed", "failed"}, 40)
            assert done["status"] == "completed", done
            assert done["timings"]["eval_count"] == 100
            outcomes = list(TaskAttempt.objects.filter(task_id=task["id"]).order_by("number")
                            .values_list("outcome", flat=True))
            assert outcomes.count(TaskAttempt.Outcome.SUCCEEDED) == 1
            assert TaskAttempt.Outcome.LOST in outcomes
            assert Task.objects.get(pk=task["id"]).status == Task.Status.COMPLETED
    finally:
        if worker is not None:
            worker.stop()
        beat.stop()
