"""The workflow runtime: runs an n8n workflow dict with n8n's execution semantics.

This is a port of the scheduling rules of n8n's ``WorkflowExecute``
(packages/core/src/execution-engine/workflow-execute.ts) so that workflows
exported from n8n produce the same items in the same order:

* a node execution stack seeded with the start node (the trigger, or ``start_node``);
* ``settings.executionOrder == "v1"``: children are put on the *front* of the stack
  (depth-first), ordered by canvas position (top-to-bottom, then left-to-right);
  multi-input nodes that never receive some input run with the inputs they got once
  nothing else is left to run;
* legacy ``v0`` (no executionOrder): children go to the *back* of the stack
  (breadth-first) and a multi-input node (Merge) forces the execution of parent
  branches that would otherwise never run;
* pairedItem lineage (so ``$('Name').item`` resolves), retries, ``onError``
  (continueRegularOutput / continueErrorOutput / legacy continueOnFail),
  ``alwaysOutputData``, ``executeOnce``, disabled nodes and loops (Split In Batches).

Handler contract for errors (what node authors must know):

* Raise :class:`NodeError` when the node cannot run. Without continue-on-fail the
  execution stops with that error. With ``continueRegularOutput`` / legacy
  ``continueOnFail`` the node's input 0 is passed through unchanged (n8n does exactly
  this). With ``continueErrorOutput`` every input item is routed to the error output,
  its json merged with ``{"error": message}``.
* To fail only some items (n8n's per-item ``continueOnFail``), check
  ``ctx.node.continue_on_fail`` and put :func:`error_item` (``{"json": {"error": msg},
  "pairedItem": {"item": i}}``) in the output instead of raising. With
  ``continueErrorOutput`` the runtime moves those items to the extra error output
  and merges the failing input item's json into them, as n8n does.

Connection types other than ``main`` (``ai_languageModel``, ``ai_tool``, ...) carry no
items: a node reads the nodes attached to it with
``ctx.connected_nodes("ai_languageModel")`` (a list of :class:`NodeSpec`).
"""
from __future__ import annotations

import copy
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from workflows.engine.contract import (
    MISSING,
    EngineServices,
    EngineSettings,
    ExecutionCancelled,
    ExecutionResult,
    ExpressionError,
    Item,
    Items,
    NodeContext,
    NodeError,
    NodeRunRecord,
    NodeSpec,
    Outputs,
    WorkflowError,
    WorkflowInvalid,
    get_node,
    load_nodes,
    lookup,
)

MAIN = "main"
#: Node types n8n accepts as start nodes when no trigger exists (Workflow.getStartNode).
STARTING_NODE_TYPES = (
    "n8n-nodes-base.manualTrigger",
    "n8n-nodes-base.executeWorkflowTrigger",
    "n8n-nodes-base.errorTrigger",
    "n8n-nodes-base.start",
)


def error_item(error: BaseException | str, item_index: int) -> Item:
    """The item n8n emits for a failed input item when the node continues on fail."""
    message = error.message if isinstance(error, NodeError) else str(error)
    return {"json": {"error": message}, "pairedItem": {"item": item_index}}


def _expressions() -> Any:
    """The expressions module, imported lazily (it owns a V8 dependency)."""
    try:
        from workflows.engine import expressions
    except ImportError as exc:  # pragma: no cover - only while the module is being written
        raise NodeError(f"expressions are not available: {exc}") from exc
    return expressions


# --------------------------------------------------------------------------- graph


