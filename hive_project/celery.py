"""The Celery app. Queue names live in hive_project.queues."""
from __future__ import annotations

import os

from celery import Celery
from celery.signals import celeryd_after_setup, task_prerun, worker_ready, worker_shutting_down
from kombu import Queue

from hive_project import queues

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

app = Celery("hive_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in queues.ALL_QUEUES]
app.autodiscover_tasks()


@worker_ready.connect
def _catch_up_on_start(sender: object = None, **kwargs: object) -> None:
    # A worker that (re)joins may be what a stranded task was waiting for.
    sender_app = getattr(sender, "app", app)
    sender_app.send_task("hive.reconcile", queue=queues.CONTROL)
    hostname = getattr(sender, "hostname", None)
    if hostname:
        from coordinator.handoff import worker_started

        worker_started(hostname)


@celeryd_after_setup.connect
def _note_consumed_queues(sender: object = None, instance: object = None, **kwargs: object) -> None:
    # Before the pool forks: its processes hand off only tasks of queues this worker consumes.
    from coordinator import handoff

    consumed = getattr(getattr(getattr(instance, "app", app), "amqp", None), "queues", None)
    names = getattr(consumed, "consume_from", None)
    if names:
        handoff.consumed_queues = frozenset(names)


@worker_shutting_down.connect
def _take_no_more_handoffs(sender: object = None, **kwargs: object) -> None:
    # Warm shutdown waits for running tasks: they finish theirs and hand off no more.
    from coordinator.handoff import worker_stopping

    try:
        worker_stopping(str(sender))
    except Exception:  # noqa: BLE001 - shutting down must not fail on Redis
        pass


@task_prerun.connect
def _check_database_connections(task: object = None, **kwargs: object) -> None:
    # What Django does around each request: drop a connection that is past
    # CONN_MAX_AGE, broken, or left in a failed state, so the task gets a working one.
    # Not for a task run eagerly inside its caller (its connection is the caller's).
    if getattr(getattr(task, "request", None), "is_eager", False):
        return
    from django.db import close_old_connections

    close_old_connections()
