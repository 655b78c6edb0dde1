from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import pytest
from django.utils import timezone

from agents.models import Agent, AgentHealthCheck
from coordinator.models import Task, TaskAttempt
from monitoring import alerts
from monitoring.models import Alert, AlertRule
from tests.factories import make_agent, make_task

pytestmark = pytest.mark.django_db


def agent_down_rule() -> AlertRule:
    return AlertRule.objects.get(name="agent-down")


def test_the_seed_rules_exist_and_are_editable_rows():
    names = set(AlertRule.objects.values_list("name", flat=True))
    assert {"high-cpu", "agent-down", "slow-response", "high-error-rate", "queue-backlog"} <= names
    rule = AlertRule.objects.get(name="high-cpu")
    assert (rule.condition, rule.severity, rule.cooldown_seconds) == ("cpu_usage > 85", "warning", 300)
    assert agent_down_rule().severity == "critical"


def test_an_alert_fires_once_stays_quiet_in_the_cooldown_and_resolves(settings):
    AlertRule.objects.exclude(name="agent-down").update(enabled=False)
    agent = make_agent(slug="oak", status=Agent.Status.OFFLINE)
    assert alerts.evaluate() == {"fired": 1, "resolved": 0}
    assert alerts.evaluate() == {"fired": 0, "resolved": 0}, "still firing: no second alert"
    alert = Alert.objects.get()
    assert (alert.subject, alert.status, alert.severity) == ("oak", "firing", "critical")
    assert "oak" in alert.message
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.ONLINE)
    assert alerts.evaluate() == {"fired": 0, "resolved": 1}
    alert.refresh_from_db()
    assert alert.status == "resolved" and alert.resolved_at is not None
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.OFFLINE)
    assert alerts.evaluate()["fired"] == 0, "down again within the cooldown: no new alert"
    Alert.objects.update(fired_at=timezone.now() - timedelta(seconds=120))
    assert alerts.evaluate()["fired"] == 1, "after the cooldown it fires again"


def test_per_agent_error_rate_and_response_time_and_queue_backlog():
    AlertRule.objects.filter(name__in=["agent-down", "high-cpu"]).update(enabled=False)
    slow = make_agent(slug="slow")
    flaky = make_agent(slug="flaky")
    AgentHealthCheck.objects.create(agent=slow, available=True, response_time=90)
    AgentHealthCheck.objects.create(agent=flaky, available=True, response_time=0.1)
    task = make_task()
    for n, outcome in enumerate(["failed", "failed", "succeeded"], start=1):
        TaskAttempt.objects.create(task=task, number=n, agent=flaky, dispatch_id=f"00000000-0000-0000-0000-00000000000{n}",
                                   outcome=outcome, finished_at=timezone.now())
    old = make_task()
    Task.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=20))
    alerts.evaluate()
    fired = {(a.rule.name, a.subject) for a in Alert.objects.all()}
    assert fired == {("slow-response", "slow"), ("high-error-rate", "flaky"), ("queue-backlog", "cluster")}


def test_a_firing_alert_is_published_and_posted_to_the_webhook(settings):
    received: list[dict[str, Any]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings.HIVE_ALERT_WEBHOOK_URL = f"http://127.0.0.1:{server.server_port}/hook"
        AlertRule.objects.exclude(name="agent-down").update(enabled=False)
        make_agent(slug="elm", status=Agent.Status.OFFLINE)
        alerts.evaluate()
        assert received and received[0]["state"] == "firing" and received[0]["subject"] == "elm"
        assert Alert.objects.get().notified is True
    finally:
        server.shutdown()


def test_performance_metrics_for_a_window(viewer_api):
    agent = make_agent(slug="ash", max_concurrency=4, tokens_per_second=30)
    make_task(status=Task.Status.RUNNING, assigned_agent=agent)
    make_task(priority=5)
    done = make_task(status=Task.Status.COMPLETED, assigned_agent=agent, tokens_per_second=42.0)
    Task.objects.filter(pk=done.pk).update(started_at=timezone.now() - timedelta(seconds=3), completed_at=timezone.now())
    body = viewer_api.get("/api/metrics/performance", {"window": 600}).json()
    assert body["window_seconds"] == 600
    assert set(body["host"]) >= {"cpu_usage", "memory_usage", "disk_usage"}
    assert body["cluster"]["queue_by_priority"]["5"] == 1 and body["cluster"]["active_tasks"] == 1
    assert body["cluster"]["average_completion_time"] == pytest.approx(3, abs=0.5)
    (row,) = body["agents"]
    assert row["agent_id"] == "ash" and row["tokens_per_second"] == 42.0
    assert row["busy_slots"] == 1 and row["utilization_percent"] == 25.0
    assert viewer_api.get("/api/metrics/performance", {"window": 1}).status_code == 400


def test_alerts_are_listed_and_filtered(viewer_api):
    AlertRule.objects.exclude(name="agent-down").update(enabled=False)
    make_agent(slug="down1", status=Agent.Status.OFFLINE)
    alerts.evaluate()
    body = viewer_api.get("/api/alerts", {"status": "firing"}).json()
    assert body["count"] == 1 and body["results"][0]["rule"] == "agent-down"
    assert body["results"][0]["condition"] == "agent_available == 0"
    assert viewer_api.get("/api/alerts", {"severity": "info"}).json()["count"] == 0


def test_metrics_use_the_seed_names_and_need_a_token(client, settings, actors):
    settings.HIVE_METRICS_TOKEN = "scrape-me"
    make_agent(slug="m1")
    make_task(priority=4)
    client.force_login(actors.viewer)
    assert client.get("/api/tasks/nope").status_code == 404
    client.logout()
    assert client.get("/metrics").status_code == 401
    response = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert response.status_code == 200
    text = response.content.decode()
    for name in ("hive_active_agents_total", "hive_task_queue_length", "hive_api_request_duration_seconds",
                 "hive_websocket_connections_active", "hive_agent_utilization_percent",
                 "hive_agent_health_status", "hive_api_errors_total", "hive_container_cpu_usage_percent",
                 "hive_redis_memory_usage_bytes"):
        assert name in text, name
    assert 'hive_task_queue_length{priority="4"} 1.0' in text
    assert 'hive_agent_health_status{agent_id="m1"} 1.0' in text
    assert 'hive_api_errors_total{method="GET",route="metrics/?$"' not in text, "/metrics itself is not counted"
    client.force_login(actors.viewer)
    assert client.get("/metrics").status_code == 200


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_request_metrics_add_up_across_web_processes(actors, settings):
    from hive_project.models import ApiToken
    from tests.processes import start_web

    _, key = ApiToken.issue(actors.viewer, "scrape")
    headers = {"Authorization": f"Bearer {key}"}
    (first, first_url), (second, second_url) = start_web(), start_web()

    def totals() -> tuple[float, float]:
        text = httpx.get(f"{first_url}/metrics", headers=headers).text
        ok = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                 if line.startswith("hive_api_request_duration_seconds_count") and "agents" in line and 'status="200"' in line)
        errors = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                     if line.startswith("hive_api_errors_total") and 'status="404"' in line)
        return ok, errors

    try:
        ok_before, errors_before = totals()
        for url in (first_url, second_url):
            for _ in range(3):
                assert httpx.get(f"{url}/api/agents", headers=headers).status_code == 200
            httpx.get(f"{url}/api/tasks/not-a-task", headers=headers)
        ok_after, errors_after = totals()
        assert ok_after - ok_before == 6.0, "both processes' requests are counted"
        assert errors_after - errors_before == 2.0
    finally:
        first.stop()
        second.stop()