class Graph:
    """Nodes by name plus connections indexed both ways (n8n's ``Workflow`` helpers)."""

    def __init__(self, workflow: dict[str, Any]) -> None:
        self.workflow = workflow
        self.nodes: dict[str, NodeSpec] = {}
        self.positions: dict[str, tuple[float, float]] = {}
        for raw in workflow.get("nodes") or []:
            spec = NodeSpec.from_json(raw)
            self.nodes[spec.name] = spec
            pos = raw.get("position") or [0, 0]
            try:
                self.positions[spec.name] = (float(pos[0]), float(pos[1]))
            except (TypeError, ValueError, IndexError):
                self.positions[spec.name] = (0.0, 0.0)
        # by_source[src][type][output] = [{"node": dest, "type": type, "index": input}]
        self.by_source: dict[str, dict[str, list[list[dict[str, Any]]]]] = {}
        # by_dest[dest][type][input] = [{"node": src, "type": type, "index": output}]
        self.by_dest: dict[str, dict[str, list[list[dict[str, Any]]]]] = {}
        for src, types in (workflow.get("connections") or {}).items():
            if not isinstance(types, dict):
                continue
            for ctype, outputs in types.items():
                src_lists: list[list[dict[str, Any]]] = []
                for out_index, conns in enumerate(outputs or []):
                    clean = [c for c in (conns or []) if isinstance(c, dict) and "node" in c]
                    src_lists.append(clean)
                    for conn in clean:
                        dest_types = self.by_dest.setdefault(conn["node"], {})
                        inputs = dest_types.setdefault(ctype, [])
                        index = int(conn.get("index", 0) or 0)
                        while len(inputs) <= index:
                            inputs.append([])
                        inputs[index].append({"node": src, "type": ctype, "index": out_index})
                self.by_source.setdefault(src, {})[ctype] = src_lists

    def main_inputs(self, name: str) -> list[list[dict[str, Any]]]:
        return self.by_dest.get(name, {}).get(MAIN, [])

    def main_outputs(self, name: str) -> list[list[dict[str, Any]]]:
        return self.by_source.get(name, {}).get(MAIN, [])

    def connected(self, index: dict[str, dict[str, list[list[dict[str, Any]]]]], name: str, ctype: str = MAIN,
                  depth: int = -1, checked: list[str] | None = None) -> list[str]:
        """n8n's getConnectedNodes: all nodes reachable in one direction, farthest first."""
        if depth == 0 or name not in index:
            return []
        new_depth = depth if depth == -1 else depth - 1
        result: list[str] = []
        if ctype not in index[name]:
            return result
        seen = list(checked or [])
        if name in seen:
            return result
        seen.append(name)
        for conns in index[name][ctype]:
            for conn in conns or []:
                if conn["node"] in seen:
                    continue
                result.insert(0, conn["node"])
                more = self.connected(index, conn["node"], ctype, new_depth, seen)
                for parent in reversed(more):
                    if parent in result:
                        result.remove(parent)
                    result.insert(0, parent)
        return result

    def parents(self, name: str, ctype: str = MAIN, depth: int = -1) -> list[str]:
        return self.connected(self.by_dest, name, ctype, depth)

    def children(self, name: str, ctype: str = MAIN, depth: int = -1) -> list[str]:
        return self.connected(self.by_source, name, ctype, depth)

    def highest(self, name: str, input_index: int | None = None, checked: list[str] | None = None) -> list[str]:
        """n8n's getHighestNode: the top-most enabled ancestors feeding ``input_index``."""
        node = self.nodes.get(name)
        current = [name] if node is not None and node.raw.get("disabled") is False else []
        inputs = self.main_inputs(name)
        if not inputs:
            return current
        checked = checked if checked is not None else []
        if name in checked:
            return current
        checked.append(name)
        result: list[str] = []
        for idx, conns in enumerate(inputs):
            if input_index is not None and input_index != idx:
                continue
            for conn in conns:
                if conn["node"] in checked:
                    continue
                found = self.highest(conn["node"], None, checked)
                parent = self.nodes.get(conn["node"])
                if not found and parent is not None and not parent.disabled:
                    found = [conn["node"]]
                for n in found:
                    if n not in result:
                        result.append(n)
        return result

    def start_node(self) -> NodeSpec | None:
        """n8n's getStartNode: the first enabled trigger, else a legacy starting node type."""
        registry = load_nodes()
        specs = list(self.nodes.values())
        for spec in specs:
            handler = registry.get(spec.type)
            if handler is not None and handler.annotation:
                continue
            if len([s for s in specs if not _is_annotation(s)]) == 1 and not spec.disabled:
                return spec
            if handler is not None and handler.trigger and not spec.disabled and spec.type not in STARTING_NODE_TYPES:
                return spec
        ordered = sorted((s for s in specs if s.type in STARTING_NODE_TYPES), key=lambda s: STARTING_NODE_TYPES.index(s.type))
        for spec in ordered:
            if not spec.disabled:
                return spec
        for spec in specs:
            handler = registry.get(spec.type)
            if handler is not None and handler.trigger and not spec.disabled:
                return spec
        return None


def _is_annotation(spec: NodeSpec) -> bool:
    handler = get_node(spec.type)
    return bool(handler is not None and handler.annotation)


# --------------------------------------------------------------------------- execution state


@dataclass
class _ExecData:
    """One entry of the node execution stack (n8n's IExecuteData)."""

    node: NodeSpec
    main: list[Items | None]
    source: list[dict[str, Any] | None] | None
    run_index: int | None = None
    received: list[bool] | None = None        # which inputs really got data (v1 partial runs)


@dataclass
class _Waiting:
    main: list[Items | None]
    source: list[dict[str, Any] | None]


@dataclass
class _RunInput:
    """What a recorded run was given: used for $input-like lookups and pairedItem walks."""

    main: list[Items | None] = field(default_factory=list)


