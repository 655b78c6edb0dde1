"""The agents API as an admin, against a real simulated Ollama node where probing matters."""
from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from agents.models import Agent, AgentHealthCheck
from agents.simulator import OLLAMA_VERSION
from coordinator import scheduler
from coordinator.models import Task
from tests.factories import make_agent, make_task
from tests.processes import free_port, simulator

pytestmark = pytest.mark.django_db

DEFAULT_MODEL = "deepseek-r1:7b"
OTHER_MODEL = "llama3.2:3b"


@pytest.fixture(scope="module")
def node() -> Iterator[str]:
    """One simulated node for the module, with the default model already loaded."""
    with simulator(models=f"{DEFAULT_MODEL},{OTHER_MODEL}", load_delay=0.05, name="agents-api") as url:
        load(url, DEFAULT_MODEL)
        yield url


def load(url: str, model: str, *, keep_alive: int | None = None) -> None:
    """Ollama loads (or with keep_alive 0 unloads) a model on a generate with no prompt."""
    payload: dict[str, Any] = {"model": model, "prompt": ""}
    if keep_alive is not None:
        payload["keep_alive"] = keep_alive
    httpx.post(f"{url}/api/generate", json=payload, timeout=10).raise_for_status()


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


def registration(endpoint: str, **overrides: Any) -> dict[str, Any]:
    """The seed's registration JSON."""
    body = {
        "agent_id": "acacia",
        "name": "ACACIA Infrastructure Specialist",
        "endpoint": endpoint,
        "model": DEFAULT_MODEL,
        "capabilities": [
            {"name": "devops", "proficiency": 0.95},
            {"name": "architecture", "proficiency": 0.90},
            {"name": "deployment", "proficiency": 0.88},
        ],
        "hardware": {"gpu_type": "AMD Radeon RX 7900 XTX", "vram_gb": 24, "cpu_cores": 16, "ram_gb": 64},
        "performance_targets": {"min_tps": 15, "max_response_time": 30},
    }
    body.update(overrides)
    return body


