"""The per-process lease keeper: renews leases, saves partial output, stops streams."""
from __future__ import annotations

import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from coordinator import executor
from coordinator.models import Task
from tests.factories import make_task

pytestmark = pytest.mark.django_db(transaction=True)  # the keeper thread has its own connection


class FakeStream:
    def __init__(self) -> None:
        self.aborted = threading.Event()

    def abort(self) -> None:
        self.aborted.set()


def running_task() -> Task:
    return make_task(status=Task.Status.RUNNING, dispatch_id=uuid.uuid4(), started_at=timezone.now(),
                     lease_expires_at=timezone.now() + timedelta(seconds=1))


def wait_for(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_it_renews_the_lease_and_saves_the_partial_output_until_forgotten():
    task = running_task()
    first_lease = task.lease_expires_at
    keeper = executor.lease_keeper()
    assert executor.lease_keeper() is keeper, "one keeper per process"
    parts = ["Hello", ", wor"]
    watch = keeper.watch(task.pk, task.dispatch_id, parts)
    try:
        wait_for(lambda: Task.objects.get(pk=task.pk).result == "Hello, wor")
        assert Task.objects.get(pk=task.pk).lease_expires_at > first_lease
        parts.append("ld")
        wait_for(lambda: Task.objects.get(pk=task.pk).result == "Hello, world")
    finally:
        keeper.forget(watch)
    parts.append("!")
    time.sleep(2 * watch.interval)
    assert Task.objects.get(pk=task.pk).result == "Hello, world", "nothing is written after forget()"
    assert not watch.cancelled and not watch.lost


@pytest.mark.parametrize(("change", "flag"), [
    ({"cancel_requested": True}, "cancelled"),
    ({"status": Task.Status.QUEUED, "dispatch_id": uuid.uuid4()}, "lost"),  # taken over by another dispatch
])
def test_it_stops_the_stream_when_the_task_is_cancelled_or_no_longer_ours(change, flag):
    task = running_task()
    keeper = executor.lease_keeper()
    watch = keeper.watch(task.pk, task.dispatch_id, [])
    stream = FakeStream()
    watch.stream = stream  # type: ignore[assignment]
    Task.objects.filter(pk=task.pk).update(**change)
    assert stream.aborted.wait(5), "the stream was stopped"
    assert getattr(watch, flag) and not getattr(watch, {"cancelled": "lost", "lost": "cancelled"}[flag])
    keeper.forget(watch)


def test_several_tasks_are_watched_at_once():
    tasks = [running_task() for _ in range(3)]
    keeper = executor.lease_keeper()
    watches = [keeper.watch(t.pk, t.dispatch_id, [f"out {i}"]) for i, t in enumerate(tasks)]
    try:
        wait_for(lambda: [Task.objects.get(pk=t.pk).result for t in tasks] == ["out 0", "out 1", "out 2"])
    finally:
        for watch in watches:
            keeper.forget(watch)
