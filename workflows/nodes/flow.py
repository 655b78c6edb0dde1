"""Flow-control nodes: Merge (v1-v3), Split In Batches / Loop Over Items (v1-v3), Execute Workflow.

Ported from n8n's nodes-base (Merge/v1, Merge/v2, Merge/v3, SplitInBatches/v1-v3,
ExecuteWorkflow) so that the item shapes, ordering and pairedItem data match n8n.
"""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable
from typing import Any

from workflows.engine.contract import (
    Item,
    Items,
    Node,
    NodeContext,
    NodeError,
    NodeSpec,
    Outputs,
    ValidationIssue,
    register,
)

# --------------------------------------------------------------------------- lodash-like helpers

_PATH_TOKEN = re.compile(r"[^.\[\]]+|\[(\d+)\]")


def _path_parts(path: str) -> list[str | int]:
    parts: list[str | int] = []
    for match in _PATH_TOKEN.finditer(path):
        if match.group(1) is not None:
            parts.append(int(match.group(1)))
        else:
            token = match.group(0)
            parts.append(token)
    return parts


_UNDEFINED = object()


def lodash_get(obj: Any, path: str, default: Any = _UNDEFINED) -> Any:
    """``_.get``: dotted / bracketed path lookup; ``default`` (undefined) when missing."""
    value = obj
    for part in _path_parts(path):
        if isinstance(value, dict):
            key = str(part)
            if key not in value:
                return default
            value = value[key]
        elif isinstance(value, list):
            try:
                index = int(part)
            except (TypeError, ValueError):
                return default
            if not 0 <= index < len(value):
                return default
            value = value[index]
        else:
            return default
    return value


def lodash_merge(target: Any, *sources: Any) -> Any:
    """``_.merge``: deep merge of plain objects and arrays (arrays index by index)."""
    for source in sources:
        if source is None:
            continue
        target = _merge_value(target, source)
    return target


def _merge_value(target: Any, source: Any) -> Any:
    if isinstance(source, dict):
        base = target if isinstance(target, dict) else {}
        for key, value in source.items():
            if isinstance(value, (dict, list)):
                base[key] = _merge_value(base.get(key), value)
            else:
                base[key] = value
        return base
    if isinstance(source, list):
        base_list = target if isinstance(target, list) else []
        for index, value in enumerate(source):
            if index < len(base_list):
                base_list[index] = _merge_value(base_list[index], value) if isinstance(value, (dict, list)) else value
            else:
                base_list.append(_merge_value(None, value) if isinstance(value, (dict, list)) else value)
        return base_list
    return copy.deepcopy(source)


def _empty(value: Any) -> bool:
    return value is None or value == ""


def _merge_with_override_empty(deep: bool) -> Callable[..., dict[str, Any]]:
    def merge(target: dict[str, Any], *sources: dict[str, Any]) -> dict[str, Any]:
        result = copy.deepcopy(target)
        for source in sources:
            for key, value in (source or {}).items():
                if _empty(value) and key in result:
                    continue
                if deep and isinstance(value, (dict, list)):
                    result[key] = _merge_value(result.get(key), value)
                else:
                    result[key] = copy.deepcopy(value)
        return result
    return merge


def select_merge_method(clash: dict[str, Any]) -> Callable[..., dict[str, Any]]:
    """n8n's selectMergeMethod (Merge v2/v3 ``clashHandling.values``)."""
    mode = clash.get("mergeMode")
    if clash.get("overrideEmpty"):
        return _merge_with_override_empty(mode != "shallowMerge")
    if mode == "shallowMerge":
        def shallow(target: dict[str, Any], *sources: dict[str, Any]) -> dict[str, Any]:
            result = copy.deepcopy(target)
            for source in sources:
                result.update(copy.deepcopy(source or {}))
            return result
        return shallow
    return lambda target, *sources: lodash_merge({}, copy.deepcopy(target), *copy.deepcopy(list(sources)))


def _paired_list(paired: Any) -> list[Any]:
    if paired is None:
        return []
    if isinstance(paired, list):
        return list(paired)
    if isinstance(paired, int):
        return [{"item": paired}]
    return [paired]


