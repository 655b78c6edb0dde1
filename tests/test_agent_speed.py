"""How a worker records an agent's speed after each task (agents.services.record_success)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from agents import services
from agents.models import Agent
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

MODEL = "llama3.2:3b"


def warm_agent() -> Agent:
    expires = (timezone.now() + timedelta(seconds=settings.HIVE_KEEP_ALIVE_SECONDS)).isoformat()
    return make_agent(tokens_per_second=100.0, models_loaded=[{"name": MODEL, "model": MODEL, "expires_at": expires}])


def succeed(agent: Agent, tps: float) -> None:
    services.record_success(agent, MODEL, tps=tps, load_seconds=0.0, was_warm=True)


def stored(agent: Agent) -> Agent:
    return Agent.objects.get(pk=agent.pk)


def test_a_worker_writes_an_agents_speed_once_per_interval_folding_the_samples_between(monkeypatch):
    published: list[dict] = []
    monkeypatch.setattr(services.events, "agent_event", lambda kind, agent, **data: published.append(data))
    agent = warm_agent()

    succeed(agent, 200.0)
    assert stored(agent).tokens_per_second == pytest.approx(130.0), "the first sample is written at once"
    succeed(agent, 200.0)
    succeed(agent, 200.0)
    assert stored(agent).tokens_per_second == pytest.approx(130.0), "the next ones within the interval wait"

    services._speed_samples[agent.pk].written_at -= services.SPEED_WRITE_INTERVAL
    succeed(agent, 200.0)
    expected = 130.0
    for _ in range(3):  # the three samples since the last write, as if applied one by one
        expected += services.SMOOTHING * (200.0 - expected)
    assert stored(agent).tokens_per_second == pytest.approx(expected)
    assert [event["samples"] for event in published] == [1, 3], "one event per write, saying what it folds in"


def test_a_success_after_failures_is_written_at_once_closing_the_circuit():
    agent = warm_agent()
    succeed(agent, 200.0)
    Agent.objects.filter(pk=agent.pk).update(consecutive_failures=2)
    agent.refresh_from_db()
    succeed(agent, 200.0)
    assert stored(agent).consecutive_failures == 0


def test_a_cold_load_takes_the_folded_samples_with_it():
    agent = warm_agent()
    succeed(agent, 200.0)
    succeed(agent, 300.0)  # folded
    agent.refresh_from_db()
    services.record_success(agent, "codellama:7b", tps=300.0, load_seconds=2.0, was_warm=False)
    expected = 130.0 + services._weight(2) * (300.0 - 130.0)
    after = stored(agent)
    assert after.tokens_per_second == pytest.approx(expected)
    assert after.load_seconds == pytest.approx(2.0) and MODEL in {m["name"] for m in after.models_loaded}


def test_the_callers_agent_is_brought_up_to_date_so_the_next_success_is_the_cheap_one():
    # An execution handing its slot on reuses the agent it read at its first claim:
    # once the stale expiry has been rewritten, later successes must not rewrite it again.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    stale = (timezone.now() + timedelta(seconds=10)).isoformat()
    agent = make_agent(tokens_per_second=100.0, models_loaded=[{"name": MODEL, "model": MODEL, "expires_at": stale}])
    succeed(agent, 200.0)
    assert agent.models_loaded == stored(agent).models_loaded
    assert agent.models_loaded[0]["expires_at"] != stale
    with CaptureQueriesContext(connection) as queries:
        succeed(agent, 200.0)
    assert not [q for q in queries if "FOR UPDATE" in q["sql"] or "models_loaded" in q["sql"]], queries.captured_queries
