"""Set-up steps shared by `make run` (runhive), `ensure_setup` and the tests."""
from __future__ import annotations

import os
import secrets
import shutil
from typing import IO, Any

import httpx
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.db import transaction

from hive_project import roles
from hive_project.env import env_int
from hive_project.schedules import ensure_schedules

_SIM_BASE = env_int("HIVE_SIM_BASE_PORT", 11501, minimum=1024, maximum=65000)

# Three simulated nodes that differ the way real ones do: speed, models, specialties.
SIMULATED_NODES: list[dict[str, Any]] = [
    {"slug": "sim-acacia", "name": "ACACIA (simulated, fast GPU)", "port": _SIM_BASE,
     "models": ["llama3.2:3b", "qwen2.5-coder:7b"], "tps": 60.0, "parallel": 2, "load_delay": 1.5,
     "specialization": "code", "capabilities": [{"name": "code", "proficiency": 0.9},
                                                 {"name": "general", "proficiency": 0.8}]},
    {"slug": "sim-walnut", "name": "WALNUT (simulated, mid GPU)", "port": _SIM_BASE + 1,
     "models": ["llama3.2:3b", "mistral:7b"], "tps": 30.0, "parallel": 2, "load_delay": 2.5,
     "specialization": "docs", "capabilities": [{"name": "docs", "proficiency": 0.9},
                                                 {"name": "general", "proficiency": 0.7}]},
    {"slug": "sim-ironwood", "name": "IRONWOOD (simulated, slow GPU)", "port": _SIM_BASE + 2,
     "models": ["llama3.2:3b", "deepseek-r1:7b"], "tps": 15.0, "parallel": 1, "load_delay": 4.0,
     "specialization": "reasoning", "capabilities": [{"name": "reasoning", "proficiency": 0.95},
                                                      {"name": "general", "proficiency": 0.6}]},
]


def ensure_setup() -> tuple[str, str | None] | None:
    """Roles, periodic schedules and (when HIVE_ADMIN_USER is set) the first admin. Idempotent."""
    roles.ensure_roles()
    ensure_schedules()
    username = os.environ.get("HIVE_ADMIN_USER")
    if username:
        return ensure_admin(username, os.environ.get("HIVE_ADMIN_PASSWORD") or None)
    return None


def reset_metrics_dir() -> None:
    """Counters of processes from a previous run must not be summed into this one."""
    directory = settings.PROMETHEUS_MULTIPROC_DIR
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, exist_ok=True)


def prepare(stdout: IO[str] | None = None) -> None:
    reset_metrics_dir()
    call_command("migrate", interactive=False, verbosity=0, stdout=stdout)
    # Not ensure_setup(): runhive creates the admin itself so it can print the password.
    roles.ensure_roles()
    ensure_schedules()
    from coordinator.services import recover_orphans

    recovered = recover_orphans()
    if recovered and stdout is not None:
        stdout.write(f"Recovered {recovered} task(s) interrupted by the last shutdown; they will run again.\n")


def ensure_admin(username: str, password: str | None) -> tuple[str, str | None]:
    """Create the first admin if missing; returns the password only when the user was created.

    An existing user is left alone, so a password changed in the admin survives restarts.
    """
    User = get_user_model()
    with transaction.atomic():
        if User.objects.filter(username=username).exists():
            return username, None
        chosen = password or secrets.token_urlsafe(12)
        user = User.objects.create_superuser(username=username, email="", password=chosen)
        user.groups.add(Group.objects.get_or_create(name=roles.ADMIN)[0])
    return username, chosen


def ollama_answers(url: str, timeout: float = 1.0) -> bool:
    try:
        response = httpx.get(f"{url.rstrip('/')}/api/version", timeout=timeout)
        return response.status_code == 200 and "version" in response.json()
    except (httpx.HTTPError, ValueError):
        return False


def _upsert_agent(slug: str, **fields: Any) -> None:
    from agents.models import Agent
    from agents.services import probe_agent

    agent, _ = Agent.objects.update_or_create(slug=slug, defaults=fields)
    probe_agent(agent)


def register_local_agent(url: str) -> None:
    _upsert_agent("local", name="Local Ollama", endpoint=url.rstrip("/"),
                  max_concurrency=env_int("OLLAMA_NUM_PARALLEL", 1, minimum=1),
                  capabilities=[{"name": "general", "proficiency": 0.8}])


def register_simulated_agents(nodes: list[dict[str, Any]]) -> None:
    for node in nodes:
        _upsert_agent(
            node["slug"], name=node["name"], endpoint=f"http://127.0.0.1:{node['port']}",
            model=node["models"][0], specialization=node.get("specialization", ""),
            capabilities=node.get("capabilities", []), max_concurrency=node.get("parallel", 1),
            hardware={"gpu_type": "simulated", "vram_gb": 0}, performance_targets={"min_tps": 5},
        )


__all__ = ["SIMULATED_NODES", "ensure_admin", "ensure_setup", "ollama_answers", "prepare",
           "register_local_agent", "register_simulated_agents"]
