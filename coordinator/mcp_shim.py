"""Hive's MCP server on stdio: Claude Code (or any MCP client) drives the cluster.

It talks to a Hive instance over the REST API with an API token, so it runs on a
laptop far from the cluster with nothing but ``mcp`` and ``httpx`` installed. This
module must not import Django or any Hive module that does.

    HIVE_API_URL=https://hive.example.com HIVE_API_TOKEN=hive_… hive-mcp
    python -m coordinator.mcp_shim          # the same without installing
    python manage.py mcp_stdio              # the same from a Hive checkout

Configuration (environment): ``HIVE_API_URL`` (default http://127.0.0.1:8000),
``HIVE_API_TOKEN`` (an API token, sent as ``Authorization: Bearer …``),
``HIVE_API_TIMEOUT`` (seconds per request, default 30), ``HIVE_API_CONNECT_TIMEOUT``
(default 5), ``HIVE_MCP_WORKFLOW_TIMEOUT`` (seconds a workflow tool waits for its
execution, default 300), ``HIVE_MCP_LOG_LEVEL`` (default INFO). Logs go to stderr only; stdout
carries nothing but the protocol.

Every API failure becomes an MCP tool error (``isError``) carrying the API's message
and HTTP status; an unreachable Hive names the URL that was tried. Routes that a Hive
may not have yet (workflows, performance metrics, alerts, ``/metrics``) answer
"… not available on this Hive yet" until they exist, and work once they do.

Besides its fixed tools, the server offers every active workflow as a tool
``workflow_<slug>`` (the list is fetched again whenever a client lists the tools): a
call starts an execution with the arguments as its input item and waits for its output.
"""
from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

import anyio
import httpx
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage
from mcp.types import INVALID_REQUEST, PARSE_ERROR, CallToolResult, ErrorData, JSONRPCError, TextContent, ToolAnnotations
from mcp.types import Tool as MCPTool
from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Config", "HiveClient", "build_server", "main"]

logger = logging.getLogger("hive.mcp")
_F = TypeVar("_F", bound=Callable[..., Any])

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_WAIT_SECONDS = 300.0
MAX_WAIT_SECONDS = 3600.0
POLL_INTERVAL = 0.5            # seconds between polls while waiting for a task
TASK_REFRESH_INTERVAL = 2.5    # a full GET of the task at least this often while waiting
HEARTBEAT_INTERVAL = 5.0       # a progress notification at least this often, even without news
TRANSIENT_GRACE = 15.0         # seconds of failed polls a wait tolerates (Hive restarting, say)
PREVIEW_CHARS = 300            # prompt/result length in task lists
DEFAULT_WORKFLOW_TIMEOUT = 300.0
WORKFLOW_TOOL_PREFIX = "workflow_"
MAX_TOOL_NAME = 64
WORKFLOW_PAGES = 20            # pages of 100 workflows read when listing tools
EXECUTION_DONE = ("completed", "failed", "cancelled")

TERMINAL = ("completed", "failed", "cancelled")
ACTIVE = ("pending", "queued", "running")
TaskStatus = Literal["pending", "queued", "running", "completed", "failed", "cancelled"]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("hive-mcp")
    except Exception:  # not installed as a distribution: running from a checkout
        return "0.1.0"


# --- configuration ----------------------------------------------------------------


class ConfigError(ValueError):
    """A malformed setting; the message names it."""


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of seconds") from None
    if value <= 0:
        raise ConfigError(f"{name}={raw!r} must be a positive number of seconds")
    return value