class RuntimeContext(NodeContext):
    """The :class:`NodeContext` a handler gets for one run of one node."""

    def __init__(self, execution: _Execution, data: _ExecData, run_index: int, connection_input: Items,
                 connection_input_index: int) -> None:
        self._execution = execution
        self._data = data
        self.node = data.node
        self.run_index = run_index
        self.settings = execution.settings
        self.services = execution.services
        self.workflow = execution.workflow
        self.execution_id = execution.execution_id
        self.mode = execution.mode
        self._connection_input = connection_input
        self._connection_input_index = connection_input_index

    @property
    def evaluator(self) -> Any:  # type: ignore[override]
        return self._execution.get_evaluator()

    # -- inputs

    def input_items(self, index: int = 0) -> Items:
        if index < 0 or index >= len(self._data.main):
            return []
        return copy.deepcopy(self._data.main[index] or [])

    def input_count(self) -> int:
        handler = get_node(self.node.type)
        declared = handler.input_count(self.node) if handler is not None else 1
        return max(declared, len(self._data.main))

    def has_input(self, index: int) -> bool:
        if index < 0 or index >= len(self._data.main):
            return False
        if self._data.received is not None and index < len(self._data.received):
            return self._data.received[index]
        return self._data.main[index] is not None

    def input_source(self, index: int = 0) -> dict[str, Any] | None:
        """Where input ``index`` came from: {"previousNode", "previousNodeOutput", "previousNodeRun"} (n8n's getInputSourceData)."""
        source = self._data.source or []
        entry = source[index] if 0 <= index < len(source) else None
        return copy.deepcopy(entry) if entry else None

    def connected_nodes(self, connection_type: str) -> list[NodeSpec]:
        """Nodes attached to this node's ``connection_type`` inputs (AI sub-nodes: the chat model, tools)."""
        graph = self._execution.graph
        result: list[NodeSpec] = []
        for conns in graph.by_dest.get(self.node.name, {}).get(connection_type, []):
            for conn in conns:
                spec = graph.nodes.get(conn["node"])
                if spec is not None and not spec.disabled and spec not in result:
                    result.append(spec)
        return result

    # -- parameters

    def raw_param(self, path: str, default: Any = MISSING) -> Any:
        value = lookup(self.node.parameters, path)
        if value is MISSING:
            if default is MISSING:
                raise NodeError(f"parameter '{path}' is missing", node=self.node.name)
            return default
        return copy.deepcopy(value)

    def param(self, path: str, item_index: int = 0, default: Any = MISSING) -> Any:
        value = lookup(self.node.parameters, path)
        if value is MISSING:
            if default is MISSING:
                raise NodeError(f"parameter '{path}' is missing", node=self.node.name)
            return default
        try:
            return self.evaluate(value, item_index)
        except NodeError as exc:
            if exc.node is None:
                exc.node = self.node.name
            if exc.item_index is None:
                exc.item_index = item_index
            raise

    def evaluate(self, value: Any, item_index: int = 0) -> Any:
        if isinstance(value, str):
            if not value.startswith("="):
                return value
            expr = _expressions()
            if not expr.is_expression(value):
                return value
            names = expr.referenced_nodes(value)
            data = self.expression_data(item_index, names)
            return self._execution.get_evaluator().evaluate(value, data)
        if isinstance(value, dict):
            return {k: self.evaluate(v, item_index) for k, v in value.items()}
        if isinstance(value, list):
            return [self.evaluate(v, item_index) for v in value]
        return value

    def error_item(self, error: BaseException | str, item_index: int) -> Item:
        """The n8n error item for a failed input item (see the module docstring)."""
        return error_item(error, item_index)

    # -- expression data

    def expression_data(self, item_index: int, node_names: set[str]) -> dict[str, Any]:
        ex = self._execution
        items = self._connection_input
        current = items[item_index] if 0 <= item_index < len(items) else None
        source = self._data.source or []
        prev = source[0] if source else None
        nodes: dict[str, Any] = {}
        for name in sorted(node_names):
            if name not in ex.graph.nodes:
                continue
            nodes[name] = ex.node_data(name, self._data, self._connection_input_index, item_index)
        raw_wf = ex.workflow
        return copy.deepcopy({
            "itemIndex": item_index,
            "runIndex": self.run_index,
            "json": (current or {}).get("json", {}) if current else {},
            "binary": (current or {}).get("binary", {}) if current else {},
            "input": {"all": items, "item": current},
            "inputs": [list(m or []) for m in self._data.main],
            "nodes": nodes,
            "prevNode": ({"name": prev["previousNode"], "outputIndex": prev.get("previousNodeOutput", 0) or 0,
                          "runIndex": prev.get("previousNodeRun", 0) or 0} if prev else None),
            "workflow": {"id": ex.workflow_id, "name": raw_wf.get("name", ""), "active": bool(raw_wf.get("active", False))},
            "execution": {"id": ex.execution_id, "mode": ex.mode, "resumeUrl": None},
            "node": {"name": self.node.name, "type": self.node.type, "typeVersion": self.node.type_version,
                     "parameters": self.node.parameters},
            "timezone": ex.timezone,
            "vars": {},
        })

    # -- state and sub-workflows

    @property
    def state(self) -> dict[str, Any]:
        return self._execution.states.setdefault(self.node.name, {})

    def execute_workflow(self, workflow: dict[str, Any], items: Items, *, wait: bool = True) -> Items:
        ex = self._execution
        if not wait:
            seeded = copy.deepcopy(items)

            def _background() -> None:
                try:
                    run_workflow(workflow, input_items=seeded, settings=ex.settings, services=ex.services,
                                 mode="subworkflow", workflow_id=workflow.get("id"))
                except WorkflowError:
                    pass   # fire-and-forget: the parent does not wait for the result

            threading.Thread(target=_background, name=f"subworkflow-{self.node.name}", daemon=True).start()
            return copy.deepcopy(items)
        result = _Execution(workflow, settings=ex.settings, services=ex.services, execution_id=ex.execution_id,
                            mode="subworkflow", workflow_id=workflow.get("id"), parent=ex).run(input_items=copy.deepcopy(items))
        if result.status == "cancelled":
            raise ExecutionCancelled(result.error or "execution cancelled")
        if result.status != "success":
            where = f"node '{result.error_node}' of the sub-workflow failed" if result.error_node else "the sub-workflow failed"
            raise NodeError(result.error or "the sub-workflow failed", description=where, node=self.node.name)
        return copy.deepcopy(result.output)


