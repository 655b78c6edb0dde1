"""Placement strategies and aging, as tables of cases (scheduler called directly)."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from coordinator import scheduler
from coordinator.models import Task
from tests.factories import make_agent, make_task

pytestmark = pytest.mark.django_db

LOADED = [{"name": "llama3.2:3b", "expires_at": "2999-01-01T00:00:00Z"}]
GENERAL = [{"name": "general", "proficiency": 0.5}]


def agent(slug, *, tps=20.0, loaded=False, proficiency=0.5, slots=1, busy=0, load_seconds=2.0, **extra):
    made = make_agent(slug=slug, name=slug, tokens_per_second=tps, models_loaded=LOADED if loaded else [],
                      capabilities=[{"name": "code", "proficiency": proficiency}, *GENERAL],
                      max_concurrency=slots, load_seconds=load_seconds, **extra)
    for _ in range(busy):
        make_task(status=Task.Status.RUNNING, assigned_agent=made, started_at=timezone.now(),
                  options={"num_predict": 100}, metadata={"model": "llama3.2:3b"})
    return made


def place(task_type="code", strategy="warm_first", num_predict=100):
    task = make_task(task_type=task_type, options={"num_predict": num_predict})
    scheduler.schedule_once(strategy)
    task.refresh_from_db()
    return task.assigned_agent.slug if task.assigned_agent else None


@pytest.mark.parametrize(
    ("agents", "expected", "why"),
    [
        ([dict(slug="cold", tps=50), dict(slug="warm", tps=20, loaded=True)], "warm",
         "a loaded model beats a cold load"),
        ([dict(slug="good", proficiency=0.9), dict(slug="meh", proficiency=0.4)], "good",
         "then higher proficiency"),
        ([dict(slug="slow", tps=20), dict(slug="fast", tps=25)], "fast",
         "then measured tokens/s"),
        ([dict(slug="a-busy", slots=3, busy=1, loaded=True), dict(slug="b-idle", slots=3, loaded=True)], "b-idle",
         "then fewer busy slots"),
        ([dict(slug="free-cold", tps=20, load_seconds=30),
          dict(slug="busy-warm", tps=20, loaded=True, busy=1)], None,
         "waits for a warm slot that frees sooner than a long cold load elsewhere"),
        ([dict(slug="free-cold", tps=20, load_seconds=0.5),
          dict(slug="busy-warm", tps=20, loaded=True, busy=1)], "free-cold",
         "but takes a quick cold load over a long wait"),
        ([dict(slug="slowest", tps=1, loaded=True), dict(slug="fastest", tps=80, loaded=True, busy=1)], None,
         "waits for a busy node when it is expected to finish far sooner"),
    ],
)
def test_warm_first(agents, expected, why):
    for spec in agents:
        agent(**spec)
    assert place() == expected, why


def test_a_task_waiting_for_a_busy_agent_reserves_its_slot_against_lower_priority_work():
    agent("slow", tps=1, loaded=True)
    agent("fast", tps=80, loaded=True, busy=1)
    urgent = make_task(task_type="code", priority=5, options={"num_predict": 100})
    low = make_task(task_type="code", priority=1, options={"num_predict": 100})
    scheduler.schedule_once("warm_first")
    info = scheduler.queue_info([str(urgent.pk), str(low.pk)])
    urgent.refresh_from_db()
    assert urgent.status == Task.Status.PENDING and info[str(urgent.pk)]["agent"] == "fast"
    assert info[str(urgent.pk)]["position"] == 1
    low.refresh_from_db()
    # The low task queues behind the urgent one for the fast node instead of jumping ahead of it.
    assert low.status == Task.Status.PENDING
    assert info[str(low.pk)]["agent"] == "fast" and info[str(low.pk)]["position"] == 2
    assert info[str(low.pk)]["eta"] > info[str(urgent.pk)]["eta"]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [("least_busy", ["a-node", "b-node", "c-node", "a-node"]), ("round_robin", ["a-node", "b-node", "c-node", "a-node"])],
)
def test_baseline_strategies_spread_work(strategy, expected):
    for slug in ("a-node", "b-node", "c-node"):
        agent(slug, slots=4, tps=20 if slug != "c-node" else 80)
    placed = []
    for _ in range(4):
        placed.append(place(strategy=strategy))
    assert placed == expected


def test_least_busy_ignores_speed_and_warmth():
    agent("a-slow", slots=2, tps=1)
    agent("b-fast", slots=2, tps=90, loaded=True, busy=1)
    assert place(strategy="least_busy") == "a-slow"


@pytest.mark.parametrize(
    ("low_age_minutes", "aging", "first"),
    [
        (0, 0.25, "urgent"),
        (10, 0.25, "urgent"),  # 1 + 2.5 < 5
        (17, 0.25, "old"),  # 1 + 4.25 > 5
        (60, 0.0, "urgent"),  # aging off: strict priority
    ],
)
def test_aging_lets_old_low_priority_work_overtake(settings, low_age_minutes, aging, first):
    settings.HIVE_AGING_PER_MINUTE = aging
    old = make_task(priority=1)
    Task.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(minutes=low_age_minutes))
    urgent = make_task(priority=5)
    order = scheduler.schedule_order(list(Task.objects.all()), timezone.now())
    assert order[0].pk == (old.pk if first == "old" else urgent.pk)


def test_pending_tasks_get_a_queue_position_and_an_eta(dev_api):
    agent("only", slots=1, tps=10, loaded=True, busy=1)
    ids = [dev_api.post("/api/tasks", {"title": f"t{i}", "prompt": "p", "task_type": "code",
                                       "options": {"num_predict": 100}}, format="json").json()["id"] for i in range(3)]
    scheduler.schedule_once()
    bodies = [dev_api.get(f"/api/tasks/{i}").json() for i in ids]
    assert [b["queue_position"] for b in bodies] == [1, 2, 3]
    etas = [b["estimated_start_at"] for b in bodies]
    assert etas == sorted(etas) and etas[0] < etas[1]
    listed = {t["id"]: t for t in dev_api.get("/api/tasks").json()["results"]}
    assert listed[ids[2]]["queue_position"] == 3
    assert "only" in bodies[0]["waiting_reason"]
