"""Rename Keys (``n8n-nodes-base.renameKeys``) v1: rename by path, or by regex at any depth."""
from __future__ import annotations

from typing import Any

from workflows.engine.contract import MISSING, Item, Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register
from workflows.nodes.conditions import deep_copy, js_number, js_regex, js_replacement, js_string, path_get, path_set, path_unset


def _rename_matching(obj: Any, regex: Any, replacement: Any, depth: float) -> Any:
    """n8n's renameObjectKeys: children first, then the key itself; arrays are walked, not renamed."""
    if isinstance(obj, list):
        if depth != 0:
            for element in obj:
                _rename_matching(element, regex, replacement, depth - 1)
        return obj
    if not isinstance(obj, dict):
        return obj
    for key in list(obj.keys()):
        if key not in obj:
            continue
        if isinstance(obj[key], (dict, list)) and depth != 0:
            _rename_matching(obj[key], regex, replacement, depth - 1)
        if regex.search(key):
            new_key = regex.sub(replacement, key, count=1)
            if new_key != key:
                obj[new_key] = obj.pop(key)
    return obj


@register
class RenameKeysNode(Node):
    """Rename Keys."""

    type = "n8n-nodes-base.renameKeys"
    versions = (1,)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        keys = (node.parameters.get("keys") or {}).get("key", [])
        if not isinstance(keys, list):
            issues.append(ValidationIssue("must be a list of {currentKey, newKey}", node.name, "keys.key"))
        replacements = ((node.parameters.get("additionalOptions") or {}).get("regexReplacement") or {}).get("replacements", [])
        if not isinstance(replacements, list):
            issues.append(ValidationIssue("must be a list", node.name, "additionalOptions.regexReplacement.replacements"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs:
        result: list[Item] = []
        for index, item in enumerate(ctx.input_items(0)):
            renames = ctx.param("keys.key", index, []) or []
            replacements = ctx.param("additionalOptions.regexReplacement.replacements", index, []) or []
            source = item.get("json") or {}
            new_item: Item = {"json": deep_copy(source), "pairedItem": {"item": index}}
            if item.get("binary") is not None:
                new_item["binary"] = item["binary"]
            for rename in renames:
                rename = rename or {}
                current = js_string(rename.get("currentKey", ""))
                new = js_string(rename.get("newKey", ""))
                if current == "" or new == "" or current == new:
                    continue
                value = path_get(source, current)
                if value is MISSING:
                    continue
                path_set(new_item["json"], new, deep_copy(value))
                path_unset(new_item["json"], current)
            for replacement in replacements:
                replacement = replacement or {}
                options = replacement.get("options") or {}
                depth_value = options.get("depth", -1)
                depth = -1 if depth_value is None else js_number(depth_value)
                search = js_string(replacement.get("searchRegex", ""))
                try:
                    regex = js_regex(search, "i" if options.get("caseInsensitive") else "")
                except NodeError as exc:
                    raise NodeError(exc.message, item_index=index) from exc
                new_item["json"] = _rename_matching(new_item["json"], regex,
                                                    js_replacement(js_string(replacement.get("replaceRegex", ""))), depth)
            result.append(new_item)
        return [result]