class _Execution:
    """One run of one workflow: the execution stack, waiting inputs and run data."""

    def __init__(self, workflow: dict[str, Any], *, settings: EngineSettings, services: EngineServices,
                 execution_id: str | None, mode: str, workflow_id: str | None, parent: _Execution | None = None) -> None:
        self.workflow = workflow
        self.settings = settings
        self.services = services
        self.execution_id = execution_id
        self.mode = mode
        self.workflow_id = workflow_id if workflow_id is not None else workflow.get("id")
        self.parent = parent
        self.graph = Graph(workflow)
        wf_settings = workflow.get("settings") or {}
        self.v1 = wf_settings.get("executionOrder") == "v1"
        self.timezone = wf_settings.get("timezone") or settings.timezone
        if self.timezone == "DEFAULT":
            self.timezone = settings.timezone
        self.run_data: dict[str, list[NodeRunRecord]] = {}
        self.run_inputs: dict[str, list[_RunInput]] = {}
        self.states: dict[str, dict[str, Any]] = {}
        self.stack: list[_ExecData] = []
        self.waiting: dict[str, dict[int, _Waiting]] = {}
        self.last_node: str | None = None
        self._evaluator: Any = None
        self._own_evaluator = False
        self._runs = 0

    # -- evaluator (one V8 isolate per execution, shared with inline sub-workflows)

    def get_evaluator(self) -> Any:
        if self.parent is not None:
            return self.parent.get_evaluator()
        if self._evaluator is None:
            self._evaluator = _expressions().Evaluator(self.settings)
            self._own_evaluator = True
        return self._evaluator

    def count_run(self, node: str) -> None:
        root = self
        while root.parent is not None:
            root = root.parent
        root._runs += 1
        if root._runs > self.settings.max_node_runs:
            raise NodeError(f"node '{node}' would exceed the limit of {self.settings.max_node_runs} node runs "
                            f"per execution (max_node_runs); the workflow is probably looping forever", node=node)

    # -- the main loop

    def run(self, *, input_items: Items | None = None, start_node: str | None = None) -> ExecutionResult:
        try:
            return self._run(input_items, start_node)
        finally:
            if self._own_evaluator and self._evaluator is not None:
                try:
                    self._evaluator.close()
                finally:
                    self._evaluator = None

    def _run(self, input_items: Items | None, start_node: str | None) -> ExecutionResult:
        from workflows.engine.validation import validate_workflow

        issues = validate_workflow(self.workflow, require_trigger=start_node is None)
        if issues:
            raise WorkflowInvalid(issues)
        if start_node is not None:
            start = self.graph.nodes.get(start_node)
            if start is None:
                raise WorkflowInvalid([_issue(f"start node '{start_node}' does not exist")])
        else:
            start = self.graph.start_node()
        if start is None:
            raise WorkflowInvalid([_issue("the workflow has no trigger or start node to run from")])
        seed = copy.deepcopy(input_items) if input_items is not None else [{"json": {}}]
        seed = [_normalize_item(it) for it in seed]
        self.stack.append(_ExecData(node=start, main=[seed], source=None))

        last_try = ""
        error: str | None = None
        error_node: str | None = None
        status = "success"
        try:
            while self.stack:
                if self.services.is_cancelled():
                    raise ExecutionCancelled("execution cancelled")
                data = self.stack.pop(0)
                data.main = _with_lineage(data.main)
                run_index = data.run_index if data.run_index is not None else len(self.run_data.get(data.node.name, []))
                current_try = f"{data.node.name}:{run_index}"
                if current_try == last_try:
                    raise WorkflowError(f"stopped the execution at node '{data.node.name}' because it seems to be in an endless loop")
                if not self._ensure_input(data):
                    last_try = current_try
                    continue
                failed = self._execute(data, run_index)
                if failed is not None:
                    error, error_node = failed
                    status = "error"
                    break
                self._flush_waiting()
        except ExecutionCancelled as exc:
            status, error = "cancelled", str(exc)
        except WorkflowError as exc:
            status, error = "error", (exc.message if isinstance(exc, NodeError) else str(exc))
            error_node = getattr(exc, "node", None)
        output: Items = []
        if self.last_node and self.run_data.get(self.last_node):
            outs = self.run_data[self.last_node][-1].outputs
            output = copy.deepcopy(outs[0]) if outs else []
        return ExecutionResult(status=status, run_data=self.run_data, output=output, error=error,
                               error_node=error_node, last_node=self.last_node)

    def _ensure_input(self, data: _ExecData) -> bool:
        """n8n's ensureInputData: in v0 a node waits until every connected input has data."""
        inputs = self.graph.main_inputs(data.node.name)
        for idx in range(len(inputs)):
            if not self.graph.highest(data.node.name, idx):
                return True
            if not self.v1 and (len(data.main) < idx or (idx < len(data.main) and data.main[idx] is None)):
                self.stack.append(data)
                return False
        return True

    def _connection_input(self, data: _ExecData, handler: Any) -> tuple[Items, int] | None:
        """n8n's prepareConnectionInputData: the items expressions see; None = skip the node."""
        if handler is not None and handler.trigger:
            return (data.main[0] or [] if data.main else []), 0
        if not data.main:
            return None
        chosen, chosen_index = data.main[0], 0
        if self.v1:
            for idx, items in enumerate(data.main):
                if items:
                    chosen, chosen_index = items, idx
                    break
        elif not chosen and data.source and data.source[0] is None:
            descendants = self.graph.children(data.node.name)
            for idx, items in enumerate(data.main):
                src = data.source[idx] if idx < len(data.source) else None
                prev = src.get("previousNode") if src else None
                if items and prev is not None and (prev == data.node.name or prev in descendants):
                    chosen, chosen_index = items, idx
                    break
        if not chosen:
            return None
        return chosen, chosen_index

    def _execute(self, data: _ExecData, run_index: int) -> tuple[str, str] | None:
        """Run one stack entry; returns (error, node) when the execution must stop."""
        node = data.node
        handler = get_node(node.type)
        if handler is None:
            raise NodeError(f"unknown node type '{node.type}'", node=node.name)
        started = time.time()
        t0 = time.monotonic()
        error_message: str | None = None
        outputs: Outputs | None

        if node.disabled:
            outputs = [data.main[0]] if data.main and data.main[0] is not None else None
            connection = None
        else:
            connection = self._connection_input(data, handler)
            if connection is None:
                outputs = None
                if not node.always_output_data:
                    return None
        if node.execute_once:
            data.main = [m[:1] if m is not None else None for m in data.main]
            if connection is not None:
                connection = (connection[0][:1], connection[1])

        self.count_run(node.name)
        self.services.on_node_start(node, run_index, copy.deepcopy((data.main[0] if data.main else None) or []))
        exc_caught: BaseException | None = None
        if not node.disabled and connection is not None:
            max_tries, wait_ms = (1, 0)
            if node.retry_on_fail:
                max_tries = min(5, max(2, node.max_tries or 3))
                wait_ms = min(5000, max(0, node.wait_between_tries_ms))
            outputs = None
            for attempt in range(max_tries):
                if attempt:
                    if wait_ms:
                        self.services.sleep(wait_ms / 1000)
                    self.check_cancelled()
                exc_caught = None
                try:
                    ctx = RuntimeContext(self, data, run_index, connection[0], connection[1])
                    outputs = handler.execute(ctx)
                    outputs = _normalize_outputs(outputs, node)
                    if outputs is not None and node.on_error == "continueErrorOutput":
                        outputs = self._route_errors(data, outputs, handler)
                    if attempt < max_tries - 1 and _first_is_error(outputs):
                        continue
                    break
                except ExecutionCancelled:
                    raise
                except NodeError as exc:
                    exc_caught = exc
                except WorkflowError as exc:
                    exc_caught = exc
                except Exception as exc:  # noqa: BLE001 - a handler bug must not crash the host
                    exc_caught = NodeError(f"{type(exc).__name__}: {exc}", node=node.name)

        if exc_caught is None:
            outputs = _assign_paired_items(outputs, data)
            if outputs is not None:
                self.last_node = node.name
            outputs = _always_output(outputs, data, node)
        else:
            error_message = exc_caught.message if isinstance(exc_caught, NodeError) else str(exc_caught)
            if not node.continue_on_fail:
                self._record(node, run_index, data, "error", None, error_message, started, t0)
                self.last_node = node.name
                return error_message, node.name
            if node.on_error == "continueErrorOutput":
                count = handler.output_count(node)
                items = data.main[0] if data.main and data.main[0] is not None else []
                errs = [{**copy.deepcopy(it), "json": {**copy.deepcopy(it.get("json", {})), "error": error_message}}
                        for it in items]
                outputs = [[] for _ in range(count)] + [errs]
            else:
                outputs = [data.main[0]] if data.main and data.main[0] is not None else None
            if outputs is None:
                self._record(node, run_index, data, "error", None, error_message, started, t0)
                return None

        if outputs is None:
            # Succeeded without data: the branch ends here (no run data, like n8n).
            self.services.on_node_finish(node, run_index, status="success", outputs=None, error=None,
                                         duration_ms=(time.monotonic() - t0) * 1000)
            return None
        outputs = _normalize_errors(outputs)
        self._record(node, run_index, data, "success" if exc_caught is None else "error", outputs, error_message, started, t0)
        self._schedule_children(node, outputs, run_index)
        return None

    def check_cancelled(self) -> None:
        if self.services.is_cancelled():
            raise ExecutionCancelled("execution cancelled")

    def _record(self, node: NodeSpec, run_index: int, data: _ExecData, status: str, outputs: Outputs | None,
                error: str | None, started: float, t0: float) -> None:
        duration = (time.monotonic() - t0) * 1000
        record = NodeRunRecord(node=node.name, run_index=run_index, status=status, outputs=outputs, error=error,
                               started_at=started, duration_ms=duration, source=list(data.source or []))
        runs = self.run_data.setdefault(node.name, [])
        if run_index < len(runs):
            runs[run_index] = record
        else:
            runs.append(record)
        self.run_inputs.setdefault(node.name, []).append(_RunInput(main=data.main))
        self.services.on_node_finish(node, run_index, status=status, outputs=copy.deepcopy(outputs), error=error,
                                     duration_ms=duration)

    def _route_errors(self, data: _ExecData, outputs: Outputs, handler: Any) -> Outputs:
        """n8n's handleNodeErrorOutput: error items go to the last (error) output."""
        count = handler.output_count(data.node)
        while len(outputs) < count + 1:
            outputs.append([])
        errors: Items = []
        for out_index in range(count):
            keep: Items = []
            for item in outputs[out_index] or []:
                err = None
                if item.get("error"):
                    err = item["error"]
                elif isinstance(item.get("json"), dict) and item["json"].get("error") and \
                        all(k in ("error", "message", "details") for k in item["json"]):
                    err = item["json"]["error"]
                if not err:
                    keep.append(item)
                    continue
                paired = item.get("pairedItem")
                if isinstance(paired, list):
                    paired = paired[0] if paired else None
                if isinstance(paired, int):
                    paired = {"item": paired}
                source_item = None
                if isinstance(paired, dict):
                    inp = paired.get("input") or 0
                    idx = paired.get("item", 0)
                    if inp < len(data.main) and data.main[inp] is not None and 0 <= idx < len(data.main[inp]):
                        source_item = data.main[inp][idx]
                if source_item is None:
                    errors.append(item)
                else:
                    errors.append({**item, "json": {**copy.deepcopy(source_item.get("json", {})), **item.get("json", {})}})
            outputs[out_index] = keep
        outputs[count] = errors
        return outputs

    def _schedule_children(self, node: NodeSpec, outputs: Outputs, run_index: int) -> None:
        to_add: list[tuple[tuple[float, float], dict[str, Any], int]] = []
        for out_index, conns in enumerate(self.graph.main_outputs(node.name)):
            for conn in conns:
                if conn["node"] not in self.graph.nodes:
                    raise WorkflowError(f"node '{node.name}' is connected to '{conn['node']}', which does not exist")
                if out_index >= len(outputs) or outputs[out_index] is None:
                    continue
                items = outputs[out_index]
                if items or (int(conn.get("index", 0) or 0) > 0 and not self.v1):
                    if self.v1:
                        to_add.append((self.graph.positions.get(conn["node"], (0.0, 0.0)), conn, out_index))
                    else:
                        self._add_node(conn, out_index, node.name, outputs, run_index)
        if self.v1:
            # n8n sorts bottom/right first and unshifts each, so the top-left child runs first.
            ordered = sorted(to_add, key=lambda t: (-t[0][1], -t[0][0]))
            for _pos, conn, out_index in ordered:
                self._add_node(conn, out_index, node.name, outputs, run_index)

    def _enqueue(self, entry: _ExecData) -> None:
        if self.v1:
            self.stack.insert(0, entry)
        else:
            self.stack.append(entry)

    def _incoming_empty(self, conns: list[dict[str, Any]], run_index: int) -> bool:
        for conn in conns:
            runs = self.run_data.get(conn["node"], [])
            if run_index < len(runs):
                outs = runs[run_index].outputs or []
                if conn["index"] < len(outs) and outs[conn["index"]]:
                    return False
        return True

    def _add_node(self, conn: dict[str, Any], out_index: int, parent: str, outputs: Outputs, run_index: int) -> None:
        """n8n's addNodeToBeExecuted."""
        dest = conn["node"]
        in_index = int(conn.get("index", 0) or 0)
        inputs = self.graph.main_inputs(dest)
        source = {"previousNode": parent, "previousNodeOutput": out_index, "previousNodeRun": run_index}
        items = outputs[out_index] if out_index < len(outputs) else []
        if len(inputs) <= 1:
            main: list[Items | None] = [None] * (in_index + 1)
            main[in_index] = items
            self._enqueue(_ExecData(node=self.graph.nodes[dest], main=main, source=[source]))
            return
        node_waiting = self.waiting.get(dest)
        was_waiting = node_waiting is not None
        if node_waiting is None:
            node_waiting = self.waiting[dest] = {}
        slot: int | None = None
        for idx in sorted(node_waiting):
            if node_waiting[idx].main[in_index] is None:
                slot = idx
                break
        if slot is None:
            slot = len(node_waiting)
            while slot in node_waiting:
                slot += 1
            node_waiting[slot] = _Waiting(main=[None] * len(inputs), source=[None] * len(inputs))
        entry = node_waiting[slot]
        entry.main[in_index] = items
        entry.source[in_index] = source
        if all(m is not None for m in entry.main):
            self._enqueue(_ExecData(node=self.graph.nodes[dest], main=entry.main, source=entry.source))
            del node_waiting[slot]
            if not node_waiting:
                del self.waiting[dest]
            return
        if was_waiting or self.v1:
            return
        # v0: force the execution of parent branches that would otherwise never run.
        check_outputs = [c["node"] for conns in self.graph.main_outputs(parent) for c in conns]
        for conns in inputs:
            for input_conn in conns:
                name = input_conn["node"]
                if name == parent:
                    continue
                stack_nodes = [e.node.name for e in self.stack]
                if name in check_outputs:
                    first = self.graph.main_inputs(name)
                    if not self._incoming_empty(first[0] if first else [], run_index):
                        continue
                if name in stack_nodes or name in self.run_data:
                    continue
                parents = self.graph.parents(name)
                parents.append(name)
                parents.reverse()
                node_to_add: str | None = name
                for parent_node in parents:
                    if name != parent_node and parent_node in check_outputs:
                        node_to_add = None
                        break
                    if parent_node in stack_nodes:
                        node_to_add = None
                        break
                    if parent_node in self.run_data:
                        break
                    node_to_add = parent_node
                if node_to_add is not None and parent in self.graph.parents(node_to_add) and not items:
                    node_to_add = None
                if node_to_add is None:
                    continue
                add_empty = False
                if node_to_add not in self.graph.by_dest:
                    add_empty = True
                else:
                    first = self.graph.main_inputs(node_to_add)
                    if self._incoming_empty(first[0] if first else [], run_index):
                        add_empty = True
                if add_empty:
                    self._enqueue(_ExecData(node=self.graph.nodes[node_to_add], main=[[{"json": {}}]], source=[source]))

    def _flush_waiting(self) -> None:
        """When the stack is empty, run waiting multi-input nodes with the inputs they have."""
        if self.stack or not self.waiting:
            return
        names = list(self.waiting)
        i = 0
        while i < len(names):
            name = names[i]
            i += 1
            if name not in self.waiting:
                continue
            spec = self.graph.nodes[name]
            handler = get_node(spec.type)
            required = None
            if self.v1 and handler is not None:
                hook = getattr(handler, "required_inputs", None)
                required = hook(spec) if callable(hook) else None
            n_inputs = handler.input_count(spec) if handler is not None else len(self.graph.main_inputs(name))
            if required is not None:
                if (isinstance(required, list) and len(required) == n_inputs) or required == n_inputs:
                    continue
            parents = self.graph.parents(name)
            if any(p in self.waiting for p in parents):
                continue
            first = sorted(self.waiting[name])[0]
            entry = self.waiting[name][first]
            with_data = [idx for idx, m in enumerate(entry.main) if m is not None]
            if required is not None:
                if isinstance(required, list):
                    if any(r not in with_data for r in required):
                        continue
                elif len(with_data) < required:
                    continue
            received = [m is not None for m in entry.main]
            main = [m if m is not None else [] for m in entry.main]
            while len(main) < n_inputs:
                main.append([])
                received.append(False)
            has_items = any(main)
            if has_items:
                self.stack.append(_ExecData(node=spec, main=main, source=entry.source, received=received))
            del self.waiting[name][first]
            if not self.waiting[name]:
                del self.waiting[name]
            if has_items:
                break
            names = list(self.waiting)
            i = 0

    # -- expression data for one referenced node

    def node_data(self, name: str, current: _ExecData, input_index: int, item_index: int) -> dict[str, Any]:
        runs = self.run_data.get(name, [])
        last = runs[-1] if runs else None
        outputs = [list(o or []) for o in (last.outputs or [])] if last else []
        item, paired_error = None, None
        if runs:
            try:
                item = self.paired_item(name, current, input_index, item_index)
            except _PairedItemError as exc:
                paired_error = str(exc)
        else:
            paired_error = f"node '{name}' hasn't been executed"
        state = self.states.get(name, {})
        spec = self.graph.nodes[name]
        return {
            "isExecuted": bool(runs),
            "all": outputs[0] if outputs else [],
            "outputs": outputs,
            "runs": len(runs),
            "runOutputs": [[list(o or []) for o in (r.outputs or [])] for r in runs] if len(runs) > 1 else None,
            "item": item,
            "pairedError": paired_error,
            "params": spec.parameters,
            "context": dict(state.get("context", {})),
        }

    def paired_item(self, target: str, current: _ExecData, input_index: int, item_index: int) -> Item | None:
        """Follow pairedItem back from the current input item to ``target`` (n8n's $getPairedItem)."""
        source = current.source or []
        src = source[input_index] if input_index < len(source) else None
        if current.node.name == target:
            items = current.main[input_index] if input_index < len(current.main) else None
            if items and item_index < len(items):
                return items[item_index]
        return self._walk(target, src, {"item": item_index, "input": input_index}, 0)

    def _walk(self, target: str, src: dict[str, Any] | None, paired: dict[str, Any], depth: int) -> Item:
        while True:
            depth += 1
            if depth > 10_000:
                raise _PairedItemError("pairedItem chain is too long")
            if not src:
                raise _PairedItemError(f"no path back to node '{target}'")
            prev = src["previousNode"]
            runs = self.run_data.get(prev, [])
            run = src.get("previousNodeRun") or 0
            if run >= len(runs):
                raise _PairedItemError(f"node '{prev}' has no run {run}")
            record = runs[run]
            out = src.get("previousNodeOutput") or 0
            outs = record.outputs or []
            items = outs[out] if out < len(outs) else []
            idx = paired.get("item", 0) or 0
            if idx >= len(items or []):
                raise _PairedItemError(f"paired item {idx} does not exist in the output of node '{prev}'")
            item = items[idx]
            if prev == target:
                return item
            pi = item.get("pairedItem")
            if pi is None:
                raise _PairedItemError(f"paired item data is missing in the output of node '{prev}'")
            if isinstance(pi, int):
                pi = {"item": pi}
            if isinstance(pi, list):
                found: list[Item] = []
                errors: list[str] = []
                for p in pi:
                    p = {"item": p} if isinstance(p, int) else p
                    if p.get("sourceOverwrite"):
                        s = p["sourceOverwrite"]
                    else:
                        s = record.source[p.get("input") or 0] if record.source and (p.get("input") or 0) < len(record.source) else None
                    try:
                        res = self._walk(target, s, p, depth)
                    except _PairedItemError as exc:
                        errors.append(str(exc))
                        continue
                    if all(res is not f and res != f for f in found):
                        found.append(res)
                if len(found) == 1:
                    return found[0]
                if not found:
                    raise _PairedItemError(errors[0] if errors else f"no path back to node '{target}'")
                raise _PairedItemError(f"multiple matching items for node '{target}': the item can't be resolved")
            inp = pi.get("input") or 0
            if pi.get("sourceOverwrite"):
                src = pi["sourceOverwrite"]
            else:
                src = record.source[inp] if record.source and inp < len(record.source) else None
            paired = pi


