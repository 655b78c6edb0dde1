"""Code (JavaScript / Python), legacy Function and Function Item nodes.

Return values are normalised exactly like n8n's Code node (packages/nodes-base/nodes/Code/
result-validation.ts + core normalizeItems): a plain object becomes one item, an array of plain
objects is wrapped in ``{json: ...}``, items that already carry ``json``/``binary`` keep them.
In "each item" mode a failing item raises NodeError(item_index=i) — or, when the node continues on
fail, becomes ``{json: {error}}`` like n8n while the other items still go out.
"""
from __future__ import annotations

from typing import Any

from workflows.engine.contract import Items, Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register
from workflows.engine.jsvalues import js_typeof

_ITEM_KEYS = {"json", "binary", "pairedItem", "error", "metadata", "index"}
_LANGUAGES = {"javaScript", "python", "pythonNative"}
_MODES = {"runOnceForAllItems", "runOnceForEachItem"}


def _is_object(value: Any) -> bool:
    return isinstance(value, dict)


def normalize_items(result: Any) -> Items:
    """n8n core's normalizeItems."""
    if isinstance(result, dict):
        result = [result] if result.get("json") else [{"json": result}]
    if not isinstance(result, list):
        raise NodeError("Code doesn't return items properly",
                        description="Please return an array of objects, one for each item you would like to output.")
    if all(isinstance(i, dict) and "json" in i for i in result):
        return result
    if any(isinstance(i, dict) and "json" in i for i in result):
        raise NodeError("Inconsistent item format",
                        description="Either every returned item has a 'json' key, or none has")
    if result and all(isinstance(i, dict) and "binary" in i for i in result):
        return [{"json": {k: v for k, v in i.items() if k != "binary"}, "binary": i["binary"]} for i in result]
    return [{"json": i} for i in result]


def _validate_top_level_keys(item: dict[str, Any], index: int) -> None:
    reserved = next((k for k in item if k in _ITEM_KEYS), None)
    unknown = [k for k in item if k not in _ITEM_KEYS]
    if unknown:
        if reserved:
            raise NodeError("Invalid output format",
                            description=f"An output item contains the reserved key '{reserved}'. To get around this, please wrap "
                                        "each item in an object, under a key called 'json'.", item_index=index)
        raise NodeError(f"Unknown top-level item key: {unknown[0]}",
                        description="Access the properties of an item under `.json`, e.g. `item.json`", item_index=index)


def _validate_item(item: dict[str, Any], index: int) -> None:
    if not _is_object(item.get("json")):
        raise NodeError("A 'json' property isn't an object",
                        description="In the returned data, every key named 'json' must point to an object.", item_index=index)
    if "binary" in item and item["binary"] is not None and not _is_object(item["binary"]):
        raise NodeError("A 'binary' property isn't an object",
                        description="In the returned data, every key named 'binary' must point to an object.", item_index=index)


def validate_all_items(result: Any) -> Items:
    """n8n's validateRunCodeAllItems + normalizeItems."""
    if result is None or not isinstance(result, (dict, list)):
        raise NodeError("Code doesn't return items properly",
                        description="Please return an array of objects, one for each item you would like to output.")
    if isinstance(result, list):
        for item in result:
            if not _is_object(item):
                raise NodeError("Code doesn't return items properly",
                                description="Please return an array of objects, one for each item you would like to output.")
        if any(k in _ITEM_KEYS for item in result for k in item):
            for index, item in enumerate(result):
                _validate_top_level_keys(item, index)
    items = normalize_items(result)
    for index, item in enumerate(items):
        _validate_item(item, index)
    return items


def validate_each_item(result: Any, index: int) -> dict[str, Any]:
    """n8n's validateRunCodeEachItem."""
    if not isinstance(result, (dict, list)) or result is None:
        shown = "undefined" if result is None else result
        raise NodeError("Code doesn't return an object",
                        description=f"Please return an object representing the output item. ('{shown}' was returned instead.)",
                        item_index=index)
    if isinstance(result, list):
        first = f"An array of {js_typeof(result[0])}s was returned." if result else "An empty array was returned."
        raise NodeError("Code doesn't return a single object",
                        description=f"{first} If you need to output multiple items, please use the 'Run Once for All Items' mode instead.",
                        item_index=index)
    item = normalize_items([result])[0]
    _validate_item(item, index)
    _validate_top_level_keys(item, index)
    return item


def _code_param(ctx: NodeContext, language: str) -> str:
    name = "jsCode" if language == "javaScript" else "pythonCode"
    code = ctx.param(name, 0, "")
    if not isinstance(code, str):
        raise NodeError(f"parameter '{name}' must be a string", node=ctx.node.name)
    return code


def _run(ctx: NodeContext, code: str, language: str, item_index: int, mode: str) -> Any:
    from workflows.engine.expressions import referenced_nodes

    data = ctx.expression_data(item_index, referenced_nodes(code))
    if language == "javaScript":
        return ctx.evaluator.run_code(code, data, mode=mode)
    from workflows.engine.python_sandbox import run_python

    return run_python(code, data, mode=mode, settings=ctx.settings)


def _error_item(message: str, index: int | None) -> dict[str, Any]:
    item: dict[str, Any] = {"json": {"error": message}}
    if index is not None:
        item["pairedItem"] = {"item": index}
    return item


