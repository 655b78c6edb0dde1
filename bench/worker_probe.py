"""Loaded into the dispatch benchmark's workers (``-I bench.worker_probe``) on both sides.

Records the CPU time of each task's body (task_prerun -> task_postrun in the pool
process, all its threads) in a Redis list per task name, so the report can split a
worker's CPU per task into the task's own work and Celery's around it.
"""
from __future__ import annotations

import time
from typing import Any

from celery.signals import task_postrun, task_prerun

from hive_project.redis_client import get_redis

KEY = "bench:body-cpu:{name}"
_started: dict[str, float] = {}


@task_prerun.connect
def _before(task_id: str | None = None, **kwargs: Any) -> None:
    if task_id:
        _started[task_id] = time.process_time()


@task_postrun.connect
def _after(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    began = _started.pop(task_id or "", None)
    if began is not None and task is not None:
        get_redis().rpush(KEY.format(name=task.name), f"{(time.process_time() - began) * 1000:.3f}")


def take(name: str) -> list[float]:
    """The samples recorded for one task name so far; the list starts again empty."""
    with get_redis().pipeline() as pipe:
        pipe.lrange(KEY.format(name=name), 0, -1)
        pipe.delete(KEY.format(name=name))
        values, _ = pipe.execute()
    return [float(v) for v in values]
