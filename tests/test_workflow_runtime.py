"""Unit tests of the workflow runtime: ordering, waiting, errors, retries, loops, limits.

Small workflows are built from the core/flow nodes plus a few test-only node types
registered here (``hive-test.*``) to fail items, fail runs or echo parameters.
"""
from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from workflows.engine.contract import (
    EngineServices,
    EngineSettings,
    Node,
    NodeContext,
    NodeError,
    NodeSpec,
    Outputs,
    WorkflowInvalid,
    register,
)
from workflows.engine.runtime import run_workflow

TRIGGER = "n8n-nodes-base.manualTrigger"
DATA = "n8n-nodes-testing.testData"
NOOP = "n8n-nodes-base.noOp"
MERGE = "n8n-nodes-base.merge"
LOOP = "n8n-nodes-base.splitInBatches"

needs_expressions = pytest.mark.skipif(importlib.util.find_spec("workflows.engine.expressions") is None,
                                       reason="workflows/engine/expressions.py is not there yet")


# --------------------------------------------------------------------------- test-only nodes


@register
class FailItems(Node):
    """Fails every item whose json has ``fail: true`` (per-item continue-on-fail like n8n's nodes)."""

    type = "hive-test.failItems"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        out = []
        for i, item in enumerate(ctx.input_items(0)):
            if item["json"].get("fail"):
                error = NodeError(f"item {i} failed", item_index=i)
                if ctx.node.continue_on_fail:
                    out.append(ctx.error_item(error, i))
                    continue
                raise error
            item["json"]["ok"] = True
            out.append(item)
        return [out]


@register
class Flaky(Node):
    """Fails the first ``failures`` calls of the execution, then passes items through."""

    type = "hive-test.flaky"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        calls = ctx.state["calls"] = ctx.state.get("calls", 0) + 1
        if calls <= int(ctx.param("failures", 0, 1)):
            raise NodeError(f"flaky failure {calls}")
        return [ctx.input_items(0)]


@register
class Echo(Node):
    """Outputs ``{"value": param('value', i)}`` per input item (expression checks)."""

    type = "hive-test.echo"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        return [[{"json": {"value": ctx.param("value", i)}, "pairedItem": {"item": i}}
                 for i in range(len(ctx.input_items(0)))]]


@register
class Chain(Node):
    """Reports the names of its ai_languageModel sub-nodes."""

    type = "hive-test.chain"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        models = ctx.connected_nodes("ai_languageModel")  # type: ignore[attr-defined]
        return [[{"json": {"models": [m.name for m in models]}}]]


@register
class Model(Node):
    """A sub-node (no main connections)."""

    type = "hive-test.model"

    def input_count(self, node: NodeSpec) -> int:
        return 0

    def execute(self, ctx: NodeContext) -> Outputs | None:
        return None


# --------------------------------------------------------------------------- builders


def node(name: str, type_: str, params: dict[str, Any] | None = None, pos: tuple[int, int] = (0, 0), **extra: Any) -> dict:
    return {"name": name, "type": type_, "typeVersion": extra.pop("typeVersion", 1), "position": list(pos),
            "parameters": params or {}, **extra}


def data(name: str, rows: Any, pos: tuple[int, int] = (0, 0), **extra: Any) -> dict:
    return node(name, DATA, {"data": rows}, pos, **extra)


def wf(nodes: list[dict], edges: list[tuple], order: str | None = "v1") -> dict:
    """edges: (source, dest) or (source, output, dest, input)."""
    connections: dict[str, Any] = {}
    for edge in edges:
        src, out, dest, inp = (edge[0], 0, edge[1], 0) if len(edge) == 2 else edge
        outputs = connections.setdefault(src, {}).setdefault("main", [])
        while len(outputs) <= out:
            outputs.append([])
        outputs[out].append({"node": dest, "type": "main", "index": inp})
    return {"name": "test", "nodes": [node("Start", TRIGGER), *nodes], "connections": connections,
            "settings": {"executionOrder": order} if order else {}}