@register
class CodeNode(Node):
    """n8n-nodes-base.code v1/v2: JavaScript in V8, Python in a sandboxed child process."""

    type = "n8n-nodes-base.code"
    versions = (1, 2)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues: list[ValidationIssue] = []
        params = node.parameters
        language = params.get("language", "javaScript")
        mode = params.get("mode", "runOnceForAllItems")
        if language not in _LANGUAGES:
            issues.append(ValidationIssue(f"unsupported language '{language}' (javaScript or python)", node.name, "language"))
        if mode not in _MODES:
            issues.append(ValidationIssue(f"unsupported mode '{mode}' (runOnceForAllItems or runOnceForEachItem)", node.name, "mode"))
        name = "jsCode" if language == "javaScript" else "pythonCode"
        code = params.get(name, "")
        if not isinstance(code, str):
            issues.append(ValidationIssue("code must be a string", node.name, name))
        elif language == "javaScript" and code and not code.startswith("="):
            from workflows.engine.expressions import code_syntax_error

            message = code_syntax_error(code)
            if message:
                issues.append(ValidationIssue(f"JavaScript syntax error: {message}", node.name, name))
        elif language != "javaScript" and code and not code.startswith("="):
            try:
                compile(code, "<code>", "exec", dont_inherit=True, flags=0x400)  # PyCF_ONLY_AST: 'return' at top level is fine
            except SyntaxError as exc:
                issues.append(ValidationIssue(f"Python syntax error: {exc.msg} (line {exc.lineno})", node.name, name))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        language = ctx.raw_param("language", "javaScript")
        mode = ctx.raw_param("mode", "runOnceForAllItems")
        if language not in _LANGUAGES:
            raise NodeError(f"unsupported language '{language}'", node=ctx.node.name)
        if mode not in _MODES:
            raise NodeError(f"unsupported mode '{mode}'", node=ctx.node.name)
        language = "python" if language == "pythonNative" else language
        code = _code_param(ctx, language)
        items = ctx.input_items(0)
        if mode == "runOnceForAllItems":
            try:
                return [validate_all_items(_run(ctx, code, language, 0, mode))]
            except NodeError as exc:
                if ctx.node.continue_on_fail:
                    return [[_error_item(exc.message, None)]]
                exc.node = exc.node or ctx.node.name
                raise
        out: Items = []
        for index in range(len(items)):
            ctx.check_cancelled()
            try:
                item = validate_each_item(_run(ctx, code, language, index, mode), index)
            except NodeError as exc:
                if ctx.node.continue_on_fail:
                    out.append(_error_item(exc.message, index))
                    continue
                exc.item_index = index
                exc.node = exc.node or ctx.node.name
                raise
            item.setdefault("pairedItem", {"item": index})
            out.append(item)
        return [out]


def _legacy_result(result: Any, what: str) -> Items:
    if result is None:
        raise NodeError("No data got returned. Always return an Array of items!" if what == "function"
                        else "No data got returned. Always an object has to be returned!")
    items = normalize_items(result)
    for index, item in enumerate(items):
        if not _is_object(item.get("json")):
            raise NodeError("The json-property has to be an object!", item_index=index)
        if "binary" in item and not _is_object(item["binary"]):
            raise NodeError("The binary-property has to be an object!", item_index=index)
    return items


class _LegacyFunction(Node):
    """The legacy Function nodes: JavaScript in ``functionCode``, checked at import."""

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        code = node.parameters.get("functionCode", "")
        if not isinstance(code, str):
            return [ValidationIssue("code must be a string", node.name, "functionCode")]
        from workflows.engine.expressions import code_syntax_error

        message = code_syntax_error(code) if code and not code.startswith("=") else None
        return [ValidationIssue(f"JavaScript syntax error: {message}", node.name, "functionCode")] if message else []


@register
class FunctionNode(_LegacyFunction):
    """Legacy n8n-nodes-base.function: ``items`` in, array of items out."""

    type = "n8n-nodes-base.function"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        from workflows.engine.expressions import referenced_nodes

        code = ctx.param("functionCode", 0, "")
        data = ctx.expression_data(0, referenced_nodes(code))
        try:
            return [_legacy_result(ctx.evaluator.run_code(code, data, mode="function"), "function")]
        except NodeError as exc:
            if ctx.node.continue_on_fail:
                return [[_error_item(exc.message, None)]]
            exc.node = exc.node or ctx.node.name
            raise


@register
class FunctionItemNode(_LegacyFunction):
    """Legacy n8n-nodes-base.functionItem: ``item`` is the item's json; returns the new json."""

    type = "n8n-nodes-base.functionItem"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        from workflows.engine.expressions import referenced_nodes

        items = ctx.input_items(0)
        out: Items = []
        for index, source in enumerate(items):
            ctx.check_cancelled()
            code = ctx.param("functionCode", index, "")
            data = ctx.expression_data(index, referenced_nodes(code))
            try:
                result = ctx.evaluator.run_code(code, data, mode="functionItem")
                if result is None:
                    raise NodeError("No data got returned. Always an object has to be returned!", item_index=index)
                if not isinstance(result, dict):
                    raise NodeError("The returned data has to be an object!", item_index=index)
            except NodeError as exc:
                if ctx.node.continue_on_fail:
                    out.append(_error_item(exc.message, index))
                    continue
                exc.item_index = index
                exc.node = exc.node or ctx.node.name
                raise
            item: dict[str, Any] = {"json": result, "pairedItem": {"item": index}}
            if source.get("binary"):
                item["binary"] = source["binary"]
            out.append(item)
        return [out]