@dataclass(frozen=True)
class Config:
    url: str = DEFAULT_URL
    token: str = ""
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    workflow_timeout: float = DEFAULT_WORKFLOW_TIMEOUT

    @classmethod
    def from_env(cls, url: str | None = None, token: str | None = None) -> Config:
        base = (url or os.environ.get("HIVE_API_URL", "").strip() or DEFAULT_URL).rstrip("/")
        if not re.match(r"^https?://[^/\s]+", base):
            raise ConfigError(f"HIVE_API_URL={base!r} is not an http(s) URL, e.g. {DEFAULT_URL}")
        return cls(
            url=base,
            token=(token if token is not None else os.environ.get("HIVE_API_TOKEN", "")).strip(),
            timeout=_env_seconds("HIVE_API_TIMEOUT", DEFAULT_TIMEOUT),
            connect_timeout=_env_seconds("HIVE_API_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
            workflow_timeout=_env_seconds("HIVE_MCP_WORKFLOW_TIMEOUT", DEFAULT_WORKFLOW_TIMEOUT),
        )


# --- errors -----------------------------------------------------------------------
# Both a ToolError and a ResourceError: raised from a tool it becomes an isError
# result, from a resource a JSON-RPC error; either way with our message and no
# traceback in the log.


class HiveError(ToolError, ResourceError):
    """A failure talking to Hive, with a message a person can act on."""


class HiveUnreachable(HiveError):
    pass


class HiveAPIError(HiveError):
    def __init__(self, method: str, path: str, status: int, message: str, errors: Any = None,
                 is_json: bool = True, hint: str = "") -> None:
        self.method, self.path, self.status, self.message = method, path, status, message
        self.errors, self.is_json = errors, is_json
        text = f"Hive API error {status} ({method} {path}): {message}"
        super().__init__(f"{text} {hint}".rstrip())


class HiveNotFound(HiveAPIError, ResourceNotFoundError):
    pass


class FeatureUnavailable(HiveError):
    pass


class InvalidArguments(ToolError):
    pass


@dataclass(frozen=True)
class Feature:
    """A group of routes a Hive may not have yet; ``probe`` answers 404 until it does."""

    what: str
    probe: str


WORKFLOWS = Feature("workflows", "/api/workflows")
EXECUTIONS = Feature("workflows", "/api/executions")
PERFORMANCE = Feature("performance metrics", "/api/metrics/performance")
ALERTS = Feature("alerts", "/api/alerts")

_TITLE = re.compile(r"<title>\s*(.*?)\s*</title>", re.IGNORECASE | re.DOTALL)


def _message_of(response: httpx.Response) -> tuple[str, Any, bool]:
    """(message, field errors, is Hive JSON) of an error response."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        message = body.get("error") or body.get("detail") or json.dumps(body)[:500]
        return str(message), body.get("errors"), True
    text = response.text.strip()
    title = _TITLE.search(text)
    if title:
        text = title.group(1)
    return (text[:300] or response.reason_phrase or "no body"), None, False


def _refuse_non_json_numbers(body: Any) -> None:
    """MCP's JSON-RPC parser reads NaN and Infinity, which JSON (and so Hive) has no
    numbers for: say so instead of failing inside httpx with "Error executing tool"."""
    try:
        json.dumps(body, allow_nan=False)
    except ValueError:
        raise InvalidArguments("The arguments hold NaN or Infinity, which are not JSON numbers: "
                               "use null or a finite number.") from None


# --- the REST client ----------------------------------------------------------------


class HiveClient:
    """Async client of Hive's REST API; one per server process."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._client: httpx.AsyncClient | None = None

    @property
    def url(self) -> str:
        return self.config.url

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"Accept": "application/json", "User-Agent": f"hive-mcp/{_version()}"}
            if self.config.token:
                headers["Authorization"] = f"Bearer {self.config.token}"
            self._client = httpx.AsyncClient(
                base_url=self.config.url, headers=headers, follow_redirects=False,
                timeout=httpx.Timeout(self.config.timeout, connect=self.config.connect_timeout),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json_body: Any = None, accept: str | None = None) -> httpx.Response:
        """One request; transport failures become HiveUnreachable naming the URL."""
        params = {k: v for k, v in (params or {}).items() if v is not None and v != []}
        headers = {"Accept": accept} if accept else None
        target = f"{self.config.url}{path}"
        if json_body is not None:
            _refuse_non_json_numbers(json_body)
        try:
            kwargs: dict[str, Any] = {"params": params or None, "headers": headers}
            if json_body is not None:
                kwargs["json"] = json_body
            response = await self._http().request(method, path, **kwargs)
        except httpx.TimeoutException as exc:
            raise HiveUnreachable(
                f"Hive at {self.config.url} did not answer {method} {target} within the timeout "
                f"({type(exc).__name__}; HIVE_API_TIMEOUT={self.config.timeout:g}s)") from exc
        except httpx.HTTPError as exc:
            reason = str(exc) or type(exc).__name__
            raise HiveUnreachable(
                f"Cannot reach Hive at {self.config.url} ({method} {target}): {reason}. "
                "Is it running, and is HIVE_API_URL right?") from exc
        logger.debug("%s %s -> %s", method, path, response.status_code)
        return response

    def error_for(self, method: str, path: str, response: httpx.Response) -> HiveAPIError:
        message, errors, is_json = _message_of(response)
        hint = ""
        if response.status_code == 401:
            hint = ("(HIVE_API_TOKEN is not set: create an API token in the admin or with "
                    "`python manage.py create_api_token USER`)" if not self.config.token else
                    "(check HIVE_API_TOKEN: unknown, revoked or expired token?)")
        elif response.status_code == 429:
            hint = f"(rate limited; retry after {response.headers.get('Retry-After', 'a while')} s)"
        cls = HiveNotFound if response.status_code == 404 else HiveAPIError
        return cls(method, path, response.status_code, message, errors, is_json, hint)

    async def call(self, method: str, path: str, *, params: dict[str, Any] | None = None,
                   json_body: Any = None) -> Any:
        """The decoded JSON of a successful answer; an API error raises HiveAPIError."""
        response = await self.send(method, path, params=params, json_body=json_body)
        if response.status_code >= 400:
            raise self.error_for(method, path, response)
        if response.is_redirect:
            raise HiveAPIError(method, path, response.status_code,
                               f"redirected to {response.headers.get('location', '?')}",
                               hint="(set HIVE_API_URL to the address Hive answers on, e.g. https:// instead of http://)")
        if response.status_code == 204 or not response.content:
            return {}
        try:
            return response.json()
        except ValueError:
            raise HiveAPIError(method, path, response.status_code,
                               f"expected JSON, got {response.headers.get('content-type', 'no content type')}",
                               is_json=False) from None

    async def feature_call(self, feature: Feature, method: str, path: str, **kwargs: Any) -> Any:
        """Like call(), but a route this Hive does not have yet says so cleanly."""
        try:
            return await self.call(method, path, **kwargs)
        except HiveAPIError as exc:
            if await self._missing(feature, exc):
                raise FeatureUnavailable(
                    f"{feature.what} are not available on this Hive yet "
                    f"({method} {self.config.url}{path} answered {exc.status}: {exc.message})") from None
            raise

    async def _missing(self, feature: Feature, exc: HiveAPIError) -> bool:
        # An unknown /api/ route answers 404 {"error": "No API route …"} — but a POST to
        # one is refused by Django's CSRF check first (403 HTML), so check with a GET.
        route_missing = exc.status == 404 and (not exc.is_json or exc.message.startswith("No API route")
                                               or exc.path == feature.probe)
        if not route_missing and not (exc.status in (403, 405) and not exc.is_json):
            return False
        if exc.path == feature.probe and exc.method == "GET":
            return exc.status == 404
        try:
            await self.call("GET", feature.probe, params={"page_size": 1})
        except HiveAPIError as probe:
            return probe.status == 404
        return False


def _seg(value: str) -> str:
    """An id as one path segment (no '/', '..' or query sneaking into the route)."""
    value = value.strip()
    if value in ("", ".", ".."):
        raise InvalidArguments(f"'{value}' is not an id")
    return quote(value, safe="")


def _listing(data: Any, key: str) -> dict[str, Any]:
    """A JSON object for structured output: lists are wrapped, pages kept as they are."""
    if isinstance(data, list):
        return {key: data, "count": len(data)}
    if isinstance(data, dict):
        return data
    return {key: data}


def _preview(text: str | None, limit: int = PREVIEW_CHARS) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"… [{len(text) - limit} more characters]"


def _brief_task(task: dict[str, Any]) -> dict[str, Any]:
    """A task for a list: no attempt log, prompt and result shortened."""
    out = {k: v for k, v in task.items() if k not in ("attempt_log", "prompt", "result", "system")}
    out["prompt"] = _preview(task.get("prompt"))
    result = task.get("result")
    out["result"] = _preview(result)
    out["result_chars"] = len(result or "")
    return out


