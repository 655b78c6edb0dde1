from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from django.conf import settings

from hive_project import embedded_redis


@pytest.fixture(scope="session", autouse=True)
def redis_server() -> Iterator[str]:
    """The Redis every test talks to: the embedded one unless REDIS_URL is set."""
    process: subprocess.Popen[bytes] | None = None
    if settings.HIVE_EMBEDDED_REDIS and not embedded_redis.is_up(settings.REDIS_URL):
        socket_path = Path(settings.VAR_DIR) / "redis.sock"
        process = embedded_redis.start(socket_path, Path(settings.VAR_DIR) / "redis", persist=False)
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.flushdb()
    yield settings.REDIS_URL
    if process is not None:
        process.terminate()
        process.wait(10)
    if Path(settings.VAR_DIR).name == f"run-{os.getpid()}":
        shutil.rmtree(settings.VAR_DIR, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_redis_state(redis_server: str) -> Iterator[None]:
    """Throttle counters and scheduler flags must not leak between tests."""
    yield
    redis.Redis.from_url(redis_server).flushdb()
    from agents import services
    from coordinator import scheduler

    scheduler._typical_tokens = (float("-inf"), 0.0)  # per-process caches
    services._speed_samples.clear()


class Actors:
    """Named users, one per role, plus an authenticated user with no role."""

    def __init__(self) -> None:
        from django.contrib.auth.models import Group, User

        from hive_project.roles import ensure_roles

        ensure_roles()
        self.admin = User.objects.create_user("alice", password="pw-alice")
        self.admin.groups.add(Group.objects.get(name="admin"))
        self.developer = User.objects.create_user("dev", password="pw-dev")
        self.developer.groups.add(Group.objects.get(name="developer"))
        self.viewer = User.objects.create_user("vic", password="pw-vic")
        self.viewer.groups.add(Group.objects.get(name="viewer"))
        self.outsider = User.objects.create_user("otto", password="pw-otto")

    def client(self, user: object | None) -> object:
        from rest_framework.test import APIClient

        client = APIClient()
        if user is not None:
            client.force_authenticate(user)
        return client


@pytest.fixture
def actors(db: None) -> Actors:
    return Actors()


@pytest.fixture
def admin_api(actors: Actors) -> object:
    return actors.client(actors.admin)


@pytest.fixture
def dev_api(actors: Actors) -> object:
    return actors.client(actors.developer)


@pytest.fixture
def viewer_api(actors: Actors) -> object:
    return actors.client(actors.viewer)
