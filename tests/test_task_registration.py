"""The Celery app's contract: registered task names and queues are part of the wire
format (a rename would strand messages already queued under the old name), and how a
worker treats a task (acks, prefetch, its database connection)."""
from __future__ import annotations

import pytest

from hive_project import queues
from hive_project.celery import app


def test_the_registered_task_names_are_pinned():
    app.loader.import_default_modules()
    hive = sorted(name for name in app.tasks if name.startswith("hive."))
    assert hive == ["hive.check_mcp_servers", "hive.cleanup", "hive.cleanup_executions", "hive.evaluate_alerts",
                    "hive.execute_task", "hive.fire_workflow_schedule", "hive.health_sweep", "hive.probe_agent",
                    "hive.reconcile", "hive.reconcile_workflows", "hive.run_scheduling_pass",
                    "hive.run_workflow_execution"]


def test_the_queues_are_pinned():
    assert queues.ALL_QUEUES == ("hive.high", "hive.medium", "hive.low", "hive.control", "hive.workflows")
    assert [queues.queue_for_priority(p) for p in (5, 4, 3, 2, 1)] == [
        "hive.high", "hive.high", "hive.medium", "hive.low", "hive.low"]
    assert {q.name for q in app.conf.task_queues} == set(queues.ALL_QUEUES)


def test_execution_is_late_acked_and_survives_a_lost_worker():
    task = app.tasks["hive.execute_task"]
    assert task.acks_late and task.reject_on_worker_lost
    assert app.conf.worker_prefetch_multiplier == 1


class _Request:
    is_eager = False


class _Task:
    request = _Request()


def _run_task_signals(fixup: object, count: int) -> None:
    from celery.signals import task_prerun

    sender = _Task()
    for _ in range(count):  # what a worker's pool process does around each task
        task_prerun.send(sender=sender, task=sender, task_id="t")
        fixup.on_task_prerun(sender)
        fixup.on_task_postrun(sender)


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_database_connection_from_task_to_task():
    from celery.fixups.django import DjangoWorkerFixup
    from django.db import connection

    fixup = DjangoWorkerFixup(app)
    connection.ensure_connection()
    first = connection.connection
    _run_task_signals(fixup, 20)
    connection.ensure_connection()
    assert connection.connection is first, "Celery's fixup closed it (CELERY_DB_REUSE_MAX unset?)"

    # Django's own rules still apply before every task: past CONN_MAX_AGE it is replaced.
    connection.close_at = 0
    _run_task_signals(fixup, 1)
    connection.ensure_connection()
    assert connection.connection is not first
