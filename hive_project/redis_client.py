from __future__ import annotations

import functools
from collections.abc import Callable
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


_loaded: set[str] = set()  # scripts this process has loaded into Redis (a fork inherits them: same Redis)


class Batch:
    """Commands and script calls sent in one round trip (a pipeline, no MULTI).

    Unlike a redis-py pipeline running Script objects, it does not ask SCRIPT EXISTS
    before every execute: a process loads each script once, then sends EVALSHA. If
    Redis forgot it since (restarted, SCRIPT FLUSH), the calls it answers NOSCRIPT
    are made again after the rest of the batch, loading the script; NOSCRIPT means
    the script did not run, so nothing runs twice, but those calls then run last.
    """

    def __init__(self) -> None:
        self._calls: list[tuple[str | None, tuple[Any, ...], Callable[[Any], None] | None]] = []

    def __len__(self) -> int:
        return len(self._calls)

    def command(self, *args: Any, then: Callable[[Any], None] | None = None) -> None:
        self._calls.append((None, args, then))

    def script(self, source: str, keys: list[str], args: list[Any], then: Callable[[Any], None] | None = None) -> None:
        self._calls.append((source, (keys, args), then))

    def execute(self) -> list[Any]:
        """Run everything; each ``then`` gets its call's result. Errors other than
        NOSCRIPT are raised after every ``then`` of a successful call has run."""
        if not self._calls:
            return []
        for source, _, _ in self._calls:
            if source is not None and source not in _loaded:
                get_redis().script_load(source)
                _loaded.add(source)
        with get_redis().pipeline(transaction=False) as pipe:
            for source, args, _ in self._calls:
                if source is None:
                    pipe.execute_command(*args)
                else:
                    keys, argv = args
                    pipe.evalsha(script(source).sha, len(keys), *keys, *argv)
            results = pipe.execute(raise_on_error=False)
        failure: Exception | None = None
        for index, ((source, args, then), result) in enumerate(zip(self._calls, results, strict=True)):
            if isinstance(result, redis.exceptions.NoScriptError) and source is not None:
                keys, argv = args
                result = results[index] = script(source)(keys=keys, args=argv)
            if isinstance(result, Exception):
                failure = failure or result
            elif then is not None:
                then(result)
        self._calls = []
        if failure is not None:
            raise failure
        return results
