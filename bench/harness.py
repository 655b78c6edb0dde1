"""What both benchmarks need: a private Redis and database per run, and real processes.

Two sides:

- The *orchestrator* (``python -m bench``) imports no Django. It owns the Redis
  (an embedded ``redis-server`` on a unix socket in a temp dir, or ``REDIS_URL``),
  gives every run a fresh database (a new SQLite file, or a scratch PostgreSQL
  database created next to ``DATABASE_URL``'s and dropped afterwards) and starts one
  child process per run with the environment pointing at them.
- The *run* (that child) sets Django up on that environment, migrates, and starts
  what it measures: simulated Ollama nodes, Celery workers, beat.

Every process is started in its own session and stopped by its process group, so a
run leaves nothing behind even when it fails half-way.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "var" / "bench"
SETTINGS_MODULE = "hive_project.settings"


def stamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


# -- processes -------------------------------------------------------------------------


class Proc:
    """A child process in its own session, its output in a log file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = log_dir / f"{name}.log"
        self._file = self.log.open("wb")
        self.process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=self._file, stderr=subprocess.STDOUT,
                                        start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = regex.search(self.output())
            if found:
                return found
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} did not print /{pattern}/ within {timeout}s "
                           f"(exit code {self.process.poll()}); last output:\n{self.output()[-3000:]}")

    def cpu(self) -> float:
        """CPU seconds used so far by this process and its children (its process group)."""
        return cpu_seconds(self.process.pid)

    def terminate(self) -> None:
        """SIGTERM to the whole group: Celery's warm shutdown, the simulator's clean stop."""
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)

    def stop(self, timeout: float = 15.0) -> None:
        """Terminate, wait, SIGKILL the group if anything lingers."""
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self.process.wait(5)
        # Pool children outlive a killed parent; the group signal reaches them too.
        self._signal(signal.SIGKILL)
        self._file.close()

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.process.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Processes:
    """Processes started by one run, stopped together (in reverse order) at the end."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.procs: list[Proc] = []

    def start(self, name: str, argv: list[str], **extra_env: str) -> Proc:
        proc = Proc(name, argv, {**self.env, **extra_env}, self.log_dir)
        self.procs.append(proc)
        return proc

    def simulator(self, name: str, **options: Any) -> str:
        """A simulated Ollama node on a free port (``python -m agents.simulator``); returns its URL."""
        argv = [sys.executable, "-m", "agents.simulator", "--host", "127.0.0.1", "--port", "0", "--name", name]
        for key, value in options.items():
            text = ",".join(value) if isinstance(value, list | tuple) else str(value)
            argv += [f"--{key.replace('_', '-')}", text]
        proc = self.start(f"sim-{name}", argv)
        return proc.wait_for(r"listening on (http://\S+)", 30).group(1)

    def worker(self, name: str, queue_names: list[str] | tuple[str, ...], concurrency: int,
               extra_args: tuple[str, ...] = ()) -> Proc:
        """A Celery worker as Hive runs them in production: prefork, prefetch 1 (settings), -O fair."""
        return self.start(f"worker-{name}", [
            sys.executable, "-m", "celery", "-A", "hive_project", "worker", "-Q", ",".join(queue_names),
            "-n", f"{name}@%h", "-c", str(concurrency), "-P", "prefork", "-O", "fair",
            "--without-gossip", "--without-mingle", "--loglevel", "INFO", *extra_args,
        ])

    def beat(self) -> Proc:
        return self.start("beat", [
            sys.executable, "-m", "celery", "-A", "hive_project", "beat",
            "-S", "django_celery_beat.schedulers:DatabaseScheduler", "--pidfile=",
            "--schedule", str(self.log_dir / "celerybeat-schedule"), "--loglevel", "INFO",
        ])

    @staticmethod
    def wait_ready(procs: list[Proc], pattern: str = r"\bready\.", timeout: float = 90.0) -> None:
        for proc in procs:
            proc.wait_for(pattern, timeout)

    def stop_all(self) -> None:
        for proc in self.procs:  # all at once: warm shutdowns take seconds each
            proc.terminate()
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError(f"{what} did not happen within {timeout}s")


# -- the orchestrator's side -----------------------------------------------------------


class Environment:
    """The Redis and the databases of one ``python -m bench`` invocation."""

    def __init__(self, bench: str) -> None:
        self.bench = bench
        self.run_dir = OUT_DIR / "runs" / f"{bench}-{stamp()}"
        self.redis_url = os.environ.get("REDIS_URL", "")
        self.database_url = os.environ.get("DATABASE_URL", "")
        self._redis_process: subprocess.Popen[bytes] | None = None
        self._tmp: str | None = None
        self._scratch: list[str] = []

    def __enter__(self) -> Environment:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not self.redis_url:
            from hive_project import embedded_redis

            # A short path: unix socket paths are limited to about 100 bytes.
            self._tmp = tempfile.mkdtemp(prefix="hive-bench-")
            socket_path = Path(self._tmp) / "redis.sock"
            self._redis_process = embedded_redis.start(socket_path, Path(self._tmp) / "data", persist=False)
            self.redis_url = embedded_redis.socket_url(socket_path)
        return self

    def __exit__(self, *exc: object) -> None:
        for name in self._scratch:
            self._drop_postgres(name)
        if self._redis_process is not None:
            self._redis_process.terminate()
            self._redis_process.wait(10)
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)

    @property
    def database_kind(self) -> str:
        return "postgresql" if self.database_url.startswith(("postgres://", "postgresql://")) else "sqlite"

    def describe(self) -> dict[str, str]:
        redis = "embedded redis-server (unix socket)" if self._redis_process else _without_password(self.redis_url)
        database = ("fresh SQLite file per run (WAL)" if self.database_kind == "sqlite"
                    else f"fresh scratch database per run on {_without_password(_server_of(self.database_url))}")
        return {"redis": redis, "database": database}

    def fresh_database(self, label: str) -> str:
        if self.database_kind == "sqlite":
            path = self.run_dir / label / "hive.sqlite3"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            return f"sqlite:///{path}"
        name = re.sub(r"[^a-z0-9_]", "_", f"hive_bench_{label}_{os.getpid()}".lower())
        self._drop_postgres(name)
        self._admin_sql(f'CREATE DATABASE "{name}"')
        self._scratch.append(name)
        parts = urlsplit(self.database_url)
        return urlunsplit(parts._replace(path=f"/{name}"))

    def child_env(self, label: str, database_url: str, **extra: str) -> dict[str, str]:
        var_dir = self.run_dir / label
        var_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": SETTINGS_MODULE, "DATABASE_URL": database_url,
               "REDIS_URL": self.redis_url, "HIVE_VAR_DIR": str(var_dir), "PYTHONUNBUFFERED": "1",
               "HIVE_LOG_LEVEL": "INFO"}
        env.update(extra)
        return env

    def run_child(self, module: str, label: str, args: list[str], env: dict[str, str], timeout: float) -> None:
        """Run ``python -m <module> --child ...``; its output goes to the run's log and our stderr on failure."""
        log = self.run_dir / label / "run.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", module, "--child", *args], env=env, cwd=ROOT,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)  # its own handler stops what it started
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(5)
                raise RuntimeError(f"{label}: no result within {timeout:.0f}s; see {log}") from None
        if code != 0:
            tail = log.read_text(errors="replace")[-4000:]
            raise RuntimeError(f"{label}: the run failed (exit code {code}); see {log}\n{tail}")

    def _admin_sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            conn.execute(statement)

    def _drop_postgres(self, name: str) -> None:
        try:
            self._admin_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except Exception as exc:  # noqa: BLE001 - a leftover scratch database is not worth failing for
            print(f"warning: could not drop scratch database {name}: {exc}", file=sys.stderr)


def _server_of(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/"))


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return urlunsplit(parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")))
    return url


# -- the run's side --------------------------------------------------------------------


def setup_django() -> None:
    """In a run: Django on the environment the orchestrator gave us, Redis emptied.

    Flushing comes first: once workers run, it would also delete kombu's queue bindings.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)
    import django

    django.setup()
    from hive_project.redis_client import get_redis

    get_redis().flushdb()


def migrate() -> None:
    from django.core.management import call_command

    from hive_project.bootstrap import ensure_setup

    call_command("migrate", interactive=False, verbosity=0)
    ensure_setup()  # the periodic jobs beat runs: scheduling safety net, reconciler, probes


def cpu_seconds(pgid: int) -> float:
    """CPU time (user + system) of the live processes of a process group."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After the command: state ppid pgrp session ... utime(12) stime(13)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception so ``finally`` blocks stop what the run started."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", flush=True)