class Recorder(EngineServices):
    def __init__(self, cancel_after: int | None = None) -> None:
        self.started: list[tuple[str, int]] = []
        self.finished: list[tuple[str, int, str]] = []
        self.sleeps: list[float] = []
        self.cancel_after = cancel_after

    def on_node_start(self, node: NodeSpec, run_index: int, input_items: list) -> None:
        self.started.append((node.name, run_index))

    def on_node_finish(self, node: NodeSpec, run_index: int, *, status: str, outputs: Any, error: Any,
                       duration_ms: float) -> None:
        self.finished.append((node.name, run_index, status))

    def is_cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.started) >= self.cancel_after

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


def out(result: Any, name: str, run: int = 0, output: int = 0) -> list[dict]:
    return [item["json"] for item in result.run_data[name][run].outputs[output]]


# --------------------------------------------------------------------------- ordering


BRANCHES = [data("Low", [{"b": "low"}], (200, 200)), node("Low child", NOOP, pos=(400, 200)),
            data("High", [{"b": "high"}], (200, 0)), node("High child", NOOP, pos=(400, 0))]
BRANCH_EDGES = [("Start", "Low"), ("Start", "High"), ("Low", "Low child"), ("High", "High child")]


@pytest.mark.parametrize(("order", "expected"), [
    ("v1", ["Start", "High", "High child", "Low", "Low child"]),        # depth-first, top branch first
    (None, ["Start", "Low", "High", "Low child", "High child"]),        # v0: breadth-first, connection order
])
def test_execution_order(order: str | None, expected: list[str]) -> None:
    services = Recorder()
    result = run_workflow(wf(BRANCHES, BRANCH_EDGES, order), services=services)
    assert result.status == "success"
    assert [name for name, _ in services.started] == expected
    assert [name for name, _, _ in services.finished] == expected


def test_linear_result_and_records() -> None:
    result = run_workflow(wf([data("Rows", [{"a": 1}, {"a": 2}]), node("Pass", NOOP)], [("Start", "Rows"), ("Rows", "Pass")]))
    assert result.status == "success" and result.last_node == "Pass"
    assert [i["json"] for i in result.output] == [{"a": 1}, {"a": 2}]
    record = result.run_data["Pass"][0]
    assert record.status == "success" and record.source == [{"previousNode": "Rows", "previousNodeOutput": 0, "previousNodeRun": 0}]
    assert [i["pairedItem"] for i in record.outputs[0]] == [{"item": 0}, {"item": 1}]


def test_input_items_seed_the_trigger() -> None:
    result = run_workflow(wf([node("Pass", NOOP)], [("Start", "Pass")]), input_items=[{"json": {"x": 1}}, {"y": 2}])
    assert out(result, "Pass") == [{"x": 1}, {"y": 2}]


def test_handler_output_is_not_shared_with_downstream() -> None:
    workflow = wf([data("Rows", [{"a": 1}]), node("Fail", "hive-test.failItems")], [("Start", "Rows"), ("Rows", "Fail")])
    result = run_workflow(workflow)
    assert out(result, "Rows") == [{"a": 1}]          # Fail added "ok" to its copy only
    assert out(result, "Fail") == [{"a": 1, "ok": True}]


# --------------------------------------------------------------------------- merge waiting


def _merge_workflow(second: Any, order: str | None, version: float = 2.1) -> dict:
    return wf([data("A", [{"a": 1}], (200, 0)), data("B", second, (200, 200)),
               node("Merge", MERGE, {"mode": "append"}, (400, 100), typeVersion=version)],
              [("Start", "A"), ("Start", "B"), ("A", 0, "Merge", 0), ("B", 0, "Merge", 1)], order)


@pytest.mark.parametrize("order", ["v1", None])
def test_merge_waits_for_both_inputs(order: str | None) -> None:
    services = Recorder()
    result = run_workflow(_merge_workflow([{"b": 2}], order), services=services)
    assert out(result, "Merge") == [{"a": 1}, {"b": 2}]
    assert [n for n, _ in services.started].count("Merge") == 1


def test_v1_merge_runs_with_partial_input_when_a_branch_is_empty() -> None:
    result = run_workflow(_merge_workflow([], "v1"))
    assert len(result.run_data["Merge"]) == 1
    assert out(result, "Merge") == [{"a": 1}]


def test_v1_choose_branch_needs_both_inputs() -> None:
    workflow = _merge_workflow([], "v1")
    workflow["nodes"][-1]["parameters"] = {"mode": "chooseBranch", "output": "input1"}
    result = run_workflow(workflow)
    assert result.status == "success" and "Merge" not in result.run_data


