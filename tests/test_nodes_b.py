"""Unit tests for the Transform nodes (Sort, Limit, Remove Duplicates, Split Out, Aggregate,
Summarize), Item Lists and Compare Datasets.

The nodes run against a small fake NodeContext (parameters as written, no expressions). The
fixture tests replay n8n's own test workflows with a minimal graph walker: Code / Function nodes
that return constants run in V8 (mini-racer) here, so these tests do not depend on the runtime or
the expressions helper; the full-engine check is tests/test_n8n_conformance.py.
"""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from py_mini_racer import MiniRacer

from workflows.engine.contract import MISSING, EngineServices, EngineSettings, NodeContext, NodeError, NodeSpec, lookup
from workflows.engine.jsvalues import (
    js_number_to_string,
)
from workflows.nodes import compare_datasets, item_lists, transform
from workflows.nodes.transform import (
    flatten_keys,
    is_equal,
    js_less_than,
    js_string,
    lodash_get,
    lodash_lt,
    lodash_set,
    to_number,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


class FakeEvaluator:
    """Stands in for expressions.Evaluator.run_code in 'function' mode (``items`` = input 0)."""

    def __init__(self) -> None:
        self.ctx = MiniRacer()

    def run_code(self, code: str, data: dict[str, Any], *, mode: str) -> Any:
        assert mode == "function"
        script = f"JSON.stringify((function(items) {{ {code} \n}})({json.dumps(data['input']['all'])}))"
        return json.loads(self.ctx.eval(script))


class FakeContext(NodeContext):
    def __init__(self, node_type: str, parameters: dict[str, Any], inputs: list[list[dict[str, Any]]],
                 version: float = 1, name: str = "Node") -> None:
        self.node = NodeSpec(name=name, type=node_type, type_version=version, parameters=parameters)
        self.run_index = 0
        self.settings = EngineSettings()
        self.services = EngineServices()
        self.workflow = {}
        self.execution_id = None
        self.mode = "manual"
        self.evaluator = FakeEvaluator()
        self._inputs = inputs

    def input_items(self, index: int = 0) -> list[dict[str, Any]]:
        return copy.deepcopy(self._inputs[index]) if index < len(self._inputs) else []

    def input_count(self) -> int:
        return max(len(self._inputs), 1)

    def has_input(self, index: int) -> bool:
        return index < len(self._inputs)

    def param(self, path: str, item_index: int = 0, default: Any = MISSING) -> Any:
        value = lookup(self.node.parameters, path)
        if value is MISSING:
            if default is MISSING:
                raise NodeError(f"parameter '{path}' is missing", node=self.node.name)
            return default
        return copy.deepcopy(value)

    def raw_param(self, path: str, default: Any = MISSING) -> Any:
        return self.param(path, 0, default)

    def expression_data(self, item_index: int, node_names: set[str]) -> dict[str, Any]:
        items = self.input_items(0)
        return {"input": {"all": items, "item": items[item_index] if items else None}, "inputs": [items]}


NODES = {
    "n8n-nodes-base.sort": transform.SortNode(),
    "n8n-nodes-base.limit": transform.LimitNode(),
    "n8n-nodes-base.removeDuplicates": transform.RemoveDuplicatesNode(),
    "n8n-nodes-base.splitOut": transform.SplitOutNode(),
    "n8n-nodes-base.aggregate": transform.AggregateNode(),
    "n8n-nodes-base.summarize": transform.SummarizeNode(),
    "n8n-nodes-base.itemLists": item_lists.ItemListsNode(),
    "n8n-nodes-base.compareDatasets": compare_datasets.CompareDatasetsNode(),
}


def run(node_type: str, parameters: dict[str, Any], *inputs: list[dict[str, Any]], version: float = 1) -> list[Any]:
    ctx = FakeContext(node_type, parameters, list(inputs) or [[]], version)
    return NODES[node_type].execute(ctx)


def js(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"json": j} for j in items]


def jsons(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item["json"] for item in output]


# --------------------------------------------------------------------------- JS semantics


def test_js_number_to_string_matches_javascript() -> None:
    assert js_number_to_string(1.0) == "1"
    assert js_number_to_string(0.1) == "0.1"
    assert js_number_to_string(1e21) == "1e+21"
    assert js_number_to_string(1.5e-7) == "1.5e-7"
    assert js_number_to_string(123456789012345680000.0) == "123456789012345680000"
    assert js_number_to_string(0.000001) == "0.000001"
    assert js_string([1, None, "a"]) == "1,,a"
    assert js_string({"a": 1}) == "[object Object]"


