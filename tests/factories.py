"""Small builders for test rows (no factory library needed)."""
from __future__ import annotations

import itertools
from typing import Any

from django.utils import timezone

from agents.models import Agent
from coordinator.models import Task

_counter = itertools.count(1)


def make_agent(**fields: Any) -> Agent:
    n = next(_counter)
    defaults: dict[str, Any] = {
        "slug": f"node-{n}", "name": f"Node {n}", "endpoint": f"http://127.0.0.1:{20000 + n}",
        "model": "llama3.2:3b", "status": Agent.Status.ONLINE, "max_concurrency": 2,
        "capabilities": [{"name": "general", "proficiency": 0.5}],
        "models_available": [{"name": "llama3.2:3b"}, {"name": "codellama:7b"}],
        "last_probe_at": timezone.now(),
    }
    defaults.update(fields)
    return Agent.objects.create(**defaults)


def make_task(**fields: Any) -> Task:
    n = next(_counter)
    defaults: dict[str, Any] = {"title": f"task {n}", "prompt": f"say hello {n}", "priority": 3}
    defaults.update(fields)
    return Task.objects.create(**defaults)
