"""Issue #15 (red-team report) in the workflows app, through the real API, admin and webhook URL:
workflow ownership and sharing, the MCP server registry's stdio rule, allowlist and masking,
and webhook throttling, header redaction and unsafe JSON bodies."""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client

from tests.conftest import Actors
from workflows.engine.contract import NodeError
from workflows.host import DjangoServices
from workflows.mcp_bridge import MCPBridgeError, call_tool
from workflows.models import Execution, MCPServer, Workflow

pytestmark = pytest.mark.django_db

ECHO_SERVER = str(Path(__file__).with_name("mcp_echo_server.py"))
TRIGGER = {"name": "When clicking", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "parameters": {},
           "position": [0, 0]}
SET = {"name": "Set", "type": "n8n-nodes-base.set", "typeVersion": 3.4, "position": [200, 0], "parameters": {
    "assignments": {"assignments": [{"id": "a1", "name": "greeting", "value": "hello", "type": "string"}]},
    "options": {}}}


def manual_flow() -> dict[str, Any]:
    return {"nodes": copy.deepcopy([TRIGGER, SET]), "connections": {
        "When clicking": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}}}


def webhook_flow() -> dict[str, Any]:
    hook = {"name": "Webhook", "type": "n8n-nodes-base.webhook", "typeVersion": 2, "position": [0, 0],
            "webhookId": "x", "parameters": {"path": "hook", "httpMethod": "POST"}}
    return {"nodes": [hook, copy.deepcopy(SET)], "connections": {
        "Webhook": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}}}


