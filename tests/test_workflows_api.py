"""The workflows REST API: storing (both body shapes, validation, versions), executing,
cancelling, MCP servers, roles and error answers."""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Actors
from workflows.models import Execution, MCPServer, Workflow, WorkflowVersion

pytestmark = pytest.mark.django_db

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "n8n"

TRIGGER = {"name": "When clicking", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "parameters": {},
           "position": [0, 0]}
SET = {"name": "Set", "type": "n8n-nodes-base.set", "typeVersion": 3.4, "position": [200, 0], "parameters": {
    "assignments": {"assignments": [{"id": "a1", "name": "greeting", "value": "hello", "type": "string"}]},
    "options": {}}}
CONNECTIONS = {"When clicking": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}}


def n8n(nodes: list[dict[str, Any]] | None = None, connections: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"nodes": copy.deepcopy(nodes or [TRIGGER, SET]), "connections": copy.deepcopy(connections or CONNECTIONS),
            "settings": {"executionOrder": "v1"}}


def create(api: Any, name: str = "Greeter", **extra: Any) -> dict[str, Any]:
    response = api.post("/api/workflows", {"name": name, "n8n_data": n8n(), **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


# --- storing ---------------------------------------------------------------------------


def test_create_with_hives_body(dev_api: Any) -> None:
    body = create(dev_api, description="says hello")
    assert body["slug"] == "greeter" and body["version"] == 1 and body["active"] is True
    assert body["n8n_data"]["nodes"][1]["name"] == "Set"
    assert body["mcp_tools"] and body["mcp_tools"][0]["name"]
    assert body["created_by"] == "dev"
    assert list(WorkflowVersion.objects.filter(workflow_id=body["id"]).values_list("version", flat=True)) == [1]


def test_create_with_a_raw_n8n_export(dev_api: Any) -> None:
    export = json.loads((FIXTURES / "Set" / "Set.workflow.number.json").read_text())
    response = dev_api.post("/api/workflows", export, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == export["name"]
    assert [n["name"] for n in body["n8n_data"]["nodes"]] == [n["name"] for n in export["nodes"]]
    assert body["n8n_data"]["connections"] == export["connections"]
    assert "id" not in body["n8n_data"] and "active" not in body["n8n_data"]
    exported = dev_api.get(f"/api/workflows/{body['slug']}/export")
    assert exported.status_code == 200
    assert "attachment" in exported["Content-Disposition"]
    data = exported.json()
    assert data["name"] == export["name"] and data["nodes"] == export["nodes"]
    assert data["connections"] == export["connections"] and data["meta"]["hive"]["version"] == 1


def test_slugs_are_unique(dev_api: Any) -> None:
    assert create(dev_api, "Same name")["slug"] == "same-name"
    assert create(dev_api, "Same name")["slug"] == "same-name-2"


def _issue(response: Any) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["status"] == 400 and body["error"].startswith("workflow is invalid: ")
    assert body["errors"] and set(body["errors"][0]) == {"node", "parameter", "message"}
    return body


BROKEN_SET = {**SET, "name": "Set2"}


@pytest.mark.parametrize(("case", "data", "node", "parameter", "words"), [
    ("unknown type", n8n([TRIGGER, {**SET, "type": "n8n-nodes-base.doesNotExist"}]), "Set", None, "unknown node type"),
    ("dangling connection", n8n(connections={"When clicking": {"main": [[{"node": "Ghost", "type": "main", "index": 0}]]}}),
     "When clicking", None, "Ghost"),
    ("duplicate names", n8n([TRIGGER, SET, SET]), "Set", None, "duplicate"),
    ("cycle", n8n([TRIGGER, SET, BROKEN_SET], {**CONNECTIONS, "Set": {"main": [[{"node": "Set2", "type": "main", "index": 0}]]},
                                                "Set2": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}}),
     None, None, "cycle"),
    ("missing required parameter", n8n([TRIGGER, {"name": "Fetch", "type": "n8n-nodes-base.httpRequest", "typeVersion": 4.2,
                                                  "parameters": {}, "position": [0, 0]}],
                                        {"When clicking": {"main": [[{"node": "Fetch", "type": "main", "index": 0}]]}}),
     "Fetch", "url", "required"),
    ("bad expression", n8n([TRIGGER, {**SET, "parameters": {"assignments": {"assignments": [
        {"id": "a1", "name": "greeting", "value": "={{ $json.name + }}", "type": "string"}]}, "options": {}}}]),
     "Set", "assignments.assignments", ""),
])
def test_every_validation_error_is_a_400_naming_node_and_parameter(dev_api: Any, case: str, data: dict[str, Any],
                                                                   node: str | None, parameter: str | None, words: str) -> None:
    body = _issue(dev_api.post("/api/workflows", {"name": f"Broken {case}", "n8n_data": data}, format="json"))
    first = body["errors"][0]
    assert first["node"] == node
    if parameter:
        assert first["parameter"] and first["parameter"].startswith(parameter), first
    assert words.lower() in body["error"].lower()
    if node:
        assert f"'{node}'" in body["error"]
    assert not Workflow.objects.exists(), "nothing is stored"


@pytest.mark.parametrize(("body", "parameter"), [
    ({"name": "ab", "n8n_data": n8n()}, "name"),
    ({"name": "x" * 256, "n8n_data": n8n()}, "name"),
    ({"name": "Nul\u0000name", "n8n_data": n8n()}, "name"),
    ({"name": "Nul data", "n8n_data": n8n([TRIGGER, {**SET, "notes": "a\u0000b"}])}, "n8n_data"),
    ({"name": "Not an object", "n8n_data": [1, 2]}, "n8n_data"),
    ({"name": "Nothing"}, "n8n_data"),
    ({"name": "Extra", "n8n_data": n8n(), "bogus": 1}, "bogus"),
])
def test_bad_fields_are_400s_naming_them(dev_api: Any, body: dict[str, Any], parameter: str) -> None:
    result = _issue(dev_api.post("/api/workflows", body, format="json"))
    assert result["errors"][0]["parameter"] == parameter
    assert not Workflow.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(dev_api: Any) -> None:
    assert dev_api.post("/api/workflows", [1, 2], format="json").status_code == 400
    assert dev_api.post("/api/workflows", "{not json", content_type="application/json").status_code == 400


def test_a_huge_body_is_a_413(dev_api: Any, settings: Any) -> None:
    settings.HIVE_MAX_BODY_BYTES = 10_000
    data = n8n()
    data["nodes"][1]["notes"] = "x" * 20_000
    response = dev_api.post("/api/workflows", {"name": "Huge", "n8n_data": data}, format="json")
    assert response.status_code == 413
    assert "limit" in response.json()["error"]


def test_versions(dev_api: Any) -> None:
    wf = create(dev_api)
    url = f"/api/workflows/{wf['id']}"
    assert dev_api.patch(url, {"description": "only the description"}, format="json").json()["version"] == 1
    changed = n8n()
    changed["nodes"][1]["parameters"]["assignments"]["assignments"][0]["value"] = "bonjour"
    assert dev_api.patch(url, {"n8n_data": changed}, format="json").json()["version"] == 2
    assert dev_api.patch(url, {"n8n_data": changed}, format="json").json()["version"] == 2, "no change, no version"
    put = dev_api.put(url, {"name": "Greeter renamed", "n8n_data": changed}, format="json")
    assert put.status_code == 200 and put.json()["version"] == 3 and put.json()["slug"] == "greeter"
    versions = dev_api.get(f"{url}/versions").json()
    assert [v["version"] for v in versions["results"]] == [3, 2, 1]
    assert versions["results"][2]["n8n_data"]["nodes"][1]["parameters"]["assignments"]["assignments"][0]["value"] == "hello"
    assert dev_api.put(url, {"n8n_data": changed}, format="json").status_code == 400, "PUT needs the name"
    bad = dev_api.patch(url, {"n8n_data": n8n([TRIGGER, SET, SET])}, format="json")
    assert _issue(bad)["errors"][0]["node"] == "Set"
    assert Workflow.objects.get(pk=wf["id"]).version == 3, "an invalid update stores nothing"


def test_raw_export_updates_by_put(dev_api: Any) -> None:
    wf = create(dev_api)
    raw = {"name": "Greeter", **n8n([TRIGGER, {**SET, "notes": "changed"}])}
    response = dev_api.put(f"/api/workflows/{wf['slug']}", raw, format="json")
    assert response.status_code == 200 and response.json()["version"] == 2


def test_list_filters(dev_api: Any) -> None:
    create(dev_api, "Alpha flow")
    create(dev_api, "Beta flow", active=False)
    names = lambda q: [w["name"] for w in dev_api.get(f"/api/workflows{q}").json()["results"]]  # noqa: E731
    assert names("") == ["Alpha flow", "Beta flow"]
    assert names("?active=true") == ["Alpha flow"]
    assert names("?active=false") == ["Beta flow"]
    assert names("?search=beta") == ["Beta flow"]


def test_delete(dev_api: Any) -> None:
    wf = create(dev_api)
    assert dev_api.delete(f"/api/workflows/{wf['slug']}").status_code == 204
    assert dev_api.get(f"/api/workflows/{wf['id']}").status_code == 404


# --- executions ------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "items"), [
    ({}, [{"json": {}}]),
    ({"input": None}, [{"json": {}}]),
    ({"input": {"name": "Ada"}}, [{"json": {"name": "Ada"}}]),
    ({"input": [{"a": 1}, {"json": {"b": 2}}]}, [{"json": {"a": 1}}, {"json": {"b": 2}}]),
])
def test_execute_creates_a_pending_execution(dev_api: Any, body: dict[str, Any], items: list[dict[str, Any]]) -> None:
    wf = create(dev_api)
    response = dev_api.post(f"/api/workflows/{wf['slug']}/execute", body, format="json")
    assert response.status_code == 202, response.content
    execution = response.json()
    assert execution["status"] == "pending" and execution["workflow"] == wf["id"] and execution["mode"] == "manual"
    assert execution["workflow_version"] == 1 and execution["input_data"] == items
    row = Execution.objects.get(pk=execution["id"])
    assert row.n8n_data == wf["n8n_data"] and row.created_by.username == "dev"


