from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents import simulator


class Command(BaseCommand):
    help = (
        "Serve a simulated Ollama node (Ollama's HTTP API with configurable models, speed, "
        "parallel slots, cold loads, keep-alive and injected faults) in the foreground."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        simulator.add_arguments(parser)

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = simulator.config_from_options(options)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        simulator.configure_logging()
        try:
            simulator.SimulatedNode(config).serve(install_signal_handlers=True)
        except OSError as exc:
            raise CommandError(f"cannot serve on {config.host}:{config.port}: {exc}") from exc
