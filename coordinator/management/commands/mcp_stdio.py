"""``python manage.py mcp_stdio``: Hive's MCP server on stdio (see coordinator/mcp_shim.py).

It talks to a Hive over the REST API like the ``hive-mcp`` console script, configured
by HIVE_API_URL and HIVE_API_TOKEN; stdout carries nothing but the protocol.
"""
from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = "Run Hive's MCP server on stdio (for Claude Code and other MCP clients); uses HIVE_API_URL and HIVE_API_TOKEN."
    requires_system_checks: list[str] = []
    requires_migrations_checks = False

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--url", help="Hive base URL (default: $HIVE_API_URL or http://127.0.0.1:8000)")
        parser.add_argument("--log-level", help="stderr log level (default: $HIVE_MCP_LOG_LEVEL or INFO)")

    def handle(self, *args: Any, **options: Any) -> None:
        from coordinator import mcp_shim

        try:
            # Django has configured logging already (to stderr).
            mcp_shim.run(url=options["url"], log_level=options["log_level"], configure_logging=False)
        except mcp_shim.ConfigError as exc:
            raise CommandError(str(exc)) from exc
        except KeyboardInterrupt:
            pass