def test_v0_merge_gets_the_empty_second_input() -> None:
    result = run_workflow(_merge_workflow([], None, version=2))
    assert out(result, "Merge") == [{"a": 1}]


# --------------------------------------------------------------------------- errors


ROWS = [{"id": 1}, {"id": 2, "fail": True}, {"id": 3}]


def _failing(**settings: Any) -> dict:
    edges = [("Start", "Rows"), ("Rows", "Fail"), ("Fail", 0, "Ok", 0)]
    if settings.get("onError") == "continueErrorOutput":
        edges.append(("Fail", 1, "Bad", 0))
    return wf([data("Rows", ROWS), node("Fail", "hive-test.failItems", **settings), node("Ok", NOOP), node("Bad", NOOP)], edges)


def test_error_stops_the_execution() -> None:
    result = run_workflow(_failing())
    assert result.status == "error" and result.error == "item 1 failed" and result.error_node == "Fail"
    assert result.run_data["Fail"][0].status == "error" and "Ok" not in result.run_data


def test_continue_error_output_routes_only_failing_items() -> None:
    result = run_workflow(_failing(onError="continueErrorOutput"))
    assert result.status == "success"
    assert out(result, "Ok") == [{"id": 1, "ok": True}, {"id": 3, "ok": True}]
    assert out(result, "Bad") == [{"id": 2, "fail": True, "error": "item 1 failed"}]


@pytest.mark.parametrize("settings", [{"onError": "continueRegularOutput"}, {"continueOnFail": True}])
def test_continue_regular_output_keeps_error_items_inline(settings: dict) -> None:
    result = run_workflow(_failing(**settings))
    assert out(result, "Ok") == [{"id": 1, "ok": True}, {"error": "item 1 failed"}, {"id": 3, "ok": True}]
    assert "Bad" not in result.run_data


def test_node_level_error_with_continue_passes_input_through() -> None:
    workflow = wf([data("Rows", [{"a": 1}]), node("Stop", "hive-test.flaky", {"failures": 9}, onError="continueRegularOutput"),
                   node("After", NOOP)], [("Start", "Rows"), ("Rows", "Stop"), ("Stop", "After")])
    result = run_workflow(workflow)
    assert result.status == "success"
    assert result.run_data["Stop"][0].error == "flaky failure 1"
    assert out(result, "After") == [{"a": 1}]


def test_node_level_error_with_error_output_routes_all_items() -> None:
    workflow = wf([data("Rows", [{"a": 1}]), node("Stop", "hive-test.flaky", {"failures": 9}, onError="continueErrorOutput"),
                   node("Ok", NOOP), node("Bad", NOOP)],
                  [("Start", "Rows"), ("Rows", "Stop"), ("Stop", 0, "Ok", 0), ("Stop", 1, "Bad", 0)])
    result = run_workflow(workflow)
    assert "Ok" not in result.run_data
    assert out(result, "Bad") == [{"a": 1, "error": "flaky failure 1"}]


@needs_expressions
def test_stop_and_error_fails_the_execution() -> None:
    workflow = wf([node("Stop", "n8n-nodes-base.stopAndError", {"errorMessage": "={{ 'bo' + 'om' }}"})], [("Start", "Stop")])
    result = run_workflow(workflow)
    assert (result.status, result.error, result.error_node) == ("error", "boom", "Stop")


def test_retry_on_fail_retries_and_sleeps() -> None:
    services = Recorder()
    workflow = wf([node("Flaky", "hive-test.flaky", {"failures": 2}, retryOnFail=True, maxTries=3, waitBetweenTries=10)],
                  [("Start", "Flaky")])
    result = run_workflow(workflow, services=services)
    assert result.status == "success"
    assert services.sleeps == [0.01, 0.01]


def test_retry_gives_up_after_max_tries() -> None:
    workflow = wf([node("Flaky", "hive-test.flaky", {"failures": 5}, retryOnFail=True, maxTries=2, waitBetweenTries=0)],
                  [("Start", "Flaky")])
    result = run_workflow(workflow, services=Recorder())
    assert result.status == "error" and result.error == "flaky failure 2"


