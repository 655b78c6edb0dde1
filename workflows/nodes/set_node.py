"""Set / Edit Fields (``n8n-nodes-base.set``) v1–v3.4.

v1/v2 write typed ``values`` (boolean, number, string) onto a copy of the item.
v3.x ("Edit Fields") sets ``fields.values`` (v3–3.2) or ``assignments`` (v3.3+)
with n8n's type validation, or a whole JSON object (mode ``raw``), and decides
which input fields to keep (include all / none / selected / except).
"""
from __future__ import annotations

import json
from typing import Any

from workflows.engine.contract import MISSING, Item, Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register
from workflows.nodes.conditions import (
    deep_copy,
    is_nan,
    js_number,
    js_string,
    js_truthy,
    json_stringify,
    normalize_number,
    parse_js_object_text,
    path_get,
    path_set,
    path_unset,
    validate_field_type,
)

_V1_DEFAULTS = {"boolean": False, "number": 0, "string": ""}
_INCLUDE_MODES = ("all", "none", "selected", "except")
_FIELD_TYPES = ("stringValue", "numberValue", "booleanValue", "arrayValue", "objectValue")
_ASSIGNMENT_TYPES = ("string", "number", "boolean", "array", "object", "binary")


class _FieldHelper:
    """Set/get/unset with lodash paths (dot notation) or as literal keys."""

    def __init__(self, dot_notation: bool) -> None:
        self.dot = dot_notation

    def set(self, obj: dict[str, Any], key: str, value: Any) -> None:
        if self.dot:
            path_set(obj, key, value)
        else:
            obj[key] = value

    def get(self, obj: dict[str, Any], key: str) -> Any:
        if self.dot:
            return path_get(obj, key, None)
        return obj.get(key)

    def unset(self, obj: dict[str, Any], key: str) -> None:
        if self.dot:
            path_unset(obj, key)
        else:
            obj.pop(key, None)


def parse_json_parameter(data: Any, item_index: int, entry_name: str | None = None) -> dict[str, Any]:
    """n8n's parseJsonParameter: a JSON object (JS object literal syntax tolerated)."""
    location = f"entry \"{entry_name}\" inside 'Fields to Set'" if entry_name else "'JSON Output'"
    parsed: Any = data
    if isinstance(data, str):
        try:
            parsed = parse_js_object_text(data)
        except ValueError as exc:
            raise NodeError(f"The {location} in item {item_index} contains invalid JSON", description=data,
                            item_index=item_index) from exc
    if not isinstance(parsed, dict):
        raise NodeError(f"The {location} in item {item_index} does not contain a valid JSON object", item_index=item_index)
    return parsed


def validate_entry(name: str, type_: str, value: Any, item_index: int, ignore_errors: bool, version: float) -> Any:
    """n8n's validateEntry: convert ``value`` to ``type_`` or fail with n8n's message."""
    if version >= 3.2 and value is None:
        return None
    description = (f'To fix the error try to change the type for the field "{name}" or activate the option '
                   "“Ignore Type Conversion Errors” to apply a less strict type validation")
    if type_ == "string":
        if version > 3 and value is None:
            if ignore_errors:
                return None
            raise NodeError(f"'{name}' expects a {type_} but we got 'null' [item {item_index}]", description=description,
                            item_index=item_index)
        value = json_stringify(value) if isinstance(value, (dict, list)) else js_string(value)
    valid, new_value, message = validate_field_type(name, value, type_)
    if not valid:
        if ignore_errors:
            return value
        raise NodeError(f"{message} [item {item_index}]", description=description, item_index=item_index)
    return new_value