def _words(text: str | None) -> int:
    return len((text or "").split())


# --- tool argument models ------------------------------------------------------------

PRIORITY_SCHEMA = {"minimum": 1, "maximum": 5}  # advertised; the API enforces it with its own message


class Capability(BaseModel):
    name: Annotated[str, Field(description="Capability name, e.g. 'code', 'devops', 'general'.")]
    proficiency: Annotated[float, Field(description="0..1 (1 = expert).")] = 1.0


class WorkItem(BaseModel):
    """One item of a development breakdown."""

    model_config = ConfigDict(extra="ignore")

    title: Annotated[str, Field(description="Short title of the piece of work.")]
    description: Annotated[str, Field(description="What to do. Becomes the task's prompt, with the project "
                                                  "description as context.")] = ""
    specialization: Annotated[str, Field(description="Capability the work needs (the task type), e.g. 'code', "
                                                     "'testing', 'devops', 'docs'; 'general' runs on any agent.")] = "general"
    priority: Annotated[int, Field(description="1..5, 5 most urgent.", json_schema_extra=PRIORITY_SCHEMA)] = 3
    dependencies: Annotated[list[int | str], Field(
        description="Items that must complete first: 0-based index in the breakdown, or another item's "
                    "title or name (an existing Hive task id also works).")] = []
    name: Annotated[str | None, Field(description="Optional short name other items may use in dependencies.")] = None
    model: Annotated[str | None, Field(description="Model for this item (overrides the call's model).")] = None


# --- the server ---------------------------------------------------------------------

INSTRUCTIONS = """\
Hive runs a cluster of Ollama GPU nodes as one. Submit work with create_task (or a whole \
dependency graph with coordinate_development), then wait_for_task for the result; \
cluster_status and list_agents show capacity. Priorities are 1..5, 5 most urgent. \
Task types name the capability an agent must have; 'general' runs anywhere."""

READ = ToolAnnotations(read_only_hint=True, open_world_hint=True)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, open_world_hint=True)
DESTRUCTIVE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=True)

TaskId = Annotated[str, Field(description="Task id (UUID).")]
AgentId = Annotated[str, Field(description="Agent UUID or agent_id (e.g. 'acacia').")]
WorkflowId = Annotated[str, Field(description="Workflow id.")]


# --- workflows as tools ---------------------------------------------------------------


def workflow_tool_name(slug: str) -> str:
    """``workflow_<slug>`` under MCP's name rules (``[A-Za-z0-9_-]``, at most 64 characters).

    The same rule as Hive's ``workflows.mcp_bridge.tool_name``: a name that must be
    shortened keeps a hash suffix, so two long slugs never collide.
    """
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{WORKFLOW_TOOL_PREFIX}{slug}").strip("_") or "tool"
    if len(name) > MAX_TOOL_NAME:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:MAX_TOOL_NAME - 9].rstrip('_-')}_{digest}"
    return name


ITEMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {"type": "object"},
                             "description": "Input items (each one becomes {\"json\": item})."}},
    "additionalProperties": True,
}


@dataclass(frozen=True)
class WorkflowTool:
    """One active workflow offered as a tool."""

    name: str
    workflow_id: str
    slug: str
    title: str
    description: str
    input_schema: dict[str, Any]

    @property
    def takes_items(self) -> bool:
        """Whether the schema is the generic {"items": [...]} one (no declared inputs)."""
        props = self.input_schema.get("properties") or {}
        return set(props) == {"items"} and (props["items"] or {}).get("type") == "array"

    def input_of(self, arguments: dict[str, Any]) -> Any:
        """The execution's input: the items list when given as such, else the arguments as one item."""
        items = arguments.get("items")
        if self.takes_items and isinstance(items, list) and set(arguments) == {"items"}:
            return items
        return arguments

    def as_mcp(self) -> MCPTool:
        return MCPTool(name=self.name, title=self.title, description=self.description, input_schema=self.input_schema,
                       annotations=ToolAnnotations(title=self.title, read_only_hint=False, destructive_hint=False,
                                                   open_world_hint=True))


def _workflow_tool(workflow: dict[str, Any]) -> WorkflowTool | None:
    slug, workflow_id = workflow.get("slug"), workflow.get("id")
    if not slug or not workflow_id or workflow.get("active") is False:
        return None
    name = workflow_tool_name(str(slug))
    specs = [t for t in workflow.get("mcp_tools") or [] if isinstance(t, dict)]
    spec = next((t for t in specs if t.get("name") == name), None) or (specs[0] if len(specs) == 1 else None) or {}
    schema = spec.get("inputSchema") if isinstance(spec.get("inputSchema"), dict) else ITEMS_SCHEMA
    if schema.get("type") != "object":
        schema = ITEMS_SCHEMA
    title = str(workflow.get("name") or slug)
    description = str(spec.get("description") or workflow.get("description") or f"Run the Hive workflow '{title}'.")
    return WorkflowTool(name=name, workflow_id=str(workflow_id), slug=str(slug), title=title,
                        description=description, input_schema=schema)


async def fetch_workflow_tools(api: HiveClient) -> dict[str, WorkflowTool] | None:
    """The active workflows as tools; None when this Hive has no workflows API (or it can't be read)."""
    tools: dict[str, WorkflowTool] = {}
    for page in range(1, WORKFLOW_PAGES + 1):
        try:
            data = await api.call("GET", "/api/workflows", params={"active": "true", "page": page, "page_size": 100})
        except HiveAPIError as exc:
            if exc.status == 404 and page > 1:
                break  # past the last page
            raise
        results = data if isinstance(data, list) else data.get("results", []) if isinstance(data, dict) else []
        for workflow in results:
            if isinstance(workflow, dict) and (tool := _workflow_tool(workflow)) is not None:
                tools.setdefault(tool.name, tool)
        if not isinstance(data, dict) or not data.get("next"):
            break
    return tools


