"""Sending "go" messages. The database decides; the broker only carries the news.

Everything here enqueues after commit, so a worker never sees a message for a row
it cannot read yet, and a rolled-back transaction sends nothing.
"""
from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING

from django.db import transaction

from coordinator.handoff import NEWS_KEY, NEWS_TTL, SEQ_KEY, news_arg
from hive_project import queues

if TYPE_CHECKING:
    from hive_project.redis_client import Batch

# A pass request is one script call. It notes that the state changed (the dirty flag
# the pass loop takes) and sends a pass message only if none is queued or running:
# the requested flag is set with the message and cleared by the pass task when it
# leaves with nothing more to do, so a burst of submissions or completions costs one
# message, and a pass that is running picks up every change noted meanwhile. The
# expiry (renewed by a looping pass) bounds the damage if the message or its worker
# is lost; beat's safety-net pass runs meanwhile.
PASS_REQUESTED_KEY = "hive:scheduler:requested"
PASS_REQUESTED_TTL = 10
DIRTY_KEY = "hive:scheduler:dirty"

# The request also carries its news for the handoff (coordinator.handoff): what the
# change could bring that outranks a reserved task, numbered after the commit.
_REQUEST = """
redis.call('SET', KEYS[1], 1)
if ARGV[2] ~= '' then
  local seq = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[4], seq, seq .. ':' .. ARGV[2])
  redis.call('EXPIRE', KEYS[4], ARGV[3])
end
return redis.call('SET', KEYS[2], 1, 'NX', 'EX', ARGV[1]) and 1 or 0
"""


def request_scheduling_pass(news: float | None = math.inf) -> None:
    """Ask for a pass once the current transaction commits. ``news``: the best order
    key of tasks the change made pending (inf, the default: it might be anything;
    None: nothing, it only freed capacity)."""
    transaction.on_commit(lambda: _request_pass(news))


def _request_pass(news: float | None = math.inf) -> None:
    from hive_project.redis_client import Batch

    batch = Batch()
    request_pass_in(batch, news)
    batch.execute()


def request_pass_in(batch: Batch, news: float | None = math.inf) -> None:
    """A pass request as part of ``batch`` (one round trip with the rest of it)."""
    batch.script(_REQUEST, [DIRTY_KEY, PASS_REQUESTED_KEY, SEQ_KEY, NEWS_KEY],
                 [PASS_REQUESTED_TTL, news_arg(news), NEWS_TTL],
                 then=lambda first: send_pass_message() if first else None)


def send_pass_message() -> None:
    from coordinator.tasks import run_scheduling_pass

    run_scheduling_pass.apply_async(queue=queues.CONTROL)


MARKER_PREFIX = "hive:dispatch:"


def marker_key(dispatch_id: uuid.UUID | str) -> str:
    return f"{MARKER_PREFIX}{dispatch_id}"


def send_execution(task_id: uuid.UUID, dispatch_id: uuid.UUID, priority: int) -> None:
    """Send the execution message and leave a marker beside it in the broker's Redis.

    The marker lives exactly as long as the message can: if Redis loses the queue
    (flushed, restarted without persistence) it loses the marker too, and the
    reconciler sends the message again from the database.
    """
    send_executions([(task_id, dispatch_id, priority)])


def send_executions(messages: list[tuple[uuid.UUID, uuid.UUID, int]]) -> None:
    """``send_execution`` for each (task id, dispatch id, priority), after commit, in
    one go: the markers in one pipeline, then the messages through one producer."""
    if messages:
        batch = list(messages)
        transaction.on_commit(lambda: _publish(batch))


def _publish(messages: list[tuple[uuid.UUID, uuid.UUID, int]]) -> None:
    from django.conf import settings

    from coordinator.tasks import execute_task
    from hive_project.redis_client import Batch

    ttl = settings.CELERY_BROKER_TRANSPORT_OPTIONS["visibility_timeout"]
    markers = Batch()
    for task_id, dispatch_id, _ in messages:
        markers.command("SET", marker_key(dispatch_id), str(task_id), "EX", ttl)
    markers.execute()
    with execute_task.app.producer_or_acquire() as producer:
        for task_id, dispatch_id, priority in messages:
            execute_task.apply_async(args=(str(task_id), str(dispatch_id)), queue=queues.queue_for_priority(priority),
                                     producer=producer)


def forget_marker_in(batch: Batch, dispatch_id: uuid.UUID | str) -> None:
    """The message was consumed: its marker goes, as part of ``batch``."""
    batch.command("DEL", marker_key(dispatch_id))


def missing_markers(dispatch_ids: list[str]) -> set[str]:
    from hive_project.redis_client import get_redis

    if not dispatch_ids:
        return set()
    with get_redis().pipeline(transaction=False) as pipe:
        for dispatch_id in dispatch_ids:
            pipe.exists(marker_key(dispatch_id))
        found = pipe.execute()
    return {d for d, present in zip(dispatch_ids, found, strict=True) if not present}