class _PairedItemError(Exception):
    pass


def _issue(message: str) -> Any:
    from workflows.engine.contract import ValidationIssue

    return ValidationIssue(message)


# --------------------------------------------------------------------------- item helpers


def _normalize_item(item: Any) -> Item:
    if isinstance(item, dict) and isinstance(item.get("json"), dict):
        return item
    if isinstance(item, dict):
        return {"json": item}
    return {"json": {"data": item}}


def _with_lineage(main: list[Items | None]) -> list[Items | None]:
    """n8n's addPairedItemLineage: each input item is paired with its own index."""
    result: list[Items | None] = []
    for input_index, items in enumerate(main):
        if items is None:
            result.append(None)
            continue
        fresh = []
        for idx, item in enumerate(items):
            new = dict(item)
            new["pairedItem"] = {"item": idx, "input": input_index} if input_index else {"item": idx}
            fresh.append(new)
        result.append(fresh)
    return result


def _normalize_outputs(outputs: Any, node: NodeSpec) -> Outputs | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list):
        raise NodeError(f"node handler returned {type(outputs).__name__}, expected a list of outputs", node=node.name)
    result: Outputs = []
    for out in outputs:
        if out is None:
            result.append([])
            continue
        if not isinstance(out, list):
            raise NodeError("node handler returned an output that is not a list of items", node=node.name)
        result.append([_normalize_item(it) for it in out])
    return result


