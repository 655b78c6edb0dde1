"""Workflows in the admin: import (validated like the API), export, edit (versioned),
executions with their node runs and a cancel action, MCP servers with "check now"."""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client

from tests.factories import make_task
from workflows import services
from workflows.models import Execution, MCPServer, NodeRun, Workflow

pytestmark = pytest.mark.django_db

WORKFLOWS = "/admin/workflows/workflow/"
EXECUTIONS = "/admin/workflows/execution/"
SERVERS = "/admin/workflows/mcpserver/"
FIXTURE = Path(__file__).resolve().parent / "fixtures" / "n8n" / "RenameKeys" / "RenameKeys.workflow.json"


@pytest.fixture
def staff(db: None) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("root", email="", password="pw-root"))
    return client


def upload(content: bytes, name: str = "workflow.json") -> io.BytesIO:
    handle = io.BytesIO(content)
    handle.name = name
    return handle


def notes(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_import_export_and_pages(staff: Client) -> None:
    listing = staff.get(WORKFLOWS)
    assert listing.status_code == 200 and b"Import n8n JSON" in listing.content
    assert staff.get(f"{WORKFLOWS}import/").status_code == 200
    response = staff.post(f"{WORKFLOWS}import/", {"file": upload(FIXTURE.read_bytes()), "name": "", "active": "on"})
    assert response.status_code == 302, response.content[:2000]
    workflow = Workflow.objects.get()
    original = json.loads(FIXTURE.read_text())
    assert workflow.name == original["name"] and workflow.version == 1 and workflow.versions.count() == 1
    assert any("Imported" in n for n in notes(response))

    page = staff.get(f"{WORKFLOWS}{workflow.pk}/change/")
    assert page.status_code == 200 and b"Export n8n JSON" in page.content

    exported = staff.get(f"{WORKFLOWS}{workflow.pk}/export/")
    assert exported.status_code == 200 and "attachment" in exported["Content-Disposition"]
    data = json.loads(exported.content)
    assert data["nodes"] == original["nodes"] and data["connections"] == original["connections"]
    action = staff.post(WORKFLOWS, {"action": "export_json", "_selected_action": [str(workflow.pk)]})
    assert json.loads(action.content)["name"] == original["name"]

    # Re-importing Hive's own export works too (a copy with a new slug).
    again = staff.post(f"{WORKFLOWS}import/", {"file": upload(exported.content), "name": "Copy of it", "active": "on"})
    assert again.status_code == 302
    assert Workflow.objects.get(name="Copy of it").slug != workflow.slug


@pytest.mark.parametrize(("content", "shown"), [
    (b"not json", "not JSON"),
    (b"[1, 2]", "one workflow"),
    (json.dumps({"name": "Broken", "nodes": [{"name": "A", "type": "n8n-nodes-base.nope", "typeVersion": 1,
                                             "parameters": {}}], "connections": {}}).encode(), "unknown node type"),
])
def test_import_shows_errors_and_stores_nothing(staff: Client, content: bytes, shown: str) -> None:
    response = staff.post(f"{WORKFLOWS}import/", {"file": upload(content), "name": "", "active": "on"})
    assert response.status_code == 200
    assert shown in response.content.decode()
    assert not Workflow.objects.exists()


def test_editing_in_the_admin_validates_and_versions(staff: Client) -> None:
    workflow = services.create_workflow(json.loads(FIXTURE.read_text()))
    url = f"{WORKFLOWS}{workflow.pk}/change/"
    data = dict(workflow.n8n_data)
    data["nodes"] = [*data["nodes"], dict(data["nodes"][0])]  # a duplicate name
    form = {"name": workflow.name, "description": "", "active": "on", "n8n_data": json.dumps(data),
            "versions-TOTAL_FORMS": "1", "versions-INITIAL_FORMS": "1", "versions-MIN_NUM_FORMS": "0",
            "versions-MAX_NUM_FORMS": "0", "versions-0-id": str(workflow.versions.get().pk),
            "versions-0-workflow": str(workflow.pk)}
    response = staff.post(url, form)
    assert response.status_code == 200 and "duplicate node name" in response.content.decode()
    workflow.refresh_from_db()
    assert workflow.version == 1
    form["n8n_data"] = json.dumps({**workflow.n8n_data, "settings": {"executionOrder": "v1"}})
    response = staff.post(url, form)
    assert response.status_code == 302, response.content.decode()[:3000]
    workflow.refresh_from_db()
    assert workflow.version == 2 and workflow.versions.count() == 2


def test_execution_admin_shows_node_runs_and_cancels(staff: Client) -> None:
    workflow = services.create_workflow(json.loads(FIXTURE.read_text()))
    pending = services.start_execution(workflow, [{"json": {}}])
    running = services.start_execution(workflow, [{"json": {}}])
    Execution.objects.filter(pk=running.pk).update(status=Execution.Status.RUNNING)
    task = make_task()
    NodeRun.objects.create(execution=running, node_name="Rename Keys", node_type="n8n-nodes-base.renameKeys",
                           sequence=0, task=task, input_items=[{"json": {"a": 1}}])
    assert staff.get(EXECUTIONS).status_code == 200
    page = staff.get(f"{EXECUTIONS}{running.pk}/change/")
    assert page.status_code == 200 and "Rename Keys" in page.content.decode()
    assert staff.get(f"{WORKFLOWS}").status_code == 200
    response = staff.post(EXECUTIONS, {"action": "cancel", "_selected_action": [str(pending.pk), str(running.pk)]})
    assert response.status_code == 302
    assert Execution.objects.get(pk=pending.pk).status == Execution.Status.CANCELLED
    assert Execution.objects.get(pk=running.pk).cancel_requested
    task.refresh_from_db()
    assert task.status == "cancelled"
    again = staff.post(EXECUTIONS, {"action": "cancel", "_selected_action": [str(pending.pk)]}, follow=True)
    assert any("already cancelled" in n for n in notes(again))


def test_mcp_server_check_now(staff: Client) -> None:
    server = MCPServer.objects.create(name="dead", transport="stdio", command=["/nonexistent/mcp-server"])
    assert staff.get(SERVERS).status_code == 200
    assert staff.get(f"{SERVERS}{server.pk}/change/").status_code == 200
    response = staff.post(SERVERS, {"action": "check_now", "_selected_action": [str(server.pk)]}, follow=True)
    assert response.status_code == 200
    server.refresh_from_db()
    assert server.status == MCPServer.Status.ERROR and server.last_error
    assert any(n.startswith("dead: error") for n in notes(response))