async def run_workflow_tool(api: HiveClient, tool: WorkflowTool, arguments: dict[str, Any], timeout: float,
                            ctx: Context | None = None) -> dict[str, Any]:
    """Execute the workflow with the arguments as input and wait for the execution to finish."""
    started = time.monotonic()
    execution = await api.call("POST", f"/api/workflows/{_seg(tool.workflow_id)}/execute",
                               json_body={"input": tool.input_of(arguments), "mode": "mcp"})
    execution_id = str(execution.get("id", ""))
    if not execution_id:
        raise HiveError(f"Hive did not answer with an execution for workflow '{tool.slug}'")
    path = f"/api/executions/{_seg(execution_id)}"
    interval, failing_since, last_status = 0.1, None, None
    while str(execution.get("status")) not in EXECUTION_DONE:
        if time.monotonic() - started >= timeout:
            raise HiveError(f"workflow '{tool.slug}' did not finish within {timeout:g}s; execution {execution_id} is "
                            f"still {execution.get('status')} (follow it with get_execution; "
                            "HIVE_MCP_WORKFLOW_TIMEOUT sets the wait)")
        await anyio.sleep(min(interval, max(timeout - (time.monotonic() - started), 0.01)))
        interval = min(interval * 1.5, POLL_INTERVAL * 2)
        try:
            execution = await api.call("GET", path)
            failing_since = None
        except (HiveUnreachable, HiveAPIError) as exc:
            transient = isinstance(exc, HiveUnreachable) or exc.status == 429 or exc.status >= 500
            failing_since = failing_since or time.monotonic()
            if not transient or time.monotonic() - failing_since > TRANSIENT_GRACE:
                raise
            logger.warning("workflow %s execution %s: %s; retrying", tool.slug, execution_id, exc)
        status = str(execution.get("status"))
        if ctx is not None and status != last_status:
            await ctx.report_progress(round(time.monotonic() - started, 2), timeout, f"execution {status}")
            last_status = status
    status = str(execution["status"])
    if status == "failed":
        where = f" at node '{execution['error_node']}'" if execution.get("error_node") else ""
        raise HiveError(f"workflow '{tool.slug}' failed{where}: {execution.get('error_message') or 'no error given'} "
                        f"(execution {execution_id})")
    if status == "cancelled":
        raise HiveError(f"workflow '{tool.slug}' was cancelled (execution {execution_id})")
    output = execution.get("output_data") or []
    items = [item.get("json", item) if isinstance(item, dict) else item for item in output]
    return {"workflow": tool.slug, "execution_id": execution_id, "status": status, "count": len(items),
            "output": items}


# The id of a request line, when it comes first (after "jsonrpc") as every SDK writes it:
# anchored at the start of the line, so it can only be the message's own id.
_LEADING_ID = re.compile(r'^\s*\{\s*(?:"jsonrpc"\s*:\s*"2\.0"\s*,\s*)?"id"\s*:\s*(-?\d{1,18}|"(?:[^"\\]|\\.){0,200}")')


def _rejection(exc: Exception) -> JSONRPCError:
    """The JSON-RPC error answering a line the SDK could not read as a message."""
    errors = exc.errors(include_url=False) if isinstance(exc, ValidationError) else []
    first = errors[0] if errors else {}
    line = first.get("input") if isinstance(first.get("input"), str) else ""
    match = _LEADING_ID.match(line[:1000])
    request_id = json.loads(match.group(1)) if match else None
    if first.get("type") == "json_invalid":  # not JSON, or nested deeper than the parser goes
        error = ErrorData(code=PARSE_ERROR, message=f"Parse error: {first.get('msg', 'invalid JSON')}")
    else:
        error = ErrorData(code=INVALID_REQUEST, message="Invalid Request: not a JSON-RPC 2.0 message")
    return JSONRPCError(jsonrpc="2.0", id=request_id, error=error)


