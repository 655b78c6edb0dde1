"""The scheduling pass, called directly (no worker): who gets which slot."""
from __future__ import annotations

import pytest

from agents.models import Agent
from coordinator import scheduler
from coordinator.models import Task, TaskDependency
from coordinator.services import cancel_task, create_tasks, reconcile
from tests.factories import make_agent, make_task

pytestmark = pytest.mark.django_db


def placed_on(task: Task) -> str | None:
    task.refresh_from_db()
    return task.assigned_agent.slug if task.assigned_agent else None


def test_a_pending_task_is_queued_on_an_agent_with_a_free_slot():
    make_agent(slug="oak")
    task = make_task()
    result = scheduler.schedule_once()
    assert result.placed == [(task.pk, Agent.objects.get(slug="oak").pk)]
    task.refresh_from_db()
    assert task.status == Task.Status.QUEUED
    assert task.dispatch_id is not None and task.queued_at is not None
    assert task.metadata["model"] == "llama3.2:3b"


def test_an_agent_never_gets_more_tasks_than_its_slots():
    make_agent(slug="oak", max_concurrency=2)
    tasks = [make_task() for _ in range(5)]
    scheduler.schedule_once()
    scheduler.schedule_once()
    assert sum(1 for t in tasks if placed_on(t) == "oak") == 2
    assert Task.objects.filter(status=Task.Status.PENDING).count() == 3


def test_higher_priority_goes_first_then_the_oldest():
    make_agent(max_concurrency=1)
    old_low = make_task(priority=1)
    urgent = make_task(priority=5)
    scheduler.schedule_once()
    assert placed_on(urgent) is not None
    assert placed_on(old_low) is None
    first, second = make_task(priority=3), make_task(priority=3)
    Task.objects.filter(pk=urgent.pk).update(status=Task.Status.COMPLETED)
    scheduler.schedule_once()
    assert placed_on(first) is not None and placed_on(second) is None


def test_capability_decides_and_general_runs_anywhere():
    make_agent(slug="coder", capabilities=[{"name": "code", "proficiency": 0.9}])
    make_agent(slug="writer", capabilities=[{"name": "docs", "proficiency": 0.9}])
    code = make_task(task_type="code")
    docs = make_task(task_type="docs")
    general = make_task(task_type="general")
    scheduler.schedule_once()
    assert placed_on(code) == "coder"
    assert placed_on(docs) == "writer"
    assert placed_on(general) in {"coder", "writer"}


def test_a_task_no_agent_can_run_waits_with_a_reason():
    make_agent(capabilities=[{"name": "code", "proficiency": 0.9}])
    task = make_task(task_type="security")
    scheduler.schedule_once()
    task.refresh_from_db()
    assert task.status == Task.Status.PENDING
    assert scheduler.queue_info([str(task.pk)])[str(task.pk)]["reason"] == "no online agent offers capability 'security'"


def test_the_model_must_be_available_on_the_agent():
    make_agent(slug="small", models_available=[{"name": "llama3.2:3b"}])
    make_agent(slug="big", models_available=[{"name": "llama3.1:70b"}], model="llama3.1:70b")
    task = make_task(model="llama3.1:70b")
    latest = make_task(model="llama3.2")  # "llama3.2" means "llama3.2:latest", which nobody has
    scheduler.schedule_once()
    assert placed_on(task) == "big"
    assert placed_on(latest) is None


def test_offline_and_draining_agents_get_no_work():
    make_agent(slug="down", status=Agent.Status.OFFLINE)
    make_agent(slug="leaving", draining=True)
    task = make_task()
    scheduler.schedule_once()
    assert placed_on(task) is None


def test_warm_model_then_proficiency_then_speed_decide_between_agents():
    make_agent(slug="cold-fast", tokens_per_second=90, capabilities=[{"name": "code", "proficiency": 0.9}])
    make_agent(slug="warm-slow", tokens_per_second=10, capabilities=[{"name": "code", "proficiency": 0.5}],
               models_loaded=[{"name": "llama3.2:3b", "expires_at": "2999-01-01T00:00:00Z"}])
    assert placed_on(t := make_task(task_type="code")) is None
    scheduler.schedule_once()
    assert placed_on(t) == "warm-slow"
    Agent.objects.filter(slug="warm-slow").update(models_loaded=[{"name": "llama3.2:3b",
                                                                   "expires_at": "2000-01-01T00:00:00Z"}])
    Task.objects.all().delete()
    second = make_task(task_type="code")
    scheduler.schedule_once()
    assert placed_on(second) == "cold-fast", "an expired keep-alive is not warm; proficiency wins"


