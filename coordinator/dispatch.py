"""Sending "go" messages. The database decides; the broker only carries the news.

Everything here enqueues after commit, so a worker never sees a message for a row
it cannot read yet, and a rolled-back transaction sends nothing.
"""
from __future__ import annotations

import uuid

from django.db import transaction

from hive_project import queues


def request_scheduling_pass() -> None:
    from coordinator.tasks import run_scheduling_pass

    transaction.on_commit(lambda: run_scheduling_pass.apply_async(queue=queues.CONTROL))


def send_execution(task_id: uuid.UUID, dispatch_id: uuid.UUID, priority: int) -> None:
    from coordinator.tasks import execute_task

    transaction.on_commit(
        lambda: execute_task.apply_async(args=(str(task_id), str(dispatch_id)), queue=queues.queue_for_priority(priority))
    )