def register(api: Any, endpoint: str, **overrides: Any) -> dict[str, Any]:
    response = api.post("/api/agents", registration(endpoint, **overrides), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# --- Registration ---------------------------------------------------------------


def test_registering_a_live_node_probes_it_and_marks_it_online(admin_api, node):
    body = register(admin_api, node)
    assert body["agent_id"] == "acacia"
    assert uuid.UUID(body["id"])
    assert body["status"] == "online" and body["health_status"] == "online"
    assert body["endpoint"] == node
    assert body["capabilities"] == registration(node)["capabilities"]
    assert body["hardware"] == registration(node)["hardware"]
    assert body["performance_targets"] == {"min_tps": 15, "max_response_time": 30}
    assert body["max_concurrency"] == 1 and body["draining"] is False and body["busy_slots"] == 0
    assert sorted(body["models_available"]) == sorted([DEFAULT_MODEL, OTHER_MODEL])
    assert DEFAULT_MODEL in body["models_loaded"]
    assert body["ollama_version"] == OLLAMA_VERSION
    assert body["last_seen"] is not None and body["last_error"] == ""
    (check,) = AgentHealthCheck.objects.filter(agent_id=body["id"])
    assert check.available is True
    assert check.response_time is not None and check.response_time >= 0
    assert DEFAULT_MODEL in check.models_loaded


def test_a_trailing_slash_on_the_endpoint_is_dropped(admin_api, node):
    body = register(admin_api, f"{node}/")
    assert body["endpoint"] == node
    assert body["status"] == "online"


def test_the_agent_id_is_derived_from_the_name_when_omitted(admin_api):
    body = admin_api.post("/api/agents", {"name": "Walnut Node", "endpoint": unreachable()}, format="json").json()
    assert body["agent_id"] == "walnut-node"


def test_registering_an_unreachable_node_stores_it_offline_with_the_reason(admin_api):
    endpoint = unreachable()
    body = register(admin_api, endpoint)
    assert body["status"] == "offline"
    assert body["models_available"] == [] and body["models_loaded"] == []
    assert body["ollama_version"] == ""
    assert "cannot connect" in body["last_error"] and endpoint in body["last_error"]
    agent = Agent.objects.get(slug="acacia")
    assert agent.status == Agent.Status.OFFLINE
    (check,) = agent.health_checks.all()
    assert check.available is False and "cannot connect" in check.error_message


def assert_refused(response: Any, field: str) -> None:
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["status"] == 400
    assert body["error"].startswith(field), body
    assert field in body["errors"], body


@pytest.mark.parametrize(
    "endpoint",
    [
        "192.168.1.72:11434",
        "localhost:11434",
        "ftp://192.168.1.72:21",
        "http://192.168.1.72:11434/api",
        "http://192.168.1.72:11434?x=1",
        "http://",
        "http://[::1",
        "http://192.168.1.72:99999",
        "http://192.168.1.72:0",
        "http://exa mple:11434",
        "not a url at all",
        "",
    ],
)
def test_a_malformed_endpoint_is_a_400_naming_the_endpoint_and_writes_nothing(admin_api, endpoint):
    response = admin_api.post("/api/agents", registration(endpoint), format="json")
    assert_refused(response, "endpoint")
    assert not Agent.objects.exists()
    assert not AgentHealthCheck.objects.exists()


@pytest.mark.parametrize("proficiency", [1.5, -0.1, "very"])
def test_a_proficiency_outside_0_to_1_is_a_400_naming_the_capability(admin_api, proficiency):
    capabilities = [{"name": "devops", "proficiency": 0.9}, {"name": "code", "proficiency": proficiency}]
    response = admin_api.post("/api/agents", registration(unreachable(), capabilities=capabilities), format="json")
    assert_refused(response, "capabilities")
    assert "proficiency" in response.json()["error"]
    assert not Agent.objects.exists()


@pytest.mark.parametrize(
    "capabilities",
    [{"name": "devops", "proficiency": 0.9}, "devops", [{"proficiency": 0.9}], ["devops"], [{"name": ""}]],
)
def test_capabilities_that_are_not_a_list_of_named_objects_are_a_400(admin_api, capabilities):
    response = admin_api.post("/api/agents", registration(unreachable(), capabilities=capabilities), format="json")
    assert_refused(response, "capabilities")
    assert not Agent.objects.exists()


def test_a_capability_listed_twice_is_a_400(admin_api):
    capabilities = [{"name": "devops", "proficiency": 0.9}, {"name": "devops", "proficiency": 0.5}]
    response = admin_api.post("/api/agents", registration(unreachable(), capabilities=capabilities), format="json")
    assert_refused(response, "capabilities")
    assert "twice" in response.json()["error"]
    assert not Agent.objects.exists()


def test_a_duplicate_agent_id_is_a_400_and_the_first_agent_is_untouched(admin_api):
    first = make_agent(slug="acacia", name="First")
    response = admin_api.post("/api/agents", registration(unreachable()), format="json")
    assert_refused(response, "agent_id")
    assert "already exists" in response.json()["error"]
    assert list(Agent.objects.values_list("pk", "name")) == [(first.pk, "First")]
    assert not AgentHealthCheck.objects.exists()


@pytest.mark.parametrize("max_concurrency", [0, -1, 65])
def test_max_concurrency_out_of_range_is_a_400(admin_api, max_concurrency):
    response = admin_api.post("/api/agents", registration(unreachable(), max_concurrency=max_concurrency),
                              format="json")
    assert_refused(response, "max_concurrency")
    assert not Agent.objects.exists()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_concurrency", "lots"),
        ("max_concurrency", 1.5),
        ("hardware", "24GB"),
        ("hardware", [24]),
        ("performance_targets", 15),
        ("agent_id", "not a slug!"),
        ("agent_id", ["acacia"]),
        ("name", {"first": "ACACIA"}),
        ("endpoint", 11434),
        ("capabilities", None),
    ],
)
def test_a_value_of_the_wrong_type_is_a_400_naming_the_field(admin_api, field, value):
    body = registration(unreachable())
    body[field] = value
    response = admin_api.post("/api/agents", body, format="json")
    assert_refused(response, field)
    assert not Agent.objects.exists()


