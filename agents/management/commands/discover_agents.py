from __future__ import annotations

import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from agents import services
from agents.discovery import DEFAULT_PORT, Found, TargetError, expand, scan
from agents.models import Agent


class Command(BaseCommand):
    help = ("Find Ollama endpoints among the given hosts, ranges (10.0.0.10-20) or CIDR blocks (10.0.0.0/28) "
            "and register the new ones as agents. Nothing else is contacted.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("targets", nargs="+", help="host[:port], a.b.c.d-e, a.b.c.d-a.b.c.e or a CIDR block")
        parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port when a target names none (11434)")
        parser.add_argument("--timeout", type=float, default=1.0, help="seconds per endpoint (default 1)")
        parser.add_argument("--concurrency", type=int, default=64, help="endpoints probed at once (default 64)")
        parser.add_argument("--max-hosts", type=int, default=1024, help="refuse to expand to more endpoints than this")
        parser.add_argument("--max-concurrency", type=int, default=1,
                            help="slots of each new agent (its OLLAMA_NUM_PARALLEL)")
        parser.add_argument("--dry-run", action="store_true", help="report what answers; register nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            targets = expand(options["targets"], port=options["port"], max_hosts=options["max_hosts"])
        except TargetError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(f"Probing {len(targets)} endpoint(s) (timeout {options['timeout']}s, "
                          f"{options['concurrency']} at a time)…")

        def progress(done: int, total: int, found: Found | None) -> None:
            if found is not None:
                self.stdout.write(f"  found Ollama {found.version} at {found.target.url}")
            if done == total or done % 50 == 0:
                self.stdout.write(f"  {done}/{total} probed")

        found = scan(targets, timeout=options["timeout"], concurrency=options["concurrency"], progress=progress)
        known = {a.endpoint.rstrip("/") for a in Agent.objects.all()}
        new = [f for f in found if f.target.url not in known]
        self.stdout.write(f"{len(found)} Ollama endpoint(s) answered; {len(found) - len(new)} already registered.")
        if options["dry_run"]:
            for f in new:
                self.stdout.write(f"  would register {f.target.url}")
            return
        for f in new:
            agent = services.register_agent({
                "slug": self._slug(f), "name": f"Ollama at {f.target.host}:{f.target.port}",
                "endpoint": f.target.url, "max_concurrency": options["max_concurrency"],
                "capabilities": [{"name": "general", "proficiency": 0.5}],
            })
            if not agent.model and agent.available_model_names:
                agent.model = agent.available_model_names[0]
                agent.save(update_fields=["model", "updated_at"])
            self.stdout.write(self.style.SUCCESS(
                f"  registered {agent.slug}: {agent.endpoint} with {len(agent.available_model_names)} model(s) "
                f"({', '.join(agent.available_model_names) or 'none'}), status {agent.status}"))

    @staticmethod
    def _slug(found: Found) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", found.target.host.lower()).strip("-")
        slug = f"ollama-{base}" if found.target.port == DEFAULT_PORT else f"ollama-{base}-{found.target.port}"
        candidate, n = slug[:100], 2
        while Agent.objects.filter(slug=candidate).exists():
            candidate = f"{slug[:95]}-{n}"
            n += 1
        return candidate
