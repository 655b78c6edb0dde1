"""The MCP bridge: tool specs of workflows and nodes, and Hive as a client of registered
MCP servers (a stdio server built with the SDK: tests/mcp_echo_server.py)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from workflows.engine.contract import EngineServices, NodeError, NodeSpec, get_node
from workflows.engine.runtime import run_workflow
from workflows.mcp_bridge import (
    MCPBridgeError,
    call_tool,
    check_all_servers,
    check_server,
    node_tool_spec,
    tool_name,
    workflow_tool_spec,
)
from workflows.models import MCPServer
from workflows.nodes.mcp import tool_output

ECHO_SERVER = str(Path(__file__).with_name("mcp_echo_server.py"))
TRIGGER = {"name": "Start", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0],
           "parameters": {}}


def echo_server(name: str = "echo", **fields: Any) -> MCPServer:
    return MCPServer.objects.create(name=name, transport="stdio", command=[sys.executable, ECHO_SERVER],
                                    env={"ECHO_IDENTITY": "from-registry"}, **fields)


class BridgeHost(EngineServices):
    """What the Django host does: MCP calls go to the bridge."""

    def call_mcp_tool(self, server: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        return call_tool(server, tool, arguments, timeout=30)


# --------------------------------------------------------------------------- specs


def test_workflow_tool_spec_from_declared_inputs() -> None:
    data = {"nodes": [{"name": "In", "type": "n8n-nodes-base.executeWorkflowTrigger", "typeVersion": 1.1,
                       "parameters": {"workflowInputs": {"values": [
                           {"name": "city", "type": "string"}, {"name": "days", "type": "number"},
                           {"name": "raw", "type": "any"}, {"name": "tags", "type": "array"}, {"name": "ok",
                                                                                              "type": "boolean"}]}}}],
            "connections": {}}
    spec = workflow_tool_spec(name="Weather report", slug="weather-report", description="Forecast for a city.",
                              n8n_data=data)
    assert spec == {"name": "workflow_weather-report", "description": "Forecast for a city.", "inputSchema": {
        "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "number"}, "raw": {},
                                         "tags": {"type": "array"}, "ok": {"type": "boolean"}},
        "additionalProperties": False}}


def test_workflow_tool_spec_from_a_json_example_and_without_a_trigger() -> None:
    example = {"nodes": [{"name": "In", "type": "n8n-nodes-base.executeWorkflowTrigger", "typeVersion": 1.1,
                          "parameters": {"inputSource": "jsonExample", "jsonExample": '{"q": "x", "n": 2, "l": [1]}'}}]}
    schema = workflow_tool_spec(name="S", slug="s", description="", n8n_data=example)["inputSchema"]
    assert schema["properties"] == {"q": {"type": "string"}, "n": {"type": "number"},
                                    "l": {"type": "array", "items": {"type": "number"}}}
    manual = {"nodes": [TRIGGER], "connections": {}}
    spec = workflow_tool_spec(name="Nightly job", slug="nightly-job", description="", n8n_data=manual)
    assert spec["name"] == "workflow_nightly-job" and "Nightly job" in spec["description"]
    assert spec["inputSchema"] == {"type": "object", "properties": {"items": {
        "type": "array", "items": {"type": "object"}, "description": spec["inputSchema"]["properties"]["items"]["description"]}},
        "additionalProperties": True}
    passthrough = {"nodes": [{"name": "In", "type": "n8n-nodes-base.executeWorkflowTrigger", "typeVersion": 1.1,
                              "parameters": {"inputSource": "passthrough"}}]}
    assert "items" in workflow_tool_spec(name="P", slug="p", description="d", n8n_data=passthrough)["inputSchema"]["properties"]


def test_tool_names_follow_the_mcp_rules() -> None:
    long = tool_name("a" * 100, "workflow_")
    assert len(long) == 64 and long.startswith("workflow_aaa")
    assert long != tool_name("a" * 99 + "b", "workflow_")
    assert tool_name("héllo wörld!") == "h_llo_w_rld"
    assert tool_name("") == "tool"


def test_node_tool_specs_of_the_seed() -> None:
    http = node_tool_spec({"name": "Get", "type": "n8n-nodes-base.httpRequest", "parameters": {
        "method": "POST", "url": "https://api.example.com/x", "description": "Post a thing"}})
    assert http["name"] == "http_request" and http["description"] == "Post a thing"
    assert http["inputSchema"]["properties"]["method"]["default"] == "POST"
    assert http["inputSchema"]["properties"]["url"]["default"] == "https://api.example.com/x"
    code = node_tool_spec({"name": "JS", "type": "n8n-nodes-base.code", "parameters": {"jsCode": "return []"}})
    assert code["name"] == "code_execution" and code["description"] == "Execute custom code"
    assert code["inputSchema"]["required"] == ["code"]
    assert set(code["inputSchema"]["properties"]) == {"code", "language"}
    other = node_tool_spec({"name": "Sort it", "type": "n8n-nodes-base.sort", "parameters": {"sortFieldsUi": {},
                                                                                           "limit": 3}})
    assert other["name"] == "sort" and other["inputSchema"]["properties"]["limit"] == {"type": "number", "default": 3}


def test_tool_output_shapes() -> None:
    assert tool_output({"structuredContent": {"a": 1}, "content": []}) == {"a": 1}
    assert tool_output({"content": [{"type": "text", "text": "hi"}], "isError": False}) == {"text": "hi"}
    image = {"type": "image", "data": "AA==", "mimeType": "image/png"}
    assert tool_output({"content": [image]}) == {"text": "", "content": [image]}


# --------------------------------------------------------------------------- the client, against a live stdio server


@pytest.mark.django_db
def test_check_server_call_tool_and_errors() -> None:
    server = echo_server()
    check_server(server)
    server.refresh_from_db()
    assert server.status == "active" and server.last_error == "" and server.last_checked is not None
    assert server.version == "1.2.3"
    assert {t["name"] for t in server.tools} == {"echo", "add", "fail", "whoami"}
    add = next(t for t in server.tools if t["name"] == "add")
    assert add["inputSchema"]["required"] == ["a", "b"] and add["description"].startswith("Add two numbers")

    result = call_tool("echo", "add", {"a": 2, "b": 3.5})
    assert result["isError"] is False and result["structuredContent"] == {"total": 5.5, "operands": [2.0, 3.5]}
    assert call_tool("echo", "whoami", {})["text"] == "from-registry"  # the registry's env reaches the server
    failed = call_tool("echo", "fail", {"reason": "disk on fire"})
    assert failed["isError"] is True and "disk on fire" in failed["text"]
    with pytest.raises(MCPBridgeError, match="MCP server 'nope' is not registered"):
        call_tool("nope", "echo", {"text": "x"})


@pytest.mark.django_db
def test_a_dead_server_sets_status_error() -> None:
    dead = MCPServer.objects.create(name="dead", transport="stdio",
                                    command=[sys.executable, "-c", "import sys; print('bye', file=sys.stderr); sys.exit(3)"],
                                    status="active")
    check_server(dead, timeout=20)
    dead.refresh_from_db()
    assert dead.status == "error" and dead.last_checked is not None
    assert "MCP server 'dead' check failed" in dead.last_error and "bye" in dead.last_error
    missing = MCPServer.objects.create(name="missing", transport="stdio", command=["/nonexistent/mcp-server"])
    check_server(missing, timeout=20)
    missing.refresh_from_db()
    assert missing.status == "error" and "/nonexistent/mcp-server" in missing.last_error
    no_command = MCPServer.objects.create(name="empty", transport="stdio", command=[])
    check_server(no_command)
    no_command.refresh_from_db()
    assert no_command.status == "error" and "has no command" in no_command.last_error
    with pytest.raises(MCPBridgeError, match="MCP server 'dead' call of tool 'echo' failed"):
        call_tool("dead", "echo", {"text": "x"}, timeout=20)


@pytest.mark.django_db(transaction=True)
def test_check_all_servers_runs_them_side_by_side() -> None:
    echo_server("one")
    MCPServer.objects.create(name="broken", transport="stdio", command=[sys.executable, "-c", "raise SystemExit(1)"])
    assert check_all_servers(timeout=30) == {"checked": 2, "active": 1, "error": 1}
    assert MCPServer.objects.get(name="one").status == "active"
    assert MCPServer.objects.get(name="broken").status == "error"


# --------------------------------------------------------------------------- the node


def tool_workflow(arguments: Any, tool: str = "echo", **extra: Any) -> dict[str, Any]:
    data = {"name": "Data", "type": "n8n-nodes-testing.testData", "typeVersion": 1, "position": [200, 0],
            "parameters": {"data": [{"word": "alpha"}, {"word": "beta"}]}}
    call = {"name": "Tool", "type": "n8n-nodes-hive.mcpToolCall", "typeVersion": 1, "position": [400, 0],
            "parameters": {"server": "echo", "tool": tool, "arguments": arguments}, **extra}
    return {"nodes": [TRIGGER, data, call], "connections": {
        "Start": {"main": [[{"node": "Data", "type": "main", "index": 0}]]},
        "Data": {"main": [[{"node": "Tool", "type": "main", "index": 0}]]}}}


@pytest.mark.django_db
def test_the_node_calls_a_tool_per_item_and_fails_on_tool_errors() -> None:
    if get_node("n8n-nodes-testing.testData") is None:
        pytest.skip("testData node not registered yet")
    echo_server()
    result = run_workflow(tool_workflow({"text": "={{ $json.word.toUpperCase() }}"}), services=BridgeHost())
    assert result.status == "success", result.error
    assert [i["json"] for i in result.run_data["Tool"][0].outputs[0]] == [{"result": "ALPHA"}, {"result": "BETA"}]

    result = run_workflow(tool_workflow('{"reason": "quota exceeded"}', tool="fail"), services=BridgeHost())
    assert result.status == "error" and result.error_node == "Tool"
    assert "quota exceeded" in (result.error or "")

    result = run_workflow(tool_workflow('{"reason": "quota exceeded"}', tool="fail", onError="continueRegularOutput"),
                          services=BridgeHost())
    assert result.status == "success"
    assert ["quota exceeded" in i["json"]["error"] for i in result.run_data["Tool"][0].outputs[0]] == [True, True]


def test_node_validation_and_default_host() -> None:
    handler = get_node("n8n-nodes-hive.mcpToolCall")
    assert handler is not None
    issues = handler.validate(NodeSpec.from_json({"name": "T", "type": "n8n-nodes-hive.mcpToolCall", "typeVersion": 1,
                                                  "parameters": {"server": "", "arguments": "[1, 2]"}}))
    assert {(i.node, i.parameter) for i in issues} == {("T", "tool"), ("T", "server"), ("T", "arguments")}
    if get_node("n8n-nodes-testing.testData") is None:
        pytest.skip("testData node not registered yet")
    result = run_workflow(tool_workflow({"text": "x"}))
    assert result.status == "error" and "MCP server 'echo' is not registered" in (result.error or "")


def test_bridge_errors_are_node_errors() -> None:
    assert issubclass(MCPBridgeError, NodeError)


@pytest.mark.django_db
def test_streamable_http_transport() -> None:
    import socket
    import subprocess
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([sys.executable, ECHO_SERVER, "--http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.1)
        server = MCPServer.objects.create(name="echo-http", transport="http", endpoint=f"http://127.0.0.1:{port}/mcp")
        check_server(server)
        server.refresh_from_db()
        assert server.status == "active", server.last_error
        assert {t["name"] for t in server.tools} == {"echo", "add", "fail", "whoami"}
        assert call_tool("echo-http", "echo", {"text": "over http"})["structuredContent"] == {"result": "over http"}
    finally:
        proc.terminate()
        proc.wait(10)
    dead = MCPServer.objects.create(name="gone", transport="http", endpoint=f"http://127.0.0.1:{port}/mcp")
    check_server(dead, timeout=10)
    dead.refresh_from_db()
    assert dead.status == "error" and "MCP server 'gone' check failed" in dead.last_error