def add_suffix(items: Items, suffix: str) -> Items:
    return [{**item, "json": {f"{k}_{suffix}": v for k, v in item.get("json", {}).items()}} for item in items]


def _merge_binary(*binaries: Any) -> dict[str, Any]:
    return lodash_merge({}, *[copy.deepcopy(b) for b in binaries if b])


def _strip_empty_binary(item: Item) -> Item:
    if "binary" in item and not item["binary"]:
        item = dict(item)
        item.pop("binary")
    return item


def fuzzy_compare(use_fuzzy: bool) -> Callable[[Any, Any], bool]:
    """n8n's fuzzyCompare: with fuzzy on, '3' equals 3 and 'true' equals true."""
    if not use_fuzzy:
        return _strict_equal

    def loose(a: Any, b: Any) -> bool:
        if a == b and type(a) is type(b):
            return True
        if isinstance(a, (int, float)) and not isinstance(a, bool) and isinstance(b, str):
            return _num_text(a) == b.strip()
        if isinstance(b, (int, float)) and not isinstance(b, bool) and isinstance(a, str):
            return _num_text(b) == a.strip()
        if isinstance(a, bool) and isinstance(b, str):
            return str(a).lower() == b.strip().lower()
        if isinstance(b, bool) and isinstance(a, str):
            return str(b).lower() == a.strip().lower()
        if isinstance(a, (dict, list)) and isinstance(b, (dict, list)):
            return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)
        if _empty(a) and _empty(b):
            return True
        return a == b
    return loose


def _strict_equal(a: Any, b: Any) -> bool:
    """lodash isEqual for JSON values: no type coercion (1 != '1', True != 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_strict_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def _num_text(value: float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def find_matches(input1: Items, input2: Items, fields: list[dict[str, str]], options: dict[str, Any]) -> dict[str, Any]:
    """n8n's findMatches (Merge v2/v3 combine by fields)."""
    equal = fuzzy_compare(bool(options.get("fuzzyCompare")))
    no_dots = bool(options.get("disableDotNotation"))
    multiple = options.get("multipleMatches") or "all"
    result: dict[str, Any] = {"matched": [], "matched2": [], "unmatched1": [], "unmatched2": []}
    matched_in_2: set[int] = set()

    def field(entry: Item, name: str) -> Any:
        data = entry.get("json", {})
        return data.get(name, _UNDEFINED) if no_dots else lodash_get(data, name)

    for entry1 in input1:
        lookup = {pair["field2"]: field(entry1, pair["field1"]) for pair in fields}
        if any(v is _UNDEFINED for v in lookup.values()):
            result["unmatched1"].append(entry1)
            continue
        found: list[tuple[int, Item]] = []
        for index, entry2 in enumerate(input2):
            if all(equal(expected, field(entry2, key)) for key, expected in lookup.items()):
                found.append((index, entry2))
                if multiple != "all":
                    break
        for index, _ in found:
            matched_in_2.add(index)
        matches = [entry for _, entry in found]
        if matches:
            if options.get("outputDataFrom") == "both" or options.get("joinMode") in ("enrichInput1", "enrichInput2"):
                for match in matches:
                    result["matched"].append({"entry": entry1, "matches": [match]})
            else:
                result["matched"].append({"entry": entry1, "matches": matches})
        else:
            result["unmatched1"].append(entry1)
    for index, entry in enumerate(input2):
        (result["matched2"] if index in matched_in_2 else result["unmatched2"]).append(entry)
    return result


