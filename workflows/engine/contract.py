"""The contract between the workflow runtime, the node handlers and the host (Django).

The engine is Django-free: it runs an n8n workflow (a dict) with n8n's item
semantics. Three parties meet here:

* **Node handlers** (``workflows/nodes/*.py``) subclass :class:`Node` and register
  with :func:`register`. Every module in ``workflows.nodes`` is imported by
  :func:`load_nodes`, so a new file is enough to add node types.
* **The runtime** (``workflows/engine/runtime.py``) implements :class:`NodeContext`
  and drives the graph (execution order v0/v1, Merge waiting, loops, retries,
  error outputs, pinData-free runs).
* **The host** implements :class:`EngineServices` (Django: rows, events, Hive
  tasks for LLM nodes, MCP calls, stored workflows). :class:`LocalServices` is the
  in-memory host used by tests and by sub-workflows passed inline.

Items are n8n's: ``{"json": {...}, "binary": {...}?, "pairedItem": {"item": i, "input": k}?}``.
A node returns one list of items per output, or ``None`` when it produced nothing.
"""
from __future__ import annotations

import importlib
import pkgutil
import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

Item = dict[str, Any]
Items = list[Item]
Outputs = list[Items]

MISSING: Any = object()


# --------------------------------------------------------------------------- errors


class WorkflowError(Exception):
    """Base class of everything the engine raises on purpose."""


class NodeError(WorkflowError):
    """A node failed. ``message`` is what n8n shows; ``item_index`` the item it failed on.

    With ``continueOnFail`` / ``onError`` the runtime turns it into an item
    ``{"json": {"error": message}}`` (n8n's shape) instead of failing the execution.
    """

    def __init__(self, message: str, *, description: str | None = None, item_index: int | None = None,
                 node: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.description = description
        self.item_index = item_index
        self.node = node


class ExpressionError(NodeError):
    """An expression could not be parsed or failed when evaluated."""


class ExecutionCancelled(WorkflowError):
    """The host asked the execution to stop."""


@dataclass(frozen=True)
class ValidationIssue:
    """One reason a workflow cannot be stored; the API answers 400 with all of them."""

    message: str
    node: str | None = None
    parameter: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "parameter": self.parameter, "message": self.message}

    def __str__(self) -> str:
        where = " ".join(p for p in (f"node '{self.node}'" if self.node else "",
                                     f"parameter '{self.parameter}'" if self.parameter else "") if p)
        return f"{where}: {self.message}" if where else self.message


class WorkflowInvalid(WorkflowError):
    def __init__(self, issues: list[ValidationIssue]) -> None:
        super().__init__("; ".join(str(i) for i in issues))
        self.issues = issues


# --------------------------------------------------------------------------- settings and host


@dataclass(frozen=True)
class EngineSettings:
    """Limits and switches; the Django host builds this from ``settings.HIVE_WORKFLOW_*``."""

    timezone: str = "America/New_York"        # n8n's default when a workflow sets none
    js_timeout_ms: int = 5000                 # per expression / Code node call
    js_memory_mb: int = 64                    # V8 heap limit per execution
    python_code_enabled: bool = True
    python_timeout_s: float = 10.0
    python_memory_mb: int = 256
    http_timeout_s: float = 30.0
    http_max_bytes: int = 10 * 1024 * 1024
    http_allow: tuple[str, ...] = ()          # hosts / CIDRs allowed besides public addresses
    max_node_runs: int = 10_000               # guards against runaway loops
    max_wait_s: float = 3600.0                # longest Wait node sleep done in-process


