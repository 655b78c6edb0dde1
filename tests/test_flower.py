"""Flower against the test broker: a real worker, seen through Flower's HTTP API.

Flower 2.2 serves /api/workers (from `celery inspect`, refreshed with ?refresh=1, and
alive/dead from the event stream with ?status=1), /api/queues/length (message counts
of the queues the workers consume) and /api/tasks (from task events). Flower is
started the way compose starts it: with a basic-auth login, so the API is closed
without credentials.
"""
from __future__ import annotations

import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from hive_project import queues
from tests.processes import Proc, child_env, free_port, start_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

LOGIN = ("ops", "flower-test-password")
WORKER = "flowertest"


@pytest.fixture
def worker() -> Iterator[Proc]:
    proc = start_worker(name=WORKER, concurrency=1)
    yield proc
    proc.stop()


@pytest.fixture
def flower() -> Iterator[str]:
    port = free_port()
    # Tornado parses Flower's options: --name=value only.
    proc = Proc("flower", [sys.executable, "-m", "celery", "-A", "hive_project", "flower", f"--port={port}",
                           "--address=127.0.0.1", f"--basic_auth={':'.join(LOGIN)}", "--persistent=False"], child_env())
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{url}/healthcheck", timeout=1).text.strip() == "OK"
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 60, "flower", proc.process, proc.log)
        yield url
    finally:
        proc.stop()


def poll(fetch: Callable[[], Any], accept: Callable[[Any], bool], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = fetch()
            if accept(last):
                return last
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.3)
    raise AssertionError(f"{what} within {timeout}s; last answer: {last!r}"[:3000])


def test_flower_shows_the_worker_and_the_hive_queues(worker: Proc, flower: str) -> None:
    api = httpx.Client(base_url=flower, auth=LOGIN, timeout=15)
    name = f"{WORKER}@{socket.gethostname()}"

    assert httpx.get(f"{flower}/api/workers", timeout=10).status_code == 401, "Flower's API needs the login"

    workers = poll(lambda: api.get("/api/workers", params={"refresh": "true"}).raise_for_status().json(),
                   lambda body: name in body and body[name].get("active_queues"), 60, f"{name} in /api/workers")
    consumed = {queue["name"] for queue in workers[name]["active_queues"]}
    assert consumed == set(queues.ALL_QUEUES)
    assert {"hive.health_sweep", "hive.evaluate_alerts", "hive.probe_agent"} <= set(workers[name].get("registered", []))

    # Alive according to the event stream (heartbeats), not only to `inspect`.
    poll(lambda: api.get("/api/workers", params={"status": "true"}).raise_for_status().json(),
         lambda body: body.get(name) is True, 30, f"{name} alive in /api/workers?status=true")

    lengths = api.get("/api/queues/length")
    assert lengths.status_code == 200, lengths.text
    listed = {queue["name"]: queue["messages"] for queue in lengths.json()["active_queues"]}
    assert set(queues.ALL_QUEUES) <= set(listed), listed
    assert all(isinstance(count, int) and count >= 0 for count in listed.values())

    # A task sent to hive.control is consumed by that worker, and Flower saw it happen.
    from hive_project.celery import app

    sent = app.send_task("hive.health_sweep", queue=queues.CONTROL)
    task = poll(lambda: api.get(f"/api/task/info/{sent.id}").raise_for_status().json(),
                lambda body: body.get("state") == "SUCCESS", 60, f"task {sent.id} succeeded in /api/task/info")
    assert task["worker"] == name
    assert task["name"] == "hive.health_sweep"
