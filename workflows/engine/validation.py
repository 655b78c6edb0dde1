"""Static checks of an n8n workflow before it is stored or run.

``validate_workflow`` returns every problem it finds (an empty list means valid), so
the API can answer 400 with all of them at once instead of one per attempt.
"""
from __future__ import annotations

from typing import Any

from workflows.engine.contract import Node, NodeSpec, ValidationIssue, load_nodes

MAIN = "main"


def _expressions() -> Any:
    try:
        from workflows.engine import expressions
    except ImportError:  # pragma: no cover - only while the module is being written
        return None
    return expressions


def validate_workflow(data: Any, *, require_trigger: bool = True) -> list[ValidationIssue]:
    """All reasons ``data`` can't be run; ``require_trigger=False`` when a start node is given."""
    if not isinstance(data, dict):
        return [ValidationIssue("workflow must be a JSON object")]
    issues: list[ValidationIssue] = []
    nodes_raw = data.get("nodes")
    connections = data.get("connections")
    if not isinstance(nodes_raw, list):
        issues.append(ValidationIssue("workflow must have a 'nodes' list"))
    if not isinstance(connections, dict):
        issues.append(ValidationIssue("workflow must have a 'connections' object"))
    if issues:
        return issues

    registry = load_nodes()
    specs: dict[str, NodeSpec] = {}
    handlers: dict[str, Node] = {}
    for position, raw in enumerate(nodes_raw):
        if not isinstance(raw, dict):
            issues.append(ValidationIssue(f"node #{position + 1} is not an object"))
            continue
        name, type_name = raw.get("name"), raw.get("type")
        if not isinstance(name, str) or not name.strip():
            issues.append(ValidationIssue(f"node #{position + 1} has no name"))
            continue
        if not isinstance(type_name, str) or not type_name:
            issues.append(ValidationIssue("node has no type", name))
            continue
        if name in specs:
            issues.append(ValidationIssue(f"duplicate node name '{name}'", name))
            continue
        if raw.get("parameters") is not None and not isinstance(raw.get("parameters"), dict):
            issues.append(ValidationIssue("parameters must be an object", name))
            continue
        spec = NodeSpec.from_json(raw)
        specs[name] = spec
        handler = registry.get(type_name)
        if handler is None:
            issues.append(ValidationIssue(f"unknown node type '{type_name}'", name))
            continue
        handlers[name] = handler
        if handler.annotation:
            continue
        if handler.versions is not None and float(spec.type_version) not in {float(v) for v in handler.versions}:
            allowed = ", ".join(_fmt_version(v) for v in handler.versions)
            issues.append(ValidationIssue(f"typeVersion {_fmt_version(spec.type_version)} of '{type_name}' is not supported "
                                          f"(supported: {allowed})", name))
            continue
        try:
            issues.extend(handler.validate(spec))
            issues.extend(handler.validate_workflow(spec, data))
        except Exception as exc:  # noqa: BLE001 - a handler's validate bug must still give a clear issue
            issues.append(ValidationIssue(f"could not validate the node: {type(exc).__name__}: {exc}", name))
        issues.extend(_expression_issues(spec))

    issues.extend(_connection_issues(connections, specs, handlers))
    issues.extend(_cycle_issues(connections, specs, handlers))

    runnable = [s for n, s in specs.items() if not (handlers.get(n) and handlers[n].annotation)]
    if require_trigger and runnable and not any(
            handlers.get(s.name) is not None and handlers[s.name].trigger for s in runnable):
        if len(runnable) != 1:
            issues.append(ValidationIssue("the workflow has no trigger or start node (add a Manual Trigger, Schedule "
                                          "Trigger, Webhook or Execute Workflow Trigger)"))
    return issues


def _fmt_version(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return str(int(number)) if number.is_integer() else str(number)


def _expression_issues(spec: NodeSpec) -> list[ValidationIssue]:
    expr = _expressions()
    if expr is None:
        return []
    issues: list[ValidationIssue] = []

    def walk(value: Any, path: str) -> None:
        if isinstance(value, str):
            if expr.is_expression(value):
                message = expr.syntax_error(value)
                if message:
                    issues.append(ValidationIssue(f"invalid expression: {message}", spec.name, path))
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else str(key))
        elif isinstance(value, list):
            for index, inner in enumerate(value):
                walk(inner, f"{path}.{index}" if path else str(index))

    walk(spec.parameters, "")
    return issues


