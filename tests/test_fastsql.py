"""hive_project.fastsql writes and reads rows exactly as the ORM would (run on SQLite
and on PostgreSQL by .ci/run), with and without UPDATE ... RETURNING."""
from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.db.models import F
from django.forms.models import model_to_dict
from django.utils import timezone

from agents.models import Agent
from coordinator.models import Task, TaskAttempt
from hive_project import fastsql
from tests.factories import make_agent, make_task

pytestmark = pytest.mark.django_db


def row(task: Task) -> dict:
    fresh = Task.objects.get(pk=task.pk)
    return {**model_to_dict(fresh, exclude=["depends_on"]), "dispatch_id": fresh.dispatch_id}


@pytest.fixture(params=["returning", "read back"])
def returning_support(request, monkeypatch) -> str:
    """Both ways of reading the updated row: RETURNING, and a SELECT after the UPDATE
    (databases without RETURNING, e.g. SQLite before 3.35)."""
    if request.param == "read back":
        monkeypatch.setattr(type(connection.features), "can_return_columns_from_insert", False)
    monkeypatch.setattr(fastsql, "_statements", {})  # shapes are built per support
    return request.param


def test_an_update_stores_what_the_orm_update_stores(returning_support):
    agent = make_agent()
    now = timezone.now()
    values = {"status": Task.Status.COMPLETED, "result": "ünïcode \u2028 text", "timings": {"eval_count": 5, "x": [1]},
              "tokens_per_second": 12.5, "completed_at": now, "lease_expires_at": None, "error": "",
              "assigned_agent": agent.pk}
    by_orm, by_fast = make_task(status=Task.Status.RUNNING), make_task(status=Task.Status.RUNNING)
    updated_at = Task.objects.get(pk=by_fast.pk).updated_at
    Task.objects.filter(pk=by_orm.pk).update(**{**values, "assigned_agent": agent, "attempts": F("attempts") + 2})
    changed = fastsql.update(Task, {**values, "attempts": fastsql.Add(2)},
                             {"id": by_fast.pk, "status": Task.Status.RUNNING})

    assert changed == 1
    orm_row, fast_row = row(by_orm), row(by_fast)
    for name in ("title", "prompt"):
        orm_row.pop(name), fast_row.pop(name)
    assert fast_row == orm_row
    assert fast_row["attempts"] == 2 and fast_row["timings"] == {"eval_count": 5, "x": [1]}
    assert Task.objects.get(pk=by_fast.pk).updated_at == updated_at, "like QuerySet.update, auto_now is left alone"


def test_an_update_changes_nothing_when_the_filter_does_not_match(returning_support):
    task = make_task(status=Task.Status.QUEUED, dispatch_id=uuid.uuid4())
    before = row(task)

    assert fastsql.update(Task, {"status": Task.Status.RUNNING}, {"id": task.pk, "dispatch_id": uuid.uuid4()}) == 0
    assert fastsql.update(Task, {"status": Task.Status.RUNNING}, {"id": task.pk, "status": Task.Status.PENDING},
                          returning=("title",)) == []
    assert row(task) == before


def test_returning_gives_the_fields_as_the_orm_loads_them(returning_support):
    agent = make_agent()
    dispatch = uuid.uuid4()
    task = make_task(status=Task.Status.QUEUED, dispatch_id=dispatch, assigned_agent=agent,
                     options={"num_predict": 5}, metadata={"model": "m", "cold_load": False}, priority=4)
    (got,) = fastsql.update(Task, {"status": Task.Status.RUNNING, "attempts": fastsql.Add(1)},
                            {"id": str(task.pk), "dispatch_id": str(dispatch), "status": Task.Status.QUEUED,
                             "cancel_requested": False},
                            returning=("options", "metadata", "priority", "assigned_agent", "attempts", "title"))

    assert got == {"options": {"num_predict": 5}, "metadata": {"model": "m", "cold_load": False}, "priority": 4,
                   "assigned_agent_id": agent.pk, "attempts": 1, "title": task.title}
    assert Task.objects.get(pk=task.pk).status == Task.Status.RUNNING


def test_an_insert_stores_what_create_stores_with_defaults_for_the_rest():
    agent, task = make_agent(), make_task()
    dispatch, now = uuid.uuid4(), timezone.now()
    fastsql.insert(TaskAttempt, {"task": task.pk, "number": 1, "agent": agent.pk, "dispatch_id": dispatch,
                                 "worker": "w@h", "started_at": now})

    attempt = TaskAttempt.objects.get(task=task)
    assert (attempt.number, attempt.agent_id, attempt.dispatch_id, attempt.worker, attempt.started_at) == \
        (1, agent.pk, dispatch, "w@h", now)
    assert (attempt.outcome, attempt.error, attempt.finished_at) == (TaskAttempt.Outcome.RUNNING, "", None)


def test_get_builds_the_same_instance_as_the_orm_and_none_for_a_missing_row():
    agent = make_agent(models_loaded=[{"name": "m", "expires_at": "2030-01-01T00:00:00Z"}], tokens_per_second=3.5,
                       last_seen=timezone.now() - timedelta(seconds=5))
    fast, orm = fastsql.get(Agent, agent.pk), Agent.objects.get(pk=agent.pk)

    assert model_to_dict(fast) == model_to_dict(orm)
    assert (fast.last_seen, fast.created_at, fast.pk) == (orm.last_seen, orm.created_at, orm.pk)
    assert fastsql.get(Agent, uuid.uuid4()) is None


def test_a_partial_instance_loads_the_other_fields_on_first_use():
    task = make_task(prompt="the prompt")
    partial = fastsql.instance(Task, {"id": task.pk, "title": task.title})

    assert partial.get_deferred_fields() >= {"prompt", "result"}
    assert partial.prompt == "the prompt"


def test_get_with_fields_defers_the_rest():
    agent = make_agent(hardware={"gpu_type": "A100"})
    partial = fastsql.get(Agent, agent.pk, ("slug", "endpoint"))

    assert (partial.pk, partial.slug, partial.endpoint) == (agent.pk, agent.slug, agent.endpoint)
    assert "hardware" in partial.get_deferred_fields()
    assert partial.hardware == {"gpu_type": "A100"}, "a deferred field loads when used"


def test_inserting_an_instance_stores_what_save_stores():
    agent = make_agent()
    by_save = Task(title="t", prompt="p", options={"num_predict": 3}, metadata={"k": [1]}, pinned_agent=agent,
                   excluded_agents=[str(agent.pk)], priority=5)
    by_save.save()
    by_fast = Task(title="t", prompt="p", options={"num_predict": 3}, metadata={"k": [1]}, pinned_agent=agent,
                   excluded_agents=[str(agent.pk)], priority=5)
    fastsql.insert_instance(by_fast)

    assert not by_fast._state.adding
    saved, fast = Task.objects.get(pk=by_save.pk), Task.objects.get(pk=by_fast.pk)
    assert model_to_dict(fast, exclude=["depends_on"]) == model_to_dict(saved, exclude=["depends_on"])
    assert fast.created_at == by_fast.created_at and fast.updated_at == by_fast.updated_at
    assert abs((fast.created_at - saved.created_at).total_seconds()) < 5