def test_lodash_get_and_set_paths() -> None:
    data = {"a": {"b": [{"c": 1}]}, "x.y": 2}
    assert lodash_get(data, "a.b[0].c") == 1
    assert lodash_get(data, "a.b.0.c") == 1
    assert lodash_get(data, "x.y") == 2
    assert lodash_get(data, "a.b.length") == 1
    assert lodash_get(data, "a.missing.c") is transform.UNDEFINED
    target: dict[str, Any] = {}
    lodash_set(target, "p.0.q", 3)
    assert target == {"p": [{"q": 3}]}


def test_equality_and_comparison_semantics() -> None:
    assert is_equal(1, 1.0) and not is_equal(True, 1) and is_equal({"a": [1]}, {"a": [1]})
    assert lodash_lt("a", "b") and lodash_lt(2, "10") and lodash_lt("10", "9")
    assert not lodash_lt({"a": 1}, 5)  # NaN compares false
    assert js_less_than([2], 10) and not js_less_than("b", "a")
    assert to_number(" 0x10 ") == 16 and to_number("") == 0 and to_number(None) == 0
    assert flatten_keys({"a": {"b": 1, "c": []}, "d": {}, "e": [1, 2]}) == {"a.b": 1, "e.0": 1, "e.1": 2}


# --------------------------------------------------------------------------- Sort / Limit


def test_sort_simple_case_insensitive_and_multi_field() -> None:
    items = js([{"n": "b", "i": 1}, {"n": "A", "i": 2}, {"n": "a", "i": 1}])
    out = run("n8n-nodes-base.sort", {"sortFieldsUi": {"sortField": [{"fieldName": "n"}, {"fieldName": "i", "order": "descending"}]}},
              items)[0]
    assert jsons(out) == [{"n": "A", "i": 2}, {"n": "a", "i": 1}, {"n": "b", "i": 1}]


def test_sort_mixed_types_like_lodash() -> None:
    items = js([{"v": "10"}, {"v": 9}, {"v": "abc"}, {"v": 1}])
    out = run("n8n-nodes-base.sort", {"sortFieldsUi": {"sortField": [{"fieldName": "v"}]}}, items)[0]
    assert [i["json"]["v"] for i in out][:3] == [1, 9, "10"]


def test_sort_missing_field_is_an_error() -> None:
    with pytest.raises(NodeError, match="Couldn't find the field 'nope' in the input data"):
        run("n8n-nodes-base.sort", {"sortFieldsUi": {"sortField": [{"fieldName": "nope"}]}}, js([{"a": 1}]))
    with pytest.raises(NodeError, match="No sorting specified"):
        run("n8n-nodes-base.sort", {"sortFieldsUi": {}}, js([{"a": 1}]))


def test_sort_code_and_random() -> None:
    items = js([{"id": 3}, {"id": 1}, {"id": 2}])
    out = run("n8n-nodes-base.sort", {"type": "code", "code": "return a.json.id - b.json.id;"}, items)[0]
    assert [i["json"]["id"] for i in out] == [1, 2, 3]
    with pytest.raises(NodeError, match="doesn't return"):
        run("n8n-nodes-base.sort", {"type": "code", "code": "a.json.id - b.json.id"}, items)
    shuffled = run("n8n-nodes-base.sort", {"type": "random"}, items)[0]
    assert sorted(i["json"]["id"] for i in shuffled) == [1, 2, 3]


def test_limit_first_and_last() -> None:
    items = js([{"e": i} for i in range(5)])
    assert jsons(run("n8n-nodes-base.limit", {"maxItems": 2}, items)[0]) == [{"e": 0}, {"e": 1}]
    assert jsons(run("n8n-nodes-base.limit", {"maxItems": 2, "keep": "lastItems"}, items)[0]) == [{"e": 3}, {"e": 4}]
    assert len(run("n8n-nodes-base.limit", {"maxItems": 10}, items)[0]) == 5


# --------------------------------------------------------------------------- Remove Duplicates


def test_remove_duplicates_modes() -> None:
    items = js([{"id": 1, "n": "a", "age": 1}, {"id": 1, "n": "a", "age": 1}, {"id": 1, "n": "a", "age": 2}])
    assert len(run("n8n-nodes-base.removeDuplicates", {}, items)[0]) == 2
    out = run("n8n-nodes-base.removeDuplicates", {"compare": "allFieldsExcept", "fieldsToExclude": "age",
                                                  "options": {"removeOtherFields": True}}, items)[0]
    assert jsons(out) == [{"id": 1, "n": "a"}]


