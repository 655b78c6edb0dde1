"""`make run`: Hive's embedded default as supervised child processes.

Start order (and, reversed, stop order): the embedded Redis, the simulated Ollama
nodes (only when no Ollama answers on localhost:11434), one Celery worker per queue
(the three execution priorities, control, and hive.workflows for workflow
executions), beat, Flower, and the ASGI web server. Each child writes to
``VAR_DIR/logs/<name>.log``;
Ctrl-C stops them all (a second Ctrl-C kills them at once).
"""
from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from hive_project import embedded_redis, queues
from hive_project.env import env_float, env_int, env_str
from hive_project.redis_urls import describe
from hive_project.supervisor import (
    ChildSpec,
    StopRequested,
    Supervisor,
    SupervisorError,
)

LOCAL_OLLAMA_URL = "http://127.0.0.1:11434"
REDIS_READY_TIMEOUT = 20.0
NODE_READY_TIMEOUT = 60.0
WEB_READY_TIMEOUT = 60.0
EXTERNAL_REDIS_WAIT = 10.0

logger = logging.getLogger("hive.supervisor")


@dataclass(frozen=True)
class RunConfig:
    base_dir: Path
    var_dir: Path
    settings_module: str
    redis_url: str
    embedded_redis: bool
    host: str = "127.0.0.1"
    port: int = 8000
    flower_port: int = 5555
    # None: size each execution worker to the cluster's slots at start-up.
    worker_concurrency: int | None = None
    stop_timeout: float = 10.0
    python: str = field(default=sys.executable)

    @property
    def log_dir(self) -> Path:
        return self.var_dir / "logs"

    @property
    def redis_socket(self) -> Path:
        return self.var_dir / "redis.sock"

    @property
    def manage_py(self) -> str:
        return str(self.base_dir / "manage.py")


def load_config() -> RunConfig:
    return RunConfig(
        base_dir=Path(settings.BASE_DIR),
        var_dir=Path(settings.VAR_DIR),
        settings_module=settings.SETTINGS_MODULE,
        redis_url=settings.REDIS_URL,
        embedded_redis=settings.HIVE_EMBEDDED_REDIS,
        host=env_str("HIVE_HOST", "127.0.0.1"),
        port=env_int("HIVE_PORT", 8000, minimum=1, maximum=65535),
        flower_port=env_int("HIVE_FLOWER_PORT", 5555, minimum=1, maximum=65535),
        worker_concurrency=env_int("HIVE_WORKER_CONCURRENCY", 0, minimum=0) or None,
        stop_timeout=env_float("HIVE_STOP_TIMEOUT", 10.0, minimum=1.0),
    )


def child_env(config: RunConfig) -> dict[str, str]:
    """Variables added to the inherited environment so every child reads the same
    settings as this process. REDIS_URL is passed through only if it was set: the
    embedded one is derived from HIVE_VAR_DIR, and setting it would make the
    children believe Redis is external."""
    return {
        "DJANGO_SETTINGS_MODULE": config.settings_module,
        "HIVE_VAR_DIR": str(config.var_dir),
        "PYTHONUNBUFFERED": "1",
    }


def redis_child(config: RunConfig) -> ChildSpec:
    return ChildSpec(
        name="redis",
        argv=embedded_redis.redis_argv(socket_path=config.redis_socket, data_dir=config.var_dir / "redis", persist=True),
        cwd=str(config.var_dir),
        ready_check=lambda: embedded_redis.is_up(config.redis_url),
    )


def node_url(node: dict[str, Any]) -> str:
    return f"http://127.0.0.1:{node['port']}"


def _ollama_ready(url: str) -> Callable[[], bool]:
    def check() -> bool:
        from hive_project import bootstrap

        return bootstrap.ollama_answers(url)

    return check


def simulated_node_children(nodes: list[dict[str, Any]], config: RunConfig) -> list[ChildSpec]:
    return [
        ChildSpec(
            name=node["slug"] if node["slug"].startswith("sim-") else f"sim-{node['slug']}",
            argv=[
                config.python, config.manage_py, "simulate_ollama",
                "--port", str(node["port"]),
                "--models", ",".join(node["models"]),
                "--tps", str(node["tps"]),
                "--parallel", str(node["parallel"]),
                "--load-delay", str(node["load_delay"]),
                "--name", node["slug"],
            ],
            env=child_env(config),
            cwd=str(config.base_dir),
            ready_check=_ollama_ready(node_url(node)),
        )
        for node in nodes
    ]


