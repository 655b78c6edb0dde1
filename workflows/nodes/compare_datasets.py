"""n8n-nodes-base.compareDatasets (v1, v2, v2.1, v2.2, v2.3): diff two inputs into four outputs.

Items of input A and input B are paired when the "fields to match" are equal; outputs are
0: in A only, 1: same, 2: different, 3: in B only. Version differences follow n8n: v2 takes
``fuzzyCompare`` as a top-level parameter, names both versions ``inputA``/``inputB`` and keeps
falsy values; v2.1 compares all keys when fuzzy and supports dotted skip fields; v2.2 stops
failing when a match field is absent; v2.1+ defaults to including both versions.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from workflows.engine.contract import Item, Items, Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register
from workflows.engine.jsvalues import (
    js_number_to_string,
)
from workflows.nodes.transform import (
    UNDEFINED,
    as_bool,
    is_empty_value,
    is_equal,
    is_number,
    js_keys,
    js_typeof,
    lodash_get,
    lodash_set,
    lodash_unset,
    param,
)

Compare = Callable[[Any, Any], bool]


def _is_falsy(value: Any) -> bool:
    return value is None or value == "" and isinstance(value, str) or isinstance(value, list) and len(value) == 0


def _parse_and_compare(text: str, other: Any) -> bool:
    try:
        parsed = json.loads(text)
    except (ValueError, TypeError):
        return False
    return is_equal(parsed, other)


def fuzzy_compare(use_fuzzy: bool, version: float) -> Compare:
    """n8n's ``fuzzyCompare`` from nodes-base utils."""
    if not use_fuzzy:
        return is_equal

    def compare(a: Any, b: Any) -> bool:
        ta, tb = js_typeof(a), js_typeof(b)
        if a is not None and b is not None and ta == tb:
            return is_equal(a, b)
        if version >= 2:
            if a is None and (b is None or (is_number(b) and b == 0) or b == "0"):
                return True
            if b is None and (a is None or (is_number(a) and a == 0) or a == "0"):
                return True
        if _is_falsy(a) and _is_falsy(b):
            return True
        if _is_falsy(a) and b is UNDEFINED or a is UNDEFINED and _is_falsy(b):
            return True
        if ta == "number" and tb == "string":
            return js_number_to_string(a) == b
        if ta == "string" and tb == "number":
            return a == js_number_to_string(b)
        if a is not None and ta == "object" and tb == "string":
            return _parse_and_compare(b, a)
        if b is not None and ta == "string" and tb == "object":
            return _parse_and_compare(a, b)
        if ta == "boolean" and tb == "string":
            if (a is True and b.lower() == "true") or (a is False and b.lower() == "false"):
                return True
        if tb == "boolean" and ta == "string":
            if (b is True and a.lower() == "true") or (b is False and a.lower() == "false"):
                return True
        if ta == "boolean" and tb == "number":
            if (a is True and b == 1) or (a is False and b == 0):
                return True
        if tb == "boolean" and ta == "number":
            if (b is True and a == 1) or (b is False and a == 0):
                return True
        if ta == "boolean" and tb == "string":
            if (a is True and b == "1") or (a is False and b == "0"):
                return True
        if tb == "boolean" and ta == "string":
            if (b is True and a == "1") or (b is False and a == "0"):
                return True
        return is_equal(a, b)

    return compare


def _nullish(version: float) -> Callable[[Any], Any]:
    if version >= 2:
        return lambda v: None if v is UNDEFINED else v
    return lambda v: v if _truthy(v) else None


def _truthy(value: Any) -> bool:
    if value is UNDEFINED or value is None or value is False:
        return False
    if is_number(value):
        return value == value and value != 0
    if isinstance(value, str):
        return value != ""
    return True


def _union(a: list[str], b: list[str]) -> list[str]:
    return a + [k for k in b if k not in a]