def merge_matched(matched: list[dict[str, Any]], clash: dict[str, Any], join_mode: str | None = None) -> Items:
    """n8n's mergeMatched."""
    out: Items = []
    resolve = clash.get("resolveClash")
    merge = select_merge_method(clash)
    for match in matched:
        entry, matches = match["entry"], match["matches"]
        if resolve == "addSuffix":
            entry = add_suffix([entry], "1")[0]
            matches = add_suffix(matches, "2")
            data = merge(dict(entry.get("json", {})), *[m.get("json", {}) for m in matches])
            binary = _merge_binary(entry.get("binary"), *[m.get("binary") for m in matches])
            paired = _paired_list(entry.get("pairedItem")) + [p for m in matches for p in _paired_list(m.get("pairedItem"))]
        else:
            mode = resolve or ("preferInput1" if join_mode == "enrichInput2" else "preferInput2")
            if mode == "preferInput1":
                first, rest = matches[0], matches[1:]
                data = merge(dict(first.get("json", {})), *[m.get("json", {}) for m in rest], entry.get("json", {}))
                binary = _merge_binary(first.get("binary"), *[m.get("binary") for m in rest], entry.get("binary"))
                paired = _paired_list(first.get("pairedItem")) + [p for m in rest for p in _paired_list(m.get("pairedItem"))] \
                    + _paired_list(entry.get("pairedItem"))
            else:
                data = merge(dict(entry.get("json", {})), *[m.get("json", {}) for m in matches])
                binary = _merge_binary(entry.get("binary"), *[m.get("binary") for m in matches])
                paired = _paired_list(entry.get("pairedItem")) + [p for m in matches for p in _paired_list(m.get("pairedItem"))]
        out.append(_strip_empty_binary({"json": data, "binary": binary, "pairedItem": paired}))
    return out


def check_match_fields(pairs: Any, node: str) -> list[dict[str, str]]:
    if not isinstance(pairs, list):
        raise NodeError("parameter 'mergeByFields.values' must be a list of field pairs", node=node)
    if len(pairs) == 1 and pairs[0].get("field1", "") == "" and pairs[0].get("field2", "") == "":
        raise NodeError('You need to define at least one pair of fields in "Fields to Match" to match on', node=node)
    for index, pair in enumerate(pairs):
        if pair.get("field1", "") == "" or pair.get("field2", "") == "":
            raise NodeError(f'You need to define both fields in "Fields to Match" for pair {index + 1}, '
                            f"field 1 = '{pair.get('field1', '')}' field 2 = '{pair.get('field2', '')}'", node=node)
    return [{"field1": str(p["field1"]), "field2": str(p["field2"])} for p in pairs]


def check_input(items: Items, fields: list[str], no_dots: bool, label: str, node: str) -> Items:
    for name in fields:
        present = any((name in it.get("json", {})) if no_dots else lodash_get(it.get("json", {}), name) is not _UNDEFINED
                      for it in items)
        if not present:
            raise NodeError(f"Field '{name}' is not present in any of items in '{label}'", node=node)
    return items


def _add_source(items: Items, source: str) -> Items:
    return [{**item, "json": {**item.get("json", {}), "_source": source}} for item in items]


def _combine_pair(entry1: Item, entry2: Item, merge: Callable[..., dict[str, Any]]) -> Item:
    return _strip_empty_binary({
        "json": merge(entry1.get("json", {}), entry2.get("json", {})),
        "binary": _merge_binary(entry1.get("binary"), entry2.get("binary")),
        "pairedItem": [entry1.get("pairedItem"), entry2.get("pairedItem")],
    })