def test_a_pinned_task_waits_for_its_agent():
    make_agent(slug="free")
    pinned_to = make_agent(slug="busy", max_concurrency=1)
    make_task(status=Task.Status.RUNNING, assigned_agent=pinned_to)
    task = make_task(pinned_agent=pinned_to)
    scheduler.schedule_once()
    assert placed_on(task) is None
    Task.objects.filter(status=Task.Status.RUNNING).update(status=Task.Status.COMPLETED)
    scheduler.schedule_once()
    assert placed_on(task) == "busy"


def test_dependencies_hold_a_task_until_they_complete():
    make_agent(max_concurrency=4)
    first, second = create_tasks([{"title": "a", "prompt": "a"}, {"title": "b", "prompt": "b", "depends_on": [("new", 0)]}])
    scheduler.schedule_once()
    assert placed_on(first) is not None and placed_on(second) is None
    Task.objects.filter(pk=first.pk).update(status=Task.Status.COMPLETED)
    scheduler.schedule_once()
    assert placed_on(second) is not None


def test_a_failed_dependency_fails_its_dependents_transitively():
    make_agent()
    root, middle, leaf = make_task(), make_task(), make_task()
    TaskDependency.objects.create(task=middle, depends_on_task=root)
    TaskDependency.objects.create(task=leaf, depends_on_task=middle)
    Task.objects.filter(pk=root.pk).update(status=Task.Status.FAILED)
    Task.objects.filter(pk__in=[middle.pk, leaf.pk]).update(status=Task.Status.PENDING)
    result = scheduler.schedule_once()
    assert result.failed_by_dependency == 2
    middle.refresh_from_db()
    leaf.refresh_from_db()
    assert middle.status == leaf.status == Task.Status.FAILED
    assert str(root.pk) in middle.error and str(middle.pk) in leaf.error


def test_an_agent_that_failed_the_task_is_avoided_while_another_can_run_it():
    bad = make_agent(slug="bad")
    make_agent(slug="good", max_concurrency=1)
    task = make_task(excluded_agents=[str(bad.pk)])
    scheduler.schedule_once()
    assert placed_on(task) == "good"


def test_an_excluded_agent_is_used_when_it_is_the_only_one_able():
    only = make_agent(slug="only")
    task = make_task(excluded_agents=[str(only.pk)])
    scheduler.schedule_once()
    assert placed_on(task) == "only"


def test_a_cancelled_queued_task_frees_its_slot():
    make_agent(max_concurrency=1)
    first, second = make_task(priority=5), make_task(priority=1)
    scheduler.schedule_once()
    cancel_task(Task.objects.get(pk=first.pk))
    scheduler.schedule_once()
    assert placed_on(second) is not None


def test_the_run_pass_lock_lets_one_pass_run_at_a_time():
    from hive_project.redis_client import get_redis

    make_agent()
    task = make_task()
    lock = get_redis().lock(scheduler.LOCK_KEY, timeout=5)
    assert lock.acquire(blocking=False)
    try:
        assert scheduler.run_pass() is None, "a second pass backs off while one runs"
        assert get_redis().exists(scheduler.DIRTY_KEY), "and leaves a note so the holder runs again"
    finally:
        lock.release()
    result = scheduler.run_pass()
    assert result is not None and [pk for pk, _ in result.placed] == [task.pk]


