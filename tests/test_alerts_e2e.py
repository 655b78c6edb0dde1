"""Agent-down alerting end to end: real beat, a real worker, a simulated node.

The periodic jobs come from ensure_setup() as django-celery-beat rows; the test
shortens the health sweep and the alert evaluation to every second by editing their
IntervalSchedule, as an operator would in the admin. Killing the node must fire the
seed's agent-down alert once (an Alert row and a `system.alert` event on
alerts.critical), and bringing a node back on the same port must resolve it.

An offline agent is not probed again before its backoff (next_probe_at) runs out;
the children get HIVE_PROBE_BACKOFF_SECONDS=1 and HIVE_PROBE_BACKOFF_MAX_SECONDS=2 so
that the return is noticed within a few seconds.
"""
from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.apps import apps
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from agents.models import Agent
from agents.services import register_agent
from agents.simulator import SimulatedNode, SimulatorConfig
from coordinator import events
from hive_project.bootstrap import ensure_setup
from monitoring.models import Alert, AlertRule
from tests.processes import Proc, start_beat, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

INTERVAL = 1  # seconds, for the health sweep and the alert evaluation
SLUG = "alert-oak"


def wait_until(check: Callable[[], Any], timeout: float, what: str, procs: tuple[Proc, ...] = ()) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    logs = "\n".join(f"--- {proc.name}\n{proc.output()[-2500:]}" for proc in procs)
    raise AssertionError(f"{what}: not within {timeout}s\n{logs}")


class AlertEvents:
    """agent-down events for our agent on alerts.critical, collected by event id.

    Read often and remembered, so that the count stays right even if something else
    empties the Redis database in between (a parallel test session sharing REDIS_URL)."""

    def __init__(self) -> None:
        self.seen: dict[str, dict[str, Any]] = {}

    def __call__(self, state: str) -> list[dict[str, Any]]:
        for event in events.events_after("alerts.critical", 0):
            data = event["data"]
            if event["type"] == events.SYSTEM_ALERT and data["rule"] == "agent-down" and data["subject"] == SLUG:
                self.seen[event["id"]] = event
        return [event for event in self.seen.values() if event["data"]["state"] == state]

    def watch(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self("firing")
            time.sleep(0.2)


def agent_down_alerts() -> list[Alert]:
    return list(Alert.objects.filter(rule__name="agent-down", subject=SLUG).order_by("fired_at"))


@pytest.fixture
def node() -> Iterator[SimulatedNode]:
    """The simulated node, registered as an agent before beat and the worker start.

    register_agent() saves the agent (offline, the model's default) before its first
    probe; an alert evaluation in between would see an agent that is down."""
    node = SimulatedNode(SimulatorConfig(port=0, name="alert-oak", load_delay=0)).start()
    try:
        agent = register_agent({"slug": SLUG, "name": "Alert Oak", "endpoint": node.base_url, "model": "llama3.2:3b",
                                "max_concurrency": 1})
        assert agent.status == Agent.Status.ONLINE
        yield node
    finally:
        node.stop()


@pytest.fixture
def processes(node: SimulatedNode, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Proc, Proc]]:
    # child_env() copies os.environ: the worker reads these when it applies a probe.
    monkeypatch.setenv("HIVE_PROBE_BACKOFF_SECONDS", "1")
    monkeypatch.setenv("HIVE_PROBE_BACKOFF_MAX_SECONDS", "2")
    # The default rules come from a data migration, and a transactional test before
    # this one may have flushed them: create them again, from that migration.
    importlib.import_module("monitoring.migrations.0002_default_rules").create(apps, None)
    ensure_setup()
    every_second, _ = IntervalSchedule.objects.get_or_create(every=INTERVAL, period=IntervalSchedule.SECONDS)
    shortened = 0
    for job in PeriodicTask.objects.filter(task__in=["hive.health_sweep", "hive.evaluate_alerts"]):
        job.interval = every_second
        job.save()  # save(), not update(): beat notices schedule changes through PeriodicTasks.changed()
        shortened += 1
    assert shortened == 2, "ensure_setup() should have created the health sweep and alert evaluation jobs"
    worker = start_worker(name="alerts")
    beat = start_beat()
    try:
        yield worker, beat
    finally:
        beat.stop()
        worker.stop()


def test_a_killed_node_fires_agent_down_once_and_its_return_resolves_it(node: SimulatedNode,
                                                                       processes: tuple[Proc, Proc]) -> None:
    rule = AlertRule.objects.get(name="agent-down")
    assert (rule.metric, rule.operator, rule.threshold, rule.severity) == ("agent_available", "==", 0, "critical")
    procs = processes
    agent_down_events = AlertEvents()
    agent = Agent.objects.get(slug=SLUG)
    port = node.port
    revived: SimulatedNode | None = None
    try:
        # The sweep runs on beat and keeps it online; no alert while it answers.
        wait_until(lambda: agent.health_checks.filter(available=True).count() >= 3, 20, "three healthy sweeps", procs)
        assert agent_down_alerts() == []

        node.stop()
        stopped = timezone.now()
        stopped_at = time.monotonic()
        alert = wait_until(lambda: agent_down_alerts(), 15, "agent-down alert after the node was killed", procs)[0]
        fired_after = (alert.fired_at - stopped).total_seconds()
        assert alert.status == Alert.Status.FIRING and alert.severity == "critical"
        assert alert.value == 0
        wait_until(lambda: agent_down_events("firing"), 5, "system.alert event on alerts.critical", procs)

        # Several more sweeps and evaluations: still exactly one alert and one event.
        agent_down_events.watch(6 * INTERVAL)
        assert Agent.objects.get(slug=SLUG).status == Agent.Status.OFFLINE
        assert [a.pk for a in agent_down_alerts()] == [alert.pk]
        assert len(agent_down_events("firing")) == 1
        assert agent.health_checks.filter(available=False).count() >= 2, "the sweep kept probing (with backoff)"
        down_for = time.monotonic() - stopped_at

        revived = SimulatedNode(SimulatorConfig(port=port, name="alert-oak-again", load_delay=0)).start()
        back = timezone.now()
        resolved = wait_until(lambda: Alert.objects.filter(pk=alert.pk, status=Alert.Status.RESOLVED).first(), 15,
                              "agent-down resolved after the node came back", procs)
        resolved_after = (resolved.resolved_at - back).total_seconds()
        assert Agent.objects.get(slug=SLUG).status == Agent.Status.ONLINE
        event = wait_until(lambda: agent_down_events("resolved"), 5, "resolved event on alerts.critical", procs)[0]
        assert event["data"]["alert_id"] == alert.pk

        # Back to normal: no new alert, the one alert stays resolved.
        agent_down_events.watch(3 * INTERVAL)
        assert [(a.pk, a.status) for a in agent_down_alerts()] == [(alert.pk, Alert.Status.RESOLVED)]
        assert len(agent_down_events("firing")) == 1
        print(f"\nagent-down fired {fired_after:.2f}s after the kill (interval {INTERVAL}s), "
              f"stayed single for {down_for:.1f}s, resolved {resolved_after:.2f}s after the node returned")
        # One sweep plus one evaluation, with beat's and the worker's latency.
        assert fired_after < 4 * INTERVAL + 2, f"fired {fired_after:.2f}s after the kill"
    finally:
        if revived is not None:
            revived.stop()
