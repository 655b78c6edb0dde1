from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from coordinator.models import Task, TaskDependency
from tests.factories import make_agent, make_task

pytestmark = pytest.mark.django_db


def test_a_developer_creates_a_task_that_starts_pending(dev_api, actors):
    response = dev_api.post("/api/tasks", {"title": "Write docs", "prompt": "Explain Hive", "task_type": "docs",
                                           "priority": 4, "model": "llama3.2:3b",
                                           "options": {"temperature": 0.1, "num_predict": 32}}, format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["status"] == "pending"
    assert body["priority"] == 4 and body["task_type"] == "docs"
    assert body["options"] == {"temperature": 0.1, "num_predict": 32}
    assert body["created_by"] == "dev"
    task = Task.objects.get(pk=body["id"])
    assert task.created_by == actors.developer


def test_general_is_the_default_task_type_and_priority_is_3(dev_api):
    body = dev_api.post("/api/tasks", {"title": "t", "prompt": "p"}, format="json").json()
    assert body["task_type"] == "general" and body["priority"] == 3


def test_every_route_answers_with_and_without_trailing_slash(dev_api):
    task = make_task()
    for path in (f"/api/tasks/{task.pk}", f"/api/tasks/{task.pk}/", "/api/tasks", "/api/tasks/",
                 "/api/status/cluster", "/api/status/cluster/", "/api/agents", "/api/agents/"):
        assert dev_api.get(path).status_code == 200, path


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"title": "t"}, "prompt"),
        ({"title": "t", "prompt": "   "}, "prompt"),
        ({"title": "t", "prompt": "p", "priority": 0}, "priority"),
        ({"title": "t", "prompt": "p", "priority": 6}, "priority"),
        ({"title": "t", "prompt": "p", "priority": "urgent"}, "priority"),
        ({"title": "t", "prompt": "p", "options": ["temperature"]}, "options"),
        ({"title": "t", "prompt": "p", "task_type": "Not A Type!"}, "task_type"),
        ({"title": "t", "prompt": "p", "depends_on": [str(uuid.UUID(int=7))]}, "depends_on"),
        ({"title": "t", "prompt": "p", "depends_on": ["not-a-uuid"]}, "depends_on"),
        ({"title": "", "prompt": "p"}, "title"),
    ],
)
def test_bad_task_input_is_a_400_naming_the_field_and_writes_nothing(dev_api, payload, field):
    response = dev_api.post("/api/tasks", payload, format="json")
    assert response.status_code == 400
    body = response.json()
    assert field in body["errors"]
    assert body["error"].startswith(field)
    assert Task.objects.count() == 0


def test_a_dependency_on_a_failed_task_is_refused(dev_api):
    failed = make_task(status=Task.Status.FAILED)
    response = dev_api.post("/api/tasks", {"title": "t", "prompt": "p", "depends_on": [str(failed.pk)]}, format="json")
    assert response.status_code == 400
    assert "already failed" in response.json()["error"]
    assert Task.objects.count() == 1


def test_a_batch_creates_a_dependency_graph_in_one_call(dev_api):
    response = dev_api.post("/api/tasks/batch", {"tasks": [
        {"key": "design", "title": "Design", "prompt": "design it"},
        {"key": "build", "title": "Build", "prompt": "build it", "depends_on": ["design"]},
        {"title": "Test", "prompt": "test it", "depends_on": ["build", "0"]},
    ]}, format="json")
    assert response.status_code == 201, response.json()
    design, build, test = response.json()
    assert build["dependencies"] == [design["id"]]
    assert sorted(test["dependencies"]) == sorted([design["id"], build["id"]])


def test_a_batch_with_a_cycle_is_refused_and_writes_nothing(dev_api):
    response = dev_api.post("/api/tasks/batch", {"tasks": [
        {"key": "a", "title": "A", "prompt": "a", "depends_on": ["b"]},
        {"key": "b", "title": "B", "prompt": "b", "depends_on": ["a"]},
    ]}, format="json")
    assert response.status_code == 400
    assert "cycle" in response.json()["error"]
    assert Task.objects.count() == 0


def test_changing_dependencies_into_a_cycle_is_refused(admin_api):
    first = make_task()
    second = make_task()
    TaskDependency.objects.create(task=second, depends_on_task=first)
    response = admin_api.patch(f"/api/tasks/{first.pk}", {"depends_on": [str(second.pk)]}, format="json")
    assert response.status_code == 400
    assert "cycle" in response.json()["errors"]["depends_on"][0]
    assert not TaskDependency.objects.filter(task=first).exists()


def test_oversized_body_is_a_413(dev_api, settings):
    settings.HIVE_MAX_BODY_BYTES = 2048
    response = dev_api.post("/api/tasks", {"title": "t", "prompt": "x" * 5000}, format="json")
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert Task.objects.count() == 0


def test_unknown_task_is_a_json_404(dev_api):
    response = dev_api.get(f"/api/tasks/{uuid.uuid4()}")
    assert response.status_code == 404
    assert "error" in response.json()


def test_cancelling_a_pending_task_is_immediate_and_fails_its_dependents(dev_api, actors):
    parent = make_task(created_by=actors.developer)
    child = make_task(created_by=actors.developer)
    TaskDependency.objects.create(task=child, depends_on_task=parent)
    response = dev_api.delete(f"/api/tasks/{parent.pk}")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    child.refresh_from_db()
    assert child.status == Task.Status.FAILED
    assert str(parent.pk) in child.error and "cancelled" in child.error