def _combine_by_fields(ctx: NodeContext, input1: Items, input2: Items, pairs: list[dict[str, str]],
                       join_mode: str, output_from: str, options: dict[str, Any]) -> Items:
    """Merge v2 'mergeByFields' / v3 'combineByFields' once both inputs hold items."""
    options = {**options, "joinMode": join_mode, "outputDataFrom": output_from}
    if not input1 or not input2:
        if not input1 and join_mode == "keepNonMatches" and output_from == "input1":
            return []
        if not input2 and join_mode == "keepNonMatches" and output_from == "input2":
            return []
        if join_mode == "keepMatches":
            return []
        if join_mode == "enrichInput1" and not input1:
            return []
        if join_mode == "enrichInput2" and not input2:
            return []
        return [*input1, *input2]
    if not pairs:
        return [] if join_mode in ("keepMatches", "keepEverything", "enrichInput2") else input1
    matches = find_matches(input1, input2, pairs, options)
    clash = (options.get("clashHandling") or {}).get("values") or {}
    if join_mode in ("keepMatches", "keepEverything"):
        output: Items = []
        if output_from == "input1":
            output = [m["entry"] for m in matches["matched"]]
        elif output_from == "input2":
            output = matches["matched2"]
        else:
            output = merge_matched(matches["matched"], clash)
        if join_mode == "keepEverything":
            unmatched1, unmatched2 = matches["unmatched1"], matches["unmatched2"]
            if clash.get("resolveClash") == "addSuffix":
                unmatched1, unmatched2 = add_suffix(unmatched1, "1"), add_suffix(unmatched2, "2")
            output = [*output, *unmatched1, *unmatched2]
        return output
    if join_mode == "keepNonMatches":
        if output_from == "input1":
            return matches["unmatched1"]
        if output_from == "input2":
            return matches["unmatched2"]
        return [*_add_source(matches["unmatched1"], "input1"), *_add_source(matches["unmatched2"], "input2")]
    if join_mode in ("enrichInput1", "enrichInput2"):
        merged = merge_matched(matches["matched"], clash, join_mode)
        rest = matches["unmatched1"] if join_mode == "enrichInput1" else matches["unmatched2"]
        if clash.get("resolveClash") == "addSuffix":
            rest = add_suffix(rest, "1" if join_mode == "enrichInput1" else "2")
        return [*merged, *rest]
    raise NodeError(f"unknown output type (joinMode) '{join_mode}'", node=ctx.node.name)


def _options(ctx: NodeContext) -> dict[str, Any]:
    options = ctx.param("options", 0, {})
    if not isinstance(options, dict):
        raise NodeError("parameter 'options' must be an object", node=ctx.node.name)
    return options


def _clash(options: dict[str, Any]) -> dict[str, Any]:
    clash = (options.get("clashHandling") or {})
    values = clash.get("values") if isinstance(clash, dict) else None
    return values if isinstance(values, dict) else {}


# --------------------------------------------------------------------------- Merge


