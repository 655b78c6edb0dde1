"""The handoff: a finishing execution starts the task the last round reserved for its slot.

In-process: real scheduling rounds, real executions against a simulated node on a
thread, real Redis. The cluster-level cases (priority mid-chain, kill -9 mid-chain)
are in tests/test_failover.py with real worker processes.
"""
from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from coordinator import executor, handoff, scheduler
from coordinator.models import Task, TaskAttempt, TaskDependency
from coordinator.services import cancel_task, create_tasks
from hive_project.redis_client import get_redis
from tests.factories import make_agent

pytest_plugins = ("tests.simulator_fixtures",)
pytestmark = pytest.mark.django_db(transaction=True)  # on_commit work (events, news) must run

MODEL = "llama3.2:3b"
WORKER = "celery@handoff-test"


@pytest.fixture
def agent(simulator, settings):
    # One slot, the model resident: every task after the first waits for this slot
    # (none is sent ahead into Ollama's queue).
    settings.HIVE_QUEUE_AHEAD = 0
    return make_agent(slug="solo", endpoint=simulator.base_url, max_concurrency=1,
                      models_loaded=[{"name": MODEL, "model": MODEL}])


def submit(priority: int = 3, **fields) -> Task:
    (task,) = create_tasks([{"title": f"p{priority}", "prompt": "say hi", "model": MODEL, "priority": priority,
                             "options": {"num_predict": 3}, **fields}])
    return task


def reserved(agent) -> list[str]:
    return [entry.decode().split("|")[1] for entry in get_redis().lrange(handoff.list_key(agent.pk), 0, -1)]


def first_on_the_slot(agent) -> Task:
    """A task queued on the agent's only slot by a round, as a worker would receive it."""
    task = submit(priority=3)
    scheduler.schedule_once()
    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED and task.assigned_agent_id == agent.pk
    return task


def run(task: Task) -> str:
    return executor.execute(str(task.pk), str(task.dispatch_id), WORKER)


def status(task: Task) -> str:
    task.refresh_from_db()
    return task.status


def test_a_round_reserves_the_waiting_tasks_for_the_busy_slot_in_schedule_order(agent):
    first_on_the_slot(agent)
    low, high, mid = submit(priority=1), submit(priority=5), submit(priority=3)
    scheduler.schedule_once()
    assert reserved(agent) == [str(high.pk), str(mid.pk), str(low.pk)]
    assert [status(t) for t in (low, high, mid)] == [Task.Status.PENDING] * 3
    assert int(get_redis().get(handoff.ROUND_KEY)) == handoff.round_state()[0]


def test_a_finishing_execution_runs_the_reserved_tasks_in_order_in_the_same_process(agent):
    first = first_on_the_slot(agent)
    low, high = submit(priority=1), submit(priority=5)
    scheduler.schedule_once()

    assert run(first) == Task.Status.COMPLETED

    for task in (first, high, low):
        task.refresh_from_db()
        assert task.status == Task.Status.COMPLETED and task.result, task.title
        attempts = list(TaskAttempt.objects.filter(task=task))
        assert [(a.number, a.outcome, a.worker) for a in attempts] == [(1, TaskAttempt.Outcome.SUCCEEDED, WORKER)]
        assert attempts[0].dispatch_id == task.dispatch_id and attempts[0].agent_id == agent.pk
    assert high.started_at < low.started_at, "the higher priority took the slot first"
    assert high.queued_at == high.started_at and high.metadata["model"] == MODEL
    assert high.metadata["cold_load"] is False
    assert get_redis().llen(handoff.list_key(agent.pk)) == 0


def test_events_of_a_handed_off_task_come_in_order(agent):
    from coordinator import events

    first = first_on_the_slot(agent)
    nxt = submit()
    scheduler.schedule_once()
    run(first)
    kinds = [e["type"] for e in events.events_after(f"task.{nxt.pk}", 0)]
    assert kinds[:1] == ["task.created"]
    assert [k for k in kinds if k != "task.progress"][-3:] == ["task.assigned", "task.started", "task.completed"]
    first_kinds = [e["type"] for e in events.events_after(f"task.{first.pk}", 0)]
    assert first_kinds[-1] == "task.completed"


