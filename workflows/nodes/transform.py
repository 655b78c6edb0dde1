"""n8n's Transform nodes: Sort, Limit, Remove Duplicates, Split Out, Aggregate, Summarize.

n8n implements these with lodash (``get``/``set``/``isEqual``/``lt``) and plain JavaScript
objects, so results depend on JavaScript semantics: key order of objects (integer-like keys
first), ``String(value)``, loose ``<`` comparisons of mixed types. The helpers below reproduce
those semantics on JSON data so outputs match n8n's item for item. Item Lists (item_lists.py)
reuses the same operations with its per-version parameter names.
"""
from __future__ import annotations

import copy
import json
import math
import random
import re
from collections.abc import Callable
from functools import cmp_to_key
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
from workflows.engine.jsvalues import (
    UNDEFINED,
    flatten_keys,
    is_number,
    js_key_order,
    js_keys,
    js_string,
    js_typeof,
    json_stringify,
    lodash_get,
    lodash_pick,
    lodash_set,
    lodash_unset,
)

DOT_NOTATION_HINT = "If you're trying to use a nested field, make sure you turn off 'disable dot notation' in the node options"

# --------------------------------------------------------------------------- JavaScript semantics


_JS_WS = " \t\n\r\v\f\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_DECIMAL = re.compile(r"[+-]?(?:Infinity|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")


def string_to_number(text: str) -> float:
    """ECMAScript StringToNumber."""
    text = text.strip(_JS_WS)
    if text == "":
        return 0
    lower = text.lower()
    for prefix, base in (("0x", 16), ("0o", 8), ("0b", 2)):
        if lower.startswith(prefix):
            try:
                return int(text[2:], base)
            except ValueError:
                return math.nan
    if not _DECIMAL.fullmatch(text):
        return math.nan
    number = float(text.replace("Infinity", "inf"))
    return int(number) if number.is_integer() and abs(number) < 2**53 else number


def to_primitive(value: Any) -> Any:
    """ToPrimitive(value, number) for JSON data: arrays and objects become their string form."""
    if isinstance(value, (list, dict)):
        return js_string(value)
    return value


def to_number(value: Any) -> float:
    """ECMAScript ToNumber."""
    value = to_primitive(value)
    if value is UNDEFINED:
        return math.nan
    if value is None:
        return 0
    if isinstance(value, bool):
        return 1 if value else 0
    if is_number(value):
        return value
    return string_to_number(value)


def lodash_to_number(value: Any) -> float:
    """lodash ``toNumber``: like ToNumber but signed hex strings are NaN."""
    if is_number(value):
        return value
    value = to_primitive(value)
    if isinstance(value, str):
        trimmed = value.strip(_JS_WS)
        if re.fullmatch(r"[-+]0x[0-9a-f]+", trimmed, re.IGNORECASE):
            return math.nan
        return string_to_number(trimmed)
    return to_number(value)


def _utf16(text: str) -> bytes:
    return text.encode("utf-16-be", "surrogatepass")


def lodash_lt(a: Any, b: Any) -> bool:
    """lodash ``lt``: string comparison of two strings, otherwise numeric (NaN compares false)."""
    if isinstance(a, str) and isinstance(b, str):
        return _utf16(a) < _utf16(b)
    x, y = lodash_to_number(a), lodash_to_number(b)
    return x < y  # NaN -> False


def js_less_than(a: Any, b: Any) -> bool:
    """JavaScript ``a < b`` (Abstract Relational Comparison)."""
    if a is UNDEFINED or b is UNDEFINED:
        return False
    pa, pb = to_primitive(a), to_primitive(b)
    if isinstance(pa, str) and isinstance(pb, str):
        return _utf16(pa) < _utf16(pb)
    return to_number(pa) < to_number(pb)


def is_equal(a: Any, b: Any) -> bool:
    """lodash ``isEqual`` for JSON data (booleans are not numbers; NaN equals NaN)."""
    if a is UNDEFINED or b is UNDEFINED:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if is_number(a) and is_number(b):
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return False
        return all(k in b and is_equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(is_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b) and not (a is None and b is None):
        return False
    return a == b


def same_value_zero_key(value: Any) -> Any:
    """A hashable key so that two values share it iff JavaScript's Set treats them as one."""
    if isinstance(value, (dict, list)):
        return ("ref", id(value))
    if value is UNDEFINED:
        return ("undefined",)
    if isinstance(value, bool):
        return ("boolean", value)
    if is_number(value):
        if isinstance(value, float) and math.isnan(value):
            return ("number", "NaN")
        return ("number", float(value))
    return (js_typeof(value), value)


def is_empty_value(value: Any) -> bool:
    """lodash ``isEmpty`` for JSON data."""
    if isinstance(value, (dict, list, str)):
        return len(value) == 0
    return True


# --------------------------------------------------------------------------- lodash paths


def value_getter(disable_dot_notation: bool) -> Callable[[Any, str], Any]:
    if disable_dot_notation:
        return lambda obj, field: obj.get(field, UNDEFINED) if isinstance(obj, dict) else UNDEFINED
    return lambda obj, field: lodash_get(obj, field)


def to_json_value(value: Any) -> Any:
    """Replace undefined/NaN (which n8n serialises as null inside lists) so output stays JSON."""
    if value is UNDEFINED:
        return None
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items() if v is not UNDEFINED}
    return value


# --------------------------------------------------------------------------- parameters


def prepare_fields_array(fields: Any, label: str, node: str | None = None) -> list[str]:
    """Transform/utils ``prepareFieldsArray``: 'a, b' or ['a', 'b'] -> ['a', 'b']."""
    if fields is None or fields is UNDEFINED:
        return []
    if isinstance(fields, str):
        return [f.strip() for f in fields.split(",") if f.strip() != ""]
    if isinstance(fields, list):
        return [str(f) for f in fields]
    raise NodeError(f"The '{label}' parameter must be a string of fields separated by commas or an array of strings.",
                    node=node)


def field_name_list(value: Any) -> list[str]:
    """Item Lists v1/v2 field lists: ``{"fields": [{"fieldName": "a"}]}``."""
    if isinstance(value, dict):
        value = value.get("fields", [])
    if not isinstance(value, list):
        return []
    return [str(entry.get("fieldName", "")) for entry in value if isinstance(entry, dict)]


def as_bool(value: Any) -> bool:
    return bool(value) and value is not UNDEFINED


def param(ctx: NodeContext, path: str, default: Any, item_index: int = 0) -> Any:
    """``ctx.param`` with n8n's default when the parameter is absent."""
    return ctx.param(path, item_index, default)


def _first_items(ctx: NodeContext) -> Items:
    return ctx.input_items(0)


def _error(ctx: NodeContext, message: str, description: str | None = None, item_index: int | None = None) -> NodeError:
    return NodeError(message, description=description, item_index=item_index, node=ctx.node.name)


# --------------------------------------------------------------------------- Sort


def sort_simple(ctx: NodeContext, items: Items, sort_fields: Any, disable_dot_notation: bool) -> Items:
    """Sort by fields like n8n: strings compared case-insensitively, mixed types via lodash ``lt``."""
    if not isinstance(sort_fields, list) or not sort_fields:
        raise _error(ctx, "No sorting specified. Please add a field to sort by")
    get_value = value_getter(disable_dot_notation)
    fields: list[tuple[str, int]] = []
    for entry in sort_fields:
        name = str((entry or {}).get("fieldName", ""))
        order = (entry or {}).get("order", "ascending")
        found = any((name in item["json"]) if disable_dot_notation else get_value(item["json"], name) is not UNDEFINED
                    for item in items)
        if not found:
            description = DOT_NOTATION_HINT if disable_dot_notation and "." in name else None
            raise _error(ctx, f"Couldn't find the field '{name}' in the input data", description)
        fields.append((name, 1 if order == "ascending" else -1))

    def lowered(item: Item, name: str) -> Any:
        value = get_value(item["json"], name)
        return value.lower() if isinstance(value, str) else value

    def compare(a: Item, b: Item) -> int:
        for name, direction in fields:
            va, vb = lowered(a, name), lowered(b, name)
            if not is_equal(va, vb):
                return -direction if lodash_lt(va, vb) else direction
        return 0

    return sorted(items, key=cmp_to_key(compare))


_RETURN_RE = re.compile(r"\breturn\b")


def sort_by_code(ctx: NodeContext, items: Items, code: str) -> Items:
    """Sort with a JavaScript comparator body (variables ``a`` and ``b``), run in the V8 sandbox."""
    if not isinstance(code, str) or not _RETURN_RE.search(code):
        raise _error(ctx, "Sort code doesn't return. Please add a 'return' statement to your code")
    evaluator = getattr(ctx, "evaluator", None)
    if evaluator is None:
        raise _error(ctx, "Sort type 'code' needs the JavaScript sandbox, which is not available in this engine")
    # new Function gives the comparator sloppy-mode semantics like n8n's vm (e.g. `fieldName = 'id'`
    # without a declaration) even if the sandbox runs strict code; inline function if it is blocked.
    script = (
        "const __pairs = items.map((item, index) => ({ item, index }));\n"
        "let __compare;\n"
        f"try {{ __compare = new Function('a', 'b', {json.dumps(code)}); }}\n"
        "catch (e) { if (e instanceof SyntaxError) throw e; __compare = null; }\n"
        "if (!__compare) { __compare = function (a, b) {\n" + code + "\n}; }\n"
        "__pairs.sort((x, y) => __compare(x.item, y.item));\n"
        "return __pairs.map((p) => ({ json: { __n8nSortIndex: p.index } }));"
    )
    data = ctx.expression_data(0, set())
    data = dict(data)
    data["input"] = {"all": items, "item": items[0] if items else None}
    inputs = list(data.get("inputs") or [items])
    inputs[0] = items
    data["inputs"] = inputs
    result = evaluator.run_code(script, data, mode="function")
    order: list[int] = []
    for entry in result if isinstance(result, list) else []:
        payload = entry.get("json", entry) if isinstance(entry, dict) else None
        index = payload.get("__n8nSortIndex") if isinstance(payload, dict) else None
        if not is_number(index) or not 0 <= int(index) < len(items):
            raise _error(ctx, "Sort code returned an unexpected result")
        order.append(int(index))
    if sorted(order) != list(range(len(items))):
        raise _error(ctx, "Sort code returned an unexpected result")
    return [items[i] for i in order]


def sort_items(ctx: NodeContext, items: Items, *, sort_type: str, sort_fields: Any, code: Any,
               disable_dot_notation: bool) -> Items:
    items = list(items)
    if sort_type == "random":
        random.shuffle(items)
        return items
    if sort_type == "simple":
        return sort_simple(ctx, items, sort_fields, disable_dot_notation)
    if sort_type == "code":
        return sort_by_code(ctx, items, code)
    raise _error(ctx, f"The sort type '{sort_type}' is not supported", "Use 'simple', 'random' or 'code'")


@register
class SortNode(Node):
    """n8n-nodes-base.sort: reorder items."""

    type = "n8n-nodes-base.sort"
    versions = (1,)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        sort_type = node.parameters.get("type", "simple")
        if isinstance(sort_type, str) and not sort_type.startswith("=") and sort_type not in ("simple", "random", "code"):
            issues.append(ValidationIssue(f"unknown sort type '{sort_type}'", node.name, "type"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = _first_items(ctx)
        sort_type = param(ctx, "type", "simple")
        return [sort_items(
            ctx, items, sort_type=sort_type,
            sort_fields=(param(ctx, "sortFieldsUi", {}) or {}).get("sortField") if sort_type == "simple" else None,
            code=param(ctx, "code", "") if sort_type == "code" else None,
            disable_dot_notation=as_bool(param(ctx, "options.disableDotNotation", False)),
        )]


# --------------------------------------------------------------------------- Limit


def limit_items(ctx: NodeContext, items: Items, max_items: Any, keep: str) -> Items:
    number = to_number(max_items)
    if isinstance(number, float) and math.isnan(number):
        raise _error(ctx, f"'Max Items' must be a number, got '{js_string(max_items)}'")
    if number > len(items):
        return list(items)
    count = max(int(number), 0)
    if keep == "firstItems":
        return list(items[:count])
    return list(items[len(items) - count:]) if count else []


@register
class LimitNode(Node):
    """n8n-nodes-base.limit: keep the first or last N items."""

    type = "n8n-nodes-base.limit"
    versions = (1,)

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = _first_items(ctx)
        return [limit_items(ctx, items, param(ctx, "maxItems", 1), param(ctx, "keep", "firstItems"))]


# --------------------------------------------------------------------------- Remove Duplicates


_TYPE_RANK = {"string": 1, "number": 2, "bigint": 3, "boolean": 4, "symbol": 5, "undefined": 6, "object": 7, "function": 8}


def type_to_number(value: Any) -> int:
    if isinstance(value, list):
        return 9
    if value is None:
        return 10
    return _TYPE_RANK[js_typeof(value)]


def remove_duplicate_items(ctx: NodeContext, items: Items, *, compare: str, fields_to_exclude: list[str],
                           fields_to_compare: list[str], disable_dot_notation: bool, remove_other_fields: bool,
                           allow_null: bool = False, type_rank: bool = False, check_types: bool = True,
                           type_detail: bool = False) -> Items:
    """n8n's ``removeDuplicateInputItems`` (sort by the compared keys, then drop neighbours that match)."""
    if not items:
        return []

    def keys_of(json_data: dict[str, Any]) -> list[str]:
        return js_keys(json_data) if disable_dot_notation else list(flatten_keys(json_data).keys())

    keys = keys_of(items[0]["json"])
    for item in items:
        for key in keys_of(item["json"]):
            if key not in keys:
                keys.append(key)
    if compare == "allFieldsExcept":
        if not fields_to_exclude:
            raise _error(ctx, "No fields specified. Please add a field to exclude from comparison")
        if not disable_dot_notation:
            keys = list(flatten_keys(items[0]["json"]).keys())
        keys = [k for k in keys if k not in fields_to_exclude]
    elif compare == "selectedFields":
        if not fields_to_compare:
            raise _error(ctx, "No fields specified. Please add a field to compare on")
        keys = [k.strip() for k in fields_to_compare]
    elif compare != "allFields":
        raise _error(ctx, f"The value '{compare}' of 'Compare' is not supported")

    get_value = value_getter(disable_dot_notation)
    indexed = list(enumerate(items))

    def cmp(a: tuple[int, Item], b: tuple[int, Item]) -> int:
        for key in keys:
            va, vb = get_value(a[1]["json"], key), get_value(b[1]["json"], key)
            if type_rank:
                ra, rb = type_to_number(va), type_to_number(vb)
                if ra != rb:
                    return ra - rb
            if not is_equal(va, vb):
                return -1 if lodash_lt(va, vb) else 1
        return 0

    indexed.sort(key=cmp_to_key(cmp))

    for key in keys:
        seen_type: str | None = None
        for position, (_, item) in enumerate(indexed):
            if key == "":
                raise _error(ctx, "Name of field to compare is blank")
            value = get_value(item["json"], key)
            if value is None and allow_null:
                continue
            if value is UNDEFINED:
                description = DOT_NOTATION_HINT if disable_dot_notation and "." in key else None
                raise _error(ctx, f"'{key}' field is missing from some input items", description)
            value_type = js_typeof(value)
            if check_types and seen_type is not None and seen_type != value_type:
                description = "The type of this field varies between items"
                if type_detail:
                    description += f", in item [{position - 1}] it's a {seen_type} and in item [{position}] it's a {value_type} "
                raise _error(ctx, f"'{key}' isn't always the same type", description)
            seen_type = value_type

    removed: set[int] = set()
    if indexed:
        reference = indexed[0][1]
        for original, item in indexed[1:]:
            if all(is_equal(get_value(item["json"], k), get_value(reference["json"], k)) for k in keys):
                removed.add(original)
            else:
                reference = item
    kept = [item for index, item in enumerate(items) if index not in removed]
    if remove_other_fields:
        kept = [{"json": lodash_pick(item["json"], keys), "pairedItem": {"item": index}} for index, item in enumerate(kept)]
    return kept


@register
class RemoveDuplicatesNode(Node):
    """n8n-nodes-base.removeDuplicates v1/v1.1: drop items whose compared fields repeat within the input."""

    type = "n8n-nodes-base.removeDuplicates"
    versions = (1, 1.1, 2)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        operation = node.parameters.get("operation", "removeDuplicateInputItems")
        if float(node.type_version) >= 2 and operation != "removeDuplicateInputItems":
            issues.append(ValidationIssue(
                f"operation '{operation}' keeps history across executions, which this engine does not store; "
                "use 'removeDuplicateInputItems'", node.name, "operation"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = _first_items(ctx)
        version = float(ctx.node.type_version)
        if version >= 2:
            operation = param(ctx, "operation", "removeDuplicateInputItems")
            if operation != "removeDuplicateInputItems":
                raise _error(ctx, f"The operation '{operation}' is not supported",
                             "It keeps deduplication history across executions, which this engine does not store")
        return [remove_duplicate_items(
            ctx, items,
            compare=param(ctx, "compare", "allFields"),
            fields_to_exclude=prepare_fields_array(param(ctx, "fieldsToExclude", ""), "Fields To Exclude", ctx.node.name),
            fields_to_compare=prepare_fields_array(param(ctx, "fieldsToCompare", ""), "Fields To Compare", ctx.node.name),
            disable_dot_notation=as_bool(param(ctx, "options.disableDotNotation", False)),
            remove_other_fields=as_bool(param(ctx, "options.removeOtherFields", False)),
            allow_null=version > 1, type_detail=version > 1,
        )]


# --------------------------------------------------------------------------- Split Out


def split_out_item(ctx: NodeContext, item: Item, index: int, *, fields: list[str], destinations: list[str], include: str,
                   fields_to_include: Callable[[], list[str]], disable_dot_notation: bool, include_binary: bool,
                   allow_binary: bool = True) -> Items:
    """Split one item's list (or object values, or scalar) fields into separate items, like n8n's Split Out."""
    if destinations and len(destinations) != len(fields):
        raise _error(ctx, "If multiple fields to split out are given, the same number of destination fields must be given",
                     item_index=index)
    multi_split = len(fields) > 1
    source = dict(item["json"])
    get_value = value_getter(disable_dot_notation)
    split: list[Item] = []
    for entry_index, field in enumerate(fields):
        destination = destinations[entry_index] if entry_index < len(destinations) else ""
        if field == "$binary" and allow_binary:
            entity: list[Any] = [{k: v} for k, v in (item.get("binary") or {}).items()]
        else:
            value = get_value(source, field)
            if value is UNDEFINED:
                value = []
            if not isinstance(value, (dict, list)):
                value = [value]
            entity = [value[k] for k in js_keys(value)] if isinstance(value, dict) else value
        for element_index, element in enumerate(entity):
            if element_index >= len(split):
                split.append({"json": {}, "pairedItem": {"item": index}})
            name = destination or field
            if field == "$binary" and allow_binary:
                split[element_index].setdefault("binary", {}).update(element)
                continue
            if isinstance(element, dict) and include == "noOtherFields" and destination == "" and not multi_split:
                split[element_index]["json"] = {**split[element_index]["json"], **copy.deepcopy(element)}
            else:
                split[element_index]["json"][name] = copy.deepcopy(element)
    results: Items = []
    for entry in split:
        new_item = entry
        if include == "allOtherFields":
            rest = copy.deepcopy(source)
            for field in fields:
                if disable_dot_notation:
                    rest.pop(field, None)
                else:
                    lodash_unset(rest, field)
            new_item["json"] = {**rest, **entry["json"]}
        elif include == "selectedOtherFields":
            selected = fields_to_include()
            if not selected:
                raise _error(ctx, "No fields specified", "Please add a field to include", item_index=index)
            for field in selected:
                entry["json"][field] = copy.deepcopy(get_value(source, field))
        if include_binary and item.get("binary") and not new_item.get("binary"):
            new_item["binary"] = item["binary"]
        new_item["json"] = to_json_value(new_item["json"])
        results.append(new_item)
    return results


def split_fields_param(value: Any) -> list[str]:
    return [re.sub(r"^\$json\.", "", f.strip()) for f in js_string(value if value is not None else "").split(",")]


@register
class SplitOutNode(Node):
    """n8n-nodes-base.splitOut: one output item per element of a list field."""

    type = "n8n-nodes-base.splitOut"
    versions = (1,)
    required = ("fieldToSplitOut",)

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = _first_items(ctx)
        output: Items = []
        for i, item in enumerate(items):
            fields = split_fields_param(ctx.param("fieldToSplitOut", i))
            options = param(ctx, "options", {}, i) or {}
            destinations = [f.strip() for f in js_string(options.get("destinationFieldName") or "").split(",") if f.strip()]
            output.extend(split_out_item(
                ctx, item, i, fields=fields, destinations=destinations,
                include=param(ctx, "include", "noOtherFields", i),
                fields_to_include=lambda i=i: prepare_fields_array(param(ctx, "fieldsToInclude", "", i), "Fields To Include",
                                                                   ctx.node.name),
                disable_dot_notation=as_bool(options.get("disableDotNotation")),
                include_binary=as_bool(options.get("includeBinary")),
            ))
        return [output]


# --------------------------------------------------------------------------- Aggregate


def add_binaries_to_item(new_item: Item, items: Items, unique_only: bool) -> Item:
    seen: list[tuple[Any, ...]] = []
    for item in items:
        for key, binary in (item.get("binary") or {}).items():
            new_item.setdefault("binary", {})
            if unique_only:
                signature = tuple((binary or {}).get(k) for k in ("mimeType", "fileType", "fileSize", "fileExtension"))
                if signature in seen:
                    continue
                seen.append(signature)
            binary_key, n = key, 1
            while binary_key in new_item["binary"]:
                binary_key = f"{key}_{n}"
                n += 1
            new_item["binary"][binary_key] = binary
    return new_item


def _path_conflict(a: str, b: str) -> bool:
    sa, sb = a.split("."), b.split(".")
    return all(x == y for x, y in zip(sa, sb, strict=False))


def aggregate_individual_fields(ctx: NodeContext, items: Items, fields_to_aggregate: Any, *, disable_dot_notation: bool,
                                merge_lists: bool, keep_missing: bool, require_found: bool = False,
                                group_by: list[str] | None = None) -> dict[str, Any]:
    """Collect each field's values over ``items`` into lists (n8n Aggregate 'Individual Fields')."""
    if not isinstance(fields_to_aggregate, list) or not fields_to_aggregate:
        raise _error(ctx, "No fields specified", "Please add a field to aggregate")
    get_value = value_getter(disable_dot_notation)
    if require_found:
        for entry in fields_to_aggregate:
            field = str(entry.get("fieldToAggregate", ""))
            if field == "" and items:
                raise _error(ctx, "Field to aggregate is blank", "Please add a field to aggregate")
            found = any((field in item["json"]) if disable_dot_notation else get_value(item["json"], field) is not UNDEFINED
                        for item in items)
            if not found and disable_dot_notation and "." in field:
                raise _error(ctx, f"Couldn't find the field '{field}' in the input data", DOT_NOTATION_HINT)
            if not found and not keep_missing:
                raise _error(ctx, f"Couldn't find the field '{field}' in the input data")
    values: dict[str, list[Any]] = {}
    output_fields: list[str] = []
    for entry in fields_to_aggregate:
        field = str(entry.get("fieldToAggregate", "") or "")
        rename = as_bool(entry.get("renameField"))
        output_name = str(entry.get("outputFieldName", "") or "")
        short = field.split(".")[-1] if not disable_dot_notation and "." in field else field
        checked = (output_name if rename else field) if group_by is None else (output_name if rename else short)
        if checked in output_fields:
            raise _error(ctx, f"The '{checked}' output field is used more than once",
                         "Please make sure each output field name is unique")
        for group_field in group_by or []:
            if _path_conflict(checked, group_field):
                raise _error(ctx, f"The output field '{checked}' conflicts with a Group By field '{group_field}'",
                             "Please rename the aggregated field or choose a different Group By field")
        output_fields.append(checked)
        target = output_name or short
        if field == "":
            continue
        values[target] = []
        for item in items:
            value = get_value(item["json"], field)
            if not keep_missing:
                if isinstance(value, list):
                    value = [v for v in value if v is not None]
                elif value is None or value is UNDEFINED:
                    continue
            if isinstance(value, list) and merge_lists:
                values[target].extend(copy.deepcopy(value))
            else:
                values[target].append(copy.deepcopy(value))
    result: dict[str, Any] = {}
    for key in js_key_order(values.keys()):
        if disable_dot_notation:
            result[key] = to_json_value(values[key])
        else:
            lodash_set(result, key, to_json_value(values[key]))
    return result


def aggregate_all_item_data(items_json: list[dict[str, Any]], fields_to_include: list[str],
                            fields_to_exclude: list[str]) -> tuple[list[dict[str, Any]], list[int]]:
    """All item data into one list, optionally keeping/removing top-level fields (empty items dropped)."""
    if not fields_to_include and not fields_to_exclude:
        return [copy.deepcopy(j) for j in items_json], list(range(len(items_json)))
    kept: list[dict[str, Any]] = []
    paired: list[int] = []
    for index, data in enumerate(items_json):
        keys = js_keys(data)
        if fields_to_exclude:
            keys = [k for k in keys if k not in fields_to_exclude]
        if fields_to_include:
            keys = [k for k in keys if k in fields_to_include]
        new = {k: copy.deepcopy(data[k]) for k in keys}
        if new:
            kept.append(new)
            paired.append(index)
    return kept, paired


@register
class AggregateNode(Node):
    """n8n-nodes-base.aggregate: combine many items into one (optionally per group)."""

    type = "n8n-nodes-base.aggregate"
    versions = (1,)

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = _first_items(ctx)
        node = ctx.node.name
        mode = param(ctx, "aggregate", "aggregateIndividualFields")
        group_by = prepare_fields_array(param(ctx, "options.groupByFields", ""), "Group By Fields", node)
        disable_dot = as_bool(param(ctx, "options.disableDotNotation", False))
        merge_lists = as_bool(param(ctx, "options.mergeLists", False))
        keep_missing = as_bool(param(ctx, "options.keepMissing", False))
        include_binaries = as_bool(param(ctx, "options.includeBinaries", False))
        keep_unique = as_bool(param(ctx, "options.keepOnlyUnique", False))
        all_data = mode == "aggregateAllItemData"
        if all_data:
            destination = js_string(param(ctx, "destinationFieldName", "data"))
            include = param(ctx, "include", "allFields")
            to_exclude = prepare_fields_array(param(ctx, "fieldsToExclude", ""), "Fields To Exclude", node) \
                if include == "allFieldsExcept" else []
            to_include = prepare_fields_array(param(ctx, "fieldsToInclude", ""), "Fields To Include", node) \
                if include == "specifiedFields" else []
        else:
            fields = param(ctx, "fieldsToAggregate.fieldToAggregate", [])
            if not isinstance(fields, list):
                fields = []

        if not group_by:
            if all_data:
                data, paired = aggregate_all_item_data([i["json"] for i in items], to_include, to_exclude)
                new_item: Item = {"json": {destination: data}, "pairedItem": [{"item": p} for p in paired]}
            else:
                new_item = {"json": aggregate_individual_fields(ctx, items, fields, disable_dot_notation=disable_dot,
                                                                merge_lists=merge_lists, keep_missing=keep_missing),
                            "pairedItem": [{"item": i} for i in range(len(items))]}
                paired = list(range(len(items)))
            if include_binaries:
                add_binaries_to_item(new_item, [items[p] for p in paired], keep_unique)
            return [[new_item]]

        groups: dict[str, dict[str, Any]] = {}
        for index, item in enumerate(items):
            group_values = []
            for field in group_by:
                value = lodash_get(item["json"], field)
                if isinstance(value, (dict, list)):
                    raise _error(ctx, f'Field "{field}" has a non-scalar value which cannot be used for grouping.',
                                 'Only scalar values (string, number, boolean, null) can be used in "Group By Fields".')
                group_values.append(value)
            key = json_stringify([None if v is UNDEFINED else v for v in group_values])
            group = groups.setdefault(key, {"items": [], "indexes": [], "values": group_values})
            group["items"].append(item)
            group["indexes"].append(index)
        results: Items = []
        for group in groups.values():
            group_json: dict[str, Any] = {}
            for field, value in zip(group_by, group["values"], strict=True):
                lodash_set(group_json, field, to_json_value(value))
            if all_data:
                for field in group_by:
                    if _path_conflict(destination, field):
                        raise _error(ctx, f"The destination field '{destination}' conflicts with a Group By field '{field}'",
                                     "Please choose a different destination field name or Group By field")
                group_json[destination] = aggregate_all_item_data([i["json"] for i in group["items"]], to_include,
                                                                  to_exclude)[0]
            else:
                aggregated = aggregate_individual_fields(ctx, group["items"], fields, disable_dot_notation=disable_dot,
                                                         merge_lists=merge_lists, keep_missing=keep_missing,
                                                         group_by=group_by)
                group_json.update(aggregated)
            result: Item = {"json": group_json, "pairedItem": {"item": group["indexes"][0]}}
            if include_binaries:
                add_binaries_to_item(result, group["items"], keep_unique)
            results.append(result)
        return [results]


# --------------------------------------------------------------------------- Summarize


_AGGREGATION_PREFIX = {
    "append": "appended_", "average": "average_", "concatenate": "concatenated_", "count": "count_",
    "countUnique": "unique_count_", "max": "max_", "min": "min_", "sum": "sum_",
}
_NUMERICAL = ("average", "sum")
_INDEX_KEY = "_itemIndex"


def _summ_empty(value: Any) -> bool:
    return value is UNDEFINED or value is None or value == "" and isinstance(value, str)


def _aggregate_values(rows: list[dict[str, Any]], entry: dict[str, Any], get_value: Callable[[Any, str], Any]) -> Any:
    aggregation = entry.get("aggregation") or "count"
    field = js_string(entry.get("field", ""))
    include_empty = as_bool(entry.get("includeEmpty"))
    data = rows
    if aggregation in _NUMERICAL:
        data = [r for r in data if is_number(get_value(r, field))]
    values = [get_value(r, field) for r in data]
    if aggregation == "append":
        if not include_empty:
            values = [v for v in values if not _summ_empty(v)]
        return [copy.deepcopy(v) for v in values]
    if aggregation == "concatenate":
        separator = entry.get("separateBy", ",")
        if separator == "other":
            separator = entry.get("customSeparator", UNDEFINED)
        separator = "," if separator is UNDEFINED else js_string(separator)
        if not include_empty:
            values = [v for v in values if not _summ_empty(v)]
        parts = []
        for v in values:
            if v is UNDEFINED:
                parts.append("undefined")
            elif v is None or isinstance(v, (dict, list)):
                parts.append(json_stringify(v))
            else:
                parts.append(js_string(v))
        return separator.join(parts)
    if aggregation == "average":
        return (sum(values) / len(values)) if values else math.nan
    if aggregation == "sum":
        return sum(values) if values else 0
    if aggregation in ("min", "max"):
        best: Any = UNDEFINED
        for v in values:
            if _summ_empty(v):
                continue
            if best is UNDEFINED or (js_less_than(v, best) if aggregation == "min" else js_less_than(best, v)):
                best = v
        return None if best is UNDEFINED else copy.deepcopy(best)
    if aggregation == "countUnique":
        if not include_empty:
            values = [v for v in values if not _summ_empty(v)]
        return len({same_value_zero_key(v) for v in values})
    if not include_empty:
        values = [v for v in values if not _summ_empty(v)]
    return len(values)


_BRACKETS = re.compile(r"[\]\[\"]")
_SPACES = re.compile(r"[ .]")


def _parse_return_keys(data: dict[str, Any]) -> dict[str, Any]:
    for pattern, replacement in ((_BRACKETS, ""), (_SPACES, "_")):
        for key in list(data.keys()):
            if pattern.search(key):
                data[pattern.sub(replacement, key)] = data.pop(key)
    return data


def _aggregate_rows(rows: list[dict[str, Any]], fields: list[dict[str, Any]], single_item: bool,
                    get_value: Callable[[Any, str], Any]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for entry in fields:
        name = _AGGREGATION_PREFIX.get(entry.get("aggregation") or "count", "count_") + js_string(entry.get("field", ""))
        result[name] = _aggregate_values(rows, entry, get_value)
    _parse_return_keys(result)
    if not single_item:
        result["pairedItems"] = [r[_INDEX_KEY] for r in rows]
    return result


def _split_rows(split_keys: list[str], rows: list[dict[str, Any]], fields: list[dict[str, Any]], single_item: bool,
                skip_empty: bool, get_value: Callable[[Any, str], Any]) -> dict[str, Any]:
    if not split_keys:
        return _aggregate_rows(rows, fields, single_item, get_value)
    first, rest = split_keys[0], split_keys[1:]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        value = get_value(row, first)
        if value is None or isinstance(value, (dict, list)):
            value = json_stringify(value)
        if skip_empty and not is_number(value) and (value is UNDEFINED or value is False or value == ""):
            continue
        grouped.setdefault(js_string(value), []).append(row)
    return {key: _split_rows(rest, grouped[key], fields, single_item, skip_empty, get_value) for key in js_key_order(grouped)}


def _parse_field_names(fields: list[str]) -> list[str]:
    return [_SPACES.sub("_", _BRACKETS.sub("", f)) for f in fields]


def _original_value(key: str) -> Any:
    if key == "null":
        return None
    number = string_to_number(key)
    return key if isinstance(number, float) and math.isnan(number) else number


def _to_rows(result: dict[str, Any], split_by: list[str], previous: dict[str, Any], original_types: bool) -> list[dict[str, Any]]:
    names = _parse_field_names(split_by)
    rows: list[dict[str, Any]] = []
    convert = _original_value if original_types else (lambda k: k)
    for key in js_keys(result):
        stage = {**previous, names[0]: convert(key)}
        if len(names) == 1:
            rows.append({**stage, **result[key]})
        else:
            # n8n converts only the first split level back to its original type
            rows.extend(_to_rows(result[key], split_by[1:], stage, False))
    return rows


def summarize_items(ctx: NodeContext, items: Items, *, fields: Any, split_by: list[str], options: dict[str, Any],
                    version: float) -> Items:
    """n8n's Summarize (also Item Lists 'summarize'): pivot-table style aggregation."""
    if not isinstance(fields, list):
        fields = []
    fields = [f for f in fields if isinstance(f, dict)]
    if not [f for f in fields if js_string(f.get("field", "")) != ""]:
        raise _error(ctx, "You need to add at least one aggregation to 'Fields to Summarize' with non empty 'Field'")
    get_value = value_getter(as_bool(options.get("disableDotNotation")))
    rows = [{**item["json"], _INDEX_KEY: index} for index, item in enumerate(items)]
    single_item = options.get("outputFormat") == "singleItem"
    result = _split_rows(split_by, rows, fields, single_item, as_bool(options.get("skipEmptySplitFields")), get_value)
    for entry in fields:
        field = js_string(entry.get("field", ""))
        if field and not any(get_value(row, field) is not UNDEFINED for row in rows):
            if not (version > 1 or as_bool(options.get("continueIfFieldNotFound"))):
                raise _error(ctx, f"The field '{field}' does not exist in any items")
    if single_item:
        return [{"json": to_json_value(result), "pairedItem": [{"item": i} for i in range(len(items))]}]
    if not split_by:
        paired = result.pop("pairedItems", [])
        return [{"json": to_json_value(result), "pairedItem": [{"item": i} for i in paired]}]
    output: Items = []
    for row in _to_rows(result, split_by, {}, version > 1):
        paired = row.pop("pairedItems", [])
        output.append({"json": to_json_value(row), "pairedItem": [{"item": i} for i in paired]})
    return output


def split_by_param(value: Any) -> list[str]:
    return [f.strip() for f in js_string(value if value is not None else "").split(",") if f.strip()]


@register
class SummarizeNode(Node):
    """n8n-nodes-base.summarize v1 / v1.1 (v1.1 keeps the split values' original types)."""

    type = "n8n-nodes-base.summarize"
    versions = (1, 1.1)

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = _first_items(ctx)
        options = param(ctx, "options", {}) or {}
        return [summarize_items(
            ctx, items,
            fields=param(ctx, "fieldsToSummarize.values", []),
            split_by=split_by_param(param(ctx, "fieldsToSplitBy", "")),
            options=options if isinstance(options, dict) else {},
            version=float(ctx.node.type_version),
        )]


__all__ = [
    "UNDEFINED", "aggregate_all_item_data", "aggregate_individual_fields", "add_binaries_to_item", "field_name_list",
    "flatten_keys", "is_equal", "js_less_than", "js_string", "json_stringify", "limit_items", "lodash_get", "lodash_lt",
    "lodash_set", "param", "prepare_fields_array", "remove_duplicate_items", "sort_items", "split_out_item",
    "summarize_items", "to_number",
]
