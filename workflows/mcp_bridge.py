"""The MCP bridge: workflows as MCP tool specs, and Hive as a client of registered MCP servers.

Two directions meet here:

* **Out**: :func:`workflow_tool_spec` describes a stored workflow as one MCP tool (the spec is
  kept in ``Workflow.mcp_tools`` and served by the MCP shim); :func:`node_tool_spec` is the seed
  design's translation of one n8n node into a tool spec.
* **In**: :func:`call_tool`, :func:`check_server` and :func:`check_all_servers` talk to the
  servers in the ``MCPServer`` registry with the official ``mcp`` SDK (stdio or streamable HTTP).
  Each call opens its own session: a tool call is rare next to an LLM task, and a fresh session
  can never be left half-broken by an earlier failure.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from workflows.engine.contract import NodeError

if TYPE_CHECKING:
    from mcp import ClientSession

    from workflows.models import MCPServer

logger = logging.getLogger("hive.workflows.mcp")

__all__ = ["MCPBridgeError", "call_tool", "check_all_servers", "check_server", "node_tool_spec",
           "tool_name", "workflow_tool_spec"]

_T = TypeVar("_T")

MAX_TOOL_NAME = 64
CHECK_TIMEOUT = 30.0
MAX_CHECK_WORKERS = 8
EXECUTE_WORKFLOW_TRIGGER = "n8n-nodes-base.executeWorkflowTrigger"

# n8n's Execute Workflow Trigger input types -> JSON Schema (``any`` accepts everything).
_INPUT_TYPES: dict[str, dict[str, Any]] = {
    "string": {"type": "string"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "array": {"type": "array"},
    "object": {"type": "object"},
    "any": {},
}
_ITEMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "object"},
                             "description": "Input items (each one becomes {\"json\": item})."}},
    "additionalProperties": True,
}


class MCPBridgeError(NodeError):
    """A registered MCP server could not be reached or answered with a protocol error."""


# --------------------------------------------------------------------------- tool specs


def tool_name(raw: str, prefix: str = "") -> str:
    """A valid MCP tool name (``[A-Za-z0-9_-]``, 1-64 chars) from ``prefix + raw``.

    Names that must be shortened keep a hash suffix so two long slugs never collide.
    """
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{prefix}{raw}").strip("_") or "tool"
    if len(name) > MAX_TOOL_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_TOOL_NAME - 9].rstrip('_-')}_{digest}"
    return name


def _trigger(n8n_data: dict[str, Any]) -> dict[str, Any] | None:
    for node in n8n_data.get("nodes") or []:
        if isinstance(node, dict) and node.get("type") == EXECUTE_WORKFLOW_TRIGGER and not node.get("disabled"):
            return node
    return None


def _schema_of_example(value: Any) -> dict[str, Any]:
    """A JSON Schema from an example value (the trigger's ``jsonExample`` input source)."""
    if isinstance(value, bool):
        return {"type": "boolean"}
    if isinstance(value, (int, float)):
        return {"type": "number"}
    if isinstance(value, str):
        return {"type": "string"}
    if isinstance(value, list):
        return {"type": "array", "items": _schema_of_example(value[0])} if value else {"type": "array"}
    if isinstance(value, dict):
        return {"type": "object", "properties": {str(k): _schema_of_example(v) for k, v in value.items()}}
    return {}


def _trigger_schema(trigger: dict[str, Any]) -> dict[str, Any] | None:
    """The input schema an Execute Workflow Trigger declares, or None when it accepts anything."""
    params = trigger.get("parameters") or {}
    source = params.get("inputSource", "workflowInputs" if "workflowInputs" in params else "passthrough")
    if source == "jsonExample":
        try:
            example = json.loads(params.get("jsonExample") or "{}")
        except (TypeError, ValueError):
            return None
        schema = _schema_of_example(example)
        if schema.get("type") != "object":
            return None
        return {**schema, "additionalProperties": False}
    if source != "workflowInputs":
        return None
    values = (params.get("workflowInputs") or {}).get("values") or []
    properties: dict[str, Any] = {}
    for field in values:
        if not isinstance(field, dict) or not str(field.get("name") or "").strip():
            continue
        properties[str(field["name"]).strip()] = dict(_INPUT_TYPES.get(str(field.get("type") or "string"), {}))
    return {"type": "object", "properties": properties, "additionalProperties": False}


def workflow_tool_spec(*, name: str, slug: str, description: str, n8n_data: dict[str, Any]) -> dict[str, Any]:
    """The MCP tool a workflow is offered as: ``workflow_<slug>``.

    With an Execute Workflow Trigger that declares its inputs, those inputs are the tool's
    arguments (one item); otherwise the tool takes a list of items.
    """
    trigger = _trigger(n8n_data if isinstance(n8n_data, dict) else {})
    schema = _trigger_schema(trigger) if trigger else None
    text = (description or "").strip() or f"Run the Hive workflow '{name}'."
    if schema is None:
        schema = json.loads(json.dumps(_ITEMS_SCHEMA))
        text += " Arguments: {\"items\": [ {...}, ... ]} (the workflow's input items); any other arguments " \
                "become a single input item."
    return {"name": tool_name(slug, "workflow_"), "description": text, "inputSchema": schema}


def _schema_of_parameters(parameters: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema whose properties are a node's parameters, typed after their current values."""
    properties = {}
    for key, value in parameters.items():
        schema = _schema_of_example(value)
        if isinstance(value, str) and value.startswith("="):
            schema = {"description": f"expression: {value[1:][:200]}"}
        else:
            schema["default"] = value
        properties[str(key)] = schema
    return {"type": "object", "properties": properties, "additionalProperties": True}


def node_tool_spec(node: dict[str, Any]) -> dict[str, Any]:
    """The seed's translation of one n8n node into an MCP tool spec.

    httpRequest -> ``http_request`` (method/url/query/headers/body), code -> ``code_execution``
    ({code, language}), anything else -> the node type's short name with its parameters as schema.
    """
    node_type = str(node.get("type") or "")
    params = node.get("parameters") or {}
    if node_type == "n8n-nodes-base.httpRequest":
        method = params.get("method") or params.get("requestMethod") or "GET"
        url = params.get("url") or ""
        description = str(params.get("description") or f"HTTP request ({method} {url})".strip())
        return {"name": "http_request", "description": description, "inputSchema": {
            "type": "object",
            "properties": {
                "method": {"type": "string", "enum": ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"],
                           "default": method if isinstance(method, str) and not method.startswith("=") else "GET"},
                "url": {"type": "string", "description": "Absolute http(s) URL",
                        **({"default": url} if isinstance(url, str) and url and not url.startswith("=") else {})},
                "query": {"type": "object", "description": "Query parameters", "additionalProperties": True},
                "headers": {"type": "object", "description": "Request headers",
                            "additionalProperties": {"type": "string"}},
                "body": {"description": "JSON body (object, array or string)"},
            },
            "required": [] if url else ["url"],
            "additionalProperties": False,
        }}
    if node_type == "n8n-nodes-base.code":
        language = params.get("language") or "javaScript"
        return {"name": "code_execution", "description": "Execute custom code", "inputSchema": {
            "type": "object",
            "properties": {
                "code": {"type": "string", "description": "The code to run",
                         **({"default": params[k]} if (k := "pythonCode" if language.startswith("python") else "jsCode")
                            in params else {})},
                "language": {"type": "string", "enum": ["javaScript", "python", "pythonNative"], "default": language},
            },
            "required": ["code"],
            "additionalProperties": False,
        }}
    short = node_type.rsplit(".", 1)[-1] or "node"
    label = node.get("name") or short
    return {"name": tool_name(short), "description": f"n8n node '{label}' ({node_type or 'unknown type'})",
            "inputSchema": _schema_of_parameters(params if isinstance(params, dict) else {})}


# --------------------------------------------------------------------------- client side


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups raised by the SDK's task groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    exc = _leaf(exc)
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc).strip()
    if exc.__class__.__name__ == "MCPError" and exc.args and len(exc.args) >= 2:
        text = f"{exc.args[1]} (code {exc.args[0]})"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _run(fn: Callable[[], Awaitable[_T]]) -> _T:
    """Run a coroutine function to completion from sync code, even inside a thread that has a loop."""
    import anyio

    try:
        import asyncio

        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(fn)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = anyio.run(fn)
        except BaseException as exc:  # handed back to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="mcp-bridge", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# How much of the end of a server's stderr is read (redacted before it is cut to the tail).
STDERR_WINDOW = 64 * 1024


def _stderr_tail(errlog: Any, server: MCPServer, limit: int = 600) -> str:
    try:
        errlog.flush()
        size = errlog.seek(0, 2)
        errlog.seek(max(0, size - STDERR_WINDOW))
        text = errlog.read().decode("utf-8", "replace").strip()
    except (OSError, ValueError):
        return ""
    # Redacted before it is cut: a cut through a value would leave part of it unmatched.
    return server.redact(text)[-limit:]


@asynccontextmanager
async def _session(server: MCPServer, errlog: Any) -> AsyncIterator[tuple[ClientSession, Any]]:
    """An initialized client session with a registered server; yields (session, InitializeResult)."""
    from mcp import ClientSession, StdioServerParameters, stdio_client

    from workflows.models import resolve_stdio_executable, stdio_refusal

    if server.transport == "stdio":
        argv = server.command if isinstance(server.command, list) else []
        if not argv or not all(isinstance(a, str) and a for a in argv):
            raise MCPBridgeError(f"MCP server '{server.name}' has no command (a list of strings, e.g. [\"uvx\", \"server\"])")
        # Checked again right before spawning: a row stored before HIVE_MCP_STDIO_ALLOWED was
        # tightened must not run, and a bare name runs as the file the check resolved.
        executable = resolve_stdio_executable(argv[0])
        if executable is None:
            raise MCPBridgeError(f"MCP server '{server.name}' was not started: {stdio_refusal(argv[0])}")
        env = {str(k): str(v) for k, v in (server.env or {}).items()} if isinstance(server.env, dict) else {}
        params = StdioServerParameters(command=executable, args=list(argv[1:]), env=env or None)
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            yield session, await session.initialize()
    elif server.transport == "http":
        from mcp.client.streamable_http import streamable_http_client

        if not server.endpoint:
            raise MCPBridgeError(f"MCP server '{server.name}' has no endpoint URL")
        async with streamable_http_client(server.endpoint) as streams, ClientSession(streams[0], streams[1]) as session:
            yield session, await session.initialize()
    else:
        raise MCPBridgeError(f"MCP server '{server.name}' has an unknown transport '{server.transport}'")


def _with_session(server: MCPServer, timeout: float, work: Callable[[ClientSession, Any], Awaitable[_T]], what: str) -> _T:
    """Open a session, run ``work`` in it within ``timeout`` seconds; failures become MCPBridgeError."""
    import tempfile

    import anyio

    async def main() -> _T:
        with anyio.fail_after(timeout):
            async with _session(server, errlog) as (session, init):
                return await work(session, init)

    with tempfile.TemporaryFile() as errlog:
        try:
            return _run(main)
        except MCPBridgeError:
            raise
        except BaseException as exc:
            leaf = _leaf(exc)
            if isinstance(leaf, MCPBridgeError):
                raise leaf from None
            if isinstance(leaf, (KeyboardInterrupt, SystemExit)):
                raise
            reason = f"did not answer within {timeout:g}s" if isinstance(leaf, TimeoutError) else _describe(leaf)
            reason = server.redact(reason)  # a protocol error may quote what the server printed
            tail = _stderr_tail(errlog, server)
            message = f"MCP server '{server.name}' {what} failed: {reason}"
            if tail:
                message += f" (server stderr: {tail})"
            raise MCPBridgeError(message) from None


def _dump(model: Any) -> Any:
    return model.model_dump(by_alias=True, exclude_none=True, mode="json")


def _result_text(result: dict[str, Any]) -> str:
    """The text blocks of a tool result, joined (what a person reads)."""
    parts = []
    for block in result.get("content") or []:
        if isinstance(block, dict) and block.get("type") == "text":
            parts.append(str(block.get("text", "")))
    return "\n".join(parts)


def _get_server(server_name: str) -> MCPServer:
    from workflows.models import MCPServer

    try:
        return MCPServer.objects.get(name=server_name)
    except MCPServer.DoesNotExist:
        raise MCPBridgeError(f"MCP server '{server_name}' is not registered") from None


def call_tool(server_name: str, tool: str, arguments: dict[str, Any], *, timeout: float = 60) -> dict[str, Any]:
    """Call ``tool`` on the registered server ``server_name``; the tool result as JSON.

    Returns ``{"content": [...], "structuredContent"?: {...}, "isError": bool, "text": "..."}``;
    a tool error is a result (``isError``), not an exception, so the node decides what it means.
    Transport/protocol failures raise :class:`MCPBridgeError` naming the server.
    """
    if not isinstance(arguments, dict):
        raise MCPBridgeError(f"arguments of MCP tool '{tool}' must be an object, not {type(arguments).__name__}")
    if not tool:
        raise MCPBridgeError("no MCP tool name given")
    server = _get_server(server_name)

    async def work(session: ClientSession, init: Any) -> dict[str, Any]:
        result = await session.call_tool(tool, arguments)
        return _dump(result)

    result = _with_session(server, timeout, work, f"call of tool '{tool}'")
    result.pop("resultType", None)
    result.setdefault("isError", False)
    result["text"] = _result_text(result)
    return result


async def _list_all_tools(session: ClientSession) -> list[dict[str, Any]]:
    from mcp.types import PaginatedRequestParams

    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):  # a server paginating forever must not hang the check
        listing = await session.list_tools(params=PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(_dump(t) for t in listing.tools)
        cursor = listing.next_cursor
        if not cursor:
            break
    return tools


def check_server(server: MCPServer, *, timeout: float = CHECK_TIMEOUT) -> None:
    """List the server's tools and record what happened: status, tools, version, last_error, last_checked."""
    from django.utils import timezone

    async def work(session: ClientSession, init: Any) -> tuple[list[dict[str, Any]], str]:
        info = getattr(init, "server_info", None)
        return await _list_all_tools(session), str(getattr(info, "version", "") or "")[:64]

    fields = ["status", "last_error", "last_checked"]
    try:
        tools, version = _with_session(server, timeout, work, "check")
    except MCPBridgeError as exc:
        server.status, server.last_error = server.Status.ERROR, exc.message
        logger.warning("%s", exc.message)
    else:
        server.status, server.last_error, server.tools, server.version = server.Status.ACTIVE, "", tools, version
        fields += ["tools", "version"]
    server.last_checked = timezone.now()
    server.save(update_fields=fields)


def check_all_servers(*, timeout: float = CHECK_TIMEOUT) -> dict[str, int]:
    """Check every registered server side by side; counts for the beat job's log."""
    from django.db import close_old_connections, connection

    from workflows.models import MCPServer

    servers = list(MCPServer.objects.all())
    if not servers:
        return {"checked": 0, "active": 0, "error": 0}

    def one(server: MCPServer) -> str:
        try:
            check_server(server, timeout=timeout)
            return str(server.status)
        except Exception:  # a broken row must not stop the others
            logger.exception("checking MCP server %s failed", server.name)
            return "error"
        finally:
            if threading.current_thread() is not threading.main_thread():
                connection.close()

    close_old_connections()
    with ThreadPoolExecutor(max_workers=min(MAX_CHECK_WORKERS, len(servers)), thread_name_prefix="mcp-check") as pool:
        statuses = list(pool.map(one, servers))
    return {"checked": len(statuses), "active": statuses.count("active"), "error": statuses.count("error")}