def test_cancelling_a_running_task_flags_it_for_the_worker(dev_api, actors):
    task = make_task(created_by=actors.developer, status=Task.Status.RUNNING, assigned_agent=make_agent())
    response = dev_api.delete(f"/api/tasks/{task.pk}")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True


def test_cancelling_a_finished_task_is_a_409(dev_api, actors):
    task = make_task(created_by=actors.developer, status=Task.Status.COMPLETED)
    response = dev_api.delete(f"/api/tasks/{task.pk}")
    assert response.status_code == 409
    assert "completed" in response.json()["error"]


def test_a_developer_cannot_cancel_someone_elses_task(dev_api, actors):
    task = make_task(created_by=actors.admin)
    assert dev_api.delete(f"/api/tasks/{task.pk}").status_code == 403
    task.refresh_from_db()
    assert task.status == Task.Status.PENDING


def test_assign_pins_a_task_to_an_agent(admin_api):
    agent = make_agent(slug="walnut")
    task = make_task()
    response = admin_api.put(f"/api/tasks/{task.pk}/assign", {"agent": "walnut"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["pinned_agent"]["agent_id"] == "walnut"
    task.refresh_from_db()
    assert task.pinned_agent == agent


def test_assign_to_an_unknown_agent_names_the_field(admin_api):
    task = make_task()
    response = admin_api.put(f"/api/tasks/{task.pk}/assign", {"agent": "nope"}, format="json")
    assert response.status_code == 400
    assert "agent" in response.json()["errors"]
    task.refresh_from_db()
    assert task.pinned_agent is None


def test_assign_to_an_agent_without_the_model_is_a_409(admin_api):
    make_agent(slug="small", models_available=[{"name": "tiny:1b"}], model="tiny:1b")
    task = make_task(model="llama3.1:70b")
    response = admin_api.put(f"/api/tasks/{task.pk}/assign", {"agent": "small"}, format="json")
    assert response.status_code == 409
    assert "llama3.1:70b" in response.json()["error"]


def test_the_list_filters_by_status_agent_priority_and_type(dev_api):
    agent = make_agent(slug="oak")
    make_task(status=Task.Status.COMPLETED, assigned_agent=agent, priority=5, task_type="code")
    make_task(status=Task.Status.PENDING, priority=1, task_type="docs")
    make_task(status=Task.Status.FAILED, priority=5)

    def ids(query: str) -> int:
        return dev_api.get(f"/api/tasks?{query}").json()["count"]

    assert ids("status=completed") == 1
    assert ids("status=completed&status=failed") == 2
    assert ids("agent=oak") == 1
    assert ids(f"agent={agent.pk}") == 1
    assert ids("priority=5") == 2
    assert ids("task_type=docs") == 1
    assert ids("page_size=1") == 3
    assert len(dev_api.get("/api/tasks?page_size=1").json()["results"]) == 1
    assert dev_api.get("/api/tasks?status=bogus").status_code == 400


def test_the_task_list_does_a_fixed_number_of_queries(dev_api):
    agent = make_agent()
    for _ in range(10):
        make_task(assigned_agent=agent)
    dev_api.get("/api/tasks")  # warms the user's permission cache
    with CaptureQueriesContext(connection) as ctx:
        assert dev_api.get("/api/tasks").status_code == 200
    few = len(ctx.captured_queries)
    for _ in range(10):
        make_task(assigned_agent=agent)
    with CaptureQueriesContext(connection) as ctx:
        dev_api.get("/api/tasks")
    assert len(ctx.captured_queries) == few


def test_cluster_status_counts_queue_depth_per_priority(viewer_api):
    make_agent(max_concurrency=3)
    make_task(priority=5)
    make_task(priority=5)
    make_task(priority=1)
    body = viewer_api.get("/api/status/cluster").json()
    assert body["queue"]["pending_by_priority"] == {"5": 2, "4": 0, "3": 0, "2": 0, "1": 1}
    assert body["slots"] == {"total": 3, "busy": 0, "free": 3}
    assert body["agents"]["online"] == 1


def test_agent_status_lists_slots_and_running_tasks(viewer_api):
    agent = make_agent(slug="elm", max_concurrency=2)
    task = make_task(status=Task.Status.RUNNING, assigned_agent=agent)
    (row,) = viewer_api.get("/api/status/agents").json()["agents"]
    assert row["agent_id"] == "elm"
    assert row["slots"] == {"busy": 1, "total": 2, "free": 1}
    assert row["tasks"] == [str(task.pk)]
    assert row["status"] == "online"


@pytest.mark.parametrize("offset", ["+20:21", "-23:59", "+00:00"])
def test_date_filters_take_any_iso_offset(dev_api, offset):
    # ISO 8601 and Python allow offsets up to +-23:59; PostgreSQL refuses beyond +-15:59,
    # so the filter compares in UTC instead of passing the offset through.
    dev_api.post("/api/tasks", {"title": "t", "prompt": "p"}, format="json")
    response = dev_api.get("/api/tasks", {"created_after": f"2001-02-15T00:35:06{offset}"})
    assert response.status_code == 200, response.content
    assert response.json()["count"] == 1
    response = dev_api.get("/api/tasks", {"created_before": f"2001-02-15T00:35:06{offset}"})
    assert response.status_code == 200 and response.json()["count"] == 0