class EngineServices:
    """Hooks into the host. Every method has a working local default."""

    def on_node_start(self, node: NodeSpec, run_index: int, input_items: Items) -> None:
        """A node run begins (Django: NodeRun row + event)."""

    def on_node_finish(self, node: NodeSpec, run_index: int, *, status: str, outputs: Outputs | None,
                       error: str | None, duration_ms: float) -> None:
        """A node run ended; status is 'success' or 'error'."""

    def is_cancelled(self) -> bool:
        return False

    def load_workflow(self, reference: str) -> dict[str, Any]:
        """The n8n data of a stored workflow (Execute Workflow with source=database)."""
        raise NodeError(f"workflow '{reference}' is not available here (no workflow store)")

    def run_llm(self, *, prompt: str, model: str = "", system: str = "", task_type: str = "general",
                priority: int = 3, options: dict[str, Any] | None = None, title: str = "") -> dict[str, Any]:
        """Run a prompt as a Hive task and wait for it. Returns at least {"response": text}."""
        raise NodeError("LLM nodes need the Hive cluster; this engine host has none")

    def call_mcp_tool(self, server: str, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Call a tool on a registered MCP server. Returns the tool result as JSON."""
        raise NodeError(f"MCP server '{server}' is not registered")

    def sleep(self, seconds: float) -> None:
        """Wait (cancellable). The default sleeps in small steps checking is_cancelled()."""
        deadline = _monotonic() + seconds
        while (left := deadline - _monotonic()) > 0:
            if self.is_cancelled():
                raise ExecutionCancelled("execution cancelled while waiting")
            threading.Event().wait(min(left, 0.2))


LocalServices = EngineServices


def _monotonic() -> float:
    import time

    return time.monotonic()


# --------------------------------------------------------------------------- results


@dataclass
class NodeRunRecord:
    """One run of one node, as the runtime keeps it (n8n's ``runData[node][i]``)."""

    node: str
    run_index: int
    status: str                               # success | error
    outputs: Outputs | None                   # one list per output; None when the node produced nothing
    error: str | None = None
    started_at: float = 0.0                   # time.time()
    duration_ms: float = 0.0
    source: list[dict[str, Any]] = field(default_factory=list)  # [{"previousNode", "previousNodeOutput", "previousNodeRun"}] per input


@dataclass
class ExecutionResult:
    status: str                               # success | error | cancelled
    run_data: dict[str, list[NodeRunRecord]]  # node name -> its runs in order
    output: Items                             # first output of the last node that ran
    error: str | None = None
    error_node: str | None = None
    last_node: str | None = None


# --------------------------------------------------------------------------- nodes


@dataclass
class NodeSpec:
    """One node of a workflow as n8n stores it."""

    name: str
    type: str
    type_version: float = 1
    parameters: dict[str, Any] = field(default_factory=dict)
    disabled: bool = False
    retry_on_fail: bool = False
    max_tries: int = 3
    wait_between_tries_ms: int = 1000
    always_output_data: bool = False
    execute_once: bool = False
    on_error: str = "stopWorkflow"           # stopWorkflow | continueRegularOutput | continueErrorOutput
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, node: dict[str, Any]) -> NodeSpec:
        on_error = node.get("onError") or ("continueRegularOutput" if node.get("continueOnFail") else "stopWorkflow")
        return cls(
            name=str(node.get("name", "")),
            type=str(node.get("type", "")),
            type_version=node.get("typeVersion", 1) or 1,
            parameters=dict(node.get("parameters") or {}),
            disabled=bool(node.get("disabled", False)),
            retry_on_fail=bool(node.get("retryOnFail", False)),
            max_tries=int(node.get("maxTries", 3) or 3),
            wait_between_tries_ms=int(node.get("waitBetweenTries", 1000) or 0),
            always_output_data=bool(node.get("alwaysOutputData", False)),
            execute_once=bool(node.get("executeOnce", False)),
            on_error=on_error,
            raw=node,
        )

    @property
    def continue_on_fail(self) -> bool:
        return self.on_error != "stopWorkflow"


class NodeContext:
    """What a node handler may use while it runs. Implemented by the runtime."""

    node: NodeSpec
    run_index: int
    settings: EngineSettings
    services: EngineServices
    workflow: dict[str, Any]          # the whole n8n workflow (name, settings, ...)
    execution_id: str | None
    mode: str                         # manual | webhook | schedule | subworkflow | mcp
    evaluator: Any                    # the execution's expressions.Evaluator (one V8 isolate per execution)

    def input_items(self, index: int = 0) -> Items:
        """Items on input ``index`` (deep copies: handlers may mutate them)."""
        raise NotImplementedError

    def input_count(self) -> int:
        """How many inputs the node has (Merge: 2; most nodes: 1)."""
        raise NotImplementedError

    def has_input(self, index: int) -> bool:
        """Whether input ``index`` received data in this run (Merge v2.1 / v3 partial inputs)."""
        raise NotImplementedError

    def param(self, path: str, item_index: int = 0, default: Any = MISSING) -> Any:
        """A parameter by dotted path (``options.dotNotation``), expressions resolved for item
        ``item_index``, recursively inside lists/dicts. Missing and no default: NodeError naming it."""
        raise NotImplementedError

    def raw_param(self, path: str, default: Any = MISSING) -> Any:
        """A parameter as written in the workflow, expressions not evaluated."""
        raise NotImplementedError

    def evaluate(self, value: Any, item_index: int = 0) -> Any:
        """Resolve expressions (``={{ ... }}``) anywhere inside ``value`` for item ``item_index``."""
        raise NotImplementedError

    def expression_data(self, item_index: int, node_names: set[str]) -> dict[str, Any]:
        """The JSON-able data JavaScript sees (see workflows/engine/expressions.py for the shape)."""
        raise NotImplementedError

    @property
    def state(self) -> dict[str, Any]:
        """Per-node state kept across runs of this node within one execution (Split In Batches)."""
        raise NotImplementedError

    def execute_workflow(self, workflow: dict[str, Any], items: Items, *, wait: bool = True) -> Items:
        """Run another workflow (dict) with ``items`` as its trigger output; returns its last node's
        first-output items."""
        raise NotImplementedError

    def check_cancelled(self) -> None:
        if self.services.is_cancelled():
            raise ExecutionCancelled("execution cancelled")

    def connected_nodes(self, connection_type: str) -> list[NodeSpec]:
        """Enabled nodes attached to this node's ``connection_type`` inputs (ai_languageModel, ai_tool...)."""
        raise NotImplementedError

    def input_source(self, index: int = 0) -> dict[str, Any] | None:
        """{"previousNode", "previousNodeOutput", "previousNodeRun"} of input ``index``."""
        raise NotImplementedError

    def error_item(self, error: BaseException | str, item_index: int) -> Item:
        """n8n's continue-on-fail item for a failed input item."""
        message = error.message if isinstance(error, NodeError) else str(error)
        return {"json": {"error": message}, "pairedItem": {"item": item_index}}


class Node:
    """Base class of node handlers. One instance serves every node of its type."""

    type: ClassVar[str]
    #: Extra type names that share this handler (e.g. the legacy ``start`` node).
    aliases: ClassVar[tuple[str, ...]] = ()
    #: typeVersions accepted (None: any). Checked at import.
    versions: ClassVar[tuple[float, ...] | None] = None
    #: Trigger nodes start an execution; they take no input.
    trigger: ClassVar[bool] = False
    #: Parameter paths that must be present (checked at import, per node).
    required: ClassVar[tuple[str, ...]] = ()
    #: Nodes that only annotate the canvas (sticky notes): never executed, never connected.
    annotation: ClassVar[bool] = False
    #: The node may be a loop target (Split In Batches): cycles through it are allowed.
    allows_cycles: ClassVar[bool] = False

    def input_count(self, node: NodeSpec) -> int:
        return 0 if self.trigger else 1

    def output_count(self, node: NodeSpec) -> int:
        return 1

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        """Static checks before the workflow is stored. Default: the ``required`` parameters exist."""
        issues = []
        for path in self.required:
            if _lookup(node.parameters, path) is MISSING:
                issues.append(ValidationIssue("required parameter is missing", node.name, path))
        return issues

    def validate_workflow(self, node: NodeSpec, workflow: dict[str, Any]) -> list[ValidationIssue]:
        """Checks that need the rest of the workflow (e.g. a chain's model sub-node). Default: none."""
        return []

    def execute(self, ctx: NodeContext) -> Outputs | None:
        raise NotImplementedError


_REGISTRY: dict[str, Node] = {}
_loaded = False
_lock = threading.Lock()


def register(cls: type[Node]) -> type[Node]:
    instance = cls()
    for name in (cls.type, *cls.aliases):
        if name in _REGISTRY and type(_REGISTRY[name]) is not cls:
            raise RuntimeError(f"node type {name} registered twice ({type(_REGISTRY[name]).__name__}, {cls.__name__})")
        _REGISTRY[name] = instance
    return cls


def load_nodes() -> dict[str, Node]:
    """Import every module of ``workflows.nodes`` once; returns the registry."""
    global _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                import workflows.nodes as package

                for info in pkgutil.iter_modules(package.__path__):
                    importlib.import_module(f"{package.__name__}.{info.name}")
                _loaded = True
    return _REGISTRY


def get_node(type_name: str) -> Node | None:
    return load_nodes().get(type_name)


def _lookup(parameters: dict[str, Any], path: str) -> Any:
    value: Any = parameters
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


lookup = _lookup

__all__ = [
    "MISSING", "EngineServices", "EngineSettings", "ExecutionCancelled", "ExecutionResult", "NodeRunRecord",
    "ExpressionError", "Item", "Items",
    "LocalServices", "Node", "NodeContext", "NodeError", "NodeSpec", "Outputs", "ValidationIssue",
    "WorkflowError", "WorkflowInvalid", "get_node", "load_nodes", "lookup", "register",
]