def _port_open(host: str, port: int) -> Callable[[], bool]:
    connect_host = _display_host(host).strip("[]")

    def check() -> bool:
        try:
            with socket.create_connection((connect_host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def cluster_slots() -> int:
    """Every agent slot of one priority can be busy at once, plus the tasks queued ahead
    in each agent's Ollama (HIVE_QUEUE_AHEAD): size workers to match."""
    from django.conf import settings
    from django.db.models import Count, Sum

    from agents.models import Agent

    totals = Agent.objects.aggregate(slots=Sum("max_concurrency"), agents=Count("id"))
    total = (totals["slots"] or 0) + settings.HIVE_QUEUE_AHEAD * (totals["agents"] or 0)
    return max(2, min(int(total), 16))


def build_children(config: RunConfig) -> list[ChildSpec]:
    """Workers, beat, Flower and the web server, in start order."""
    env = child_env(config)
    cwd = str(config.base_dir)
    celery = [config.python, "-m", "celery", "-A", "hive_project"]
    children = []
    slots = config.worker_concurrency or cluster_slots()
    for queue in queues.ALL_QUEUES:
        node = queue.replace(".", "-")
        # Execution workers hold one slot per running task; workflow workers mostly wait
        # on those tasks, so as many executions as slots may run side by side.
        concurrency = 1 if queue == queues.CONTROL else slots
        children.append(ChildSpec(
            name=f"worker-{node}",
            # SIGTERM is Celery's warm shutdown: running tasks get the supervisor's
            # stop timeout to finish, then SIGKILL; recovery re-queues the rest.
            argv=[*celery, "worker", "-Q", queue, "-n", f"{node}@%h",
                  "--concurrency", str(concurrency), "-O", "fair", "--loglevel", "INFO"],
            env=env, cwd=cwd,
            # Only the main process: signalling the group would kill the pool
            # children mid-task instead of letting the warm shutdown finish them.
            signal_group=False,
        ))
    children.append(ChildSpec(
        name="beat",
        argv=[*celery, "beat", "-S", "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile=",
              "--schedule", str(config.var_dir / "celerybeat-schedule"), "--loglevel", "INFO"],
        env=env, cwd=cwd,
    ))
    children.append(ChildSpec(
        name="flower",
        # Flower parses its own options with tornado, which only accepts --name=value.
        argv=[*celery, "flower", f"--port={config.flower_port}", f"--address={config.host}", "--persistent=False"],
        env=env, cwd=cwd,
    ))
    children.append(ChildSpec(
        name="web",
        argv=[config.python, "-m", "uvicorn", "hive_project.asgi:application",
              "--host", config.host, "--port", str(config.port),
              # Django has no lifespan support; open WebSockets must not hold up a stop.
              "--lifespan", "off", "--timeout-graceful-shutdown", "5",
              # uvicorn trusts X-Forwarded-For from 127.0.0.1 by default, so any local
              # client could pick its address (throttles key on it); only a proxy the
              # operator names in FORWARDED_ALLOW_IPS may.
              *([] if os.environ.get("FORWARDED_ALLOW_IPS") else ["--no-proxy-headers"])],
        # Django's advice for ASGI: no persistent connections in the web process.
        env={**env, "HIVE_DB_CONN_MAX_AGE": "0"}, cwd=cwd,
        ready_check=_port_open(config.host, config.port),
    ))
    return children


def _display_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _port_problem(host: str, port: int) -> str | None:
    """Why host:port cannot be listened on, or None. Binding (not connecting) also
    catches a mistyped HIVE_HOST."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"{host!r} does not resolve: {exc}"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return "something is already listening there"
            return str(exc)
    return None


class Command(BaseCommand):
    help = (
        "Start Hive's embedded default: embedded Redis, simulated Ollama nodes when no "
        "Ollama answers on localhost:11434, Celery workers for every queue (workflow executions "
        "included), beat, Flower "
        "and the web server, as supervised child processes. Ctrl-C stops them all."
    )
    # "user / password" of an admin created (or re-passworded) by this start, until shown.
    _new_login: str | None = None

    def add_arguments(self, parser: CommandParser) -> None:
        parser.epilog = (
            "Configured through the environment: HIVE_HOST, HIVE_PORT, HIVE_FLOWER_PORT, "
            "HIVE_WORKER_CONCURRENCY, HIVE_STOP_TIMEOUT, HIVE_ADMIN_USER, HIVE_ADMIN_PASSWORD, "
            "HIVE_VAR_DIR, REDIS_URL, DATABASE_URL, HIVE_SIM_BASE_PORT."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        config = load_config()
        config.log_dir.mkdir(parents=True, exist_ok=True)
        self._preflight(config)

        supervisor = Supervisor(config.log_dir, logger, stop_timeout=config.stop_timeout)
        supervisor.install_signal_handlers()
        self._new_login = None
        try:
            banner = self._start(supervisor, config)
        except BaseException as exc:
            # After a second Ctrl-C the children are already killed: just reap them.
            supervisor.stop_all(timeout=1 if isinstance(exc, KeyboardInterrupt) else None)
            supervisor.restore_signal_handlers()
            if self._new_login:
                self.stdout.write(f"Admin login: {self._new_login}  (shown once)")
            if isinstance(exc, StopRequested):
                self.stdout.write("Hive stopped")
                return
            if isinstance(exc, SupervisorError):
                raise CommandError(str(exc)) from exc
            if isinstance(exc, KeyboardInterrupt):
                self.stdout.write("Hive stopped (killed)")
                raise SystemExit(130) from None
            raise

        self.stdout.write(banner)
        try:
            supervisor.run_forever()
        except KeyboardInterrupt:
            self.stdout.write("Hive stopped (killed)")
            raise SystemExit(130) from None
        self.stdout.write("Hive stopped")

    def _preflight(self, config: RunConfig) -> None:
        if config.embedded_redis:
            if embedded_redis.is_up(config.redis_url):
                raise CommandError(
                    f"Another Hive is already running with the var dir {config.var_dir} (its Redis answers "
                    f"on {config.redis_socket}). Stop it first, or set HIVE_VAR_DIR to another directory."
                )
        else:
            try:
                embedded_redis.wait_until_up(config.redis_url, timeout=EXTERNAL_REDIS_WAIT)
            except embedded_redis.EmbeddedRedisError as exc:
                raise CommandError(f"REDIS_URL={describe(config.redis_url)} does not answer: {exc}") from exc
        for variable, port in (("HIVE_PORT", config.port), ("HIVE_FLOWER_PORT", config.flower_port)):
            problem = _port_problem(config.host, port)
            if problem:
                raise CommandError(f"Cannot listen on {config.host}:{port} ({problem}); set {variable} "
                                   f"(or HIVE_HOST) to something free.")

    def _start(self, supervisor: Supervisor, config: RunConfig) -> str:
        from hive_project import bootstrap

        if config.embedded_redis:
            config.redis_socket.unlink(missing_ok=True)  # a stale socket from a crash
            (config.var_dir / "redis").mkdir(parents=True, exist_ok=True)
            supervisor.start(redis_child(config), wait_ready=REDIS_READY_TIMEOUT)

        bootstrap.prepare(self.stdout)
        username, password = bootstrap.ensure_admin(
            env_str("HIVE_ADMIN_USER", "admin"), env_str("HIVE_ADMIN_PASSWORD", None)
        )
        if password:
            self._new_login = f"{username} / {password}"
        self._check_stop(supervisor)

        if bootstrap.ollama_answers(LOCAL_OLLAMA_URL):
            bootstrap.register_local_agent(LOCAL_OLLAMA_URL)
            nodes_line = f"local Ollama at {LOCAL_OLLAMA_URL}"
        else:
            nodes = list(bootstrap.SIMULATED_NODES)
            for node in nodes:
                problem = _port_problem("127.0.0.1", int(node["port"]))
                if problem:
                    raise CommandError(f"Cannot start the simulated node {node['slug']} on port {node['port']} "
                                       f"({problem}); set HIVE_SIM_BASE_PORT to a free range.")
            for spec in simulated_node_children(nodes, config):
                supervisor.start(spec, wait_ready=NODE_READY_TIMEOUT)
            self._check_stop(supervisor)
            bootstrap.register_simulated_agents(nodes)
            listing = ", ".join(f"{node['slug']} ({node_url(node)})" for node in nodes)
            nodes_line = f"{len(nodes)} simulated (no Ollama on {LOCAL_OLLAMA_URL}): {listing}"

        for spec in build_children(config):
            supervisor.start(spec, wait_ready=WEB_READY_TIMEOUT if spec.ready_check else None)

        return self._banner(config, username, nodes_line)

    @staticmethod
    def _check_stop(supervisor: Supervisor) -> None:
        if supervisor.stop_requested:
            raise StopRequested("stop requested")

    def _banner(self, config: RunConfig, username: str, nodes_line: str) -> str:
        site = f"http://{_display_host(config.host)}:{config.port}"
        flower = f"http://{_display_host(config.host)}:{config.flower_port}/"
        if self._new_login:
            login = f"{self._new_login}  (shown once)"
            self._new_login = None
        else:
            login = f"{username} (password printed at first start; change it in the admin or with `manage.py changepassword {username}`)"
        lines = [
            "",
            self.style.SUCCESS("Hive is running"),
            f"  Dashboard   {site}/",
            f"  Admin       {site}/admin/",
            f"  API         {site}/api/   docs: {site}/api/docs/",
            f"  Flower      {flower}",
            f"  Login       {login}",
            f"  Ollama      {nodes_line}",
            f"  Redis       {describe(config.redis_url)}" + ("  (embedded)" if config.embedded_redis else ""),
            f"  Logs        {config.log_dir}/",
        ]
        if not _is_loopback(config.host):
            lines.append(self.style.WARNING(
                f"  Listening on {config.host or 'all interfaces'}: Flower has no login; keep it off untrusted networks."
            ))
        lines += ["Press Ctrl-C to stop.", ""]
        return "\n".join(lines)