def test_a_missing_endpoint_is_a_400(admin_api):
    body = registration(unreachable())
    del body["endpoint"]
    assert_refused(admin_api.post("/api/agents", body, format="json"), "endpoint")
    assert not Agent.objects.exists()


# --- Reading --------------------------------------------------------------------


def test_an_agent_is_found_by_uuid_and_by_agent_id(admin_api):
    agent = make_agent(slug="walnut")
    for key in (str(agent.pk), "walnut"):
        response = admin_api.get(f"/api/agents/{key}")
        assert response.status_code == 200, key
        assert response.json()["id"] == str(agent.pk) and response.json()["agent_id"] == "walnut"


@pytest.mark.parametrize("key", ["nobody", str(uuid.UUID(int=1))])
def test_an_unknown_agent_is_a_json_404(admin_api, key):
    response = admin_api.get(f"/api/agents/{key}")
    assert response.status_code == 404
    assert response.json() == {"error": f"No agent with id '{key}'.", "status": 404}


def slugs(response: Any) -> list[str]:
    assert response.status_code == 200, response.json()
    return [a["agent_id"] for a in response.json()["results"]]


def test_the_list_is_paginated_and_ordered_by_name(admin_api):
    make_agent(slug="b", name="Beta")
    make_agent(slug="a", name="Alpha")
    body = admin_api.get("/api/agents").json()
    assert body["count"] == 2
    assert [a["agent_id"] for a in body["results"]] == ["a", "b"]


def test_the_list_filters_by_status_and_draining(admin_api):
    make_agent(slug="up", name="1 up")
    make_agent(slug="down", name="2 down", status=Agent.Status.OFFLINE)
    make_agent(slug="leaving", name="3 leaving", draining=True)
    assert slugs(admin_api.get("/api/agents?status=offline")) == ["down"]
    assert slugs(admin_api.get("/api/agents?draining=true")) == ["leaving"]
    assert slugs(admin_api.get("/api/agents?draining=false")) == ["up", "down"]
    assert slugs(admin_api.get("/api/agents?status=online&draining=false")) == ["up"]


def test_the_list_filters_by_the_status_it_shows(admin_api):
    make_agent(slug="up", name="1 up")
    make_agent(slug="leaving", name="2 leaving", draining=True)
    full = make_agent(slug="full", name="3 full", max_concurrency=1)
    make_task(status=Task.Status.RUNNING, assigned_agent=full)
    assert slugs(admin_api.get("/api/agents?status=draining")) == ["leaving"]
    assert slugs(admin_api.get("/api/agents?status=busy")) == ["full"]
    assert slugs(admin_api.get("/api/agents?status=online")) == ["up"]


def test_the_list_filters_by_health_status_whatever_is_shown(admin_api):
    make_agent(slug="up", name="1 up")
    make_agent(slug="leaving", name="2 leaving", draining=True)
    make_agent(slug="down", name="3 down", status=Agent.Status.OFFLINE)
    assert slugs(admin_api.get("/api/agents?health_status=online")) == ["up", "leaving"]


def test_an_unknown_filter_value_is_a_400(admin_api):
    response = admin_api.get("/api/agents?status=sleeping")
    assert response.status_code == 400
    assert response.json()["error"].startswith("status")


def test_the_list_shows_busy_slots_from_tasks_holding_a_slot(admin_api):
    agent = make_agent(slug="oak", max_concurrency=1)
    make_task(status=Task.Status.RUNNING, assigned_agent=agent)
    make_task(status=Task.Status.COMPLETED, assigned_agent=agent)
    (body,) = admin_api.get("/api/agents").json()["results"]
    assert body["busy_slots"] == 1
    assert body["status"] == "busy" and body["health_status"] == "online"


# --- Changing -------------------------------------------------------------------


