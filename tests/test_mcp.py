"""The MCP shim end to end: the official MCP Python client (and the MCP Inspector's CLI)
spawns the shim over stdio against a live Hive — real ASGI server, Celery worker and a
simulated Ollama node — and calls every tool and reads every resource."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from django.conf import settings
from mcp import ClientSession, MCPError, StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from hive_project.models import ApiToken
from tests.processes import ROOT, child_env, free_port, simulator, start_web, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

INSPECTOR_DIR = ROOT / "tests" / "mcp_inspector"
TOOLS = {
    "list_agents", "get_agent", "register_agent", "drain_agent",
    "create_task", "get_task", "list_tasks", "cancel_task", "wait_for_task",
    "list_workflows", "get_workflow", "create_workflow", "execute_workflow", "list_executions", "get_execution",
    "cluster_status", "performance_metrics", "list_alerts", "coordinate_development",
}
RESOURCES = {"hive://cluster/status", "hive://agents", "hive://tasks/active", "hive://tasks/recent-results",
             "hive://metrics"}
TEMPLATES = {"hive://tasks/{task_id}", "hive://agents/{agent_id}"}
FAST = {"temperature": 0, "num_predict": 5}


@pytest.fixture
def web(actors: Any) -> Any:
    proc, url = start_web()
    yield url
    proc.stop()


def shim_log() -> Path:
    """The shims' stderr (their logs), beside the other processes' logs."""
    path = Path(settings.VAR_DIR) / "logs" / f"mcp-shim-{os.getpid()}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def token(user: Any) -> str:
    return ApiToken.issue(user, "mcp test")[1]


def shim_env(url: str, api_token: str | None) -> dict[str, str]:
    """What a laptop would have: no Django settings, no database — only the Hive URL and token."""
    env = {"HIVE_API_URL": url, "PYTHONPATH": str(ROOT), "HIVE_API_TIMEOUT": "10"}
    if api_token is not None:
        env["HIVE_API_TOKEN"] = api_token
    return env


@asynccontextmanager
async def session(url: str, api_token: str | None, *, manage_py: bool = False) -> AsyncIterator[ClientSession]:
    if manage_py:
        params = StdioServerParameters(command=sys.executable, args=["manage.py", "mcp_stdio"], cwd=ROOT,
                                       env={**child_env(), **shim_env(url, api_token)})
    else:
        params = StdioServerParameters(command=sys.executable, args=["-m", "coordinator.mcp_shim"], cwd=ROOT,
                                       env=shim_env(url, api_token))
    with shim_log().open("a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as client:
            init = await client.initialize()
            assert init.server_info.name == "hive" and init.capabilities.tools is not None
            yield client


def run(fn: Callable[[], Awaitable[None]]) -> None:
    anyio.run(fn)


def text(result: CallToolResult) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


async def ok(client: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    result = await client.call_tool(tool, arguments)
    assert not result.is_error, f"{tool}: {text(result)}"
    assert isinstance(result.structured_content, dict), tool
    assert json.loads(text(result)) == result.structured_content, "text mirrors the structured result"
    return result.structured_content


async def error(client: ClientSession, tool: str, **arguments: Any) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.is_error, f"{tool} should have failed: {result.structured_content}"
    return text(result)


async def available_or_missing(client: ClientSession, tool: str, what: str, **arguments: Any) -> dict[str, Any] | None:
    """Routes built by other issues: a result once they exist, a clean 'not available' until then."""
    result = await client.call_tool(tool, arguments)
    if not result.is_error:
        return result.structured_content
    message = text(result)
    assert f"{what} are not available on this Hive yet" in message, message
    assert "404" in message or "403" in message
    return None


async def read_json(client: ClientSession, uri: str) -> Any:
    result = await client.read_resource(uri)
    assert len(result.contents) == 1
    return json.loads(result.contents[0].text)


def test_every_tool_and_resource_against_a_live_hive(web: str, actors: Any) -> None:
    admin_token = token(actors.admin)
    worker = start_worker("mcp")
    try:
        with simulator(tps=40, name="oak") as node:
            run(lambda: _drive_everything(web, admin_token, node))
    finally:
        worker.stop()


async def _drive_everything(url: str, admin_token: str, node: str) -> None:
    async with session(url, admin_token) as client:
        assert {t.name for t in (await client.list_tools()).tools} == TOOLS

        # --- agents ---
        agent = await ok(client, "register_agent", endpoint=node, agent_id="oak", model="llama3.2:3b",
                         max_concurrency=2, capabilities=[{"name": "code", "proficiency": 0.9}],
                         hardware={"gpu_type": "sim", "vram_gb": 8})
        assert agent["agent_id"] == "oak" and agent["status"] == "online"
        assert "llama3.2:3b" in agent["models_available"]
        listed = await ok(client, "list_agents")
        assert [a["agent_id"] for a in listed["agents"]] == ["oak"]
        assert listed["agents"][0]["slots"] == {"busy": 0, "total": 2, "free": 2}
        assert (await ok(client, "list_agents", status="offline"))["count"] == 0
        assert (await ok(client, "get_agent", agent_id="oak"))["capabilities"][0]["name"] == "code"
        assert (await ok(client, "drain_agent", agent_id="oak"))["status"] == "draining"
        assert (await ok(client, "drain_agent", agent_id="oak", drain=False))["draining"] is False

        # --- a task, waited for with progress notifications ---
        task = await ok(client, "create_task", prompt="Explain Raft in two sentences", priority=5,
                        options={"temperature": 0, "num_predict": 60})
        assert task["title"] == "Explain Raft in two sentences" and task["priority"] == 5
        notes: list[tuple[float, float | None, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            notes.append((progress, total, message))

        waited = await client.call_tool("wait_for_task", {"task_id": task["id"], "timeout_seconds": 90},
                                        progress_callback=on_progress)
        assert not waited.is_error, text(waited)
        done = waited.structured_content
        assert done["status"] == "completed", done
        assert done["timings"]["eval_count"] == 60 and len(done["result"].split()) >= 30
        assert done["assigned_agent"]["agent_id"] == "oak"
        assert done["wait"]["finished"] and not done["wait"]["timed_out"]
        assert len(notes) >= 3, notes
        assert [p for p, _, _ in notes] == sorted({p for p, _, _ in notes}), "progress only grows"
        assert all(total == 90 for _, total, _ in notes), "progress counts seconds of the timeout"
        messages = [m or "" for _, _, m in notes]
        assert any(m.startswith("running on oak") and "tokens so far" in m for m in messages), messages
        assert messages[-1].startswith("completed on oak") and "60 tokens so far" in messages[-1], messages

        assert (await ok(client, "get_task", task_id=task["id"]))["result"] == done["result"]
        page = await ok(client, "list_tasks", status=["completed"], priority=5)
        assert [t["id"] for t in page["results"]] == [task["id"]] and page["count"] == 1
        assert "attempt_log" not in page["results"][0] and page["results"][0]["result_chars"] == len(done["result"])
        full = await ok(client, "list_tasks", agent="oak", full=True, page_size=5)
        assert full["results"][0]["result"] == done["result"]

        # --- wait timing out, then cancel ---
        long = await ok(client, "create_task", title="Long", prompt="Write a book", priority=4,
                        options={"num_predict": 5000})
        timed_out = await ok(client, "wait_for_task", task_id=long["id"], timeout_seconds=1.5)
        assert timed_out["wait"]["timed_out"] and timed_out["status"] in ("pending", "queued", "running")
        cancelled = await ok(client, "cancel_task", task_id=long["id"])
        assert cancelled["status"] == "cancelled" or cancelled["cancel_requested"]
        assert (await ok(client, "wait_for_task", task_id=long["id"], timeout_seconds=15))["status"] == "cancelled"

        # --- coordinate_development: one batch, dependencies by title, name and index ---
        graph = await ok(client, "coordinate_development", project="A tiny URL shortener in Go", options=FAST,
                         breakdown=[
                             {"title": "Design the API", "description": "Routes and storage.", "name": "design",
                              "specialization": "general", "priority": 4},
                             {"title": "Implement handlers", "description": "Write the Go code.",
                              "dependencies": ["Design the API"], "priority": 3},
                             {"title": "Write tests", "description": "Table tests.", "dependencies": [1, "design"],
                              "specialization": "General", "estimate": "2h"},
                         ])
        ids = [t["id"] for t in graph["tasks"]]
        assert graph["count"] == 3 and len(set(ids)) == 3
        assert [t["title"] for t in graph["tasks"]] == ["Design the API", "Implement handlers", "Write tests"]
        assert graph["tasks"][1]["depends_on"] == [ids[0]]
        assert set(graph["tasks"][2]["depends_on"]) == {ids[0], ids[1]}
        last = await ok(client, "wait_for_task", task_id=ids[2], timeout_seconds=60)
        assert last["status"] == "completed", last
        first = await ok(client, "get_task", task_id=ids[0])
        assert first["status"] == "completed" and "A tiny URL shortener in Go" in first["prompt"]
        assert first["completed_at"] <= last["started_at"]
        message = await error(client, "coordinate_development", project="p",
                              breakdown=[{"title": "a", "dependencies": ["nope"]}])
        assert "breakdown[0].dependencies: no item is called 'nope'" in message

        # --- routes other issues add: clean 'not available' until then, results once they exist ---
        created = await available_or_missing(client, "create_workflow", "workflows", workflow={
            "name": "mcp smoke", "nodes": [{"id": "1", "name": "Start", "type": "n8n-nodes-base.manualTrigger",
                                            "typeVersion": 1, "position": [0, 0], "parameters": {}}],
            "connections": {}})
        workflow_id = str(created["id"]) if created else "1"
        await available_or_missing(client, "list_workflows", "workflows")
        await available_or_missing(client, "get_workflow", "workflows", workflow_id=workflow_id)
        execution = await available_or_missing(client, "execute_workflow", "workflows", workflow_id=workflow_id,
                                               input={"x": 1})
        await available_or_missing(client, "list_executions", "workflows", workflow_id=workflow_id)
        if created:  # the workflow is a tool too: listed, executed, waited for
            workflow_tool = f"workflow_{created['slug']}"
            assert workflow_tool in {t.name for t in (await client.list_tools()).tools}
            ran = await ok(client, workflow_tool, items=[{"x": 2}, {"x": 3}])
            assert ran["status"] == "completed" and ran["output"] == [{"x": 2}, {"x": 3}], ran
        await available_or_missing(client, "get_execution", "workflows",
                                   execution_id=str(execution["id"]) if execution else "1")
        performance = await available_or_missing(client, "performance_metrics", "performance metrics", window="1h")
        if performance is not None:
            assert performance["window_seconds"] == 3600
            assert [a["agent_id"] for a in performance["agents"]] == ["oak"]
            assert "window: Ensure this value is greater than or equal to 10." in await error(
                client, "performance_metrics", window=5)
        assert "'soon' is not a duration" in await error(client, "performance_metrics", window="soon")
        alerts = await available_or_missing(client, "list_alerts", "alerts", status="firing")
        if alerts is not None:
            assert isinstance(alerts["results"], list)

        # --- cluster ---
        status = await ok(client, "cluster_status")
        assert status["agents"]["total"] == 1 and status["last_hour"]["completed"] >= 4

        # --- resources and templates ---
        assert {str(r.uri) for r in (await client.list_resources()).resources} == RESOURCES
        assert {t.uri_template for t in (await client.list_resource_templates()).resource_templates} == TEMPLATES
        assert (await read_json(client, "hive://cluster/status"))["agents"]["online"] == 1
        assert (await read_json(client, "hive://agents"))["agents"][0]["agent_id"] == "oak"
        assert (await read_json(client, "hive://tasks/active"))["results"] == []
        recent = await read_json(client, "hive://tasks/recent-results")
        assert {r["id"] for r in recent["results"]} >= {task["id"], *ids}
        assert next(r for r in recent["results"] if r["id"] == task["id"])["result"] == done["result"]
        metrics = (await client.read_resource("hive://metrics")).contents[0].text
        assert "# TYPE" in metrics or "not available on this Hive yet" in metrics, metrics[:300]
        assert (await read_json(client, f"hive://tasks/{task['id']}"))["result"] == done["result"]
        assert (await read_json(client, "hive://agents/oak"))["endpoint"] == node
        with pytest.raises(MCPError, match="404"):
            await client.read_resource("hive://tasks/00000000-0000-0000-0000-000000000000")

        # --- invalid arguments and API errors: clean tool errors, and the server keeps serving ---
        message = await error(client, "create_task", prompt="x", priority=9)
        assert "Hive API error 400 (POST /api/tasks): priority: Ensure this value is less than or equal to 5." \
            in message
        message = await error(client, "coordinate_development", project="p",
                              breakdown=[{"title": "a", "priority": 0}])
        assert "Hive API error 400 (POST /api/tasks/batch)" in message
        assert "priority: Ensure this value is greater than or equal to 1." in message
        message = await error(client, "create_task", title="no prompt")
        assert "prompt" in message and "Field required" in message
        message = await error(client, "wait_for_task", task_id=task["id"], timeout_seconds=-1)
        assert "timeout_seconds" in message
        message = await error(client, "get_task", task_id="00000000-0000-0000-0000-000000000000")
        assert "Hive API error 404" in message
        assert "404" in await error(client, "get_agent", agent_id="../tasks")
        assert "Unknown tool" in await error(client, "no_such_tool")
        assert (await ok(client, "cluster_status"))["agents"]["total"] == 1


def test_bad_token_viewer_role_and_unreachable_hive_are_clean_errors(web: str, actors: Any) -> None:
    viewer_token, dev_token = token(actors.viewer), token(actors.developer)
    dead = f"http://127.0.0.1:{free_port()}"

    async def bad_token() -> None:
        async with session(web, "hive_not-a-real-token") as client:
            for _ in range(2):  # the server keeps serving after an error
                message = await error(client, "cluster_status")
                assert "Hive API error 401 (GET /api/status/cluster)" in message
                assert "check HIVE_API_TOKEN" in message

    async def no_token() -> None:
        async with session(web, None) as client:
            assert "HIVE_API_TOKEN is not set" in await error(client, "list_agents")

    async def viewer() -> None:
        async with session(web, viewer_token) as client:
            assert (await ok(client, "list_agents"))["count"] == 0
            message = await error(client, "create_task", prompt="hello")
            assert "Hive API error 403 (POST /api/tasks)" in message
            assert "403" in await error(client, "coordinate_development", project="p", breakdown=[{"title": "a"}])
            assert "403" in await error(client, "register_agent", endpoint="http://127.0.0.1:9", agent_id="x")
            assert (await ok(client, "cluster_status"))["agents"]["total"] == 0

    async def unreachable() -> None:
        async with session(dead, dev_token) as client:
            for tool in ("cluster_status", "create_task"):
                message = await error(client, tool, **({"prompt": "x"} if tool == "create_task" else {}))
                assert f"Cannot reach Hive at {dead}" in message, message
            with pytest.raises(MCPError, match=f"Cannot reach Hive at {dead}"):
                await client.read_resource("hive://agents")
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS

    async def through_manage_py() -> None:
        async with session(web, dev_token, manage_py=True) as client:  # `python manage.py mcp_stdio`
            created = await ok(client, "create_task", prompt="hello from manage.py", options=FAST)
            assert created["created_by"] == "dev" and created["status"] in ("pending", "queued")
            assert (await ok(client, "cancel_task", task_id=created["id"]))["status"] == "cancelled"

    async def all_at_once() -> None:  # independent sessions: run them side by side
        async with anyio.create_task_group() as group:
            for scenario in (bad_token, no_token, viewer, unreachable, through_manage_py):
                group.start_soon(scenario)

    run(all_at_once)


def test_the_shim_imports_neither_django_nor_hive_modules_that_need_it() -> None:
    """It runs on a laptop with only mcp and httpx installed."""
    code = ("import sys, coordinator.mcp_shim; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework', 'hive_project', "
            "'agents', 'celery') or (m.startswith('coordinator.') and m != 'coordinator.mcp_shim')); print(bad)")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={"PATH": os.environ["PATH"]},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def _raw_exchange(argv: list[str], env: dict[str, str], dead: str) -> None:
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "cluster_status", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 4, "method": "resources/read", "params": {"uri": "hive://agents"}},
        {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
         "params": {"name": "create_task", "arguments": {"priority": "high"}}},
    ]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdin and proc.stdout
    answers = {}
    try:
        for request in requests:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
            if "id" in request:
                message = json.loads(proc.stdout.readline())  # anything but JSON-RPC on stdout breaks this
                assert message["jsonrpc"] == "2.0" and message["id"] == request["id"], message
                answers[message["id"]] = message
        rest, stderr = proc.communicate(timeout=20)  # closes stdin: the server exits
    finally:
        proc.kill()
    assert rest == "", f"stray output on stdout: {rest!r}"
    assert proc.returncode == 0, stderr
    assert answers[1]["result"]["serverInfo"]["name"] == "hive"
    assert {t["name"] for t in answers[2]["result"]["tools"]} == TOOLS
    assert answers[3]["result"]["isError"]
    assert f"Cannot reach Hive at {dead}" in answers[3]["result"]["content"][0]["text"]
    assert f"Cannot reach Hive at {dead}" in answers[4]["error"]["message"]
    assert answers[5]["result"]["isError"] and "prompt" in answers[5]["result"]["content"][0]["text"]
    assert "Tool 'cluster_status' failed" in stderr and f"Hive MCP server for {dead}" in stderr


def test_stdout_carries_only_protocol_and_logs_go_to_stderr() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    entries = [
        ([sys.executable, "-m", "coordinator.mcp_shim"], {"PATH": os.environ["PATH"], **shim_env(dead, "x")}),
        ([sys.executable, "manage.py", "mcp_stdio"], {**child_env(), **shim_env(dead, "x")}),
    ]
    with ThreadPoolExecutor(len(entries)) as pool:
        for future in [pool.submit(_raw_exchange, argv, env, dead) for argv, env in entries]:
            future.result()


def test_a_call_nested_100000_deep_or_holding_nan_is_answered_with_an_error_and_the_shim_keeps_serving() -> None:
    """The SDK drops a line its parser refuses (the client would wait for ever); the shim answers it."""
    dead = f"http://127.0.0.1:{free_port()}"
    deep = "[" * 100_000 + "]" * 100_000
    lines = [
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
        json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        '{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "create_task", '
        '"arguments": {"prompt": "x", "options": ' + deep + "}}}",
        '{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "create_task", '
        '"arguments": {"prompt": "x", "options": {"temperature": NaN}}}}',
        '{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "create_task", '
        '"arguments": {"prompt": "x", "options": {"top_p": -Infinity}}}}',
        "{not json",
        json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/list"}),
    ]
    proc = subprocess.Popen([sys.executable, "-m", "coordinator.mcp_shim"], cwd=ROOT, text=True,
                            env={"PATH": os.environ["PATH"], **shim_env(dead, "x")},
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin and proc.stdout
    answers = []
    try:
        for line in lines:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
            if '"id"' in line[:40] or line == "{not json":
                answers.append(json.loads(proc.stdout.readline()))
        rest, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert rest == "" and proc.returncode == 0, stderr
    by_id = {a["id"]: a for a in answers}
    assert by_id[2]["error"]["code"] == -32700 and "recursion limit" in by_id[2]["error"]["message"]
    for request_id in (3, 4):
        result = by_id[request_id]["result"]
        assert result["isError"] and "NaN or Infinity" in result["content"][0]["text"], result
    assert by_id[None]["error"]["code"] == -32700, "an id that cannot be read is null, as JSON-RPC says"
    assert {t["name"] for t in by_id[5]["result"]["tools"]} == TOOLS, "still serving"


def _npm_ready() -> str:
    npm = shutil.which("npm")
    if npm is None:
        if os.environ.get("HIVE_REQUIRE_NPM"):
            pytest.fail("npm is required (HIVE_REQUIRE_NPM is set) but not on PATH")
        pytest.skip("npm is not installed")
    if not (INSPECTOR_DIR / "node_modules" / ".bin" / "mcp-inspector").exists():
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=INSPECTOR_DIR, timeout=300,
                              capture_output=True, text=True)
        assert done.returncode == 0, f"npm ci failed in {INSPECTOR_DIR}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return npm


def test_the_mcp_inspector_cli_lists_the_tools_and_calls_one(web: str, actors: Any, tmp_path: Path) -> None:
    npm = _npm_ready()
    npx = str(Path(npm).with_name("npx")) if Path(npm).with_name("npx").exists() else "npx"
    admin_token = token(actors.admin)
    env = {**os.environ, "MCP_CATALOG_PATH": str(tmp_path / "catalog.json"),
           "MCP_CLIENT_CONFIG_PATH": str(tmp_path / "client.json")}

    def inspector(*method: str) -> dict[str, Any]:
        argv = [npx, "--prefix", str(INSPECTOR_DIR), "mcp-inspector", "--cli", "--format", "json",
                "-e", f"HIVE_API_URL={web}", "-e", f"HIVE_API_TOKEN={admin_token}", "-e", f"PYTHONPATH={ROOT}",
                "--cwd", str(ROOT), sys.executable, "-m", "coordinator.mcp_shim", *method]
        done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return json.loads(done.stdout)

    with ThreadPoolExecutor(2) as pool:
        listed = pool.submit(inspector, "--method", "tools/list", "--strict")  # exit 6 on a non-portable schema
        called = pool.submit(inspector, "--method", "tools/call", "--tool-name", "cluster_status")
        tools, result = listed.result()["result"]["tools"], called.result()["result"]
    assert {t["name"] for t in tools} == TOOLS
    create = next(t for t in tools if t["name"] == "create_task")
    assert create["inputSchema"]["required"] == ["prompt"]
    assert create["inputSchema"]["properties"]["priority"]["maximum"] == 5
    assert create["annotations"]["readOnlyHint"] is False

    assert not result.get("isError"), result
    assert result["structuredContent"]["agents"]["total"] == 0
    assert "pending_by_priority" in result["structuredContent"]["queue"]


# --- workflows as tools (against an in-process fake of Hive's workflows API) ----------------------


class _FakeHive:
    """Just the routes the workflow tools use: list workflows, execute one, poll its execution."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.workflows: list[dict[str, Any]] = []
        self.executions: dict[str, dict[str, Any]] = {}
        self.polls: dict[str, int] = {}
        self.lists = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                path, _, query = self.path.partition("?")
                if path == "/api/workflows":
                    fake.lists += 1
                    assert "active=true" in query
                    return self._answer(200, {"count": len(fake.workflows), "next": None, "previous": None,
                                              "results": fake.workflows})
                if path.startswith("/api/executions/"):
                    execution_id = path.rsplit("/", 1)[1]
                    fake.polls[execution_id] = fake.polls.get(execution_id, 0) + 1
                    return self._answer(200, fake.finish(execution_id))
                return self._answer(404, {"error": f"No API route for GET {path}"})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                parts = self.path.strip("/").split("/")
                if len(parts) == 4 and parts[:2] == ["api", "workflows"] and parts[3] == "execute":
                    execution_id = f"ex-{len(fake.executions) + 1}"
                    fake.executions[execution_id] = {"id": execution_id, "workflow": parts[2], "status": "running",
                                                     "input": body.get("input"), "mode": "manual"}
                    return self._answer(202, {k: v for k, v in fake.executions[execution_id].items() if k != "input"})
                return self._answer(404, {"error": f"No API route for POST {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def finish(self, execution_id: str) -> dict[str, Any]:
        """Executions finish on their second poll, as the workflow's input dictates."""
        execution = self.executions[execution_id]
        if self.polls[execution_id] < 2:
            return {k: v for k, v in execution.items() if k != "input"}
        data = execution["input"]
        items = data if isinstance(data, list) else [data]
        if any(isinstance(i, dict) and i.get("explode") for i in items):
            execution.update(status="failed", error_message="Boom from the Code node", error_node="Code",
                             output_data=None)
        else:
            execution.update(status="completed", error_message="", error_node="",
                             output_data=[{"json": {**i, "seen": True}} for i in items])
        return {k: v for k, v in execution.items() if k != "input"}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _wf(slug: str, *, active: bool = True, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    spec = {"name": f"workflow_{slug}", "description": f"Runs {slug}.",
            "inputSchema": schema or {"type": "object", "properties": {"items": {"type": "array",
                                                                                  "items": {"type": "object"}}},
                                      "additionalProperties": True}}
    return {"id": f"id-{slug}", "name": slug.title(), "slug": slug, "active": active, "mcp_tools": [spec]}


def test_active_workflows_are_tools_that_execute_and_wait() -> None:
    fake = _FakeHive()
    fake.workflows = [_wf("greet", schema={"type": "object", "properties": {"name": {"type": "string"}},
                                           "additionalProperties": False}),
                      _wf("batch"), _wf("dormant", active=False)]

    async def drive() -> None:
        async with session(fake.url, "hive_token") as client:
            listed = {t.name: t for t in (await client.list_tools()).tools}
            assert set(listed) == TOOLS | {"workflow_greet", "workflow_batch"}
            greet = listed["workflow_greet"]
            assert greet.description == "Runs greet." and greet.input_schema["properties"] == {"name": {"type": "string"}}
            assert greet.annotations is not None and greet.annotations.read_only_hint is False

            result = await ok(client, "workflow_greet", name="Ada")
            assert result["status"] == "completed" and result["workflow"] == "greet"
            assert result["output"] == [{"name": "Ada", "seen": True}] and result["count"] == 1
            assert fake.executions[result["execution_id"]]["input"] == {"name": "Ada"}
            assert fake.executions[result["execution_id"]]["workflow"] == "id-greet"

            result = await ok(client, "workflow_batch", items=[{"n": 1}, {"n": 2}])
            assert result["output"] == [{"n": 1, "seen": True}, {"n": 2, "seen": True}]
            assert fake.executions[result["execution_id"]]["input"] == [{"n": 1}, {"n": 2}]

            message = await error(client, "workflow_batch", items=[{"explode": True}])
            assert "workflow 'batch' failed at node 'Code': Boom from the Code node" in message

            # a workflow created after the listing is found on first call; one deactivated disappears on the next list
            fake.workflows = [_wf("greet"), _wf("fresh")]
            assert (await ok(client, "workflow_fresh", items=[{"x": 1}]))["output"] == [{"x": 1, "seen": True}]
            assert {t.name for t in (await client.list_tools()).tools} == TOOLS | {"workflow_greet", "workflow_fresh"}
            assert "Unknown tool" in await error(client, "workflow_batch", items=[])
            # the fixed tools are untouched
            assert "Hive API error 404" in await error(client, "get_task", task_id="x")

    try:
        run(drive)
    finally:
        fake.stop()
    assert fake.lists >= 3


def test_workflow_tool_names_and_inputs() -> None:
    from coordinator.mcp_shim import WorkflowTool, _workflow_tool, workflow_tool_name

    assert workflow_tool_name("daily-report") == "workflow_daily-report"
    long = workflow_tool_name("x" * 80)
    assert len(long) == 64 and long != workflow_tool_name("x" * 79 + "y")
    tool = _workflow_tool({"id": "1", "slug": "s", "name": "S", "mcp_tools": []})
    assert isinstance(tool, WorkflowTool) and tool.takes_items
    assert tool.input_of({"items": [{"a": 1}]}) == [{"a": 1}]
    assert tool.input_of({"a": 1}) == {"a": 1}
    assert _workflow_tool({"id": "1", "slug": "s", "active": False}) is None
