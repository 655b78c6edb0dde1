"""validate_workflow: every kind of issue, and that valid workflows give none."""
from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from workflows.engine.validation import validate_workflow

TRIGGER = {"name": "Start", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "parameters": {}}


def noop(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "n8n-nodes-base.noOp", "typeVersion": 1, "parameters": {}, **extra}


def link(src: str, dest: str, out: int = 0, inp: int = 0, outputs: int | None = None) -> dict[str, Any]:
    lists: list[list[dict[str, Any]]] = [[] for _ in range(max(out + 1, outputs or 0))]
    lists[out].append({"node": dest, "type": "main", "index": inp})
    return {src: {"main": lists}}


def messages(data: Any) -> list[str]:
    return [str(issue) for issue in validate_workflow(data)]


def test_valid_workflow_has_no_issues() -> None:
    data = {"nodes": [TRIGGER, noop("A"), {"name": "Note", "type": "n8n-nodes-base.stickyNote", "parameters": {}}],
            "connections": link("Start", "A")}
    assert validate_workflow(data) == []


@pytest.mark.parametrize(("data", "expected"), [
    ([], "workflow must be a JSON object"),
    ({"connections": {}}, "must have a 'nodes' list"),
    ({"nodes": []}, "must have a 'connections' object"),
    ({"nodes": "x", "connections": {}}, "must have a 'nodes' list"),
])
def test_shape(data: Any, expected: str) -> None:
    assert any(expected in m for m in messages(data))


def test_nodes_without_name_or_type() -> None:
    found = messages({"nodes": [TRIGGER, {"type": "n8n-nodes-base.noOp"}, {"name": "B"}], "connections": {}})
    assert any("node #2 has no name" in m for m in found)
    assert any("node 'B': node has no type" in m for m in found)


def test_duplicate_names() -> None:
    assert any("duplicate node name 'A'" in m for m in messages({"nodes": [TRIGGER, noop("A"), noop("A")], "connections": {}}))


def test_unknown_node_type() -> None:
    data = {"nodes": [TRIGGER, {"name": "S", "type": "n8n-nodes-base.slack", "parameters": {}}], "connections": {}}
    assert "node 'S': unknown node type 'n8n-nodes-base.slack'" in messages(data)


def test_unsupported_type_version() -> None:
    data = {"nodes": [TRIGGER, {"name": "Loop", "type": "n8n-nodes-base.splitInBatches", "typeVersion": 9, "parameters": {}}],
            "connections": {}}
    assert any("typeVersion 9 of 'n8n-nodes-base.splitInBatches' is not supported (supported: 1, 2, 3)" in m
               for m in messages(data))


def test_dangling_connections() -> None:
    data = {"nodes": [TRIGGER, noop("A")], "connections": {**link("Start", "Ghost"), **link("Phantom", "A")}}
    found = messages(data)
    assert "node 'Start': connection to node 'Ghost', which does not exist" in found
    assert "connection from node 'Phantom', which does not exist" in found


def test_bad_output_and_input_indexes() -> None:
    data = {"nodes": [TRIGGER, noop("A"), noop("B")], "connections": {**link("Start", "A", out=2), **link("A", "B", inp=3)}}
    found = messages(data)
    assert any("connection from output 2 to 'A', but the node has only 1 output(s)" in m for m in found)
    assert any("connection to input 3 of 'B', but that node has only 1 input(s)" in m for m in found)


def test_error_output_index_is_allowed_with_continue_error_output() -> None:
    data = {"nodes": [TRIGGER, noop("A", onError="continueErrorOutput"), noop("B")],
            "connections": {**link("Start", "A"), **link("A", "B", out=1)}}
    assert validate_workflow(data) == []


def test_connection_into_a_trigger() -> None:
    data = {"nodes": [TRIGGER, noop("A")], "connections": {**link("Start", "A"), **link("A", "Start")}}
    assert any("connection to input 0 of 'Start', but that node has no inputs" in m for m in messages(data))


def test_cycle_is_named() -> None:
    data = {"nodes": [TRIGGER, noop("A"), noop("B")],
            "connections": {**link("Start", "A"), "A": {"main": [[{"node": "B", "type": "main", "index": 0}]]},
                            "B": {"main": [[{"node": "A", "type": "main", "index": 0}]]}}}
    assert any("cycle through 'A', 'B'" in m for m in messages(data))


def test_cycle_through_loop_node_is_allowed() -> None:
    loop = {"name": "Loop", "type": "n8n-nodes-base.splitInBatches", "typeVersion": 3, "parameters": {"batchSize": 1}}
    data = {"nodes": [TRIGGER, loop, noop("Body")],
            "connections": {**link("Start", "Loop"), "Loop": {"main": [[], [{"node": "Body", "type": "main", "index": 0}]]},
                            **link("Body", "Loop")}}
    assert validate_workflow(data) == []


def test_missing_trigger() -> None:
    data = {"nodes": [noop("A"), noop("B")], "connections": link("A", "B")}
    assert any("no trigger or start node" in m for m in messages(data))
    assert validate_workflow(data, require_trigger=False) == []


def test_handler_validate_issues() -> None:
    data = {"nodes": [TRIGGER, {"name": "Call", "type": "n8n-nodes-base.executeWorkflow", "typeVersion": 1,
                                "parameters": {"source": "url", "workflowUrl": "http://x"}}],
            "connections": link("Start", "Call")}
    assert any("node 'Call' parameter 'source': source 'url' is not allowed" in m for m in messages(data))


@pytest.mark.skipif(importlib.util.find_spec("workflows.engine.expressions") is None,
                    reason="workflows/engine/expressions.py is not there yet")
def test_expression_syntax_error_names_the_parameter_path() -> None:
    data = {"nodes": [TRIGGER, {"name": "Data", "type": "n8n-nodes-testing.testData", "typeVersion": 1,
                                "parameters": {"data": "={{ [1, 2 }}", "nested": {"list": ["ok", "={{ ) }}"]}}}],
            "connections": link("Start", "Data")}
    issues = validate_workflow(data)
    assert {(i.node, i.parameter) for i in issues} == {("Data", "data"), ("Data", "nested.list.1")}
    assert all(i.message.startswith("invalid expression") for i in issues)
