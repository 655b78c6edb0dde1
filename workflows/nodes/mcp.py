"""Hive's MCP Tool Call node: call a tool on a registered MCP server, once per item.

The result is the tool's ``structuredContent`` when it has one, else its text content
(``{"text": ...}``); a tool error (``isError``) fails the item with the tool's text.
"""
from __future__ import annotations

import json
from typing import Any

from workflows.engine.contract import Item, Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register
from workflows.engine.jsvalues import json_object_param

MCP_TOOL_CALL = "n8n-nodes-hive.mcpToolCall"


def _text(result: dict[str, Any]) -> str:
    if isinstance(result.get("text"), str):
        return result["text"]
    return "\n".join(str(b.get("text", "")) for b in result.get("content") or []
                     if isinstance(b, dict) and b.get("type") == "text")


def tool_output(result: dict[str, Any]) -> dict[str, Any]:
    """The item json for a tool result (structured content first, then text, then raw content)."""
    structured = result.get("structuredContent")
    if isinstance(structured, dict):
        return structured
    if structured is not None:
        return {"result": structured}
    out: dict[str, Any] = {"text": _text(result)}
    other = [b for b in result.get("content") or [] if isinstance(b, dict) and b.get("type") != "text"]
    if other:
        out["content"] = other
    return out


@register
class MCPToolCall(Node):
    type = MCP_TOOL_CALL
    versions = (1,)
    required = ("server", "tool")

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        for name in ("server", "tool"):
            value = node.parameters.get(name)
            if name in node.parameters and (not isinstance(value, str) or not value.strip()):
                issues.append(ValidationIssue(f"'{name}' must be a non-empty name", node.name, name))
        arguments = node.parameters.get("arguments")
        if isinstance(arguments, str) and arguments.strip() and not arguments.startswith("="):
            try:
                parsed = json.loads(arguments)
            except ValueError as exc:
                issues.append(ValidationIssue(f"arguments are not valid JSON: {exc}", node.name, "arguments"))
            else:
                if not isinstance(parsed, dict):
                    issues.append(ValidationIssue("arguments must be a JSON object", node.name, "arguments"))
        elif arguments is not None and not isinstance(arguments, (str, dict)):
            issues.append(ValidationIssue("arguments must be a JSON object", node.name, "arguments"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        out: list[Item] = []
        for index, _item in enumerate(ctx.input_items(0)):
            ctx.check_cancelled()
            try:
                server = ctx.param("server", index)
                tool = ctx.param("tool", index)
                if not isinstance(server, str) or not server.strip():
                    raise NodeError("The parameter 'server' is empty")
                if not isinstance(tool, str) or not tool.strip():
                    raise NodeError("The parameter 'tool' is empty")
                arguments = json_object_param(ctx.param("arguments", index, {}), "arguments")
                result = ctx.services.call_mcp_tool(server.strip(), tool.strip(), arguments)
                if not isinstance(result, dict):
                    raise NodeError(f"MCP server '{server}' returned no tool result")
                if result.get("isError"):
                    raise NodeError(_text(result) or f"MCP tool '{tool}' on server '{server}' failed")
                out.append({"json": tool_output(result), "pairedItem": {"item": index}})
            except NodeError as exc:
                if not ctx.node.continue_on_fail:
                    if exc.item_index is None:
                        exc.item_index = index
                    raise
                out.append({"json": {"error": exc.message}, "pairedItem": {"item": index}})
        return [out]