@register
class SetNode(Node):
    """Edit Fields (Set)."""

    type = "n8n-nodes-base.set"
    versions = (1, 2, 3, 3.1, 3.2, 3.3, 3.4)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        params = node.parameters
        version = float(node.type_version)
        if version < 3:
            values = params.get("values", {})
            if not isinstance(values, dict):
                return [*issues, ValidationIssue("must be an object of boolean/number/string lists", node.name, "values")]
            for kind in values:
                if kind not in _V1_DEFAULTS:
                    issues.append(ValidationIssue(f"unknown value type '{kind}'", node.name, f"values.{kind}"))
            return issues
        mode = params.get("mode", "manual")
        if mode not in ("manual", "raw"):
            issues.append(ValidationIssue(f"unknown mode '{mode}' (expected 'manual' or 'raw')", node.name, "mode"))
        include = params.get("include", "all")
        if isinstance(include, str) and not include.startswith("=") and include not in _INCLUDE_MODES:
            issues.append(ValidationIssue(f"unknown include option '{include}'", node.name, "include"))
        if mode == "manual" and version < 3.3:
            for index, entry in enumerate((params.get("fields") or {}).get("values") or []):
                kind = (entry or {}).get("type", "stringValue")
                if kind not in _FIELD_TYPES:
                    issues.append(ValidationIssue(f"unknown field type '{kind}'", node.name, f"fields.values.{index}.type"))
        elif mode == "manual":
            for index, entry in enumerate((params.get("assignments") or {}).get("assignments") or []):
                kind = (entry or {}).get("type", "string")
                if kind not in _ASSIGNMENT_TYPES:
                    issues.append(ValidationIssue(f"unknown assignment type '{kind}'", node.name,
                                                  f"assignments.assignments.{index}.type"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs:
        if float(ctx.node.type_version) < 3:
            return [self._execute_v1(ctx)]
        return [self._execute_v3(ctx)]

    # ---------------------------------------------------------------- v1 / v2

    def _execute_v1(self, ctx: NodeContext) -> list[Item]:
        items = ctx.input_items(0) or [{"json": {}}]
        version = float(ctx.node.type_version)
        result: list[Item] = []
        for index, item in enumerate(items):
            keep_only_set = js_truthy(ctx.param("keepOnlySet", index, False))
            options = ctx.param("options", index, {}) or {}
            helper = _FieldHelper(options.get("dotNotation") is not False)
            new_item: Item = {"json": {}, "pairedItem": {"item": index}}
            if not keep_only_set:
                if item.get("binary") is not None:
                    new_item["binary"] = dict(item["binary"])
                new_item["json"] = deep_copy(item.get("json") or {})
            for kind in ("boolean", "number", "string"):
                for entry in ctx.param(f"values.{kind}", index, []) or []:
                    entry = entry or {}
                    name = js_string(entry.get("name", "propertyName"))
                    value = entry.get("value", _V1_DEFAULTS[kind])
                    if kind == "boolean":
                        value = js_truthy(value)
                    elif kind == "number" and version >= 2 and isinstance(value, str) and not is_nan(js_number(value)):
                        value = normalize_number(js_number(value))
                    helper.set(new_item["json"], name, value)
            result.append(new_item)
        return result

    # ---------------------------------------------------------------- v3.x

    def _execute_v3(self, ctx: NodeContext) -> list[Item]:
        items = ctx.input_items(0)
        version = float(ctx.node.type_version)
        mode = ctx.param("mode", 0, "manual")
        duplicate = js_truthy(ctx.param("duplicateItem", 0, False))
        result: list[Item] = []
        for index, item in enumerate(items):
            include_other = js_truthy(ctx.param("includeOtherFields", index, False))
            include = ctx.param("include", index, "all")
            options = dict(ctx.param("options", index, {}) or {})
            if version >= 3.3:
                options["include"] = include if include_other else "none"
            else:
                options["include"] = include
            if mode == "raw":
                new_fields = parse_json_parameter(ctx.param("jsonOutput", index, '{\n  "my_field_1": "value",\n  "my_field_2": 1\n}\n'),
                                                  index)
            elif mode == "manual":
                new_fields = self._manual_fields(ctx, index, options, version)
            else:
                raise NodeError(f"Unknown mode '{mode}'", item_index=index)
            new_item = self._compose(ctx, index, item, new_fields, options, version)
            copies = int(js_number(ctx.param("duplicateCount", 0, 0)) or 0) + 1 if duplicate and ctx.mode == "manual" else 1
            result.extend(json.loads(json.dumps(new_item)) if n else new_item for n in range(copies))
        return result

    @staticmethod
    def _manual_fields(ctx: NodeContext, index: int, options: dict[str, Any], version: float) -> dict[str, Any]:
        ignore = bool(options.get("ignoreConversionErrors"))
        new_data: dict[str, Any] = {}
        if version < 3.3:
            raw_entries = ctx.raw_param("fields.values", []) or []
            for position, entry in enumerate(ctx.param("fields.values", index, []) or []):
                entry = entry or {}
                kind = entry.get("type", "stringValue")
                name = js_string(entry.get("name", ""))
                value = entry.get(kind, {} if kind == "objectValue" else ("true" if kind == "booleanValue" else ""))
                raw = (raw_entries[position] or {}).get(kind) if position < len(raw_entries) else None
                if kind == "objectValue" and isinstance(raw, str) and raw.startswith("=") and value is not None:
                    value = parse_json_parameter(json_stringify(value) if isinstance(value, (dict, list)) else value,
                                                 index, name)
                new_data[name] = validate_entry(name, kind.replace("Value", ""), value, index, ignore, version)
            return new_data
        collection = ctx.param("assignments", index, {}) or {}
        for assignment in collection.get("assignments") or []:
            assignment = assignment or {}
            name = js_string(assignment.get("name", ""))
            kind = assignment.get("type") or "string"
            new_data[name] = validate_entry(name, kind, assignment.get("value"), index, ignore, version)
        return new_data

    @staticmethod
    def _compose(ctx: NodeContext, index: int, item: Item, new_fields: dict[str, Any], options: dict[str, Any],
                 version: float) -> Item:
        new_item: Item = {"json": {}, "pairedItem": {"item": index}}
        include = options.get("include", "all")
        if version >= 3.4:
            include_binary = not options.get("stripBinary") and include != "none"
        else:
            include_binary = bool(options.get("includeBinary"))
        if include_binary and item.get("binary") is not None:
            new_item["binary"] = dict(item["binary"])
        helper = _FieldHelper(options.get("dotNotation") is not False)
        source = item.get("json") or {}
        if include == "all":
            new_item["json"] = deep_copy(source)
        elif include == "selected":
            fields = [f.strip() for f in js_string(ctx.param("includeFields", index, "")).split(",") if f.strip()]
            for key in fields:
                value = path_get(source, key) if helper.dot else source.get(key, MISSING)
                if value is MISSING:
                    continue
                target = key.split(".")[-1] if helper.dot and "." in key else key
                helper.set(new_item["json"], target, deep_copy(value))
        elif include == "except":
            fields = [f.strip() for f in js_string(ctx.param("excludeFields", index, "")).split(",") if f.strip()]
            data = deep_copy(source)
            for key in fields:
                helper.unset(data, key)
            new_item["json"] = data
        elif include != "none":
            raise NodeError(f'The include option "{include}" is not known!', item_index=index)
        for key, value in new_fields.items():
            helper.set(new_item["json"], key, value)
        return new_item
