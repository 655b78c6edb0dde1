"""A tiny MCP server on stdio for the workflow MCP tests (the SDK's MCPServer, formerly FastMCP).

Tools: ``echo`` (text back), ``add`` (structured result), ``fail`` (an isError result),
``whoami`` (an environment variable, to check the registry's ``env`` reaches the process).
``python tests/mcp_echo_server.py --http PORT`` serves streamable HTTP instead of stdio.
"""
from __future__ import annotations

import os

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

server = MCPServer("echo-test", version="1.2.3")


class Sum(BaseModel):
    total: float
    operands: list[float]


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: float, b: float) -> Sum:
    """Add two numbers (structured result)."""
    return Sum(total=a + b, operands=[a, b])


@server.tool()
def fail(reason: str = "it broke") -> str:
    """Always fail with the given reason."""
    raise ToolError(reason)


@server.tool()
def whoami() -> str:
    """The ECHO_IDENTITY environment variable."""
    return os.environ.get("ECHO_IDENTITY", "")


if __name__ == "__main__":
    import sys

    if len(sys.argv) == 3 and sys.argv[1] == "--http":  # streamable HTTP on 127.0.0.1:<port>/mcp
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