def create(api: Any, name: str = "Greeter", data: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    response = api.post("/api/workflows", {"name": name, "n8n_data": data or manual_flow(), **extra}, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def snapshot(workflow_id: str) -> dict[str, Any]:
    row = Workflow.objects.get(pk=workflow_id)
    return {"name": row.name, "description": row.description, "version": row.version, "active": row.active,
            "n8n_data": row.n8n_data, "owner": row.created_by_id,
            "groups": sorted(row.shared_with_groups.values_list("name", flat=True))}


@pytest.fixture
def dana(actors: Actors) -> User:
    """A second developer, who owns nothing of the first one's."""
    user = User.objects.create_user("dana", password="pw-dana")
    user.groups.add(Group.objects.get(name="developer"))
    return user


@pytest.fixture
def root(actors: Actors) -> User:
    return User.objects.create_superuser("root", password="pw-root")


def forbidden(response: Any) -> str:
    assert response.status_code == 403, response.content
    body = response.json()
    assert body["status"] == 403 and body["error"]
    return body["error"]


# --- workflow ownership -----------------------------------------------------------------


def test_a_developer_cannot_change_run_or_delete_another_developers_workflow(actors: Actors, dana: User) -> None:
    wf = create(actors.client(actors.developer))
    before = snapshot(wf["id"])
    other = actors.client(dana)
    injected = {**manual_flow(), "nodes": [TRIGGER, {**SET, "notes": "injected"}]}
    message = forbidden(other.patch(f"/api/workflows/{wf['id']}", {"n8n_data": injected}, format="json"))
    assert "Greeter" in message and "dev" in message, "the message names the workflow and its owner"
    forbidden(other.put(f"/api/workflows/{wf['slug']}", {"name": "Taken over", "n8n_data": injected}, format="json"))
    forbidden(other.delete(f"/api/workflows/{wf['id']}"))
    forbidden(other.post(f"/api/workflows/{wf['id']}/execute", {"input": {"x": 1}}, format="json"))
    assert snapshot(wf["id"]) == before and not Execution.objects.exists()
    assert other.get(f"/api/workflows/{wf['id']}").json()["can_change"] is False, "reading is still allowed"
    assert other.get(f"/api/workflows/{wf['id']}/versions").status_code == 200


def test_the_owner_and_an_admin_may_change_run_and_delete_it(actors: Actors) -> None:
    owner, admin = actors.client(actors.developer), actors.client(actors.admin)
    wf = create(owner)
    assert owner.get(f"/api/workflows/{wf['id']}").json()["can_change"] is True
    assert owner.patch(f"/api/workflows/{wf['id']}", {"description": "mine"}, format="json").status_code == 200
    assert owner.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").status_code == 202
    assert admin.patch(f"/api/workflows/{wf['id']}", {"description": "audited"}, format="json").status_code == 200
    assert admin.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").status_code == 202
    assert Workflow.objects.get(pk=wf["id"]).created_by == actors.developer, "an admin's change keeps the owner"
    assert admin.delete(f"/api/workflows/{wf['id']}").status_code == 204
    assert not Workflow.objects.filter(pk=wf["id"]).exists()


def test_sharing_with_a_group_lets_its_members_change_and_run_it(actors: Actors, dana: User) -> None:
    team = Group.objects.create(name="team-blue")
    dana.groups.add(team)
    owner, member = actors.client(actors.developer), actors.client(dana)
    wf = create(owner, data=webhook_flow())
    shared = owner.patch(f"/api/workflows/{wf['id']}", {"shared_with_groups": ["team-blue"]}, format="json")
    assert shared.status_code == 200 and shared.json()["shared_with_groups"] == ["team-blue"]
    detail = member.get(f"/api/workflows/{wf['id']}").json()
    assert detail["can_change"] is True and detail["webhook_url"], "members see the webhook URL"
    assert member.patch(f"/api/workflows/{wf['id']}", {"description": "team work"}, format="json").status_code == 200
    assert member.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").status_code == 202
    message = forbidden(member.patch(f"/api/workflows/{wf['id']}", {"shared_with_groups": ["developer"]},
                                     format="json"))
    assert "shared_with_groups" in message, "only the owner or an admin chooses who it is shared with"
    assert snapshot(wf["id"])["groups"] == ["team-blue"]
    assert member.delete(f"/api/workflows/{wf['id']}").status_code == 204


def test_a_viewer_in_a_shared_group_still_only_reads(actors: Actors) -> None:
    team = Group.objects.create(name="team-red")
    actors.viewer.groups.add(team)
    wf = create(actors.client(actors.developer), data=webhook_flow(), shared_with_groups=["team-red"])
    viewer = actors.client(actors.viewer)
    detail = viewer.get(f"/api/workflows/{wf['id']}").json()
    assert detail["webhook_url"] is None and detail["can_change"] is False
    assert viewer.patch(f"/api/workflows/{wf['id']}", {"description": "x"}, format="json").status_code == 403


def test_viewers_and_other_developers_never_see_the_webhook_token(actors: Actors, dana: User) -> None:
    owner = actors.client(actors.developer)
    wf = create(owner, data=webhook_flow())
    token = Workflow.objects.get(pk=wf["id"]).webhook_token
    assert token and token in owner.get(f"/api/workflows/{wf['id']}").json()["webhook_url"]
    for reader in (actors.client(actors.viewer), actors.client(dana)):
        listed = reader.get("/api/workflows")
        detail = reader.get(f"/api/workflows/{wf['id']}")
        exported = reader.get(f"/api/workflows/{wf['id']}/export")
        versions = reader.get(f"/api/workflows/{wf['id']}/versions")
        for response in (listed, detail, exported, versions):
            assert response.status_code == 200
            assert token.encode() not in response.content
        assert listed.json()["results"][0]["webhook_url"] is None and detail.json()["webhook_url"] is None


def test_the_owner_is_whoever_creates_it_and_cannot_be_spoofed(actors: Actors) -> None:
    dev = actors.client(actors.developer)
    spoofed = dev.post("/api/workflows", {"name": "Mine", "n8n_data": manual_flow(), "created_by": "alice"},
                       format="json")
    assert spoofed.status_code == 400 and "created_by" in spoofed.json()["error"]
    raw = dev.post("/api/workflows", {"name": "Raw export", **manual_flow(), "created_by": "alice", "owner": "alice"},
                   format="json")
    assert raw.status_code == 201 and raw.json()["created_by"] == "dev"
    assert Workflow.objects.get(pk=raw.json()["id"]).created_by == actors.developer
    patched = dev.patch(f"/api/workflows/{raw.json()['id']}", {"created_by": "alice"}, format="json")
    assert patched.status_code == 400
    assert Workflow.objects.get(pk=raw.json()["id"]).created_by == actors.developer


def test_sharing_with_a_group_that_does_not_exist_is_a_400(actors: Actors) -> None:
    dev = actors.client(actors.developer)
    response = dev.post("/api/workflows", {"name": "Lonely", "n8n_data": manual_flow(),
                                           "shared_with_groups": ["ghosts"]}, format="json")
    assert response.status_code == 400 and "ghosts" in response.json()["error"]
    assert not Workflow.objects.exists()
    bad = dev.post("/api/workflows", {"name": "Odd", "n8n_data": manual_flow(), "shared_with_groups": "team"},
                   format="json")
    assert bad.status_code == 400 and "shared_with_groups" in bad.json()["error"]


def test_a_developer_may_cancel_only_executions_of_workflows_they_may_change(actors: Actors, dana: User) -> None:
    owner, other = actors.client(actors.developer), actors.client(dana)
    wf = create(owner)
    execution = owner.post(f"/api/workflows/{wf['id']}/execute", {}, format="json").json()
    assert other.get(f"/api/executions/{execution['id']}").status_code == 200, "executions stay readable"
    forbidden(other.post(f"/api/executions/{execution['id']}/cancel"))
    assert Execution.objects.get(pk=execution["id"]).status == "pending"
    team = Group.objects.create(name="on-call")
    dana.groups.add(team)
    owner.patch(f"/api/workflows/{wf['id']}", {"shared_with_groups": ["on-call"]}, format="json")
    assert other.post(f"/api/executions/{execution['id']}/cancel").json()["status"] == "cancelled"


def test_a_sub_workflow_loads_only_workflows_its_caller_may_run(actors: Actors, dana: User) -> None:
    from workflows import services

    theirs = create(actors.client(actors.developer), "Theirs")
    mine = create(actors.client(dana), "Mine")
    manual = services.start_execution(Workflow.objects.get(pk=mine["id"]), [{"json": {}}], dana)
    with pytest.raises(NodeError, match="may not be run"):
        DjangoServices(manual).load_workflow("theirs")
    assert DjangoServices(manual).load_workflow("mine")["name"] == "Mine"
    hooked = services.start_execution(Workflow.objects.get(pk=mine["id"]), [{"json": {}}], mode="webhook")
    with pytest.raises(NodeError, match="may not be run"):
        DjangoServices(hooked).load_workflow(theirs["id"])  # a webhook run acts for the workflow's owner


def test_staff_who_are_not_admins_change_only_their_own_workflows_in_the_django_admin(actors: Actors,
                                                                                      dana: User) -> None:
    wf = create(actors.client(actors.developer), data=webhook_flow())
    token = Workflow.objects.get(pk=wf["id"]).webhook_token
    own = create(actors.client(dana), "Own flow")
    User.objects.filter(pk=dana.pk).update(is_staff=True)
    browser = Client()
    browser.force_login(User.objects.get(pk=dana.pk))
    admin = Client()
    admin.force_login(actors.admin)
    assert token in admin.get(f"/admin/workflows/workflow/{wf['id']}/change/").content.decode()
    page = browser.get(f"/admin/workflows/workflow/{wf['id']}/change/")
    assert page.status_code == 200 and token not in page.content.decode(), "read-only, and no webhook token"
    form = {"name": "Taken", "description": "", "active": "on", "n8n_data": json.dumps(webhook_flow())}
    assert browser.post(f"/admin/workflows/workflow/{wf['id']}/change/", form).status_code == 403
    assert browser.post(f"/admin/workflows/workflow/{wf['id']}/delete/", {"post": "yes"}).status_code == 403
    bulk = browser.post("/admin/workflows/workflow/", {"action": "delete_selected", "post": "yes",
                                                       "_selected_action": [wf["id"], own["id"]]})
    assert bulk.status_code == 403
    browser.post("/admin/workflows/workflow/", {"action": "deactivate", "_selected_action": [wf["id"]]})
    assert snapshot(wf["id"])["name"] == "Greeter" and Workflow.objects.get(pk=wf["id"]).active
    assert Workflow.objects.filter(pk=own["id"]).exists()
    assert browser.get(f"/admin/workflows/workflow/{own['id']}/change/").status_code == 200


# --- MCP server registry ----------------------------------------------------------------


STDIO = {"name": "local-tools", "transport": "stdio", "command": [sys.executable, ECHO_SERVER, "--token", "s3cret"],
         "env": {"API_KEY": "k-123"}}


def test_stdio_servers_can_be_registered_and_changed_by_superusers_only(actors: Actors, root: User) -> None:
    admin, superuser = actors.client(actors.admin), actors.client(root)
    message = forbidden(admin.post("/api/mcp-servers", STDIO, format="json"))
    assert "superuser" in message and not MCPServer.objects.exists()
    http = admin.post("/api/mcp-servers", {"name": "remote", "transport": "http",
                                           "endpoint": "http://127.0.0.1:9/mcp"}, format="json")
    assert http.status_code == 201, "HTTP servers stay with the admin role"
    forbidden(admin.patch("/api/mcp-servers/remote", {"transport": "stdio", "command": ["bash", "-c", "id"]},
                          format="json"))
    assert MCPServer.objects.get(name="remote").transport == "http" and MCPServer.objects.get(name="remote").command == []
    created = superuser.post("/api/mcp-servers", STDIO, format="json")
    assert created.status_code == 201, created.content
    forbidden(admin.patch("/api/mcp-servers/local-tools", {"command": ["bash", "-c", "id"]}, format="json"))
    forbidden(admin.put("/api/mcp-servers/local-tools", {**STDIO, "command": ["bash"]}, format="json"))
    assert MCPServer.objects.get(name="local-tools").command == STDIO["command"]
    changed = superuser.patch("/api/mcp-servers/local-tools", {"command": [sys.executable, ECHO_SERVER]}, format="json")
    assert changed.status_code == 200 and MCPServer.objects.get(name="local-tools").command == [sys.executable, ECHO_SERVER]


def test_the_stdio_allowlist_refuses_other_executables_when_registering(actors: Actors, root: User,
                                                                         settings: Any) -> None:
    settings.HIVE_MCP_STDIO_ALLOWED = [sys.executable]
    superuser = actors.client(root)
    refused = superuser.post("/api/mcp-servers", {**STDIO, "command": ["bash", "-c", "id"]}, format="json")
    assert refused.status_code == 400 and "'bash'" in refused.json()["error"]
    assert "HIVE_MCP_STDIO_ALLOWED" in refused.json()["error"] and not MCPServer.objects.exists()
    assert superuser.post("/api/mcp-servers", STDIO, format="json").status_code == 201
    moved = superuser.patch("/api/mcp-servers/local-tools", {"command": ["/tmp/python", "x"]}, format="json")
    assert moved.status_code == 400 and "/tmp/python" in moved.json()["error"]


def test_a_row_stored_before_the_allowlist_was_tightened_does_not_run(actors: Actors, settings: Any,
                                                                      tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    MCPServer.objects.create(name="legacy", transport="stdio",
                             command=[sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"])
    settings.HIVE_MCP_STDIO_ALLOWED = ["/usr/bin/true"]
    checked = actors.client(actors.admin).post("/api/mcp-servers/legacy/check")
    assert checked.status_code == 200 and checked.json()["status"] == "error"
    assert "not allowed" in checked.json()["last_error"] and "HIVE_MCP_STDIO_ALLOWED" in checked.json()["last_error"]
    with pytest.raises(MCPBridgeError, match="not allowed"):
        call_tool("legacy", "echo", {"text": "x"}, timeout=10)
    assert not marker.exists(), "nothing was spawned"


def test_command_arguments_and_env_are_masked_except_for_superusers(actors: Actors, root: User) -> None:
    MCPServer.objects.create(**STDIO)
    for reader in (actors.admin, actors.viewer, actors.developer):
        body = actors.client(reader).get("/api/mcp-servers/local-tools").json()
        assert body["command"] == [sys.executable, "***", "***", "***"] and body["env"] == {"API_KEY": "***"}
        listed = actors.client(reader).get("/api/mcp-servers")
        assert b"s3cret" not in listed.content and b"k-123" not in listed.content
    clear = actors.client(root).get("/api/mcp-servers/local-tools").json()
    assert clear["command"] == STDIO["command"] and clear["env"] == STDIO["env"]


def test_the_django_admin_masks_them_too_and_refuses_stdio_to_non_superusers(actors: Actors, root: User) -> None:
    server = MCPServer.objects.create(**STDIO)
    staff = Client()
    staff.force_login(actors.admin)  # the admin role is staff, not superuser
    for url in ("/admin/workflows/mcpserver/", f"/admin/workflows/mcpserver/{server.pk}/change/"):
        page = staff.get(url)
        assert page.status_code == 200 and "***" in page.content.decode()
        assert "s3cret" not in page.content.decode() and "k-123" not in page.content.decode()
    staff.post(f"/admin/workflows/mcpserver/{server.pk}/change/", {"name": "local-tools", "transport": "stdio",
                                                                   "command": '["bash"]', "env": "{}"})
    assert MCPServer.objects.get(pk=server.pk).command == STDIO["command"]
    staff.post("/admin/workflows/mcpserver/add/", {"name": "sneaky", "transport": "stdio", "command": '["bash"]',
                                                   "env": "{}", "capabilities": "[]"})
    assert not MCPServer.objects.filter(name="sneaky").exists()
    superuser = Client()
    superuser.force_login(root)
    assert "s3cret" in superuser.get(f"/admin/workflows/mcpserver/{server.pk}/change/").content.decode()


def test_masked_values_sent_back_keep_the_stored_ones(actors: Actors, root: User) -> None:
    MCPServer.objects.create(**STDIO)
    MCPServer.objects.create(name="remote", transport="http", endpoint="http://127.0.0.1:9/mcp",
                             env={"HEADER_TOKEN": "h-456"})
    superuser, admin = actors.client(root), actors.client(actors.admin)
    masked = admin.get("/api/mcp-servers/local-tools").json()
    saved = superuser.patch("/api/mcp-servers/local-tools", {"command": masked["command"], "env": masked["env"],
                                                             "description": "re-saved"}, format="json")
    assert saved.status_code == 200, saved.content
    row = MCPServer.objects.get(name="local-tools")
    assert row.command == STDIO["command"] and row.env == STDIO["env"] and row.description == "re-saved"
    remote = admin.get("/api/mcp-servers/remote").json()  # an HTTP row stored with env before that was refused
    assert remote["env"] == {"HEADER_TOKEN": "***"}
    unknown = admin.patch("/api/mcp-servers/remote", {"env": {"OTHER": "***"}}, format="json")
    assert unknown.status_code == 400 and "env" in unknown.json()["error"]
    kept = admin.patch("/api/mcp-servers/remote", {"env": remote["env"], "description": "x"}, format="json")
    assert kept.status_code == 400 and "command and env are for stdio servers only" in kept.json()["error"]
    assert MCPServer.objects.get(name="remote").env == {"HEADER_TOKEN": "h-456"}
    cleared = admin.patch("/api/mcp-servers/remote", {"env": {}, "description": "x"}, format="json")
    assert cleared.status_code == 200 and MCPServer.objects.get(name="remote").env == {}


# --- webhooks ---------------------------------------------------------------------------


def webhook(actors: Actors, name: str = "Hook") -> str:
    wf = create(actors.client(actors.developer), name, data=webhook_flow())
    return Workflow.objects.get(pk=wf["id"]).webhook_token


def call(client: Client, token: str, body: Any = None, **extra: Any) -> Any:
    return client.post(f"/webhook/{token}/hook", body if body is not None else {"name": "Ada"},
                       content_type="application/json", **extra)


def throttled(response: Any) -> None:
    assert response.status_code == 429, response.content
    assert response.json()["status"] == 429 and "HIVE_WEBHOOK_RATE" in response.json()["error"]
    assert int(response["Retry-After"]) >= 1


def test_webhook_calls_are_throttled_per_workflow(actors: Actors, settings: Any) -> None:
    settings.HIVE_WEBHOOK_RATE_PER_WORKFLOW = "2/min"
    settings.HIVE_WEBHOOK_RATE_PER_IP = "1000/min"
    busy, quiet = webhook(actors, "Busy"), webhook(actors, "Quiet")
    assert [call(Client(REMOTE_ADDR=f"10.0.0.{n}"), busy).status_code for n in (1, 2)] == [202, 202]
    throttled(call(Client(REMOTE_ADDR="10.0.0.3"), busy))
    assert Execution.objects.count() == 2
    assert call(Client(REMOTE_ADDR="10.0.0.3"), quiet).status_code == 202, "other workflows have their own count"


def test_webhook_calls_are_throttled_per_client_address(actors: Actors, settings: Any) -> None:
    settings.HIVE_WEBHOOK_RATE_PER_IP = "3/min"
    settings.HIVE_WEBHOOK_RATE_PER_WORKFLOW = "1000/min"
    token = webhook(actors)
    client = Client(REMOTE_ADDR="192.0.2.7")
    assert call(client, token).status_code == 202
    assert client.post("/webhook/guessed-token/hook", {}, content_type="application/json").status_code == 404
    assert call(client, token).status_code == 202
    throttled(call(client, token, HTTP_X_FORWARDED_FOR="203.0.113.9"))  # a client cannot choose its address
    throttled(client.post("/webhook/another-guess/hook", {}, content_type="application/json"))
    assert call(Client(REMOTE_ADDR="192.0.2.8"), token).status_code == 202
    assert Execution.objects.count() == 3


def test_credential_headers_are_redacted_before_the_execution_is_stored(actors: Actors) -> None:
    token = webhook(actors)
    response = call(Client(), token, HTTP_AUTHORIZATION="Bearer tok-1", HTTP_COOKIE="session=tok-2",
                    HTTP_PROXY_AUTHORIZATION="Basic tok-3", HTTP_X_API_KEY="tok-4", HTTP_X_TRACE="t-1")
    assert response.status_code == 202
    row = Execution.objects.get(pk=response.json()["executionId"])
    headers = row.input_data[0]["json"]["headers"]
    assert {headers[k] for k in ("authorization", "cookie", "proxy-authorization", "x-api-key")} == {"[redacted]"}
    assert headers["x-trace"] == "t-1" and row.input_data[0]["json"]["body"] == {"name": "Ada"}
    assert "tok-" not in json.dumps(row.input_data)
    detail = actors.client(actors.viewer).get(f"/api/executions/{row.pk}")
    assert detail.status_code == 200 and b"tok-" not in detail.content


def test_the_migration_redacts_headers_of_webhook_executions_stored_before(actors: Actors) -> None:
    import importlib

    from django.apps import apps

    from workflows import services
    from workflows.models import NodeRun

    migration = importlib.import_module("workflows.migrations.0002_workflow_sharing_redacted_headers")
    wf = Workflow.objects.get(pk=create(actors.client(actors.developer), data=webhook_flow())["id"])
    item = {"json": {"headers": {"Authorization": "Bearer old-1", "x-trace": "t"}, "body": {}}}
    old = services.start_execution(wf, [item], mode="webhook")
    NodeRun.objects.create(execution=old, node_name="Webhook", node_type="n8n-nodes-base.webhook", sequence=0,
                           input_items=[item], output_items=[[item]])
    manual = services.start_execution(wf, [item])
    migration.redact_stored_headers(apps, None)
    old.refresh_from_db()
    assert old.input_data[0]["json"]["headers"] == {"Authorization": "[redacted]", "x-trace": "t"}
    run = old.node_runs.get()
    assert "old-1" not in json.dumps([run.input_items, run.output_items])
    manual.refresh_from_db()
    assert manual.input_data == [item], "only webhook executions carry request headers"


@pytest.mark.parametrize(("body", "words"), [
    ("[" * 100_000 + "]" * 100_000, "nested deeper"),
    ('{"value": NaN}', "NaN"),
    ('{"value": -Infinity}', "Infinity"),
    ('{"value": "\\ud800"}', "surrogate"),
    ("{oops", "not valid JSON"),
])
def test_unsafe_or_malformed_json_bodies_are_400s_that_start_nothing(actors: Actors, body: str, words: str) -> None:
    token = webhook(actors)
    response = Client().post(f"/webhook/{token}/hook", body, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["status"] == 400 and words in response.json()["error"]
    assert not Execution.objects.exists()


def test_a_broken_multipart_body_is_a_400(actors: Actors) -> None:
    token = webhook(actors)
    response = Client().post(f"/webhook/{token}/hook", b"--x\r\ngarbage", content_type="multipart/form-data")
    assert response.status_code == 400 and response.json()["status"] == 400
    assert not Execution.objects.exists()


# --- issue #16: red-team findings ----------------------------------------------------------


def staff_browser(user: User) -> Client:
    User.objects.filter(pk=user.pk).update(is_staff=True)
    browser = Client()
    browser.force_login(User.objects.get(pk=user.pk))
    return browser


def listed(page: Any, name: str) -> bool:
    return page.status_code == 200 and f">{name}<" in page.content.decode()


def test_the_admin_changelist_cannot_filter_on_masked_mcp_values(actors: Actors, root: User) -> None:
    MCPServer.objects.create(name="quiet", transport="stdio", command=[sys.executable, ECHO_SERVER, "--token", "s3cret"],
                             env={"API_KEY": "Q-secret"})
    staff = staff_browser(actors.admin)
    base = "/admin/workflows/mcpserver/?name=quiet"
    assert listed(staff.get(base), "quiet")
    assert listed(staff.get(f"{base}&status__exact=unknown&transport__exact=stdio"), "quiet"), "list_filter works"
    assert listed(staff.get("/admin/workflows/mcpserver/?q=quiet"), "quiet"), "search by name works"
    probes = ["env__API_KEY__startswith=Q", "env__API_KEY__startswith=Z", "env__API_KEY=Q-secret",
              "command__icontains=s3cret", "command__icontains=nothing", "command__3=s3cret", "env__has_key=API_KEY",
              "env__contains=%7B%22API_KEY%22%3A%22Q-secret%22%7D"]
    for probe in probes:
        page = staff.get(f"{base}&{probe}")
        assert page.status_code == 400, (probe, page.status_code)
        assert "quiet" not in page.content.decode()
    for words in ("s3cret", "Q-secret"):
        assert not listed(staff.get(f"/admin/workflows/mcpserver/?q={words}"), "quiet"), "search is name/description"
    superuser = Client()
    superuser.force_login(root)
    assert listed(superuser.get(f"{base}&env__API_KEY__startswith=Q"), "quiet"), "superusers see them anyway"
    assert not listed(superuser.get(f"{base}&env__API_KEY__startswith=Z"), "quiet")


def test_the_admin_changelist_cannot_filter_on_webhook_tokens_it_may_not_see(actors: Actors, dana: User) -> None:
    wf = create(actors.client(actors.developer), "Hooked", data=webhook_flow())
    token = Workflow.objects.get(pk=wf["id"]).webhook_token
    actors.client(actors.developer).post(f"/api/workflows/{wf['id']}/execute", {}, format="json")
    browser = staff_browser(dana)
    assert listed(browser.get("/admin/workflows/workflow/?active__exact=1"), "Hooked")
    for url in (f"/admin/workflows/workflow/?webhook_token__startswith={token[0]}",
                f"/admin/workflows/workflow/?webhook_token={token}",
                f"/admin/workflows/workflow/?webhook_token__gt={token[:3]}",
                f"/admin/workflows/execution/?workflow__webhook_token__startswith={token[0]}"):
        page = browser.get(url)
        assert page.status_code == 400 and "Hooked" not in page.content.decode(), url
    assert not listed(browser.get(f"/admin/workflows/workflow/?q={token}"), "Hooked")
    admin = staff_browser(actors.admin)  # the admin role sees every token anyway
    assert listed(admin.get(f"/admin/workflows/workflow/?webhook_token={token}"), "Hooked")


LEAKY = ("import os, sys\n"
         "print('fatal: cannot start with', sys.argv[1:], 'key', os.environ.get('API_KEY'), file=sys.stderr)\n"
         "sys.exit(3)")


def test_a_stdio_servers_stderr_never_shows_its_masked_arguments_or_env(actors: Actors, settings: Any) -> None:
    settings.HIVE_MCP_STDIO_ALLOWED = []
    server = MCPServer.objects.create(name="leaky", transport="stdio",
                                      command=[sys.executable, "-c", LEAKY, "--token", "s3cret-arg", "-v"],
                                      env={"API_KEY": "k-12345", "DEBUG": "1"})
    from workflows.mcp_bridge import check_server

    check_server(server, timeout=20)
    server.refresh_from_db()
    assert server.status == "error" and "fatal: cannot start with" in server.last_error, server.last_error
    assert "'-v'" in server.last_error and "***" in server.last_error, "short values stay, the message stays useful"
    assert "s3cret-arg" not in server.last_error and "k-12345" not in server.last_error
    for reader in (actors.viewer, actors.admin):
        body = actors.client(reader).get("/api/mcp-servers/leaky")
        assert body.status_code == 200 and b"s3cret-arg" not in body.content and b"k-12345" not in body.content
    with pytest.raises(MCPBridgeError) as raised:
        call_tool("leaky", "echo", {"text": "x"}, timeout=20)
    assert "fatal: cannot start" in raised.value.message
    assert "s3cret-arg" not in raised.value.message and "k-12345" not in raised.value.message
    # A last_error stored before this was redacted is redacted when it is shown.
    MCPServer.objects.filter(pk=server.pk).update(last_error="old: ['s3cret-arg'] k-12345")
    shown = actors.client(actors.viewer).get("/api/mcp-servers/leaky").json()["last_error"]
    assert shown == "old: ['***'] ***"
    page = staff_browser(actors.admin).get(f"/admin/workflows/mcpserver/{server.pk}/change/").content.decode()
    assert "old: [&#x27;***&#x27;] ***" in page and "s3cret-arg" not in page and "k-12345" not in page
    # A value cut by the 600-character tail must not leave its end behind either.
    long_key = "abcdefgh-QQZZQQ"
    MCPServer.objects.create(name="cut", transport="stdio", env={"API_KEY": long_key}, command=[
        sys.executable, "-c", "import os, sys; print(os.environ['API_KEY'] + '.' * 595, file=sys.stderr); sys.exit(3)"])
    with pytest.raises(MCPBridgeError) as cut:
        call_tool("cut", "echo", {"text": "x"}, timeout=20)
    assert "....." in cut.value.message and "QQ" not in cut.value.message, cut.value.message


def test_the_mcp_tool_call_node_error_is_redacted_too(actors: Actors) -> None:
    from workflows import tasks

    MCPServer.objects.create(name="leaky", transport="stdio", command=[sys.executable, "-c", LEAKY, "s3cret-arg"],
                             env={"API_KEY": "k-12345"})
    call = {"name": "Tool", "type": "n8n-nodes-hive.mcpToolCall", "typeVersion": 1, "position": [200, 0],
            "parameters": {"server": "leaky", "tool": "echo", "arguments": "{\"text\": \"x\"}"}}
    data = {"nodes": [copy.deepcopy(TRIGGER), call],
            "connections": {"When clicking": {"main": [[{"node": "Tool", "type": "main", "index": 0}]]}}}
    wf = create(actors.client(actors.developer), "Tool user", data=data)
    execution = services_start(wf["id"], actors.developer)
    tasks.execute(str(execution.pk), None, "test-worker")
    execution.refresh_from_db()
    detail = actors.client(actors.viewer).get(f"/api/executions/{execution.pk}")
    assert execution.status == "failed" and "fatal: cannot start" in detail.content.decode()
    assert b"s3cret-arg" not in detail.content and b"k-12345" not in detail.content


def services_start(workflow_id: str, user: User) -> Execution:
    from workflows import services

    return services.start_execution(Workflow.objects.get(pk=workflow_id), [{"json": {}}], user)


def private_flow() -> dict[str, Any]:
    trigger = {"name": "Called", "type": "n8n-nodes-base.executeWorkflowTrigger", "typeVersion": 1,
               "position": [0, 0], "parameters": {}}
    secret = copy.deepcopy(SET)
    secret["parameters"]["assignments"]["assignments"][0].update(name="private", value="p-secret-output")
    return {"nodes": [trigger, secret], "connections": {"Called": {"main": [[{"node": "Set", "type": "main",
                                                                                "index": 0}]]}}}


def calling_flow(target: str, notes: str = "") -> dict[str, Any]:
    hook = {"name": "Webhook", "type": "n8n-nodes-base.webhook", "typeVersion": 2, "position": [0, 0],
            "webhookId": "x", "parameters": {"path": "hook", "httpMethod": "POST", "responseMode": "lastNode"}}
    run = {"name": "Run P", "type": "n8n-nodes-base.executeWorkflow", "typeVersion": 1, "position": [200, 0],
           "notes": notes, "parameters": {"source": "database", "workflowId": target}}
    return {"nodes": [hook, run], "connections": {"Webhook": {"main": [[{"node": "Run P", "type": "main",
                                                                             "index": 0}]]}}}


@pytest.mark.django_db(transaction=True)
def test_a_group_member_cannot_make_a_shared_workflow_run_the_owners_private_one(
        actors: Actors, dana: User, monkeypatch: pytest.MonkeyPatch) -> None:
    from workflows import tasks

    monkeypatch.setattr(tasks, "enqueue", lambda execution_id, start_node=None: tasks.execute(
        str(execution_id), start_node, "test-worker"))
    team = Group.objects.create(name="team")
    actors.developer.groups.add(team)
    owner, member = actors.client(dana), actors.client(actors.developer)
    private = create(owner, "Private P", data=private_flow())
    shared = create(owner, "Shared WS", shared_with_groups=["team"])
    assert member.get(f"/api/workflows/{private['id']}").json()["can_change"] is False
    changed = member.patch(f"/api/workflows/{shared['id']}", {"n8n_data": calling_flow(private["id"])},
                           format="json")
    assert changed.status_code == 200, changed.content
    token = Workflow.objects.get(pk=shared["id"]).webhook_token

    def fire() -> Any:
        return Client().post(f"/webhook/{token}/hook", {"x": 1}, content_type="application/json")

    refused = fire()
    assert refused.status_code == 500, refused.content
    assert "may not be run" in refused.json()["error"] and "dev" in refused.json()["error"]
    assert b"p-secret-output" not in refused.content
    execution = Execution.objects.get(workflow_id=shared["id"])
    assert execution.status == "failed" and "p-secret-output" not in json.dumps(
        [execution.output_data, list(execution.node_runs.values_list("output_items", flat=True))])
    # The owner renaming it afterwards does not make the member's n8n data the owner's.
    assert owner.patch(f"/api/workflows/{shared['id']}", {"name": "Shared WS renamed"},
                       format="json").status_code == 200
    assert b"p-secret-output" not in fire().content
    # A manual run by the member acts for the member: refused too.
    manual = member.post(f"/api/workflows/{shared['id']}/execute", {}, format="json")
    assert Execution.objects.get(pk=manual.json()["id"]).status == "failed"
    # The same change made by the owner runs.
    mine = owner.patch(f"/api/workflows/{shared['id']}", {"n8n_data": calling_flow(private["id"], "by the owner")},
                       format="json")
    assert mine.status_code == 200, mine.content
    allowed = fire()
    assert allowed.status_code == 200, allowed.content
    assert allowed.json()["private"] == "p-secret-output"


def test_http_servers_hold_no_command_or_env_and_a_switch_to_stdio_sets_them(actors: Actors, root: User) -> None:
    admin, superuser = actors.client(actors.admin), actors.client(root)
    remote = {"name": "remote", "transport": "http", "endpoint": "http://127.0.0.1:9/mcp"}
    for extra, field in (({"command": ["bash", "-c", "id"]}, "command"), ({"env": {"LD_PRELOAD": "/tmp/x.so"}}, "env")):
        refused = admin.post("/api/mcp-servers", {**remote, **extra}, format="json")
        assert refused.status_code == 400, refused.content
        assert "command and env are for stdio servers only" in refused.json()["error"] and field in refused.json()["error"]
    assert not MCPServer.objects.exists()
    assert admin.post("/api/mcp-servers", remote, format="json").status_code == 201
    planted = admin.patch("/api/mcp-servers/remote", {"command": ["bash", "-c", "id"]}, format="json")
    assert planted.status_code == 400 and "command" in planted.json()["error"]
    assert MCPServer.objects.get(name="remote").command == []
    flipped = superuser.patch("/api/mcp-servers/remote", {"transport": "stdio"}, format="json")
    assert flipped.status_code == 400 and "command" in flipped.json()["error"]
    assert MCPServer.objects.get(name="remote").transport == "http"
    # The Django admin applies the same rule (model clean()), for superusers too.
    browser = Client()
    browser.force_login(root)
    page = browser.post("/admin/workflows/mcpserver/add/", {"name": "planted", "transport": "http",
                                                            "endpoint": "http://127.0.0.1:9/mcp", "command": '["bash"]',
                                                            "env": "{}", "capabilities": "[]"})
    assert "command and env are for stdio servers only" in page.content.decode()
    assert not MCPServer.objects.filter(name="planted").exists()


def test_values_stored_on_an_http_server_before_are_not_carried_over_to_stdio(actors: Actors, root: User) -> None:
    MCPServer.objects.create(name="legacy", transport="http", endpoint="http://127.0.0.1:9/mcp",
                             command=["bash", "-c", "id"], env={"LD_PRELOAD": "/tmp/x.so"})
    superuser = actors.client(root)
    only_transport = superuser.patch("/api/mcp-servers/legacy", {"transport": "stdio"}, format="json")
    assert only_transport.status_code == 400 and "command" in only_transport.json()["error"]
    no_env = superuser.patch("/api/mcp-servers/legacy", {"transport": "stdio", "command": [sys.executable, ECHO_SERVER]},
                             format="json")
    assert no_env.status_code == 400 and "env" in no_env.json()["error"]
    masked = superuser.patch("/api/mcp-servers/legacy", {"transport": "stdio", "command": ["bash", "***", "***"],
                                                         "env": {"LD_PRELOAD": "***"}}, format="json")
    assert masked.status_code == 400 and "***" in masked.json()["error"]
    row = MCPServer.objects.get(name="legacy")
    assert row.transport == "http"
    staff = Client()
    staff.force_login(actors.admin)  # has no command/env fields: the error is the form's own
    page = staff.post(f"/admin/workflows/mcpserver/{row.pk}/change/", {
        "name": "legacy", "transport": "http", "endpoint": "http://127.0.0.1:9/mcp", "capabilities": "[]",
        "description": "edited"})
    assert page.status_code == 200 and "command and env are for stdio servers only" in page.content.decode()
    assert MCPServer.objects.get(name="legacy").description == ""
    ok = superuser.patch("/api/mcp-servers/legacy", {"transport": "stdio", "command": [sys.executable, ECHO_SERVER],
                                                     "env": {}}, format="json")
    assert ok.status_code == 200, ok.content
    row.refresh_from_db()
    assert row.transport == "stdio" and row.command == [sys.executable, ECHO_SERVER] and row.env == {}