def _connection_issues(connections: dict[str, Any], specs: dict[str, NodeSpec],
                       handlers: dict[str, Node]) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    for source, types in connections.items():
        if source not in specs:
            issues.append(ValidationIssue(f"connection from node '{source}', which does not exist"))
            continue
        if not isinstance(types, dict):
            issues.append(ValidationIssue("connections must map a connection type to outputs", source))
            continue
        src_handler = handlers.get(source)
        for ctype, outputs in types.items():
            if not isinstance(outputs, list):
                issues.append(ValidationIssue(f"'{ctype}' connections must be a list of outputs", source))
                continue
            out_limit = None
            if ctype == MAIN and src_handler is not None:
                out_limit = _safe_count(src_handler.output_count, specs[source])
                if out_limit is not None and specs[source].on_error == "continueErrorOutput":
                    out_limit += 1
            for out_index, conns in enumerate(outputs):
                if conns is None:
                    continue
                if not isinstance(conns, list):
                    issues.append(ValidationIssue(f"output {out_index} connections must be a list", source))
                    continue
                for conn in conns:
                    if not isinstance(conn, dict) or not isinstance(conn.get("node"), str):
                        issues.append(ValidationIssue(f"malformed connection on output {out_index}", source))
                        continue
                    dest = conn["node"]
                    if dest not in specs:
                        issues.append(ValidationIssue(f"connection to node '{dest}', which does not exist", source))
                        continue
                    if out_limit is not None and out_index >= out_limit:
                        issues.append(ValidationIssue(f"connection from output {out_index} to '{dest}', but the node "
                                                      f"has only {out_limit} output(s)", source))
                    index = conn.get("index", 0)
                    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                        issues.append(ValidationIssue(f"connection to '{dest}' has an invalid input index {index!r}", source))
                        continue
                    dest_handler = handlers.get(dest)
                    if ctype == MAIN and dest_handler is not None and not dest_handler.annotation:
                        in_limit = _safe_count(dest_handler.input_count, specs[dest])
                        if in_limit is not None and index >= in_limit:
                            what = "has no inputs" if in_limit == 0 else f"has only {in_limit} input(s)"
                            issues.append(ValidationIssue(f"connection to input {index} of '{dest}', but that node {what}",
                                                          source))
                    if dest_handler is not None and dest_handler.annotation:
                        issues.append(ValidationIssue(f"connection to the sticky note '{dest}'", source))
    return issues


def _safe_count(fn: Any, spec: NodeSpec) -> int | None:
    try:
        return int(fn(spec))
    except Exception:  # noqa: BLE001 - counts that depend on bad parameters are reported by validate()
        return None


def _cycle_issues(connections: dict[str, Any], specs: dict[str, NodeSpec],
                  handlers: dict[str, Node]) -> list[ValidationIssue]:
    """Cycles over ``main`` connections must pass through a node that allows them (Split In Batches)."""
    graph: dict[str, list[str]] = {name: [] for name in specs}
    for source, types in connections.items():
        if source not in specs or not isinstance(types, dict):
            continue
        for conns in types.get(MAIN) or []:
            for conn in conns or []:
                if isinstance(conn, dict) and conn.get("node") in specs:
                    graph[source].append(conn["node"])

    # Tarjan's strongly connected components, iterative (workflows may be large).
    index_of: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index_of:
            continue
        work: list[tuple[str, int]] = [(root, 0)]
        while work:
            node, child_pos = work.pop()
            if child_pos == 0:
                index_of[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            children = graph[node]
            if child_pos < len(children):
                work.append((node, child_pos + 1))
                child = children[child_pos]
                if child not in index_of:
                    work.append((child, 0))
                elif child in on_stack:
                    low[node] = min(low[node], index_of[child])
                continue
            if low[node] == index_of[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                components.append(component)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])

    issues: list[ValidationIssue] = []
    for component in components:
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        if any(handlers.get(n) is not None and handlers[n].allows_cycles for n in component):
            continue
        ordered = [n for n in specs if n in component]
        names = ", ".join(f"'{n}'" for n in ordered)
        issues.append(ValidationIssue(f"the workflow has a cycle through {names}; loops must go through a "
                                      f"Loop Over Items (Split In Batches) node"))
    return issues


__all__ = ["validate_workflow"]