def test_patch_changes_concurrency_and_capabilities(admin_api):
    agent = make_agent(slug="oak")
    capabilities = [{"name": "code", "proficiency": 0.8}]
    response = admin_api.patch("/api/agents/oak", {"max_concurrency": 4, "capabilities": capabilities},
                               format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["max_concurrency"] == 4
    assert response.json()["capabilities"] == capabilities
    agent.refresh_from_db()
    assert agent.max_concurrency == 4 and agent.capabilities == capabilities


def test_patch_with_a_bad_value_is_a_400_and_changes_nothing(admin_api):
    agent = make_agent(slug="oak", max_concurrency=2)
    response = admin_api.patch("/api/agents/oak", {"max_concurrency": 0, "name": "Renamed"}, format="json")
    assert_refused(response, "max_concurrency")
    agent.refresh_from_db()
    assert agent.max_concurrency == 2 and agent.name != "Renamed"


def test_patch_cannot_take_another_agents_id(admin_api):
    make_agent(slug="oak")
    make_agent(slug="elm")
    assert_refused(admin_api.patch("/api/agents/elm", {"agent_id": "oak"}, format="json"), "agent_id")
    assert Agent.objects.filter(slug="elm").exists()


def test_read_only_fields_are_ignored_on_patch(admin_api):
    agent = make_agent(slug="oak")
    response = admin_api.patch("/api/agents/oak", {"draining": True, "ollama_version": "9.9", "status": "offline"},
                               format="json")
    assert response.status_code == 200
    agent.refresh_from_db()
    assert agent.draining is False and agent.ollama_version == "" and agent.status == Agent.Status.ONLINE


def test_changing_the_endpoint_probes_the_node_again(admin_api, node):
    register(admin_api, unreachable())
    response = admin_api.patch("/api/agents/acacia", {"endpoint": node}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["status"] == "online" and body["last_error"] == ""
    assert body["ollama_version"] == OLLAMA_VERSION
    assert DEFAULT_MODEL in body["models_available"]
    checks = list(Agent.objects.get(slug="acacia").health_checks.values_list("available", flat=True))
    assert checks == [True, False]


def test_a_patch_that_keeps_the_endpoint_does_not_probe(admin_api):
    agent = make_agent(slug="oak")
    response = admin_api.patch("/api/agents/oak", {"endpoint": f"{agent.endpoint}/", "name": "Oak"}, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == "online"
    assert not agent.health_checks.exists()


# --- Draining -------------------------------------------------------------------


def test_draining_shows_as_status_draining_and_undrain_restores_it(admin_api):
    agent = make_agent(slug="oak")
    response = admin_api.post(f"/api/agents/{agent.pk}/drain")
    assert response.status_code == 200
    assert response.json()["status"] == "draining" and response.json()["draining"] is True
    assert response.json()["health_status"] == "online"
    assert admin_api.get("/api/agents/oak").json()["status"] == "draining"
    response = admin_api.post("/api/agents/oak/undrain")
    assert response.status_code == 200
    assert response.json()["status"] == "online" and response.json()["draining"] is False
    agent.refresh_from_db()
    assert agent.draining is False


def test_a_draining_agent_gets_no_new_work_and_keeps_its_running_task(admin_api):
    agent = make_agent(slug="oak", max_concurrency=2)
    running = make_task(status=Task.Status.RUNNING, assigned_agent=agent)
    assert admin_api.post("/api/agents/oak/drain").status_code == 200
    waiting = make_task()
    result = scheduler.schedule_once()
    assert result.placed == []
    waiting.refresh_from_db()
    running.refresh_from_db()
    assert waiting.status == Task.Status.PENDING and waiting.assigned_agent is None
    assert running.status == Task.Status.RUNNING and running.assigned_agent == agent
    assert admin_api.get("/api/agents/oak").json()["busy_slots"] == 1

    assert admin_api.post("/api/agents/oak/undrain").status_code == 200
    assert scheduler.schedule_once().placed == [(waiting.pk, agent.pk)]


def test_draining_an_unknown_agent_is_a_404(admin_api):
    assert admin_api.post("/api/agents/nobody/drain").status_code == 404


# --- Probe and health -----------------------------------------------------------


def test_the_probe_action_refreshes_the_loaded_models(admin_api, node):
    load(node, OTHER_MODEL, keep_alive=0)
    body = register(admin_api, node)
    assert OTHER_MODEL not in body["models_loaded"]
    load(node, OTHER_MODEL)
    response = admin_api.post("/api/agents/acacia/probe")
    assert response.status_code == 200
    assert OTHER_MODEL in response.json()["models_loaded"]
    assert Agent.objects.get(slug="acacia").health_checks.count() == 2


def test_probing_a_node_that_went_away_marks_it_offline(admin_api):
    make_agent(slug="oak", endpoint=unreachable())
    body = admin_api.post("/api/agents/oak/probe").json()
    assert body["status"] == "offline" and "cannot connect" in body["last_error"]


def test_the_health_action_lists_recent_checks_newest_first(admin_api, node):
    register(admin_api, unreachable())
    admin_api.patch("/api/agents/acacia", {"endpoint": node}, format="json")
    response = admin_api.get("/api/agents/acacia/health")
    assert response.status_code == 200
    newest, oldest = response.json()
    assert newest["available"] is True and newest["error_message"] == ""
    assert DEFAULT_MODEL in newest["models_loaded"] and newest["response_time"] >= 0
    assert oldest["available"] is False and "cannot connect" in oldest["error_message"]
    assert newest["timestamp"] >= oldest["timestamp"]


# --- Deleting -------------------------------------------------------------------


def test_deleting_an_idle_agent_is_a_204(admin_api):
    agent = make_agent(slug="oak")
    make_task(status=Task.Status.COMPLETED, assigned_agent=agent)
    response = admin_api.delete("/api/agents/oak")
    assert response.status_code == 204
    assert not Agent.objects.filter(pk=agent.pk).exists()


@pytest.mark.parametrize("task_status", [Task.Status.RUNNING, Task.Status.QUEUED])
def test_deleting_an_agent_with_work_on_it_is_a_409_and_keeps_it(admin_api, task_status):
    agent = make_agent(slug="oak")
    task = make_task(status=task_status, assigned_agent=agent)
    response = admin_api.delete(f"/api/agents/{agent.pk}")
    assert response.status_code == 409
    body = response.json()
    assert body["status"] == 409
    assert "oak" in body["error"] and "drain" in body["error"]
    assert Agent.objects.filter(pk=agent.pk).exists()
    task.refresh_from_db()
    assert task.assigned_agent == agent


# --- Roles ----------------------------------------------------------------------


def test_a_viewer_can_read_agents(viewer_api):
    make_agent(slug="oak")
    assert viewer_api.get("/api/agents").status_code == 200
    assert viewer_api.get("/api/agents/oak").status_code == 200
    assert viewer_api.get("/api/agents/oak/health").status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("post", "/api/agents", {"agent_id": "elm", "name": "Elm", "endpoint": "http://127.0.0.1:9"}),
        ("patch", "/api/agents/oak", {"max_concurrency": 4}),
        ("put", "/api/agents/oak", {"agent_id": "oak", "name": "Oak", "endpoint": "http://127.0.0.1:9"}),
        ("delete", "/api/agents/oak", None),
        ("post", "/api/agents/oak/drain", None),
        ("post", "/api/agents/oak/undrain", None),
        ("post", "/api/agents/oak/probe", None),
    ],
)
def test_a_viewer_cannot_change_agents(viewer_api, method, path, payload):
    agent = make_agent(slug="oak", max_concurrency=2, last_probe_at=None)
    response = getattr(viewer_api, method)(path, payload, format="json")
    assert response.status_code == 403
    assert "permission" in response.json()["error"]
    assert list(Agent.objects.values_list("slug", flat=True)) == ["oak"]
    agent.refresh_from_db()
    assert agent.max_concurrency == 2 and agent.draining is False and agent.last_probe_at is None
