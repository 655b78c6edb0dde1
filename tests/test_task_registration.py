"""Registered Celery task names and queues are part of the wire format: a rename
would strand messages already queued under the old name."""
from __future__ import annotations

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