@pytest.mark.parametrize("value", ["text", 3, [1], [{"a": 1}, "b"], {"a": "nul\u0000"}])
def test_execute_refuses_bad_input(dev_api: Any, value: Any) -> None:
    wf = create(dev_api)
    response = dev_api.post(f"/api/workflows/{wf['id']}/execute", {"input": value}, format="json")
    assert response.status_code == 400, response.content
    assert "input" in response.json()["error"]
    assert not Execution.objects.exists()


def test_executions_list_detail_and_cancel(dev_api: Any, viewer_api: Any) -> None:
    first = create(dev_api, "First")
    second = create(dev_api, "Second")
    a = dev_api.post(f"/api/workflows/{first['id']}/execute", {}, format="json").json()
    b = dev_api.post(f"/api/workflows/{second['id']}/execute", {}, format="json").json()
    listed = viewer_api.get("/api/executions").json()["results"]
    assert [e["id"] for e in listed] == [b["id"], a["id"]], "newest first"
    assert [e["id"] for e in viewer_api.get("/api/executions?workflow=first").json()["results"]] == [a["id"]]
    assert [e["id"] for e in viewer_api.get(f"/api/executions?workflow={second['id']}").json()["results"]] == [b["id"]]
    assert viewer_api.get("/api/executions?status=completed").json()["results"] == []
    assert viewer_api.get("/api/executions?status=bogus").status_code == 400
    detail = viewer_api.get(f"/api/executions/{a['id']}").json()
    assert detail["node_runs"] == [] and detail["workflow_slug"] == "first"
    assert viewer_api.post(f"/api/executions/{a['id']}/cancel").status_code == 403
    cancelled = dev_api.post(f"/api/executions/{a['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    again = dev_api.post(f"/api/executions/{a['id']}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["error"]


def test_cancelling_a_running_execution_flags_it_and_cancels_its_llm_task(dev_api: Any, actors: Actors) -> None:
    from coordinator.models import Task
    from tests.factories import make_task
    from workflows.models import NodeRun

    wf = create(dev_api)
    execution = Execution.objects.get(pk=dev_api.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").json()["id"])
    Execution.objects.filter(pk=execution.pk).update(status=Execution.Status.RUNNING)
    task = make_task()
    NodeRun.objects.create(execution=execution, node_name="Set", node_type="n8n-nodes-base.set", sequence=0, task=task)
    response = dev_api.post(f"/api/executions/{execution.pk}/cancel")
    assert response.status_code == 202 and response.json()["cancel_requested"] is True
    assert Task.objects.get(pk=task.pk).status == Task.Status.CANCELLED


def test_not_found_answers(dev_api: Any) -> None:
    for url in ("/api/workflows/nope", "/api/workflows/00000000-0000-0000-0000-000000000000",
                "/api/workflows/nope/versions", "/api/workflows/nope/export", "/api/executions/nope",
                "/api/executions/00000000-0000-0000-0000-000000000000", "/api/mcp-servers/nope"):
        response = dev_api.get(url)
        assert response.status_code == 404, url
        assert response.json()["status"] == 404
    assert dev_api.post("/api/workflows/nope/execute", {}, format="json").status_code == 404


# --- roles -----------------------------------------------------------------------------


def test_roles(actors: Actors) -> None:
    admin, dev, viewer, outsider = (actors.client(u) for u in (actors.admin, actors.developer, actors.viewer,
                                                                  actors.outsider))
    wf = create(dev)
    assert viewer.get("/api/workflows").status_code == 200
    assert viewer.get(f"/api/workflows/{wf['id']}").json()["webhook_url"] is None
    assert viewer.get(f"/api/workflows/{wf['id']}/versions").status_code == 200
    assert viewer.post("/api/workflows", {"name": "Nope", "n8n_data": n8n()}, format="json").status_code == 403
    assert viewer.patch(f"/api/workflows/{wf['id']}", {"description": "x"}, format="json").status_code == 403
    assert viewer.delete(f"/api/workflows/{wf['id']}").status_code == 403
    assert viewer.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").status_code == 403
    assert outsider.get("/api/workflows").status_code == 403
    assert outsider.get("/api/executions").status_code == 403
    assert actors.client(None).get("/api/workflows").status_code == 401
    assert dev.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").status_code == 202
    assert admin.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").status_code == 202
    server = {"name": "echo", "transport": "http", "endpoint": "http://127.0.0.1:9/mcp"}
    assert dev.post("/api/mcp-servers", server, format="json").status_code == 403
    assert viewer.get("/api/mcp-servers").status_code == 200
    assert admin.post("/api/mcp-servers", server, format="json").status_code == 201
    stdio = {"name": "local", "transport": "stdio", "command": ["python", "server.py"]}
    assert admin.post("/api/mcp-servers", stdio, format="json").status_code == 403, "stdio needs a superuser"


@pytest.fixture
def root_api(actors: Actors) -> Any:
    from django.contrib.auth.models import User

    return actors.client(User.objects.create_superuser("root", password="pw-root"))


def test_mcp_servers_crud(root_api: Any, viewer_api: Any) -> None:
    created = root_api.post("/api/mcp-servers", {"name": "files", "transport": "stdio", "command": ["uvx", "files"],
                                                 "env": {"TOKEN": "secret"}}, format="json")
    assert created.status_code == 201, created.content
    server = created.json()
    assert server["status"] == "unknown" and server["env"] == {"TOKEN": "secret"}
    assert viewer_api.get("/api/mcp-servers/files").json()["env"] == {"TOKEN": "***"}
    bad = root_api.post("/api/mcp-servers", {"name": "web", "transport": "http"}, format="json")
    assert bad.status_code == 400 and "endpoint" in bad.json()["error"]
    bad = root_api.post("/api/mcp-servers", {"name": "cmd", "transport": "stdio"}, format="json")
    assert bad.status_code == 400 and "command" in bad.json()["error"]
    assert root_api.post("/api/mcp-servers", {"name": "files", "transport": "stdio", "command": ["x"]},
                         format="json").status_code == 400
    patched = root_api.patch(f"/api/mcp-servers/{server['id']}", {"description": "local files"}, format="json")
    assert patched.status_code == 200 and patched.json()["description"] == "local files"
    assert root_api.delete("/api/mcp-servers/files").status_code == 204
    assert not MCPServer.objects.exists()


def test_mcp_server_check_reports_a_dead_server(root_api: Any, admin_api: Any) -> None:
    root_api.post("/api/mcp-servers", {"name": "dead", "transport": "stdio",
                                       "command": ["/nonexistent/mcp-server"]}, format="json")
    response = admin_api.post("/api/mcp-servers/dead/check")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "error" and response.json()["last_error"]


# --- the execution host (in-process), reconciler, retention, metric --------------------


def _counter(status: str) -> float:
    from monitoring.prometheus import WORKFLOW_EXECUTIONS

    return WORKFLOW_EXECUTIONS.labels(status=status)._value.get()


def test_an_execution_runs_records_node_runs_and_counts(dev_api: Any) -> None:
    from workflows import tasks

    wf = create(dev_api)
    execution_id = dev_api.post(f"/api/workflows/{wf['id']}/execute", {"input": {"x": 1}}, format="json").json()["id"]
    before = _counter("completed")
    assert tasks.execute(execution_id, None, "w1@test") == "completed"
    assert tasks.execute(execution_id, None, "w2@test") == "skipped", "a duplicate delivery does nothing"
    body = dev_api.get(f"/api/executions/{execution_id}").json()
    assert body["status"] == "completed" and body["worker"] == "w1@test" and body["duration"] is not None
    assert [i["json"] for i in body["output_data"]] == [{"greeting": "hello"}]
    runs = body["node_runs"]
    assert [(r["sequence"], r["node_name"], r["status"]) for r in runs] == [(0, "When clicking", "success"),
                                                                           (1, "Set", "success")]
    assert runs[0]["input_items"][0]["json"] == {"x": 1} and runs[1]["output_items"][0][0]["json"] == {"greeting": "hello"}
    assert _counter("completed") == before + 1


def test_a_failing_node_fails_the_execution_naming_it(dev_api: Any) -> None:
    from workflows import tasks

    stop = {"name": "Stop", "type": "n8n-nodes-base.stopAndError", "typeVersion": 1, "position": [400, 0],
            "parameters": {"errorMessage": "no way"}}
    data = n8n([TRIGGER, SET, stop], {**CONNECTIONS, "Set": {"main": [[{"node": "Stop", "type": "main", "index": 0}]]}})
    wf = dev_api.post("/api/workflows", {"name": "Stopper", "n8n_data": data}, format="json").json()
    execution_id = dev_api.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").json()["id"]
    assert tasks.execute(execution_id, None, "w@test") == "failed"
    execution = Execution.objects.get(pk=execution_id)
    assert execution.error_node == "Stop" and "no way" in execution.error_message
    assert execution.node_runs.get(node_name="Stop").status == "error"


def test_cap_items_keeps_a_head_and_a_marker() -> None:
    from workflows.host import MAX_STORED_ITEMS, cap_items

    items = [{"json": {"n": i}} for i in range(MAX_STORED_ITEMS + 50)]
    stored = cap_items(items)
    assert len(stored) == MAX_STORED_ITEMS + 1 and stored[:3] == items[:3]
    assert stored[-1]["json"]["_hive_truncated"] is True and stored[-1]["json"]["total_items"] == len(items)
    huge = cap_items([{"json": {"blob": "x" * 400_000}}, {"json": {"blob": "y" * 400_000}}])
    assert len(huge) == 2 and huge[1]["json"]["stored_items"] == 1
    assert cap_items(items[:3]) == items[:3]


def test_the_reconciler_fails_executions_whose_worker_died(dev_api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from hive_project.redis_client import get_redis
    from workflows import tasks
    from workflows.models import NodeRun

    wf = create(dev_api)
    lost = Execution.objects.get(pk=dev_api.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").json()["id"])
    alive = Execution.objects.get(pk=dev_api.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").json()["id"])
    pending = Execution.objects.get(pk=dev_api.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").json()["id"])
    old = timezone.now() - timedelta(minutes=5)
    Execution.objects.filter(pk__in=[lost.pk, alive.pk]).update(status="running", started_at=old, worker="w9@host")
    Execution.objects.filter(pk=pending.pk).update(created_at=old)
    NodeRun.objects.create(execution=lost, node_name="Set", node_type="n8n-nodes-base.set", sequence=0)
    get_redis().set(f"hive:workflows:lease:{alive.pk}", "1", ex=30)
    sent: list[str] = []
    monkeypatch.setattr(tasks, "enqueue", lambda execution_id, start_node=None: sent.append(str(execution_id)))
    before = _counter("failed")
    assert tasks.reconcile_executions() == {"lost": 1, "resent": 1}
    lost.refresh_from_db()
    assert lost.status == "failed" and lost.error_node == "Set"
    assert lost.error_message.startswith("worker lost while running node 'Set'") and "w9@host" in lost.error_message
    assert lost.node_runs.get().status == "error"
    assert Execution.objects.get(pk=alive.pk).status == "running"
    assert sent == [str(pending.pk)], "a pending execution whose message was lost is sent again"
    assert _counter("failed") == before + 1
    get_redis().set(f"hive:workflows:sent:{pending.pk}", "1")
    sent.clear()
    assert tasks.reconcile_executions() == {"lost": 0, "resent": 0} and sent == []


def test_retention_cleanup_deletes_old_finished_executions(dev_api: Any, settings: Any) -> None:
    from datetime import timedelta

    from django.utils import timezone

    from workflows import tasks

    settings.HIVE_EXECUTION_RETENTION_DAYS = 1
    wf = create(dev_api)
    ids = [dev_api.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").json()["id"] for _ in range(3)]
    old = timezone.now() - timedelta(days=2)
    Execution.objects.filter(pk=ids[0]).update(status="completed", created_at=old)
    Execution.objects.filter(pk=ids[1]).update(status="running", created_at=old)
    Execution.objects.filter(pk=ids[2]).update(status="failed")
    assert tasks.cleanup_executions() == 1
    assert sorted(str(pk) for pk in Execution.objects.values_list("pk", flat=True)) == sorted(ids[1:])


def test_the_periodic_jobs_include_the_workflow_ones() -> None:
    from django_celery_beat.models import PeriodicTask

    from hive_project import queues
    from hive_project.schedules import ensure_schedules

    ensure_schedules()
    jobs = {t.task: t for t in PeriodicTask.objects.all()}
    assert jobs["hive.reconcile_workflows"].queue == queues.CONTROL
    assert jobs["hive.cleanup_executions"].queue == queues.CONTROL
    assert jobs["hive.check_mcp_servers"].queue == queues.WORKFLOWS, "slow servers must not hold up the control queue"


def test_execution_task_runs_on_its_own_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    from hive_project import queues
    from workflows import tasks

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(tasks.run_execution, "apply_async", lambda *a, **kw: calls.append(kw))
    tasks.enqueue("abc", "Webhook")
    assert calls == [{"args": ["abc"], "kwargs": {"start_node": "Webhook"}, "queue": queues.WORKFLOWS}]
    assert queues.WORKFLOWS in queues.ALL_QUEUES and queues.WORKFLOWS != queues.CONTROL


def test_patch_with_an_unknown_field_is_a_400(dev_api: Any) -> None:
    wf = create(dev_api)
    response = dev_api.patch(f"/api/workflows/{wf['id']}", {"bogus": 1}, format="json")
    assert response.status_code == 400 and response.json()["errors"][0]["parameter"] == "bogus"


def test_make_run_starts_a_worker_for_workflow_executions(tmp_path: Path) -> None:
    from hive_project import queues
    from hive_project.management.commands.runhive import RunConfig, build_children

    config = RunConfig(base_dir=tmp_path, var_dir=tmp_path, settings_module="tests.settings", redis_url="redis://x",
                       embedded_redis=False, worker_concurrency=3)
    workers = {c.name: c.argv for c in build_children(config) if c.name.startswith("worker-")}
    argv = workers["worker-hive-workflows"]
    assert argv[argv.index("-Q") + 1] == queues.WORKFLOWS and argv[argv.index("--concurrency") + 1] == "3"
    assert argv[argv.index("-n") + 1] == "hive-workflows@%h"
    control = workers["worker-hive-control"]
    assert control[control.index("-Q") + 1] == queues.CONTROL


def test_the_host_loads_stored_workflows_by_id_or_slug(dev_api: Any) -> None:
    from workflows.engine.contract import NodeError
    from workflows.host import DjangoServices

    wf = create(dev_api)
    execution = Execution.objects.get(pk=dev_api.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").json()["id"])
    services = DjangoServices(execution)
    assert services.load_workflow("greeter")["nodes"] == wf["n8n_data"]["nodes"]
    assert services.load_workflow(wf["id"])["name"] == "Greeter"
    with pytest.raises(NodeError, match="No stored workflow with id or slug 'missing'"):
        services.load_workflow("missing")
    assert services.is_cancelled() is False
    Execution.objects.filter(pk=execution.pk).update(cancel_requested=True)
    services._cancel_checked = 0.0
    assert services.is_cancelled() is True