# --------------------------------------------------------------------------- node settings


def test_always_output_data_emits_an_empty_item() -> None:
    workflow = wf([data("Nothing", [], alwaysOutputData=True), node("After", NOOP)], [("Start", "Nothing"), ("Nothing", "After")])
    result = run_workflow(workflow)
    assert out(result, "After") == [{}]


def test_empty_output_stops_the_branch() -> None:
    result = run_workflow(wf([data("Nothing", []), node("After", NOOP)], [("Start", "Nothing"), ("Nothing", "After")]))
    assert result.status == "success" and "After" not in result.run_data


def test_execute_once_uses_the_first_item() -> None:
    workflow = wf([data("Rows", [{"a": 1}, {"a": 2}]), node("Once", NOOP, executeOnce=True)], [("Start", "Rows"), ("Rows", "Once")])
    assert out(run_workflow(workflow), "Once") == [{"a": 1}]


def test_disabled_node_passes_items_through() -> None:
    workflow = wf([data("Rows", [{"a": 1, "fail": True}]), node("Fail", "hive-test.failItems", disabled=True),
                   node("After", NOOP)], [("Start", "Rows"), ("Rows", "Fail"), ("Fail", "After")])
    result = run_workflow(workflow)
    assert result.status == "success" and out(result, "After") == [{"a": 1, "fail": True}]


# --------------------------------------------------------------------------- loops, limits, cancellation


def _loop(batch: int = 2, order: str | None = "v1") -> dict:
    return wf([data("Rows", [{"i": i} for i in range(5)]),
               node("Loop", LOOP, {"batchSize": batch, "options": {}}, typeVersion=3),
               node("Body", NOOP), node("Done", NOOP)],
              [("Start", "Rows"), ("Rows", "Loop"), ("Loop", 0, "Done", 0), ("Loop", 1, "Body", 0), ("Body", "Loop")], order)


@pytest.mark.parametrize("order", ["v1", None])
def test_loop_over_items_reruns_nodes(order: str | None) -> None:
    result = run_workflow(_loop(order=order))
    assert result.status == "success"
    assert [r.run_index for r in result.run_data["Body"]] == [0, 1, 2]
    assert [len(r.outputs[0]) for r in result.run_data["Body"]] == [2, 2, 1]
    assert out(result, "Done") == [{"i": i} for i in range(5)]


def test_max_node_runs_stops_runaway_loops() -> None:
    result = run_workflow(_loop(batch=1), settings=EngineSettings(max_node_runs=5))
    assert result.status == "error" and result.error_node in ("Loop", "Body")
    assert "max_node_runs" in result.error and f"node '{result.error_node}'" in result.error


def test_cancellation_between_nodes() -> None:
    services = Recorder(cancel_after=2)
    result = run_workflow(wf(BRANCHES, BRANCH_EDGES), services=services)
    assert result.status == "cancelled"
    assert len(services.started) == 2


# --------------------------------------------------------------------------- expressions, sub-workflows, triggers


@needs_expressions
def test_paired_item_resolves_through_nodes() -> None:
    workflow = wf([data("Source", [{"name": "ann"}, {"name": "bob"}]), node("Middle", NOOP),
                   node("Echo", "hive-test.echo", {"value": "={{ $('Source').item.json.name + '-' + $json.name }}"})],
                  [("Start", "Source"), ("Source", "Middle"), ("Middle", "Echo")])
    result = run_workflow(workflow)
    assert result.status == "success", result.error
    assert out(result, "Echo") == [{"value": "ann-ann"}, {"value": "bob-bob"}]


@needs_expressions
def test_expression_sees_loop_context_and_run_index() -> None:
    workflow = _loop()
    workflow["nodes"][3] = node("Body", "hive-test.echo", {"value": "={{ $runIndex }}:{{ $node['Loop'].context['noItemsLeft'] }}"})
    result = run_workflow(workflow)
    assert [out(result, "Body", run)[0]["value"] for run in range(3)] == ["0:false", "1:false", "2:true"]