def test_a_higher_priority_submission_after_the_round_stops_the_handoff(agent):
    first = first_on_the_slot(agent)
    waiting = submit(priority=3)
    scheduler.schedule_once()
    assert reserved(agent) == [str(waiting.pk)]
    urgent = submit(priority=5)  # the round has not seen it; it outranks the reservation

    run(first)
    assert status(first) == Task.Status.COMPLETED
    assert status(waiting) == Task.Status.PENDING and status(urgent) == Task.Status.PENDING
    assert reserved(agent) == [], "the refused reservation's list is dropped: nothing behind it may go first"
    scheduler.schedule_once()
    assert status(urgent) == Task.Status.QUEUED and status(waiting) == Task.Status.PENDING


def test_a_lower_priority_submission_after_the_round_does_not(agent):
    first = first_on_the_slot(agent)
    waiting = submit(priority=3)
    scheduler.schedule_once()
    later = submit(priority=1)
    same = submit(priority=3)  # same priority, younger: still behind

    run(first)
    assert status(waiting) == Task.Status.COMPLETED
    assert status(later) == Task.Status.PENDING and status(same) == Task.Status.PENDING


def test_a_reserved_task_cancelled_meanwhile_is_skipped_for_the_next(agent):
    first = first_on_the_slot(agent)
    doomed, kept = submit(priority=4), submit(priority=3)
    scheduler.schedule_once()
    assert reserved(agent) == [str(doomed.pk), str(kept.pk)]
    cancel_task(doomed)

    run(first)
    assert status(doomed) == Task.Status.CANCELLED
    assert not TaskAttempt.objects.filter(task=doomed).exists()
    assert status(kept) == Task.Status.COMPLETED


def test_a_reservation_from_an_older_round_or_needing_a_cold_load_is_refused(agent):
    first = first_on_the_slot(agent)
    waiting = submit()
    scheduler.schedule_once()
    get_redis().incr(handoff.ROUND_KEY)  # a newer round has replaced the reservations

    run(first)
    assert status(waiting) == Task.Status.PENDING
    assert reserved(agent) == []

    second = Task.objects.get(pk=waiting.pk)
    scheduler.schedule_once()
    second.refresh_from_db()
    assert second.status == Task.Status.QUEUED
    other = submit(model="codellama:7b")  # not resident on the agent: its slot means a cold load
    scheduler.schedule_once()
    assert reserved(agent) == [str(other.pk)]
    run(second)
    assert status(other) == Task.Status.PENDING, "model loads are the round's to decide"


def test_no_handoff_when_tasks_depend_on_the_finished_one(agent):
    first = first_on_the_slot(agent)
    waiting = submit(priority=5)
    (child,) = create_tasks([{"title": "child", "prompt": "x", "model": MODEL, "priority": 1,
                              "depends_on": [first]}])
    scheduler.schedule_once()
    assert reserved(agent) == [str(waiting.pk)]

    run(first)
    assert TaskDependency.objects.filter(depends_on_task=first).exists()
    assert status(waiting) == Task.Status.PENDING, "released dependents are news the reservations did not see"
    assert status(child) == Task.Status.PENDING


def test_no_handoff_to_a_draining_agent_or_a_full_one_or_when_switched_off(agent, settings):
    first = first_on_the_slot(agent)
    waiting = submit()
    scheduler.schedule_once()
    type(agent).objects.filter(pk=agent.pk).update(draining=True)
    run(first)
    assert status(waiting) == Task.Status.PENDING

    type(agent).objects.filter(pk=agent.pk).update(draining=False)
    scheduler.schedule_once()
    assert status(waiting) == Task.Status.QUEUED
    following = submit()
    scheduler.schedule_once()
    assert reserved(agent) == [str(following.pk)]
    # Another task already holds the slot being freed (sent ahead by a round): no room.
    ahead = submit(priority=1)
    Task.objects.filter(pk=ahead.pk).update(status=Task.Status.QUEUED, assigned_agent=agent,
                                            dispatch_id=uuid.uuid4())
    run(waiting)
    assert status(following) == Task.Status.PENDING

    Task.objects.filter(pk=ahead.pk).update(status=Task.Status.CANCELLED)
    settings.HIVE_HANDOFF_SECONDS = 0
    scheduler.schedule_once()
    assert status(following) == Task.Status.QUEUED
    later = submit()
    scheduler.schedule_once()
    assert reserved(agent) == [str(later.pk)]
    run(Task.objects.get(pk=following.pk))
    assert status(later) == Task.Status.PENDING


def test_a_worker_shutting_down_takes_no_handoff(agent):
    first = first_on_the_slot(agent)
    waiting = submit()
    scheduler.schedule_once()
    handoff.worker_stopping(WORKER)
    run(first)
    assert status(waiting) == Task.Status.PENDING
    assert reserved(agent) == [str(waiting.pk)], "another worker's execution may still take it"
    handoff.worker_started(WORKER)