class _AnswerUnreadableLines:
    """The stdio read stream, answering the lines the SDK cannot parse.

    The SDK drops such a line (JSON nested deeper than pydantic's parser goes, not JSON,
    not JSON-RPC) with a debug log, so the client waits for an answer until it times out.
    JSON-RPC 2.0 answers it instead: -32700 (parse error) or -32600 (invalid request),
    with the request's id when it can be read from the start of the line, else null.
    """

    def __init__(self, inner: Any, write_stream: Any) -> None:
        self._inner = inner
        self._write = write_stream

    @property
    def last_context(self) -> Any:  # the dispatcher restores the sender's contextvars from it
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> Any:
        while True:
            item = await self._inner.receive()
            if not isinstance(item, Exception):
                return item
            answer = _rejection(item)
            logger.warning("unreadable message answered with %s: %s", answer.error.code, answer.error.message)
            await self._write.send(SessionMessage(answer))

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _AnswerUnreadableLines:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _AnswerUnreadableLines:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class HiveMCPServer(MCPServer):
    """The MCP server, plus one tool per active workflow (re-read whenever tools are listed)."""

    def __init__(self, *args: Any, api: HiveClient, config: Config, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._api = api
        self._config = config
        self._workflow_tools: dict[str, WorkflowTool] = {}

    async def refresh_workflow_tools(self) -> dict[str, WorkflowTool]:
        try:
            fresh = await fetch_workflow_tools(self._api)
        except HiveAPIError as exc:
            if exc.status == 404:  # no workflows on this Hive (yet)
                self._workflow_tools = {}
            else:
                logger.warning("workflow tools not refreshed: %s", exc)
            return self._workflow_tools
        except HiveError as exc:
            logger.warning("workflow tools not refreshed: %s", exc)
            return self._workflow_tools
        static = {t.name for t in self._tool_manager.list_tools()}
        self._workflow_tools = {name: tool for name, tool in (fresh or {}).items() if name not in static}
        return self._workflow_tools

    async def run_stdio_async(self) -> None:
        """MCPServer's own, with the lines it cannot parse answered (_AnswerUnreadableLines)."""
        async with stdio_server() as (read_stream, write_stream):
            await self._lowlevel_server.run(_AnswerUnreadableLines(read_stream, write_stream), write_stream,
                                            self._lowlevel_server.create_initialization_options())

    async def list_tools(self) -> list[MCPTool]:
        tools = await super().list_tools()
        await self.refresh_workflow_tools()
        return tools + [t.as_mcp() for t in self._workflow_tools.values()]

    async def call_tool(self, name: str, arguments: dict[str, Any],
                        context: Context[Any, Any] | None = None) -> Any:
        tool = self._workflow_tools.get(name)
        if tool is None and name.startswith(WORKFLOW_TOOL_PREFIX) and self._tool_manager.get_tool(name) is None:
            tool = (await self.refresh_workflow_tools()).get(name)  # created since the client listed the tools
        if tool is None:
            return await super().call_tool(name, arguments, context)
        result = await run_workflow_tool(self._api, tool, dict(arguments or {}), self._config.workflow_timeout, context)
        return CallToolResult(content=[TextContent(type="text", text=_json(result))], structured_content=result)


def build_server(config: Config, client: HiveClient | None = None) -> MCPServer:
    api = client or HiveClient(config)

    @asynccontextmanager
    async def lifespan(_: MCPServer) -> AsyncIterator[None]:
        logger.info("Hive MCP server for %s (token %s)", config.url, "set" if config.token else "NOT set")
        try:
            yield None
        finally:
            await api.aclose()

    mcp: HiveMCPServer = HiveMCPServer("hive", api=api, config=config, title="Hive", instructions=INSTRUCTIONS,
                                       version=_version(), lifespan=lifespan, website_url=config.url)

    def tool(title: str, annotations: ToolAnnotations) -> Callable[[_F], _F]:
        """Register a tool; its docstring, on one line, is the description."""
        def register(fn: _F) -> _F:
            mcp.add_tool(fn, title=title, annotations=annotations,
                         description=" ".join(inspect.cleandoc(fn.__doc__ or "").split()))
            return fn
        return register

    # --- agents ---

    @tool("List agents", READ)
    async def list_agents(
        status: Annotated[Literal["online", "busy", "degraded", "offline", "draining"] | None,
                          Field(description="Only agents in this state.")] = None,
    ) -> dict[str, Any]:
        """The cluster's Ollama nodes with status, slots (busy/total/free), loaded and available models and
        the tasks running there."""
        agents = (await api.call("GET", "/api/status/agents")).get("agents", [])
        if status:
            agents = [a for a in agents if a.get("status") == status]
        return {"agents": agents, "count": len(agents)}

    @tool("Get agent", READ)
    async def get_agent(agent_id: AgentId) -> dict[str, Any]:
        """One agent in full: endpoint, capabilities, hardware, max_concurrency, status, busy slots, models,
        measured tokens/s, last error."""
        return await api.call("GET", f"/api/agents/{_seg(agent_id)}")

    @tool("Register agent", WRITE)
    async def register_agent(
        endpoint: Annotated[str, Field(description="Ollama base URL, e.g. http://192.168.1.72:11434.")],
        agent_id: Annotated[str | None, Field(description="Short stable id, e.g. 'acacia' (derived from the name "
                                                          "if omitted).")] = None,
        name: Annotated[str | None, Field(description="Display name (defaults to agent_id).")] = None,
        model: Annotated[str | None, Field(description="Default model, used when a task names none.")] = None,
        max_concurrency: Annotated[int | None, Field(description="Parallel slots (Ollama's NUM_PARALLEL).")] = None,
        specialization: Annotated[str | None, Field(description="Main specialty, e.g. 'code'.")] = None,
        capabilities: Annotated[list[Capability] | None, Field(description="What it is good at.")] = None,
        hardware: Annotated[dict[str, Any] | None, Field(description="gpu_type, vram_gb, cpu_cores, ram_gb.")] = None,
        performance_targets: Annotated[dict[str, Any] | None, Field(
            description="min_tps, max_response_time (seconds).")] = None,
    ) -> dict[str, Any]:
        """Register an Ollama node (admin only). Hive probes it (/api/version, /api/tags, /api/ps) at once and
        answers with its live state."""
        body: dict[str, Any] = {
            "endpoint": endpoint, "agent_id": agent_id, "name": name or agent_id, "model": model,
            "max_concurrency": max_concurrency, "specialization": specialization, "hardware": hardware,
            "performance_targets": performance_targets,
            "capabilities": [c.model_dump() for c in capabilities] if capabilities is not None else None,
        }
        return await api.call("POST", "/api/agents", json_body={k: v for k, v in body.items() if v is not None})

    @tool("Drain or undrain agent", DESTRUCTIVE)
    async def drain_agent(
        agent_id: AgentId,
        drain: Annotated[bool, Field(description="true: no new work (running work finishes); false: accept work "
                                                 "again.")] = True,
    ) -> dict[str, Any]:
        """Stop giving an agent new work (what runs there finishes), or undo that."""
        return await api.call("POST", f"/api/agents/{_seg(agent_id)}/{'drain' if drain else 'undrain'}")

    # --- tasks ---

    @tool("Create task", WRITE)
    async def create_task(
        prompt: Annotated[str, Field(description="What the model is asked to do.")],
        title: Annotated[str | None, Field(description="Short title (defaults to the prompt's first line).")] = None,
        task_type: Annotated[str, Field(description="Capability the task needs, e.g. 'code'; 'general' runs on "
                                                    "any agent.")] = "general",
        priority: Annotated[int, Field(description="1..5, 5 most urgent.", json_schema_extra=PRIORITY_SCHEMA)] = 3,
        model: Annotated[str | None, Field(description="Ollama model, e.g. 'llama3.2:3b' (default: the agent's "
                                                       "default model).")] = None,
        depends_on: Annotated[list[str] | None, Field(description="Ids of tasks that must complete first.")] = None,
        system: Annotated[str | None, Field(description="Optional system prompt.")] = None,
        options: Annotated[dict[str, Any] | None, Field(description="Ollama options, e.g. {\"temperature\": 0.2, "
                                                                    "\"num_predict\": 256}.")] = None,
    ) -> dict[str, Any]:
        """Submit a task to the cluster. Hive places it on the best agent with a free slot; use wait_for_task
        to get the result."""
        body: dict[str, Any] = {
            "title": title or (prompt.strip().splitlines() or ["Task"])[0][:80] or "Task",
            "prompt": prompt, "task_type": task_type, "priority": priority,
        }
        for key, value in (("model", model), ("depends_on", depends_on), ("system", system), ("options", options)):
            if value is not None:
                body[key] = value
        return await api.call("POST", "/api/tasks", json_body=body)

    @tool("Get task", READ)
    async def get_task(task_id: TaskId) -> dict[str, Any]:
        """One task: status, assigned agent, attempts, result (partial while running), Ollama timings, error,
        queue position while pending."""
        return await api.call("GET", f"/api/tasks/{_seg(task_id)}")

    @tool("List tasks", READ)
    async def list_tasks(
        status: Annotated[list[TaskStatus] | None, Field(description="Only these states.")] = None,
        agent: Annotated[str | None, Field(description="Only tasks assigned to this agent (UUID or agent_id).")] = None,
        priority: Annotated[int | None, Field(description="Only this priority (1..5).")] = None,
        task_type: Annotated[str | None, Field(description="Only this task type.")] = None,
        page: Annotated[int, Field(description="Page number, from 1.", ge=1)] = 1,
        page_size: Annotated[int, Field(description="Tasks per page (max 100).", ge=1, le=100)] = 20,
        full: Annotated[bool, Field(description="Full prompts and results (default: shortened previews).")] = False,
    ) -> dict[str, Any]:
        """Tasks, newest first, with filters and pagination."""
        params = {"status": status, "agent": agent, "priority": priority, "task_type": task_type,
                  "page": page, "page_size": page_size}
        data = _listing(await api.call("GET", "/api/tasks", params=params), "results")
        if not full and isinstance(data.get("results"), list):
            data["results"] = [_brief_task(t) for t in data["results"]]
        return data

    @tool("Cancel task", DESTRUCTIVE)
    async def cancel_task(task_id: TaskId) -> dict[str, Any]:
        """Cancel a task: pending or queued at once; a running one within about two seconds (its partial output
        is kept). Answers with the task."""
        return await api.call("DELETE", f"/api/tasks/{_seg(task_id)}")

    @tool("Wait for task", READ)
    async def wait_for_task(
        task_id: TaskId,
        ctx: Context,
        timeout_seconds: Annotated[float, Field(description=f"How long to wait at most (capped at "
                                                            f"{MAX_WAIT_SECONDS:g}).", gt=0)] = DEFAULT_WAIT_SECONDS,
    ) -> dict[str, Any]:
        """Block until the task is completed, failed or cancelled, or the timeout passes; sends progress
        notifications (status changes, tokens so far) while waiting. Answers with the task (status, result,
        timings, error) plus a 'wait' summary; on timeout wait.timed_out is true and the task is still running
        or queued."""
        return await _wait(api, _seg(task_id), min(timeout_seconds, MAX_WAIT_SECONDS), ctx)

    # --- workflows ---

    @tool("List workflows", READ)
    async def list_workflows() -> dict[str, Any]:
        """The workflows stored in Hive (n8n JSON)."""
        return _listing(await api.feature_call(WORKFLOWS, "GET", "/api/workflows"), "results")

    @tool("Get workflow", READ)
    async def get_workflow(workflow_id: WorkflowId) -> dict[str, Any]:
        """One workflow with its nodes and connections."""
        return await api.feature_call(WORKFLOWS, "GET", f"/api/workflows/{_seg(workflow_id)}")

    @tool("Create workflow from n8n JSON", WRITE)
    async def create_workflow(
        workflow: Annotated[dict[str, Any], Field(description="An n8n workflow export: {\"name\", \"nodes\", "
                                                              "\"connections\", …}.")],
        name: Annotated[str | None, Field(description="Name to store it under (overrides workflow.name).")] = None,
    ) -> dict[str, Any]:
        """Import an n8n workflow. Hive validates it (unknown node types, cycles, dangling connections) and
        answers 400 naming the node at fault."""
        body = dict(workflow)
        if name:
            body["name"] = name
        return await api.feature_call(WORKFLOWS, "POST", "/api/workflows", json_body=body)

    @tool("Execute workflow", WRITE)
    async def execute_workflow(
        workflow_id: WorkflowId,
        input: Annotated[dict[str, Any] | list[dict[str, Any]] | None, Field(
            description="Input items for the trigger node (an object or a list of objects).")] = None,
    ) -> dict[str, Any]:
        """Start an execution of a workflow with the given input; answers with the execution (poll it with
        get_execution)."""
        return await api.feature_call(WORKFLOWS, "POST", f"/api/workflows/{_seg(workflow_id)}/execute",
                                      json_body={"input": input if input is not None else {}})

    @tool("List executions", READ)
    async def list_executions(
        workflow_id: Annotated[str | None, Field(description="Only executions of this workflow.")] = None,
    ) -> dict[str, Any]:
        """Workflow executions, newest first."""
        return _listing(await api.feature_call(EXECUTIONS, "GET", "/api/executions",
                                               params={"workflow": workflow_id}), "results")

    @tool("Get execution", READ)
    async def get_execution(
        execution_id: Annotated[str, Field(description="Execution id.")],
    ) -> dict[str, Any]:
        """One execution: status, input, output, error, timestamps and its node runs."""
        return await api.feature_call(EXECUTIONS, "GET", f"/api/executions/{_seg(execution_id)}")

    # --- cluster ---

    @tool("Cluster status", READ)
    async def cluster_status() -> dict[str, Any]:
        """Agents by state, slots (total/busy/free), queue depth per priority, oldest wait, last hour's
        completed/failed/cancelled counts and the running tasks."""
        return await api.call("GET", "/api/status/cluster")

    @tool("Performance metrics", READ)
    async def performance_metrics(
        window: Annotated[int | str, Field(description="How far to look back: seconds (10 s to 30 days), or a "
                                                       "duration like '15m', '1h', '7d'.")] = 3600,
    ) -> dict[str, Any]:
        """Per agent: tokens/s, response time, success and error rates, busy slots; per cluster: queue per
        priority, active tasks, completion time; the Hive host's CPU, memory and disk."""
        return _listing(await api.feature_call(PERFORMANCE, "GET", "/api/metrics/performance",
                                               params={"window": _seconds(window)}), "metrics")

    @tool("Alerts", READ)
    async def list_alerts(
        status: Annotated[str | None, Field(description="'firing' or 'resolved'.")] = None,
        severity: Annotated[str | None, Field(description="'info', 'warning' or 'critical'.")] = None,
        subject: Annotated[str | None, Field(description="An agent id, 'cluster' or 'host'.")] = None,
        page: Annotated[int, Field(description="Page number, from 1.", ge=1)] = 1,
        page_size: Annotated[int, Field(description="Alerts per page (max 100).", ge=1, le=100)] = 50,
    ) -> dict[str, Any]:
        """Alerts fired by Hive's alert rules (agent down, queue backlog, slow nodes …), newest first."""
        params = {"status": status, "severity": severity, "subject": subject, "page": page, "page_size": page_size}
        return _listing(await api.feature_call(ALERTS, "GET", "/api/alerts", params=params), "results")

    # --- development coordination ---

    @tool("Coordinate development", WRITE)
    async def coordinate_development(
        project: Annotated[str, Field(description="What the project is about; every task gets it as context.")],
        breakdown: Annotated[list[WorkItem], Field(description="The work items; dependencies by index or by "
                                                               "title/name.", min_length=1)],
        model: Annotated[str | None, Field(description="Model for every item that names none.")] = None,
        options: Annotated[dict[str, Any] | None, Field(description="Ollama options for every task, e.g. "
                                                                    "{\"num_predict\": 512}.")] = None,
    ) -> dict[str, Any]:
        """Turn a project breakdown into a dependency graph of Hive tasks, created in one call: each item
        waits for its dependencies, and a failed dependency fails its dependents. Answers with the created
        task ids and titles."""
        body = {"tasks": _batch_items(project, breakdown, model, options)}
        created = await api.call("POST", "/api/tasks/batch", json_body=body)
        tasks = created if isinstance(created, list) else created.get("tasks", created.get("results", []))
        out = []
        for index, (item, task) in enumerate(zip(breakdown, tasks, strict=False)):
            out.append({"index": index, "id": task.get("id"), "title": task.get("title", item.title),
                        "task_type": task.get("task_type"), "priority": task.get("priority"),
                        "status": task.get("status"), "depends_on": task.get("dependencies", [])})
        return {"project": project, "count": len(out), "tasks": out,
                "next": "wait_for_task on each id (or list_tasks) to follow the work."}

    # --- resources ---

    @mcp.resource("hive://cluster/status", name="cluster-status", title="Cluster status",
                  description="Agents by state, slots, queue depth per priority, running tasks.",
                  mime_type="application/json")
    async def cluster_resource() -> str:
        return _json(await api.call("GET", "/api/status/cluster"))

    @mcp.resource("hive://agents", name="agents", title="Agents",
                  description="Every agent with status, slots, loaded models and running tasks.",
                  mime_type="application/json")
    async def agents_resource() -> str:
        return _json(await api.call("GET", "/api/status/agents"))

    @mcp.resource("hive://tasks/active", name="active-tasks", title="Active tasks",
                  description="Pending, queued and running tasks (up to 100), newest first.",
                  mime_type="application/json")
    async def active_resource() -> str:
        data = await api.call("GET", "/api/tasks", params={"status": list(ACTIVE), "page_size": 100})
        data = _listing(data, "results")
        data["results"] = [_brief_task(t) for t in data.get("results", [])]
        return _json(data)

    @mcp.resource("hive://tasks/recent-results", name="recent-results", title="Recent results",
                  description="The 20 most recent completed tasks with their results (long results shortened; "
                              "read hive://tasks/{id} for one in full).",
                  mime_type="application/json")
    async def results_resource() -> str:
        data = _listing(await api.call("GET", "/api/tasks", params={"status": "completed", "page_size": 20}),
                        "results")
        keep = ("id", "title", "task_type", "priority", "assigned_agent", "model_used", "tokens_per_second",
                "created_at", "completed_at")
        data["results"] = [{**{k: t.get(k) for k in keep}, "result": _preview(t.get("result"), 2000),
                            "result_chars": len(t.get("result") or "")} for t in data.get("results", [])]
        return _json(data)

    @mcp.resource("hive://metrics", name="metrics", title="Prometheus metrics",
                  description="Hive's /metrics in the Prometheus text format.", mime_type="text/plain")
    async def metrics_resource() -> str:
        response = await api.send("GET", "/metrics", accept="text/plain")
        if response.status_code == 404:
            return (f"Prometheus metrics are not available on this Hive yet: GET {config.url}/metrics "
                    "answered 404.\n")
        if response.status_code >= 400:
            raise api.error_for("GET", "/metrics", response)
        return response.text

    @mcp.resource("hive://tasks/{task_id}", name="task", title="Task",
                  description="One task in full (status, result, timings, attempts).", mime_type="application/json")
    async def task_resource(task_id: str) -> str:
        return _json(await api.call("GET", f"/api/tasks/{_seg(task_id)}"))

    @mcp.resource("hive://agents/{agent_id}", name="agent", title="Agent",
                  description="One agent in full, by UUID or agent_id.", mime_type="application/json")
    async def agent_resource(agent_id: str) -> str:
        return _json(await api.call("GET", f"/api/agents/{_seg(agent_id)}"))

    return mcp


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?)?\s*$",
                       re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(window: int | str) -> int:
    """3600, "3600", "15m", "1h", "7 days" -> seconds."""
    if isinstance(window, int):
        return window
    match = _DURATION.match(window)
    if not match:
        raise InvalidArguments(f"window: '{window}' is not a duration; use seconds or e.g. '15m', '1h', '7d'")
    unit = (match.group(2) or "s")[0].lower()
    return int(float(match.group(1)) * _UNIT_SECONDS[unit])


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def _batch_items(project: str, breakdown: list[WorkItem], model: str | None,
                 options: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The items of one POST /api/tasks/batch; dependencies become the items' keys."""
    by_name: dict[str, list[int]] = {}
    for index, item in enumerate(breakdown):
        for label in {item.title, item.name} - {None, ""}:
            by_name.setdefault(str(label).strip().casefold(), []).append(index)

    def resolve(index: int, ref: int | str) -> str:
        where = f"breakdown[{index}].dependencies"
        if isinstance(ref, str) and ref.strip().isdigit():
            ref = int(ref.strip())
        if isinstance(ref, int):
            if not 0 <= ref < len(breakdown):
                raise InvalidArguments(f"{where}: index {ref} is outside the breakdown (0..{len(breakdown) - 1})")
            target = ref
        else:
            matches = by_name.get(ref.strip().casefold(), [])
            if len(matches) > 1:
                raise InvalidArguments(f"{where}: '{ref}' names items {matches}; use an index or a unique name")
            if not matches:
                try:
                    return str(uuid.UUID(ref.strip()))  # an existing Hive task
                except ValueError:
                    known = ", ".join(repr(b.name or b.title) for b in breakdown)
                    raise InvalidArguments(f"{where}: no item is called '{ref}' (items: {known})") from None
            target = matches[0]
        if target == index:
            raise InvalidArguments(f"{where}: an item cannot depend on itself")
        return f"item-{target}"

    items = []
    for index, item in enumerate(breakdown):
        deps = list(dict.fromkeys(resolve(index, ref) for ref in item.dependencies))
        after = [breakdown[int(d.split("-")[1])].title for d in deps if d.startswith("item-")]
        prompt = f"Project: {project.strip()}\n\nYour part: {item.title.strip()}\n"
        if item.description.strip():
            prompt += f"\n{item.description.strip()}\n"
        if after:
            prompt += "\nThis builds on: " + "; ".join(after) + "\n"
        entry: dict[str, Any] = {
            "key": f"item-{index}", "title": item.title.strip()[:255] or f"Item {index}", "prompt": prompt,
            "task_type": re.sub(r"\s+", "-", (item.specialization or "general").strip().lower()) or "general",
            "priority": item.priority, "depends_on": deps,
            "metadata": {"project": project.strip()[:200], "breakdown_index": index, "source": "mcp"},
        }
        if item.model or model:
            entry["model"] = item.model or model
        if options:
            entry["options"] = options
        items.append(entry)
    return items


async def _wait(api: HiveClient, task_path: str, timeout: float, ctx: Context) -> dict[str, Any]:
    """Poll the task (and its event topic for token counts) until it finishes or the timeout passes."""
    started = time.monotonic()
    deadline = started + timeout
    task = await api.call("GET", f"/api/tasks/{task_path}")
    task_id = str(task.get("id", task_path))
    topic = f"task.{task_id}"
    seq = 0
    tokens: int | None = None
    events_ok = True
    last_status: str | None = None
    last_tokens: int | None = None
    last_note = 0.0
    last_progress = -1.0
    last_refresh = time.monotonic()
    notes = 0
    failing_since: float | None = None

    async def notify(status: str) -> None:
        nonlocal last_status, last_tokens, last_note, last_progress, notes
        now = time.monotonic()
        if status == last_status and tokens == last_tokens and now - last_note < HEARTBEAT_INTERVAL:
            return
        # MCP progress must grow with every notification: report seconds waited of the timeout;
        # the message carries the news (state, agent, tokens so far).
        progress = max(round(now - started, 2), last_progress + 0.01)
        agent = (task.get("assigned_agent") or {}).get("agent_id")
        parts = [status + (f" on {agent}" if agent else "")]
        if status == "pending" and task.get("queue_position"):
            parts.append(f"queue position {task['queue_position']}")
        if tokens is not None:
            parts.append(f"{tokens} tokens so far")
        if status in ("running", *TERMINAL) and task.get("result"):
            parts.append(f"{_words(task['result'])} words")
        await ctx.report_progress(progress, timeout, " · ".join(parts))
        last_status, last_tokens, last_note, last_progress = status, tokens, now, progress
        notes += 1

    while True:
        status = str(task.get("status"))
        if status in TERMINAL:
            if (task.get("timings") or {}).get("eval_count"):
                tokens = task["timings"]["eval_count"]
            await notify(status)
            break
        await notify(status)
        if time.monotonic() >= deadline:
            break
        await anyio.sleep(min(POLL_INTERVAL, max(deadline - time.monotonic(), 0)))
        try:
            news = False
            if events_ok:
                try:
                    page = await api.call("GET", "/api/events", params={"topic": topic, "after": seq, "limit": 500})
                    for event in page.get("events", []):
                        seq = max(seq, int(event.get("seq", seq)))
                        data = event.get("data") or {}
                        if isinstance(data.get("tokens"), int):
                            tokens = max(tokens or 0, data["tokens"])
                        if data.get("status") and data.get("status") != status:
                            news = True
                        if event.get("type") in ("task.completed", "task.failed", "task.cancelled"):
                            news = True
                except HiveAPIError as exc:  # no events API (or not allowed): poll the task alone
                    logger.info("wait %s: events unavailable (%s); polling the task", task_id, exc.status)
                    events_ok = False
            if news or not events_ok or time.monotonic() - last_refresh >= TASK_REFRESH_INTERVAL:
                task = await api.call("GET", f"/api/tasks/{task_path}")
                last_refresh = time.monotonic()
            failing_since = None
        except (HiveUnreachable, HiveAPIError) as exc:
            transient = isinstance(exc, HiveUnreachable) or exc.status == 429 or exc.status >= 500
            if not transient:
                raise
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > TRANSIENT_GRACE:
                raise
            logger.warning("wait %s: %s; retrying", task_id, exc)
            await anyio.sleep(1.0)

    status = str(task.get("status"))
    waited = round(time.monotonic() - started, 2)
    return {**task, "wait": {"finished": status in TERMINAL, "timed_out": status not in TERMINAL,
                             "waited_seconds": waited, "tokens": tokens, "progress_notifications": notes}}


# --- entry points ---------------------------------------------------------------------


def run(url: str | None = None, log_level: str | None = None, configure_logging: bool = True) -> None:
    """Serve on stdio until the client closes stdin."""
    level = (log_level or os.environ.get("HIVE_MCP_LOG_LEVEL", "INFO")).upper()
    if configure_logging:
        logging.basicConfig(stream=sys.stderr, level=level,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(level)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    server = build_server(Config.from_env(url=url))
    server.run("stdio")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="hive-mcp", description="Hive's MCP server on stdio. Configure with HIVE_API_URL and HIVE_API_TOKEN.")
    parser.add_argument("--url", help=f"Hive base URL (default: $HIVE_API_URL or {DEFAULT_URL})")
    parser.add_argument("--log-level", help="stderr log level (default: $HIVE_MCP_LOG_LEVEL or INFO)")
    parser.add_argument("--version", action="version", version=f"hive-mcp {_version()}")
    args = parser.parse_args(argv)
    try:
        run(url=args.url, log_level=args.log_level)
    except ConfigError as exc:
        print(f"hive-mcp: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