def _first_is_error(outputs: Outputs | None) -> bool:
    if not outputs or not outputs[0]:
        return False
    value = outputs[0][0].get("json", {}).get("error")
    return value is not None and value is not False


def _assign_paired_items(outputs: Outputs | None, data: _ExecData) -> Outputs | None:
    """n8n's assignPairedItems: fill missing pairedItem when it can be inferred."""
    if not outputs:
        return outputs
    main = data.main
    single_in_out = len(main) == 1 and main[0] is not None and len(main[0]) == 1
    same_count = len(outputs) == 1 and len(main) == 1 and main[0] is not None and len(main[0]) == len(outputs[0])
    single_out = len(outputs) == 1 and len(outputs[0]) == 1 and len(main) == 1 and len(main[0] or []) > 1
    for out in outputs:
        for index, item in enumerate(out):
            if item.get("pairedItem") is None:
                if single_in_out or single_out:
                    item["pairedItem"] = {"item": 0}
                elif same_count:
                    item["pairedItem"] = {"item": index}
                else:
                    return outputs
    return outputs


def _always_output(outputs: Outputs | None, data: _ExecData, node: NodeSpec) -> Outputs | None:
    """alwaysOutputData: a node that output nothing at all emits one empty item on output 0."""
    if outputs and any(outputs):
        return outputs
    if not node.always_output_data:
        return outputs
    paired = [{"item": i, "input": k} for k, items in enumerate(data.main) if items for i in range(len(items))]
    outputs = list(outputs or [])
    if not outputs:
        outputs.append([])
    outputs[0] = [{"json": {}, "pairedItem": paired}]
    return outputs


