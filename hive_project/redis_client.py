from __future__ import annotations

import functools
from typing import Any

import redis
from django.conf import settings


@functools.cache
def get_redis() -> redis.Redis:
    """One client per process; redis-py rebuilds its pool after a fork."""
    return redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5, socket_timeout=10)


@functools.cache
def script(source: str) -> Any:
    """A Lua script, registered once per process. Called directly (not in a pipeline)
    it is one EVALSHA, loading the script only when Redis answers NOSCRIPT."""
    return get_redis().register_script(source)