class PassMessages:
    """Counts the pass messages a request would send (no worker in these tests)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from coordinator import dispatch

        self.sent = 0
        monkeypatch.setattr(dispatch, "send_pass_message", self.send)
        monkeypatch.setattr(scheduler, "send_pass_message", self.send)

    def send(self) -> None:
        self.sent += 1


def test_requests_while_a_pass_is_queued_or_running_send_no_more_messages(monkeypatch, settings):
    from coordinator.dispatch import _request_pass

    settings.HIVE_PASS_INTERVAL = 0
    messages = PassMessages(monkeypatch)
    _request_pass()
    _request_pass()
    assert messages.sent == 1, "one message stands for every request until its pass is done"

    rounds: list[int] = []
    real_round = scheduler.schedule_once

    def one_round() -> scheduler.PassResult:
        rounds.append(1)
        if len(rounds) == 1:
            _request_pass()  # a task finishes while the first round runs
        return real_round()

    monkeypatch.setattr(scheduler, "schedule_once", one_round)
    result = scheduler.run_pass()
    assert result is not None and result.rounds == 2 == len(rounds), "the running pass picked the change up itself"
    assert messages.sent == 1, "and no message was sent for it"
    _request_pass()
    assert messages.sent == 2, "once the pass is done, the next request sends a message again"


def test_rounds_of_a_busy_pass_are_spaced_and_a_long_pass_hands_over(monkeypatch, settings):
    import time

    from coordinator.dispatch import PASS_REQUESTED_KEY, _request_pass
    from hive_project.redis_client import get_redis

    settings.HIVE_PASS_INTERVAL = 0.2
    messages = PassMessages(monkeypatch)
    starts: list[float] = []

    def busy_round() -> scheduler.PassResult:
        starts.append(time.monotonic())
        if len(starts) < 3:
            _request_pass()  # work keeps arriving during the first two rounds
        return scheduler.PassResult()

    monkeypatch.setattr(scheduler, "schedule_once", busy_round)
    result = scheduler.run_pass()
    assert result is not None and result.rounds == 3
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False)]
    assert min(gaps) >= 0.2, f"rounds start HIVE_PASS_INTERVAL apart: {gaps}"
    assert messages.sent == 1 and not get_redis().exists(PASS_REQUESTED_KEY)

    # Past its time budget with changes still arriving, a pass queues its successor
    # and leaves, keeping the requested flag: that message now stands for it.
    monkeypatch.setattr(scheduler, "PASS_TASK_BUDGET", 0.0)
    starts.clear()
    _request_pass()  # the message this pass runs for
    result = scheduler.run_pass()
    assert result is not None and result.rounds == 1
    assert messages.sent == 3 and get_redis().exists(PASS_REQUESTED_KEY)
    assert scheduler.rounds_so_far() == 4


def test_the_reconciler_returns_tasks_whose_lease_expired():
    from datetime import timedelta

    from django.utils import timezone

    agent = make_agent()
    task = make_task(status=Task.Status.RUNNING, assigned_agent=agent, attempts=1,
                     lease_expires_at=timezone.now() - timedelta(seconds=1), dispatch_id="00000000-0000-0000-0000-000000000001")
    exhausted = make_task(status=Task.Status.RUNNING, assigned_agent=agent, attempts=3, max_attempts=3,
                          lease_expires_at=timezone.now() - timedelta(seconds=1),
                          dispatch_id="00000000-0000-0000-0000-000000000002")
    assert reconcile()["expired_leases"] == 2
    task.refresh_from_db()
    exhausted.refresh_from_db()
    assert task.status == Task.Status.PENDING and task.assigned_agent is None
    assert exhausted.status == Task.Status.FAILED and "lease" in exhausted.error


def test_health_history_older_than_the_retention_is_pruned(settings):
    from datetime import timedelta

    from django.utils import timezone

    from agents.models import AgentHealthCheck
    from agents.services import prune_health_checks

    settings.HIVE_HEALTH_RETENTION_DAYS = 1
    agent = make_agent()
    old = AgentHealthCheck.objects.create(agent=agent, available=True, timestamp=timezone.now() - timedelta(days=2))
    recent = AgentHealthCheck.objects.create(agent=agent, available=True)
    assert prune_health_checks() == 1
    assert list(AgentHealthCheck.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not AgentHealthCheck.objects.filter(pk=old.pk).exists()


def test_a_pass_sends_its_events_then_its_messages_after_commit(monkeypatch, django_capture_on_commit_callbacks):
    from coordinator import events
    from coordinator.dispatch import marker_key
    from coordinator.tasks import execute_task
    from hive_project.redis_client import get_redis

    make_agent(slug="oak", max_concurrency=3)
    tasks = [make_task(priority=p) for p in (1, 5, 3)]
    sent: list[tuple[str, str, int, bool]] = []

    def apply_async(args: tuple[str, str], queue: str, producer: object) -> None:
        task_id, dispatch_id = args
        sent.append((task_id, queue, events.current_seq(f"task.{task_id}"),
                     bool(get_redis().exists(marker_key(dispatch_id)))))

    monkeypatch.setattr(execute_task, "apply_async", apply_async)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        scheduler.schedule_once()
    assert sent == [] and len(callbacks) == 2, "one hook for the events, one for the messages"
    for callback in callbacks:
        callback()

    assert [(task_id, queue) for task_id, queue, _, _ in sent] == \
        [(str(tasks[1].pk), "hive.high"), (str(tasks[2].pk), "hive.medium"), (str(tasks[0].pk), "hive.low")]
    assert all(seq == 1 and marked for _, _, seq, marked in sent), "its event and marker are there before a message"
    assert events.events_after(f"task.{tasks[0].pk}", 0)[0]["type"] == "task.assigned"