def test_execute_workflow_inline_source() -> None:
    sub = {"nodes": [node("In", "n8n-nodes-base.executeWorkflowTrigger"), node("Pass", NOOP)],
           "connections": {"In": {"main": [[{"node": "Pass", "type": "main", "index": 0}]]}}}
    import json

    workflow = wf([data("Rows", [{"a": 1}, {"a": 2}]),
                   node("Call", "n8n-nodes-base.executeWorkflow", {"source": "parameter", "workflowJson": json.dumps(sub)})],
                  [("Start", "Rows"), ("Rows", "Call")])
    result = run_workflow(workflow)
    assert result.status == "success", result.error
    assert out(result, "Call") == [{"a": 1}, {"a": 2}]


def test_execute_workflow_refuses_local_files() -> None:
    workflow = wf([node("Call", "n8n-nodes-base.executeWorkflow", {"source": "localFile", "workflowPath": "/etc/x.json"})],
                  [("Start", "Call")])
    with pytest.raises(WorkflowInvalid, match="localFile"):
        run_workflow(workflow)


def test_wait_sleeps_through_services_and_is_capped() -> None:
    services = Recorder()
    workflow = wf([node("Wait", "n8n-nodes-base.wait", {"amount": 3, "unit": "seconds"})], [("Start", "Wait")])
    assert run_workflow(workflow, services=services).status == "success"
    assert services.sleeps == [3.0]
    result = run_workflow(workflow, services=services, settings=EngineSettings(max_wait_s=1))
    assert result.status == "error" and "longer than the allowed 1 s" in result.error


def test_webhook_trigger_outputs_the_request() -> None:
    workflow = {"nodes": [node("Hook", "n8n-nodes-base.webhook"), node("Pass", NOOP)],
                "connections": {"Hook": {"main": [[{"node": "Pass", "type": "main", "index": 0}]]}}}
    result = run_workflow(workflow, input_items=[{"json": {"body": {"x": 1}}}], mode="webhook")
    assert out(result, "Pass") == [{"body": {"x": 1}}]


def test_connected_sub_nodes_are_not_data_flow() -> None:
    workflow = wf([node("Chain", "hive-test.chain"), node("Model", "hive-test.model")], [("Start", "Chain")])
    workflow["connections"]["Model"] = {"ai_languageModel": [[{"node": "Chain", "type": "ai_languageModel", "index": 0}]]}
    result = run_workflow(workflow)
    assert out(result, "Chain") == [{"models": ["Model"]}]
    assert "Model" not in result.run_data


def test_start_node_argument() -> None:
    workflow = wf([data("Rows", [{"a": 1}]), node("Pass", NOOP)], [("Start", "Rows"), ("Rows", "Pass")])
    result = run_workflow(workflow, start_node="Pass", input_items=[{"json": {"b": 2}}])
    assert list(result.run_data) == ["Pass"] and out(result, "Pass") == [{"b": 2}]


def test_nested_loops_restart_the_inner_loop() -> None:
    workflow = wf([data("Parents", [{"p": 1}, {"p": 2}]),
                   node("Outer", LOOP, {"batchSize": 1, "options": {}}, typeVersion=3),
                   data("Children", [{"c": "a"}, {"c": "b"}]),
                   node("Inner", LOOP, {"batchSize": 1, "options": {}}, typeVersion=3),
                   node("Work", NOOP), node("Outer done", NOOP)],
                  [("Start", "Parents"), ("Parents", "Outer"), ("Outer", 0, "Outer done", 0), ("Outer", 1, "Children", 0),
                   ("Children", "Inner"), ("Inner", 0, "Outer", 0), ("Inner", 1, "Work", 0), ("Work", "Inner")])
    result = run_workflow(workflow)
    assert result.status == "success", result.error
    assert len(result.run_data["Work"]) == 4
    assert out(result, "Outer done") == [{"c": "a"}, {"c": "b"}, {"c": "a"}, {"c": "b"}]


def test_split_in_batches_v1_ends_the_branch_when_done() -> None:
    workflow = wf([data("Rows", [{"i": 1}, {"i": 2}, {"i": 3}]), node("Loop", LOOP, {"batchSize": 2}), node("Body", NOOP)],
                  [("Start", "Rows"), ("Rows", "Loop"), ("Loop", "Body"), ("Body", "Loop")], order=None)
    result = run_workflow(workflow)
    assert [len(r.outputs[0]) for r in result.run_data["Body"]] == [2, 1]
    assert len(result.run_data["Loop"]) == 2            # the third run produced nothing: no run data


