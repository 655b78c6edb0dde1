"""Real processes for integration tests: simulated Ollama nodes, Celery workers,
beat and the ASGI server, all on loopback and all pointed at the test database and
the test Redis."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from django.conf import settings
from django.db import connection

from hive_project import queues

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def database_url() -> str:
    """The test database (pytest-django renamed it) as a URL the children can use."""
    conf = connection.settings_dict
    if conf["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{conf['NAME']}"
    auth = conf["USER"] or ""
    if conf.get("PASSWORD"):
        auth += f":{conf['PASSWORD']}"
    return f"postgres://{auth}@{conf['HOST'] or '127.0.0.1'}:{conf['PORT'] or 5432}/{conf['NAME']}"


def child_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "DATABASE_URL": database_url(),
           "REDIS_URL": settings.REDIS_URL, "HIVE_VAR_DIR": str(settings.VAR_DIR), "PYTHONUNBUFFERED": "1"}
    env.update(extra)
    return env


def wait_for(check: Callable[[], bool], timeout: float, what: str, process: subprocess.Popen | None = None,
             log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text()[-3000:] if log and log.exists() else ""
    raise AssertionError(f"{what} not ready within {timeout}s\n{tail}")


class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log = Path(settings.VAR_DIR) / "logs" / f"{name}-{time.monotonic_ns()}.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.log.open("wb")
        self.process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._file, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a worker's pool children too)."""
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.kill(signal.SIGTERM)
        self._file.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code < 500
    except httpx.HTTPError:
        return False


@contextmanager
def simulator(*, models: str = "llama3.2:3b", tps: float = 50, parallel: int = 2, load_delay: float = 0.1,
              name: str = "sim") -> Iterator[str]:
    port = free_port()
    proc = Proc(f"sim-{name}", [sys.executable, "manage.py", "simulate_ollama", "--port", str(port), "--models", models,
                                "--tps", str(tps), "--parallel", str(parallel), "--load-delay", str(load_delay),
                                "--name", name], child_env())
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _http_ok(f"{url}/api/version"), 20, f"simulator {name}", proc.process, proc.log)
        yield url
    finally:
        proc.stop()


def start_worker(name: str = "e2e", queue_names: tuple[str, ...] = queues.ALL_QUEUES, concurrency: int = 3) -> Proc:
    proc = Proc(f"worker-{name}", [
        sys.executable, "-m", "celery", "-A", "hive_project", "worker", "-Q", ",".join(queue_names),
        "-n", f"{name}@%h", "-c", str(concurrency), "-P", "prefork", "-O", "fair", "--without-gossip",
        "--without-mingle", "--loglevel", "INFO",
    ], child_env())
    wait_for(lambda: "ready." in proc.output(), 60, f"worker {name}", proc.process, proc.log)
    return proc


def start_beat() -> Proc:
    schedule = Path(settings.VAR_DIR) / f"beat-{time.monotonic_ns()}"
    proc = Proc("beat", [sys.executable, "-m", "celery", "-A", "hive_project", "beat", "-S",
                         "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile=", "--schedule", str(schedule),
                         "--loglevel", "INFO", "--max-interval", "1"], child_env())
    wait_for(lambda: "beat: Starting" in proc.output(), 30, "beat", proc.process, proc.log)
    return proc


def start_web() -> tuple[Proc, str]:
    port = free_port()
    proc = Proc("web", [sys.executable, "-m", "uvicorn", "hive_project.asgi:application", "--host", "127.0.0.1",
                        "--port", str(port)], child_env())
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: _http_ok(f"{url}/api/health"), 30, "web", proc.process, proc.log)
    return proc, url