def _compare_items(ctx: NodeContext, item1: Item, item2: Item, fields_to_match: list[dict[str, str]],
                   options: dict[str, Any], skip_fields: list[str], equal: Compare) -> Item:
    """The 'include both versions' item: keys, same, different (and skipped)."""
    version = options["nodeVersion"]
    j1, j2 = item1["json"], item2["json"]
    keys = {pair["field1"]: copy.deepcopy(j1.get(pair["field1"])) for pair in fields_to_match}
    keys1, keys2 = js_keys(j1), js_keys(j2)
    all_keys = _union(keys1, keys2)
    to_compare = all_keys if options.get("fuzzyCompare") and version >= 2.1 else [k for k in keys1 if k in keys2]
    same = {k: copy.deepcopy(j1.get(k, UNDEFINED)) for k in to_compare if equal(j1.get(k, UNDEFINED), j2.get(k, UNDEFINED))}
    different_keys = [k for k in all_keys if k not in same]
    different: dict[str, Any] = {}
    skipped: dict[str, Any] = {}
    nullish = _nullish(version)
    first, second = ("inputA", "inputB") if version >= 2 else ("input1", "input2")
    for i, key in enumerate(different_keys):
        resolve = options.get("resolve")
        if resolve == "preferInput1":
            different[key] = copy.deepcopy(nullish(j1.get(key, UNDEFINED)))
            continue
        if resolve == "preferInput2":
            different[key] = copy.deepcopy(nullish(j2.get(key, UNDEFINED)))
            continue
        input1 = copy.deepcopy(nullish(j1.get(key, UNDEFINED)))
        input2 = copy.deepcopy(nullish(j2.get(key, UNDEFINED)))
        if version >= 2.1 and not options.get("disableDotNotation") and key not in skip_fields:
            dotted = [f for f in skip_fields if f.startswith(key) and "." in f]
            if dotted and (not isinstance(input1, (dict, list)) or not isinstance(input2, (dict, list))):
                raise NodeError(f"The field '{key}' in item {i} is not an object. It is not possible to use dot notation.",
                                node=ctx.node.name)
            if dotted and key not in skipped:
                skipped[key] = {first: {}, second: {}}
            for field in dotted:
                nested = field.replace(f"{key}.", "", 1)
                lodash_set(skipped[key][first], nested, copy.deepcopy(_or_none(lodash_get(input1, nested))))
                lodash_set(skipped[key][second], nested, copy.deepcopy(_or_none(lodash_get(input2, nested))))
                lodash_unset(input1, nested)
                lodash_unset(input2, nested)
            different[key] = {first: input1, second: input2}
        elif key in skip_fields:
            skipped[key] = {first: input1, second: input2}
        else:
            different[key] = {first: input1, second: input2}
    result: dict[str, Any] = {"keys": keys, "same": same, "different": different}
    if skipped:
        result["skipped"] = skipped
    return {"json": _clean(result), "pairedItem": _paired(item1) + _paired(item2)}


def _or_none(value: Any) -> Any:
    return None if value is UNDEFINED else value


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not UNDEFINED}
    if isinstance(value, list):
        return [None if v is UNDEFINED else _clean(v) for v in value]
    return value


def _paired(item: Item) -> list[dict[str, Any]]:
    paired = item.get("pairedItem")
    if paired is None:
        return []
    if isinstance(paired, list):
        return [p if isinstance(p, dict) else {"item": p} for p in paired]
    return [paired if isinstance(paired, dict) else {"item": paired}]


def _combine_items(item1: Item, item2: Item, prefer: str, except_fields: Any, disable_dot: bool) -> Item:
    entry, match = (item1, item2) if prefer == "input1" else (item2, item1)
    if isinstance(except_fields, list) and except_fields:
        fields = [str(f) for f in except_fields]
    else:
        fields = [f.strip() for f in str(except_fields).split(",")] if except_fields else []
    for field in fields:
        if disable_dot:
            value = match["json"].get(field, UNDEFINED)
            if value is UNDEFINED:
                entry["json"].pop(field, None)
            else:
                entry["json"][field] = value
        else:
            value = lodash_get(match["json"], field)
            entry["json"][field] = None if value is UNDEFINED else value
    return entry


def _lookup_value(data: dict[str, Any], field: str, disable_dot: bool) -> Any:
    return data.get(field, UNDEFINED) if disable_dot else lodash_get(data, field)


def find_matches(ctx: NodeContext, input1: Items, input2: Items, fields_to_match: list[dict[str, str]],
                 options: dict[str, Any]) -> list[Items]:
    equal = fuzzy_compare(as_bool(options.get("fuzzyCompare")), options["nodeVersion"])
    disable_dot = as_bool(options.get("disableDotNotation"))
    multiple = options.get("multipleMatches") or "first"
    skip_fields = [f.strip() for f in str(options.get("skipFields") or "").split(",")]
    if disable_dot and any("." in f for f in skip_fields):
        field = next(f for f in skip_fields if "." in f)
        raise NodeError(f"Dot notation is disabled, but field to skip comparing '{field}' contains dot", node=ctx.node.name)

    matched: list[tuple[Item, Items]] = []
    unmatched1: Items = []
    matched_in_2: set[int] = set()
    for entry in input1:
        lookup: dict[str, Any] = {}
        for pair in fields_to_match:
            lookup[pair["field2"]] = _lookup_value(entry["json"], pair["field1"], disable_dot)
        if any(v is UNDEFINED for v in lookup.values()):
            unmatched1.append(entry)
            continue
        found: list[int] = []
        for index, candidate in enumerate(input2):
            if all(equal(expected, _lookup_value(candidate["json"], key, disable_dot)) for key, expected in lookup.items()):
                found.append(index)
                if multiple != "all":
                    break
        matched_in_2.update(found)
        if found:
            matched.append((entry, [input2[i] for i in found]))
        else:
            unmatched1.append(entry)
    unmatched2 = [entry for i, entry in enumerate(input2) if i not in matched_in_2]

    same: Items = []
    different: Items = []
    resolve = options.get("resolve")
    for entry, matches in matched:
        entry_copy: Item | None = None
        for match in matches:
            a, b = entry["json"], match["json"]
            if any(skip_fields):
                if disable_dot or not any("." in f for f in skip_fields):
                    a = {k: v for k, v in a.items() if k not in skip_fields}
                    b = {k: v for k, v in b.items() if k not in skip_fields}
                else:
                    a, b = copy.deepcopy(a), copy.deepcopy(b)
                    for field in skip_fields:
                        lodash_unset(a, field)
                        lodash_unset(b, field)
            if options.get("fuzzyCompare"):
                items_equal = all(equal(a[k], b.get(k, UNDEFINED)) for k in js_keys(a))
            else:
                items_equal = equal(a, b)
            if items_equal:
                if entry_copy is None:
                    entry_copy = match if options.get("fuzzyCompare") and resolve == "preferInput2" else entry
            elif resolve == "preferInput1":
                different.append(entry)
            elif resolve == "preferInput2":
                different.append(match)
            elif resolve == "mix":
                different.append(_combine_items(entry, match, options.get("preferWhenMix", "input1"),
                                                options.get("exceptWhenMix", ""), disable_dot))
            else:
                different.append(_compare_items(ctx, entry, match, fields_to_match, options, skip_fields, equal))
        if entry_copy is not None and not is_empty_value(entry_copy):
            same.append(entry_copy)
    return [_copies(unmatched1), _copies(same), _copies(different), _copies(unmatched2)]


