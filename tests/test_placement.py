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


# --- node memory: residency, eviction, and what a cold load costs ---------------------------------

FAR = "2999-01-01T00:00:00Z"


def resident(*names):
    """/api/ps entries, least recently used first (Ollama's expiry follows last use)."""
    return [{"name": n, "model": n, "expires_at": f"2999-01-01T00:00:{i:02d}Z"} for i, n in enumerate(names)]


def memory_agent(slug, *, loaded, capacity, tps=50.0, slots=1, load_seconds=2.0):
    return make_agent(slug=slug, name=slug, tokens_per_second=tps, max_concurrency=slots, load_seconds=load_seconds,
                      max_loaded_models=capacity, models_loaded=resident(*loaded),
                      models_available=[{"name": m} for m in ("a:latest", "b:latest", "c:latest")])


def test_timeline_evicts_the_least_recently_used_idle_model():
    line = scheduler.Timeline(agent=None, free_at=[0.0, 0.0], warm=["a:latest", "b:latest"], busy=0, capacity=2,
                              held={"a:latest": 5.0})
    # a is older but still in use until t=5: a load starting now evicts the idle b.
    assert line.victim(0.0) == "b:latest"
    # Starting after a drained, the least recently used goes.
    assert line.victim(6.0) == "a:latest"
    assert line.use("c", 0.0, 3.0) == "b:latest"
    assert line.warm == ["a:latest", "c:latest"]
    assert line.use("a:latest", 0.0, 4.0) is None and line.warm == ["c:latest", "a:latest"]


def test_a_cold_dispatch_records_the_eviction_so_the_next_pass_does_not_count_the_model_warm():
    node = memory_agent("n1", loaded=["a:latest"], capacity=1)
    cold = make_task(model="b", options={"num_predict": 10})
    scheduler.schedule_once("warm_first")
    cold.refresh_from_db()
    assert cold.assigned_agent == node and cold.metadata["cold_load"] is True
    node.refresh_from_db()
    assert [m["name"] for m in node.models_loaded] == ["b:latest"]
    assert scheduler.resident_models(node) == ["b:latest"]


def test_warm_dispatch_is_marked_warm():
    memory_agent("n1", loaded=["a:latest"], capacity=1)
    warm = make_task(model="a", options={"num_predict": 10})
    scheduler.schedule_once("warm_first")
    warm.refresh_from_db()
    assert warm.metadata["cold_load"] is False


def test_a_cold_load_does_not_evict_a_model_that_pending_work_needs_when_waiting_is_cheaper():
    # n1 is free and holds only "a" (full); n2 is busy with a "b" task that ends in ~2 s.
    # Four "a" tasks are pending too. Loading "b" on n1 would throw "a" out and cost those
    # tasks a reload, so the "b" task waits for n2 instead.
    n1 = memory_agent("n1", loaded=["a:latest"], capacity=1, load_seconds=2.0)
    n2 = memory_agent("n2", loaded=["b:latest"], capacity=1, load_seconds=2.0)
    make_task(status=Task.Status.RUNNING, assigned_agent=n2, started_at=timezone.now(), model="b",
              options={"num_predict": 100}, metadata={"model": "b"})
    b_task = make_task(model="b", priority=5, options={"num_predict": 50})
    a_tasks = [make_task(model="a", priority=1, options={"num_predict": 50}) for _ in range(4)]
    scheduler.schedule_once("warm_first")
    b_task.refresh_from_db()
    assert b_task.status == Task.Status.PENDING
    assert scheduler.queue_info([str(b_task.pk)])[str(b_task.pk)]["agent"] == "n2"
    placed = Task.objects.filter(pk__in=[t.pk for t in a_tasks], assigned_agent=n1)
    assert placed.count() >= 1  # n1 keeps serving "a" warm
    assert all(t.metadata["cold_load"] is False for t in placed)


def test_without_pending_demand_the_same_cold_load_goes_ahead():
    n1 = memory_agent("n1", loaded=["a:latest"], capacity=1, load_seconds=1.0)
    n2 = memory_agent("n2", loaded=["b:latest"], capacity=1, load_seconds=1.0)
    make_task(status=Task.Status.RUNNING, assigned_agent=n2, started_at=timezone.now(), model="b",
              options={"num_predict": 100}, metadata={"model": "b"})
    b_task = make_task(model="b", options={"num_predict": 50})
    scheduler.schedule_once("warm_first")
    b_task.refresh_from_db()
    assert b_task.assigned_agent == n1


