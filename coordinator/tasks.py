"""Celery entry points: thin wrappers that take ids and call one service.

Registered names are pinned by tests/test_task_registration.py: renaming one would
strand messages already queued under the old name.
"""
from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from coordinator import executor, scheduler, services


@shared_task(
    name="hive.execute_task",
    bind=True,
    # Idempotent (conditional claim on the dispatch id), so a message whose worker
    # process died may safely be delivered again.
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=settings.HIVE_TASK_TIME_LIMIT,
    time_limit=settings.HIVE_TASK_TIME_LIMIT + 30,
    max_retries=20,
)
def execute_task(self: Any, task_id: str, dispatch_id: str) -> str:
    try:
        return executor.execute(task_id, dispatch_id, worker=self.request.hostname or "")
    except executor.LeaseHeld as held:
        raise self.retry(countdown=held.seconds_left + 0.5) from held


@shared_task(name="hive.run_scheduling_pass", ignore_result=True, soft_time_limit=50, time_limit=60)
def run_scheduling_pass() -> dict[str, int]:
    result = scheduler.run_pass()
    return {"rounds": result.rounds, "placed": len(result.placed)} if result else {"rounds": 0, "placed": 0}


@shared_task(name="hive.reconcile", ignore_result=True, soft_time_limit=50, time_limit=60)
def reconcile() -> dict[str, int]:
    return services.reconcile()