def _copies(items: Items) -> Items:
    """Outputs may share item objects (the same entry can land in two outputs): copy them apart."""
    return [copy.deepcopy(item) for item in items]


def check_match_fields(ctx: NodeContext, data: Any) -> list[dict[str, str]]:
    if not isinstance(data, list):
        data = []
    pairs = [{"field1": str(p.get("field1", "")), "field2": str(p.get("field2", ""))} for p in data if isinstance(p, dict)]
    if not pairs or (len(pairs) == 1 and pairs[0]["field1"] == "" and pairs[0]["field2"] == ""):
        raise NodeError('You need to define at least one pair of fields in "Fields to Match" to match on', node=ctx.node.name)
    for index, pair in enumerate(pairs):
        if pair["field1"] == "" or pair["field2"] == "":
            raise NodeError(f'You need to define both fields in "Fields to Match" for pair {index + 1},\n'
                            f"\t\t\t\t field 1 = '{pair['field1']}'\n\t\t\t\t field 2 = '{pair['field2']}'", node=ctx.node.name)
    return pairs


def _drop_empty(items: Items) -> Items:
    return [item for item in items if not is_empty_value(item.get("json"))]


def check_input_fields(ctx: NodeContext, items: Items, fields: list[str], disable_dot: bool, label: str) -> Items:
    items = _drop_empty(items)
    if not items:
        return items
    for field in fields:
        present = any((field in item["json"]) if disable_dot else lodash_get(item["json"], field) is not UNDEFINED
                      for item in items)
        if not present:
            raise NodeError(f"Field '{field}' is not present in any of items in '{label}'", node=ctx.node.name)
    return items


@register
class CompareDatasetsNode(Node):
    """n8n-nodes-base.compareDatasets: two inputs, four outputs (A only, same, different, B only)."""

    type = "n8n-nodes-base.compareDatasets"
    versions = (1, 2, 2.1, 2.2, 2.3)

    def input_count(self, node: NodeSpec) -> int:
        return 2

    def output_count(self, node: NodeSpec) -> int:
        return 4

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        merge_by = node.parameters.get("mergeByFields")
        values = merge_by.get("values") if isinstance(merge_by, dict) else None
        if isinstance(values, list) and values and all(isinstance(v, dict) for v in values):
            if all(not v.get("field1") and not v.get("field2") for v in values):
                issues.append(ValidationIssue("define at least one pair of fields to match on", node.name, "mergeByFields"))
        resolve = node.parameters.get("resolve")
        if isinstance(resolve, str) and not resolve.startswith("=") and resolve not in (
                "preferInput1", "preferInput2", "mix", "includeBoth"):
            issues.append(ValidationIssue(f"unknown value '{resolve}'", node.name, "resolve"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        version = float(ctx.node.type_version)
        pairs = check_match_fields(ctx, param(ctx, "mergeByFields.values", []))
        raw_options = param(ctx, "options", {}) or {}
        options: dict[str, Any] = dict(raw_options) if isinstance(raw_options, dict) else {}
        options["nodeVersion"] = version
        if version >= 2:
            options["fuzzyCompare"] = as_bool(param(ctx, "fuzzyCompare", False))
        input1 = ctx.input_items(0)
        input2 = ctx.input_items(1) if ctx.input_count() > 1 else []
        disable_dot = as_bool(options.get("disableDotNotation"))
        if version < 2.2:
            input1 = check_input_fields(ctx, input1, [p["field1"] for p in pairs], disable_dot, "Input A")
            input2 = check_input_fields(ctx, input2, [p["field2"] for p in pairs], disable_dot, "Input B")
        else:
            input1, input2 = _drop_empty(input1), _drop_empty(input2)
        resolve = param(ctx, "resolve", "preferInput2" if version < 2.1 else "includeBoth")
        options["resolve"] = resolve
        if resolve == "mix":
            options["preferWhenMix"] = param(ctx, "preferWhenMix", "input1")
            options["exceptWhenMix"] = param(ctx, "exceptWhenMix", "")
        return find_matches(ctx, input1, input2, pairs, options)