@register
class Merge(Node):
    """Merge: waits for its inputs and combines them (append, by fields, by position, cross join, choose branch)."""

    type = "n8n-nodes-base.merge"
    versions = (1, 2, 2.1, 3, 3.1, 3.2)

    def input_count(self, node: NodeSpec) -> int:
        if float(node.type_version) >= 3:
            count = node.parameters.get("numberInputs", 2)
            try:
                return max(2, int(count))
            except (TypeError, ValueError):
                return 2
        return 2

    def required_inputs(self, node: NodeSpec) -> int | list[int] | None:
        """Inputs that must have data before the node runs in v1 order (n8n's ``requiredInputs``)."""
        version = float(node.type_version)
        if version < 2:
            return None
        mode = node.parameters.get("mode", "append")
        if mode == "chooseBranch":
            return list(range(self.input_count(node)))
        return 1

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        version = float(node.type_version)
        mode = node.parameters.get("mode", "append")
        modes = {1: ("append", "keepKeyMatches", "mergeByIndex", "mergeByKey", "multiplex", "passThrough",
                     "removeKeyMatches", "wait"),
                 2: ("append", "combine", "chooseBranch"),
                 3: ("append", "combine", "combineBySql", "chooseBranch")}[3 if version >= 3 else 2 if version >= 2 else 1]
        if isinstance(mode, str) and not mode.startswith("=") and mode not in modes:
            issues.append(ValidationIssue(f"unknown mode '{mode}' (expected one of: {', '.join(modes)})", node.name, "mode"))
        if mode == "combineBySql":
            issues.append(ValidationIssue("combine by SQL query is not supported here", node.name, "mode"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        version = float(ctx.node.type_version)
        if version >= 3:
            return self._v3(ctx)
        if version >= 2:
            return self._v2(ctx)
        return self._v1(ctx)

    # -- v1

    def _v1(self, ctx: NodeContext) -> Outputs | None:
        mode = ctx.param("mode", 0, "append")
        in1, in2 = ctx.input_items(0), ctx.input_items(1)
        if mode == "append":
            return [[*in1, *in2]]
        if mode == "mergeByIndex":
            join = ctx.param("join", 0, "left")
            if not in1:
                return [[]] if join in ("inner", "left") else [in2]
            if not in2:
                return [in1] if join in ("left", "outer") else [[]]
            count = len(in1)
            if join == "inner":
                count = min(len(in1), len(in2))
            elif join == "outer":
                count = max(len(in1), len(in2))
            out: Items = []
            for i in range(count):
                if i >= len(in1):
                    out.append(in2[i])
                    continue
                if i >= len(in2):
                    out.append(in1[i])
                    continue
                item: Item = {"json": {**in1[i].get("json", {}), **in2[i].get("json", {})},
                              "pairedItem": [in1[i].get("pairedItem"), in2[i].get("pairedItem")]}
                if in1[i].get("binary") is not None or in2[i].get("binary") is not None:
                    item["binary"] = {**(in1[i].get("binary") or {}), **(in2[i].get("binary") or {})}
                out.append(item)
            return [out]
        if mode == "multiplex":
            return [[{"json": {**a.get("json", {}), **b.get("json", {})}, "pairedItem": [a.get("pairedItem"), b.get("pairedItem")]}
                     for a in in1 for b in in2]]
        if mode in ("keepKeyMatches", "mergeByKey", "removeKeyMatches"):
            return [self._v1_keys(ctx, mode, in1, in2)]
        if mode == "passThrough":
            return [in1 if ctx.param("output", 0, "input1") == "input1" else in2]
        if mode == "wait":
            return [[{"json": {}, "pairedItem": [{"item": i} for i in range(len(in1))]}]]
        raise NodeError(f"unknown mode '{mode}'", node=ctx.node.name)

    def _v1_keys(self, ctx: NodeContext, mode: str, in1: Items, in2: Items) -> Items:
        prop1 = ctx.param("propertyName1", 0, "")
        prop2 = ctx.param("propertyName2", 0, "")
        overwrite = ctx.param("overwrite", 0, "always")
        if not in2 or not prop1 or not prop2:
            return [] if mode == "keepKeyMatches" else in1
        copy_data: dict[str, Item] = {}
        for entry in in2:
            key = lodash_get(entry.get("json", {}), prop2, None)
            if not key:
                continue
            copy_data[_key_text(key)] = entry
        out: Items = []
        for entry in in1:
            ref = lodash_get(entry.get("json", {}), prop1)
            if ref is _UNDEFINED or (ref is not None and not isinstance(ref, (str, int, float))) or isinstance(ref, bool):
                if mode == "removeKeyMatches":
                    out.append(entry)
                continue
            key = _key_text(ref)
            if ref is not None and key in copy_data:
                if mode == "removeKeyMatches":
                    continue
                if mode == "mergeByKey":
                    entry = copy.deepcopy(entry)
                    for k, value in copy_data[key].get("json", {}).items():
                        if k == prop2:
                            continue
                        current = entry["json"].get(k, _UNDEFINED)
                        if overwrite == "always" or (overwrite == "undefined" and current is _UNDEFINED) or \
                                (overwrite == "blank" and (current is _UNDEFINED or current is None or current == "")):
                            entry["json"][k] = value
                else:
                    out.append(entry)
                    continue
            elif mode == "removeKeyMatches":
                out.append(entry)
                continue
            if mode == "mergeByKey":
                out.append(entry)
        return out

    # -- v2 / v2.1

    def _v2(self, ctx: NodeContext) -> Outputs | None:
        mode = ctx.param("mode", 0, "append")
        in1, in2 = ctx.input_items(0), ctx.input_items(1)
        if mode == "append":
            return [[*in1, *in2]]
        if mode == "chooseBranch":
            if ctx.param("chooseBranchMode", 0, "waitForBoth") != "waitForBoth":
                raise NodeError("unknown output type (chooseBranchMode)", node=ctx.node.name)
            return [self._choose(ctx.param("output", 0, "input1"), [in1, in2])]
        if mode != "combine":
            raise NodeError(f"unknown mode '{mode}'", node=ctx.node.name)
        combination = ctx.param("combinationMode", 0, "mergeByFields")
        options = _options(ctx)
        clash = _clash(options)
        if combination == "multiplex":
            return [self._multiplex(in1, in2, clash)]
        if combination == "mergeByPosition":
            return [self._by_position([in1, in2], clash, bool(options.get("includeUnpaired", False)))]
        if combination == "mergeByFields":
            pairs = check_match_fields(ctx.param("mergeByFields.values", 0, []), ctx.node.name)
            join_mode = ctx.param("joinMode", 0, "keepMatches")
            output_from = ctx.param("outputDataFrom", 0, "both")
            if float(ctx.node.type_version) < 2.1:
                no_dots = bool(options.get("disableDotNotation", False))
                in1 = check_input(in1, [p["field1"] for p in pairs], no_dots, "Input 1", ctx.node.name)
                in2 = check_input(in2, [p["field2"] for p in pairs], no_dots, "Input 2", ctx.node.name)
            return [_combine_by_fields(ctx, in1, in2, pairs, join_mode, output_from, options)]
        raise NodeError(f"unknown combination mode '{combination}'", node=ctx.node.name)

    @staticmethod
    def _choose(output: str, inputs: list[Items]) -> Items:
        if output == "input1":
            return inputs[0]
        if output == "input2":
            return inputs[1]
        if output == "empty":
            paired = [p for items in inputs for it in items for p in _paired_list(it.get("pairedItem"))]
            return [{"json": {}, "pairedItem": paired}]
        raise NodeError(f"unknown output '{output}' (use input1, input2 or empty)")

    @staticmethod
    def _multiplex(in1: Items, in2: Items, clash: dict[str, Any]) -> Items:
        resolve = clash.get("resolveClash")
        if resolve == "preferInput1":
            in1, in2 = in2, in1
        if resolve == "addSuffix":
            in1, in2 = add_suffix(in1, "1"), add_suffix(in2, "2")
        merge = select_merge_method(clash)
        return [_combine_pair(a, b, merge) for a in in1 for b in in2]

    @staticmethod
    def _by_position(inputs: list[Items], clash: dict[str, Any], include_unpaired: bool) -> Items:
        if any(not items for items in inputs):
            return [it for items in inputs for it in items]
        resolve = clash.get("resolveClash")
        if resolve == "preferInput1":
            inputs = list(reversed(inputs))
        if resolve == "addSuffix":
            inputs = [add_suffix(items, str(i + 1)) for i, items in enumerate(inputs)]
        lengths = [len(items) for items in inputs]
        count = max(lengths) if include_unpaired else min(lengths)
        merge = select_merge_method(clash)
        out: Items = []
        for i in range(count):
            present = [items[i] for items in inputs if i < len(items)]
            if len(present) == 1:
                out.append(present[0])
                continue
            out.append(_strip_empty_binary({
                "json": merge(present[0].get("json", {}), *[p.get("json", {}) for p in present[1:]]),
                "binary": _merge_binary(*[p.get("binary") for p in present]),
                "pairedItem": [p.get("pairedItem") for p in present],
            }))
        return out

    # -- v3

    def _v3(self, ctx: NodeContext) -> Outputs | None:
        mode = ctx.param("mode", 0, "append")
        count = self.input_count(ctx.node)
        inputs = [ctx.input_items(i) for i in range(count)]
        if mode == "append":
            return [[it for items in inputs for it in items]]
        if mode == "chooseBranch":
            output = ctx.param("output", 0, "specifiedInput")
            if output == "empty":
                return [self._choose("empty", inputs)]
            use = ctx.param("useDataOfInput", 0, 1)
            try:
                index = int(use) - 1
            except (TypeError, ValueError) as exc:
                raise NodeError(f"parameter 'useDataOfInput' must be an input number, got {use!r}", node=ctx.node.name) from exc
            if not 0 <= index < count:
                raise NodeError(f"The input {use} is not allowed. The node has only {count} inputs.", node=ctx.node.name)
            return [inputs[index]]
        if mode == "combineBySql":
            raise NodeError("combine by SQL query is not supported here", node=ctx.node.name)
        if mode != "combine":
            raise NodeError(f"unknown mode '{mode}'", node=ctx.node.name)
        combine_by = ctx.param("combineBy", 0, "combineByFields")
        options = _options(ctx)
        clash = _clash(options)
        if combine_by == "combineAll":
            return [self._multiplex(inputs[0], inputs[1], clash)]
        if combine_by == "combineByPosition":
            return [self._by_position(inputs, clash, bool(options.get("includeUnpaired", False)))]
        if combine_by == "combineByFields":
            if ctx.param("advanced", 0, False):
                pairs = check_match_fields(ctx.param("mergeByFields.values", 0, []), ctx.node.name)
            else:
                text = ctx.param("fieldsToMatchString", 0, "")
                names = [n.strip() for n in str(text).split(",") if n.strip()]
                if not names:
                    raise NodeError('You need to define at least one field in "Fields to Match"', node=ctx.node.name)
                pairs = [{"field1": n, "field2": n} for n in names]
            join_mode = ctx.param("joinMode", 0, "keepMatches")
            output_from = ctx.param("outputDataFrom", 0, "both")
            return [_combine_by_fields(ctx, inputs[0], inputs[1], pairs, join_mode, output_from, options)]
        raise NodeError(f"unknown combine mode '{combine_by}'", node=ctx.node.name)


def _key_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------- Split In Batches


def _with_source_overwrite(item: Item, source: Any) -> Item:
    paired = item.get("pairedItem")
    if paired is None:
        item["pairedItem"] = {"item": 0, "sourceOverwrite": source}
    elif isinstance(paired, list):
        item["pairedItem"] = [{**(p if isinstance(p, dict) else {"item": p}), "sourceOverwrite": source} for p in paired]
    else:
        item["pairedItem"] = {**(paired if isinstance(paired, dict) else {"item": paired}), "sourceOverwrite": source}
    return item


@register
class SplitInBatches(Node):
    """Split In Batches (v1, v2) / Loop Over Items (v3): hands out ``batchSize`` items per run.

    v1: one output, ends the branch when done. v2: outputs [loop, done]. v3: outputs [done, loop].
    The node's context (``$node[...].context``) holds currentRunIndex, maxRunIndex, noItemsLeft, done.
    """

    type = "n8n-nodes-base.splitInBatches"
    versions = (1, 2, 3)
    allows_cycles = True

    def output_count(self, node: NodeSpec) -> int:
        return 1 if float(node.type_version) < 2 else 2

    def execute(self, ctx: NodeContext) -> Outputs | None:
        version = float(ctx.node.type_version)
        items = ctx.input_items(0)
        state = ctx.state
        context = state.setdefault("context", {})
        batch_size = ctx.param("batchSize", 0, 10)
        try:
            batch_size = int(batch_size)
        except (TypeError, ValueError) as exc:
            raise NodeError(f"parameter 'batchSize' must be a number, got {batch_size!r}", node=ctx.node.name) from exc
        if batch_size < 1:
            raise NodeError("parameter 'batchSize' must be at least 1", node=ctx.node.name)
        options = ctx.param("options", 0, {}) or {}
        get_source = getattr(ctx, "input_source", None)
        source = get_source(0) if callable(get_source) else None
        reset = options.get("reset") is True
        if version >= 3 and context.get("done") is True and items:
            reset = True
        returned: Items
        if "items" not in state or reset:
            context["currentRunIndex"] = 0
            context["maxRunIndex"] = -(-len(items) // batch_size)
            state["sourceData"] = copy.deepcopy(source)
            returned = items[:batch_size]
            state["items"] = items[batch_size:]
            state["processedItems"] = []
        else:
            context["currentRunIndex"] = context.get("currentRunIndex", 0) + 1
            returned = state["items"][:batch_size]
            state["items"] = state["items"][batch_size:]
            overwrite = state.get("sourceData")
            if version >= 2:
                state["processedItems"] = [*state["processedItems"],
                                           *[{**it, "pairedItem": {"sourceOverwrite": source, "item": i}}
                                             for i, it in enumerate(items)]]
            returned = [_with_source_overwrite(copy.deepcopy(it), overwrite) for it in returned]
        context["noItemsLeft"] = len(state["items"]) == 0
        if not returned:
            context["done"] = True
            if version < 2:
                return None
            processed = copy.deepcopy(state["processedItems"])
            return [[], processed] if version < 3 else [processed, []]
        context["done"] = False
        if version < 2:
            return [returned]
        return [returned, []] if version < 3 else [[], returned]


# --------------------------------------------------------------------------- Execute Workflow


@register
class ExecuteWorkflow(Node):
    """Execute Workflow: runs another workflow (inline JSON or stored in Hive) with this node's items."""

    type = "n8n-nodes-base.executeWorkflow"

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        source = node.parameters.get("source", "database")
        if source in ("localFile", "url"):
            issues.append(ValidationIssue(f"source '{source}' is not allowed here; use 'database' (a Hive workflow) or "
                                          f"'parameter' (inline JSON)", node.name, "source"))
        elif isinstance(source, str) and not source.startswith("=") and source not in ("database", "parameter"):
            issues.append(ValidationIssue(f"unknown source '{source}'", node.name, "source"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = ctx.input_items(0)
        version = float(ctx.node.type_version)
        mode = ctx.param("mode", 0, "once") if version >= 1.1 else "once"
        options = ctx.param("options", 0, {}) or {}
        wait = options.get("waitForSubWorkflow", True) is not False
        if mode == "each":
            out: Items = []
            for i, item in enumerate(items):
                try:
                    workflow = self._workflow(ctx, i)
                    result = ctx.execute_workflow(workflow, [item], wait=wait)
                except NodeError as exc:
                    if ctx.node.continue_on_fail:
                        out.append({"json": {"error": exc.message}, "pairedItem": {"item": i}})
                        continue
                    raise
                if not wait:
                    out.append({**item, "pairedItem": {"item": i}})
                    continue
                out.extend({**res, "pairedItem": {"item": i}} for res in result)
            return [out]
        if mode != "once":
            raise NodeError(f"unknown mode '{mode}' (use 'once' or 'each')", node=ctx.node.name)
        try:
            workflow = self._workflow(ctx, 0)
            result = ctx.execute_workflow(workflow, items, wait=wait)
        except NodeError as exc:
            if ctx.node.continue_on_fail:
                return [[{"json": {"error": exc.message}, "pairedItem": [{"item": i} for i in range(len(items))]}]]
            raise
        if not wait:
            return [items]
        fallback = [{"item": i} for i in range(len(items))]
        same_length = len(result) == len(items)
        for index, item in enumerate(result):
            item["pairedItem"] = {"item": index} if same_length else fallback
        return [result]

    def _workflow(self, ctx: NodeContext, item_index: int) -> dict[str, Any]:
        source = ctx.param("source", item_index, "database")
        if source == "parameter":
            raw = ctx.param("workflowJson", item_index, "")
            if isinstance(raw, str):
                try:
                    raw = json.loads(raw)
                except json.JSONDecodeError as exc:
                    raise NodeError(f"The workflow JSON is not valid JSON: {exc.msg} (line {exc.lineno})",
                                    node=ctx.node.name) from exc
            if not isinstance(raw, dict):
                raise NodeError("parameter 'workflowJson' must be a workflow object", node=ctx.node.name)
            return raw
        if source == "database":
            reference = ctx.param("workflowId", item_index, "")
            if isinstance(reference, dict):
                reference = reference.get("value", "")
            reference = str(reference or "").strip()
            if not reference:
                raise NodeError("parameter 'workflowId' is required to run a stored workflow", node=ctx.node.name)
            workflow = ctx.services.load_workflow(reference)
            if not isinstance(workflow, dict):
                raise NodeError(f"workflow '{reference}' could not be loaded", node=ctx.node.name)
            return workflow
        if source in ("localFile", "url"):
            raise NodeError(f"source '{source}' is not allowed here; use 'database' (a Hive workflow) or 'parameter' "
                            f"(inline JSON)", node=ctx.node.name)
        raise NodeError(f"unknown source '{source}'", node=ctx.node.name)