@pytest.mark.parametrize(
    ("c_backlog", "a_elsewhere", "c_goes_to"),
    [
        # "a" is warm only on big: evicting it there would leave its 2000 pending tokens
        # nowhere warm, and its next task would reload it and evict "b" (the chain).
        (0, False, None),
        # c's own backlog is long (28 s on small) and "a" keeps a warm node (2 s of
        # work there): moving big's capacity from "a" to "c" pays.
        (6, True, "big"),
    ],
)
def test_a_cold_load_moves_capacity_only_from_a_model_that_needs_it_less(c_backlog, a_elsewhere, c_goes_to):
    big = memory_agent("big", loaded=["a:latest", "b:latest"], capacity=2, slots=4, tps=200, load_seconds=1.0)
    small = memory_agent("small", loaded=["c:latest"], capacity=1, tps=100, load_seconds=1.0)
    if a_elsewhere:
        memory_agent("other", loaded=["a:latest"], capacity=1, tps=100, load_seconds=1.0)
    make_task(status=Task.Status.RUNNING, assigned_agent=small, started_at=timezone.now(), model="c",
              options={"num_predict": 300}, metadata={"model": "c"})
    urgent = make_task(model="c", priority=5, options={"num_predict": 400})
    for _ in range(c_backlog):
        make_task(model="c", priority=4, options={"num_predict": 400})
    a_work = 1 if a_elsewhere else 10
    for _ in range(a_work):
        make_task(model="a", priority=1, options={"num_predict": 200})
    scheduler.schedule_once("warm_first")
    urgent.refresh_from_db()
    assert (urgent.assigned_agent.slug if urgent.assigned_agent else None) == c_goes_to
    if c_goes_to is None:
        assert scheduler.queue_info([str(urgent.pk)])[str(urgent.pk)]["agent"] == "small"
        assert not Task.objects.filter(assigned_agent=big, metadata__cold_load=True).exists()


def test_a_load_waits_for_the_model_in_use_to_drain():
    # n1 holds "a" in use for ~2 s more and has a second slot free; loading "b" must wait
    # for "a" to drain (Ollama's behaviour), which makes n2 (cold, slower, room in memory) better.
    n1 = memory_agent("n1", loaded=["a:latest"], capacity=1, slots=2, tps=50, load_seconds=0.5)
    memory_agent("n2", loaded=[], capacity=2, slots=1, tps=40, load_seconds=0.5)
    make_task(status=Task.Status.RUNNING, assigned_agent=n1, started_at=timezone.now(), model="a",
              options={"num_predict": 100}, metadata={"model": "a"})
    line = next(x for x in scheduler.build_timelines([n1], scheduler.Estimator([n1]), timezone.now()))
    assert line.victim(0.0) == "a:latest" and line.held["a:latest"] > 1.5
    b_task = make_task(model="b", options={"num_predict": 20})
    scheduler.schedule_once("warm_first")
    b_task.refresh_from_db()
    assert b_task.assigned_agent.slug == "n2"


@pytest.mark.parametrize(
    ("remaining_tokens", "ahead", "dispatched"),
    [
        (25, 1, 1),    # the slot frees in ~0.5 s: one task is sent ahead to wait in Ollama's queue
        (250, 1, 0),   # ~5 s: too far ahead, the task stays with the scheduler
        (25, 0, 0),    # queue-ahead off
    ],
)
def test_queue_ahead_sends_one_task_to_wait_in_ollamas_queue(settings, remaining_tokens, ahead, dispatched):
    settings.HIVE_QUEUE_AHEAD, settings.HIVE_QUEUE_AHEAD_SECONDS = ahead, 1.0
    node = memory_agent("n1", loaded=["a:latest"], capacity=1, tps=50)
    make_task(status=Task.Status.RUNNING, assigned_agent=node, started_at=timezone.now(), model="a",
              options={"num_predict": remaining_tokens}, metadata={"model": "a"})
    waiting = [make_task(model="a", options={"num_predict": 10}) for _ in range(3)]
    scheduler.schedule_once("warm_first")
    sent = Task.objects.filter(pk__in=[t.pk for t in waiting], status=Task.Status.QUEUED).count()
    assert sent == dispatched
    # A second pass does not send more than the limit.
    scheduler.schedule_once("warm_first")
    assert Task.objects.filter(pk__in=[t.pk for t in waiting], status=Task.Status.QUEUED).count() == dispatched