def _two_inputs(params: dict, version: float, first: list, second: list, order: str | None = "v1") -> Any:
    workflow = wf([data("A", first, (200, 0)), data("B", second, (200, 200)),
                   node("Merge", MERGE, params, (400, 100), typeVersion=version)],
                  [("Start", "A"), ("Start", "B"), ("A", 0, "Merge", 0), ("B", 0, "Merge", 1)], order)
    result = run_workflow(workflow)
    assert result.status == "success", result.error
    return out(result, "Merge")


PEOPLE = [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob"}]
AGES = [{"id": 2, "age": 30}, {"id": 3, "age": 40}]


@pytest.mark.parametrize(("params", "version", "expected"), [
    ({"mode": "mergeByKey", "propertyName1": "id", "propertyName2": "id"}, 1,
     [{"id": 1, "name": "ann"}, {"id": 2, "name": "bob", "age": 30}]),
    ({"mode": "keepKeyMatches", "propertyName1": "id", "propertyName2": "id"}, 1, [{"id": 2, "name": "bob"}]),
    ({"mode": "removeKeyMatches", "propertyName1": "id", "propertyName2": "id"}, 1, [{"id": 1, "name": "ann"}]),
    ({"mode": "mergeByIndex"}, 1, [{"id": 2, "name": "ann", "age": 30}, {"id": 3, "name": "bob", "age": 40}]),
    ({"mode": "passThrough", "output": "input2"}, 1, AGES),
    ({"mode": "wait"}, 1, [{}]),
    ({"mode": "combine", "combineBy": "combineByFields", "fieldsToMatchString": "id"}, 3,
     [{"id": 2, "name": "bob", "age": 30}]),
    ({"mode": "combine", "combineBy": "combineByFields", "fieldsToMatchString": "id", "joinMode": "keepEverything"}, 3,
     [{"id": 2, "name": "bob", "age": 30}, {"id": 1, "name": "ann"}, {"id": 3, "age": 40}]),
    ({"mode": "combine", "combineBy": "combineAll"}, 3,
     [{"id": 2, "name": "ann", "age": 30}, {"id": 3, "name": "ann", "age": 40},
      {"id": 2, "name": "bob", "age": 30}, {"id": 3, "name": "bob", "age": 40}]),
    ({"mode": "chooseBranch", "useDataOfInput": 2}, 3, AGES),
    ({"mode": "append"}, 3, PEOPLE + AGES),
])
def test_merge_modes(params: dict, version: float, expected: list) -> None:
    assert _two_inputs(params, version, PEOPLE, AGES) == expected


def test_merge_v3_three_inputs_by_position() -> None:
    workflow = wf([data("A", [{"a": 1}]), data("B", [{"b": 2}]), data("C", [{"c": 3}]),
                   node("Merge", MERGE, {"mode": "combine", "combineBy": "combineByPosition", "numberInputs": 3}, typeVersion=3)],
                  [("Start", "A"), ("Start", "B"), ("Start", "C"), ("A", 0, "Merge", 0), ("B", 0, "Merge", 1), ("C", 0, "Merge", 2)])
    assert out(run_workflow(workflow), "Merge") == [{"a": 1, "b": 2, "c": 3}]


def test_training_datastore_and_test_data_string() -> None:
    workflow = wf([data("Rows", '[{"x": 1}]'),
                   node("People", "n8n-nodes-base.n8nTrainingCustomerDatastore", {"operation": "getAllPeople", "limit": 2})],
                  [("Start", "Rows"), ("Rows", "People")])
    result = run_workflow(workflow)
    assert out(result, "Rows") == [{"x": 1}]
    assert [p["name"] for p in out(result, "People")] == ["Jay Gatsby", "José Arcadio Buendía"]


def test_schedule_trigger_describes_the_tick() -> None:
    workflow = {"nodes": [node("Tick", "n8n-nodes-base.scheduleTrigger")], "connections": {},
                "settings": {"timezone": "Europe/Berlin"}}
    item = out(run_workflow(workflow, mode="schedule"), "Tick")[0]
    assert item["Timezone"].startswith("Europe/Berlin (UTC+0") and {"timestamp", "Day of week", "Hour"} <= set(item)