def test_remove_duplicates_errors_name_the_field() -> None:
    with pytest.raises(NodeError, match="'name' field is missing from some input items"):
        run("n8n-nodes-base.removeDuplicates", {"compare": "selectedFields", "fieldsToCompare": "name"},
            js([{"name": "a"}, {"other": 1}]))
    with pytest.raises(NodeError, match="'v' isn't always the same type"):
        run("n8n-nodes-base.removeDuplicates", {"compare": "selectedFields", "fieldsToCompare": "v"}, js([{"v": "1"}, {"v": 1}]))
    # v1.1 tolerates null values
    out = run("n8n-nodes-base.removeDuplicates", {"compare": "selectedFields", "fieldsToCompare": "v"},
              js([{"v": None}, {"v": 1}, {"v": None}]), version=1.1)[0]
    assert jsons(out) == [{"v": None}, {"v": 1}]


# --------------------------------------------------------------------------- Split Out


def test_split_out_multiple_fields_and_destinations() -> None:
    items = js([{"a": [1, 2], "b": ["x", "y"], "keep": True}])
    out = run("n8n-nodes-base.splitOut", {"fieldToSplitOut": "a, b", "include": "allOtherFields",
                                          "options": {"destinationFieldName": "A, B"}}, items)[0]
    assert jsons(out) == [{"keep": True, "A": 1, "B": "x"}, {"keep": True, "A": 2, "B": "y"}]
    with pytest.raises(NodeError, match="same number of destination fields"):
        run("n8n-nodes-base.splitOut", {"fieldToSplitOut": "a, b", "options": {"destinationFieldName": "A"}}, items)


def test_split_out_binary_and_scalars() -> None:
    items = [{"json": {"v": 5}, "binary": {"f1": {"data": "a"}, "f2": {"data": "b"}}}]
    out = run("n8n-nodes-base.splitOut", {"fieldToSplitOut": "$binary"}, items)[0]
    assert [sorted(i["binary"]) for i in out] == [["f1"], ["f2"]]
    assert jsons(run("n8n-nodes-base.splitOut", {"fieldToSplitOut": "$json.v"}, items)[0]) == [{"v": 5}]
    assert run("n8n-nodes-base.splitOut", {"fieldToSplitOut": "missing"}, items)[0] == []


# --------------------------------------------------------------------------- Aggregate


def test_aggregate_individual_fields_options() -> None:
    items = js([{"a": [1, None], "b": {"c": 1}}, {"a": [2], "b": {"c": None}}, {"x": 1}])
    out = run("n8n-nodes-base.aggregate", {"fieldsToAggregate": {"fieldToAggregate": [
        {"fieldToAggregate": "a"}, {"fieldToAggregate": "b.c"}]}, "options": {"mergeLists": True}}, items)[0]
    assert jsons(out) == [{"a": [1, 2], "c": [1]}]
    out = run("n8n-nodes-base.aggregate", {"fieldsToAggregate": {"fieldToAggregate": [{"fieldToAggregate": "b.c"}]},
                                           "options": {"keepMissing": True}}, items)[0]
    assert jsons(out) == [{"c": [1, None, None]}]
    with pytest.raises(NodeError, match="used more than once"):
        run("n8n-nodes-base.aggregate", {"fieldsToAggregate": {"fieldToAggregate": [
            {"fieldToAggregate": "a"}, {"fieldToAggregate": "a"}]}}, items)


def test_aggregate_group_by() -> None:
    items = js([{"k": "x", "v": 1}, {"k": "y", "v": 2}, {"k": "x", "v": 3}])
    out = run("n8n-nodes-base.aggregate", {"fieldsToAggregate": {"fieldToAggregate": [{"fieldToAggregate": "v"}]},
                                           "options": {"groupByFields": "k"}}, items)[0]
    assert jsons(out) == [{"k": "x", "v": [1, 3]}, {"k": "y", "v": [2]}]


# --------------------------------------------------------------------------- Summarize


def test_summarize_aggregations_and_separators() -> None:
    items = js([{"g": "a", "v": 1, "s": "x"}, {"g": "a", "v": "2", "s": ""}, {"g": "b", "v": 3, "s": {"o": 1}}])
    fields = [{"aggregation": "sum", "field": "v"}, {"aggregation": "average", "field": "v"},
              {"aggregation": "min", "field": "v"}, {"aggregation": "max", "field": "v"},
              {"aggregation": "concatenate", "field": "s", "separateBy": "other", "customSeparator": "|"},
              {"aggregation": "countUnique", "field": "g"}, {"aggregation": "count", "field": "s"}]
    out = jsons(run("n8n-nodes-base.summarize", {"fieldsToSummarize": {"values": fields}}, items)[0])
    assert out == [{"sum_v": 4, "average_v": 2, "min_v": 1, "max_v": 3, "concatenated_s": 'x|{"o":1}',
                    "unique_count_g": 2, "count_s": 2}]