def _normalize_errors(outputs: Outputs) -> Outputs:
    for out in outputs:
        for item in out:
            err = item.pop("error", None)
            if err is not None:
                message = err.get("message") if isinstance(err, dict) else getattr(err, "message", None) or str(err)
                item["json"] = {"error": message}
    return outputs


# --------------------------------------------------------------------------- entry point


def run_workflow(workflow: dict[str, Any], *, input_items: list | None = None, settings: EngineSettings | None = None,
                 services: EngineServices | None = None, execution_id: str | None = None, mode: str = "manual",
                 start_node: str | None = None, workflow_id: str | None = None) -> ExecutionResult:
    """Run ``workflow`` (n8n JSON) to the end and return every node's runs.

    Raises :class:`WorkflowInvalid` when the workflow fails validation; node failures
    are reported in the result (``status == "error"``), not raised.
    """
    if not isinstance(workflow, dict):
        raise WorkflowInvalid([_issue("workflow must be a JSON object")])
    execution = _Execution(workflow, settings=settings or EngineSettings(), services=services or EngineServices(),
                           execution_id=execution_id or str(uuid.uuid4()), mode=mode, workflow_id=workflow_id)
    return execution.run(input_items=input_items, start_node=start_node)


def result_as_json(result: ExecutionResult) -> dict[str, Any]:
    """A JSON-able view of a result (API responses, debugging)."""
    return json.loads(json.dumps({
        "status": result.status, "error": result.error, "error_node": result.error_node, "last_node": result.last_node,
        "output": result.output,
        "run_data": {name: [{"run_index": r.run_index, "status": r.status, "outputs": r.outputs, "error": r.error,
                             "duration_ms": r.duration_ms, "source": r.source} for r in runs]
                     for name, runs in result.run_data.items()},
    }, default=str))


__all__ = ["Graph", "RuntimeContext", "error_item", "result_as_json", "run_workflow", "ExpressionError"]