def test_the_slot_check_is_one_query(agent):
    first = first_on_the_slot(agent)
    with CaptureQueriesContext(connection) as queries:
        assert executor._slot_after(first, agent) == (1, False)
    assert len(queries) == 1


@pytest.mark.parametrize(("priority", "handed_off"), [(5, False), (1, True)])
def test_a_task_returned_to_pending_stops_the_handoff_only_if_it_outranks_the_reservation(agent, priority,
                                                                                           handed_off):
    from coordinator.services import return_to_pending_or_fail

    first = first_on_the_slot(agent)
    make_agent(slug="coder", model="codellama:7b", models_available=[{"name": "codellama:7b"}])
    elsewhere = submit(priority=priority, model="codellama:7b")  # only the other agent can run it
    waiting = submit(priority=3)
    scheduler.schedule_once()
    assert status(elsewhere) == Task.Status.QUEUED and reserved(agent) == [str(waiting.pk)]
    Task.objects.filter(pk=elsewhere.pk).update(status=Task.Status.RUNNING, attempts=1)
    elsewhere.refresh_from_db()
    assert return_to_pending_or_fail(elsewhere, elsewhere.dispatch_id, "node went away",
                                     exclude_agent=True) == Task.Status.PENDING

    run(first)
    assert (status(waiting) == Task.Status.COMPLETED) is handed_off


def test_a_retried_task_runs_again_and_keeps_its_earlier_attempts(agent):
    # Retrying restarts the attempt budget; the new attempt rows are numbered after the
    # old ones (they were numbered 1.. again, and the unique (task, number) refused them).
    from coordinator.services import retry_task

    task = first_on_the_slot(agent)
    assert run(task) == Task.Status.COMPLETED
    Task.objects.filter(pk=task.pk).update(status=Task.Status.FAILED, error="failed after 1 attempt(s): boom")
    task.refresh_from_db()
    retried = retry_task(task)
    assert retried.status == Task.Status.PENDING and retried.attempts == 0 and retried.attempt_offset == 1
    scheduler.schedule_once()
    retried.refresh_from_db()
    assert run(retried) == Task.Status.COMPLETED
    assert [(a.number, a.outcome) for a in TaskAttempt.objects.filter(task=task)] == [
        (1, TaskAttempt.Outcome.SUCCEEDED), (2, TaskAttempt.Outcome.SUCCEEDED)]


def test_a_process_takes_only_reservations_of_queues_its_worker_consumes(agent, monkeypatch):
    first = first_on_the_slot(agent)
    waiting = submit(priority=3)  # hive.medium
    scheduler.schedule_once()
    monkeypatch.setattr(handoff, "consumed_queues", frozenset({"hive.low", "hive.control"}))
    run(first)
    assert status(waiting) == Task.Status.PENDING
    assert reserved(agent) == [str(waiting.pk)], "left in place for a process that may run it"

    second = submit(priority=1)
    scheduler.schedule_once()  # the slot is free again: waiting goes by message, second waits
    assert status(waiting) == Task.Status.QUEUED and reserved(agent) == [str(second.pk)]
    monkeypatch.setattr(handoff, "consumed_queues", frozenset({"hive.medium"}))
    run(Task.objects.get(pk=waiting.pk))
    assert status(second) == Task.Status.PENDING, "hive.low is not this worker's"

    scheduler.schedule_once()
    assert status(second) == Task.Status.QUEUED
    third = submit(priority=1)
    scheduler.schedule_once()
    monkeypatch.setattr(handoff, "consumed_queues", frozenset({"hive.medium", "hive.low"}))
    run(Task.objects.get(pk=second.pk))
    assert status(third) == Task.Status.COMPLETED, "a worker on several queues takes any of them"


def test_a_task_that_sets_no_num_predict_is_sent_with_the_cap(agent, settings):
    """Ollama generates until the model stops when num_predict is unset; Hive never asks for that."""
    settings.HIVE_MAX_NUM_PREDICT = 2
    (task,) = create_tasks([{"title": "long", "prompt": "write a long essay about bees", "model": MODEL}])
    scheduler.schedule_once()
    task.refresh_from_db()
    assert run(task) == Task.Status.COMPLETED
    task.refresh_from_db()
    assert task.options == {} and task.timings["eval_count"] == 2