def test_summarize_split_types_v1_vs_v11_and_errors() -> None:
    items = js([{"g": 1, "v": 1}, {"g": None, "v": 2}, {"g": 1, "v": 3}])
    params = {"fieldsToSummarize": {"values": [{"aggregation": "sum", "field": "v"}]}, "fieldsToSplitBy": "g"}
    assert jsons(run("n8n-nodes-base.summarize", params, items)[0]) == [{"g": "1", "sum_v": 4}, {"g": "null", "sum_v": 2}]
    assert jsons(run("n8n-nodes-base.summarize", params, items, version=1.1)[0]) == [{"g": 1, "sum_v": 4}, {"g": None, "sum_v": 2}]
    missing = {"fieldsToSummarize": {"values": [{"aggregation": "sum", "field": "nope"}]}}
    with pytest.raises(NodeError, match="The field 'nope' does not exist in any items"):
        run("n8n-nodes-base.summarize", missing, items)
    assert run("n8n-nodes-base.summarize", missing, items, version=1.1)[0][0]["json"] == {"sum_nope": 0}
    with pytest.raises(NodeError, match="at least one aggregation"):
        run("n8n-nodes-base.summarize", {"fieldsToSummarize": {"values": [{"aggregation": "sum", "field": ""}]}}, items)


def test_summarize_single_item_and_skip_empty() -> None:
    items = js([{"g": "b", "v": 1}, {"g": "", "v": 2}, {"g": "a", "v": 3}, {"g": "10", "v": 4}, {"g": "2", "v": 5}])
    params = {"fieldsToSummarize": {"values": [{"aggregation": "sum", "field": "v"}]}, "fieldsToSplitBy": "g",
              "options": {"outputFormat": "singleItem", "skipEmptySplitFields": True}}
    out = run("n8n-nodes-base.summarize", params, items)[0]
    assert list(out[0]["json"].keys()) == ["2", "10", "b", "a"]  # JavaScript key order


# --------------------------------------------------------------------------- Item Lists / Compare Datasets


def test_item_lists_v1_split_requires_array() -> None:
    with pytest.raises(NodeError, match="is not an array"):
        run("n8n-nodes-base.itemLists", {"fieldToSplitOut": "a"}, js([{"a": 1}]))


def test_item_lists_v3_concatenate_and_limit() -> None:
    items = js([{"a": 1, "b": 2}, {"a": 3, "b": 4}])
    out = run("n8n-nodes-base.itemLists", {"operation": "concatenateItems", "aggregate": "aggregateAllItemData",
                                           "include": "specifiedFields", "fieldsToInclude": "a"}, items, version=3)[0]
    assert jsons(out) == [{"data": [{"a": 1}, {"a": 3}]}]
    assert jsons(run("n8n-nodes-base.itemLists", {"operation": "limit", "maxItems": 1, "keep": "lastItems"}, items,
                     version=3)[0]) == [{"a": 3, "b": 4}]


def test_compare_datasets_v23_default_include_both_and_mix() -> None:
    a = js([{"id": 1, "x": "a", "y": 1}, {"id": 2, "x": "b"}, {"id": 3}])
    b = js([{"id": 1, "x": "A", "y": 2}, {"id": 2, "x": "b"}, {"id": 4}])
    only_a, same, different, only_b = run("n8n-nodes-base.compareDatasets",
                                          {"mergeByFields": {"values": [{"field1": "id", "field2": "id"}]}}, a, b, version=2.3)
    assert jsons(only_a) == [{"id": 3}] and jsons(only_b) == [{"id": 4}] and jsons(same) == [{"id": 2, "x": "b"}]
    assert jsons(different) == [{"keys": {"id": 1}, "same": {"id": 1},
                                 "different": {"x": {"inputA": "a", "inputB": "A"}, "y": {"inputA": 1, "inputB": 2}}}]
    mixed = run("n8n-nodes-base.compareDatasets", {"mergeByFields": {"values": [{"field1": "id", "field2": "id"}]},
                                                   "resolve": "mix", "preferWhenMix": "input1", "exceptWhenMix": "y"},
                a, b, version=2.3)[2]
    assert jsons(mixed) == [{"id": 1, "x": "a", "y": 2}]


def test_compare_datasets_missing_match_field_before_v22() -> None:
    params = {"mergeByFields": {"values": [{"field1": "nope", "field2": "id"}]}}
    with pytest.raises(NodeError, match="Field 'nope' is not present in any of items in 'Input A'"):
        run("n8n-nodes-base.compareDatasets", params, js([{"id": 1}]), js([{"id": 1}]), version=2.1)
    assert run("n8n-nodes-base.compareDatasets", params, js([{"id": 1}]), js([{"id": 1}]), version=2.2)[0] == js([{"id": 1}])
    with pytest.raises(NodeError, match="at least one pair"):
        run("n8n-nodes-base.compareDatasets", {"mergeByFields": {"values": [{"field1": "", "field2": ""}]}}, [], [])
