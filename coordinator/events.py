"""The event bus: one publish function for every state change in Hive.

``publish(event_type, source, data, topics)`` builds the seed's HiveEvent (id,
type, source, timestamp, data, correlation_id) and, after the surrounding
transaction commits, appends it to the log of each topic and sends it to that
topic's channel-layer group.

Channel layers deliver at most once and drop messages for a consumer that falls
behind, without telling anyone. So every topic has its own contiguous sequence
number and a bounded log in Redis (``HIVE_EVENT_RETENTION`` events per topic,
kept ``HIVE_EVENT_RETENTION_SECONDS`` after the last one): a subscriber that
reconnects or sees a gap asks for what came after the last number it saw.

Wildcard subscriptions (``task.*``) are topics of their own: an event about task
42 goes to ``task.42`` and ``task.*``, each with its own sequence, so a wildcard
subscriber can detect gaps exactly like anyone else.

Sync callers (views, Celery workers) hand the channel-layer send to one
background event loop per process, so channels_redis never sees a closed loop
(the pitfall of calling ``async_to_sync`` from worker processes).
"""
from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from channels.layers import get_channel_layer
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction

from hive_project.redis_client import Batch, get_redis

logger = logging.getLogger(__name__)

# The seed's event types, plus cancellation and live output of a running task.
AGENT_REGISTERED = "agent.registered"
AGENT_STATUS_CHANGED = "agent.status_changed"
AGENT_PERFORMANCE_UPDATE = "agent.performance_update"
TASK_CREATED = "task.created"
TASK_ASSIGNED = "task.assigned"
TASK_STARTED = "task.started"
TASK_PROGRESS = "task.progress"
TASK_COMPLETED = "task.completed"
TASK_FAILED = "task.failed"
TASK_CANCELLED = "task.cancelled"
WORKFLOW_EXECUTION_STARTED = "workflow.execution_started"
WORKFLOW_NODE_COMPLETED = "workflow.node_completed"
WORKFLOW_EXECUTION_COMPLETED = "workflow.execution_completed"
SYSTEM_ALERT = "system.alert"
SYSTEM_MAINTENANCE = "system.maintenance"

# Topic families a subscriber may use with a wildcard.
WILDCARD_FAMILIES = ("agent", "task", "execution", "alerts", "user")
CLUSTER_STATUS = "cluster.status"

_SEQ_KEY = "hive:events:seq:{topic}"
_LOG_KEY = "hive:events:log:{topic}"

# Atomically, for each topic: next sequence number, the event stored under it, the
# log trimmed to its retention, and (when the topic's third key, its channel-layer
# group channel, is not "-") the live message published to subscribers. The member
# is the event JSON with "seq" spliced in; the live message is what channels_redis'
# pub/sub layer would send for group_send (msgpack, see _direct_channel_prefix).
# KEYS: seq, log, channel per topic. ARGV: payload, retention, ttl, then per topic:
# topic, frame head (up to "seq":), frame middle (from after the number to "data":).
_APPEND = """
local payload = ARGV[1]
local body = string.sub(payload, 2)
local seqs = {}
for i = 0, #KEYS / 3 - 1 do
  local seq_key, log_key, channel = KEYS[3 * i + 1], KEYS[3 * i + 2], KEYS[3 * i + 3]
  local seq = redis.call('INCR', seq_key)
  redis.call('ZADD', log_key, seq, '{"seq":' .. seq .. ',' .. body)
  redis.call('ZREMRANGEBYRANK', log_key, 0, -(tonumber(ARGV[2]) + 1))
  redis.call('EXPIRE', log_key, ARGV[3])
  redis.call('EXPIRE', seq_key, ARGV[3])
  if channel ~= '-' then
    local frame = ARGV[5 + 3 * i] .. seq .. ARGV[6 + 3 * i] .. payload .. '}'
    redis.call('PUBLISH', channel, cmsgpack.pack({type = 'hive.event', topic = ARGV[4 + 3 * i], seq = seq,
                                                 event = payload, frame = frame}))
  end
  seqs[i + 1] = seq
end
return seqs
"""


@dataclass
class HiveEvent:
    type: str
    source: str
    data: dict[str, Any]
    correlation_id: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    timestamp: str = field(default_factory=lambda: datetime.now(UTC).isoformat())

    def to_json(self) -> str:
        # Not dataclasses.asdict: it deep-copies ``data`` (a task's whole result) first.
        return json.dumps({"type": self.type, "source": self.source, "data": self.data,
                           "correlation_id": self.correlation_id, "id": self.id, "timestamp": self.timestamp},
                          cls=DjangoJSONEncoder, separators=(",", ":"))


def group_name(topic: str) -> str:
    """Channel-layer group names allow [a-zA-Z0-9_.-]; '*' becomes 'all'."""
    return "hive." + topic.replace("*", "all")


def valid_topic(topic: str) -> bool:
    family, _, rest = topic.partition(".")
    if topic == CLUSTER_STATUS:
        return True
    if family not in WILDCARD_FAMILIES or not rest or len(topic) > 90:
        return False
    return rest == "*" or all(ch.isalnum() or ch in "-_:" for ch in rest)


# Which permission lets a user see a topic family.
TOPIC_PERMISSIONS = {
    "agent": "agents.view_agent",
    "task": "coordinator.view_task",
    "cluster": "agents.view_agent",
    "alerts": "agents.view_agent",
    "execution": "workflows.view_execution",
}


def may_see(user: Any, topic: str) -> bool:
    family, _, rest = topic.partition(".")
    if family == "user":
        return bool(user.is_superuser or rest == str(user.pk))
    return bool(user.has_perm(TOPIC_PERMISSIONS[family]))


def with_wildcards(topics: Iterable[str]) -> list[str]:
    out: list[str] = []
    for topic in topics:
        out.append(topic)
        family = topic.partition(".")[0]
        if family in WILDCARD_FAMILIES and not topic.endswith(".*"):
            out.append(f"{family}.*")
    return list(dict.fromkeys(out))


def publish(event_type: str, source: str, data: dict[str, Any], topics: Iterable[str],
            correlation_id: str | None = None, also: Callable[[Batch], None] | None = None) -> HiveEvent:
    """Publish after the current transaction commits (at once outside one).

    ``also`` adds more Redis work that belongs with the event to the same round trip
    (a task's start deletes its dispatch marker, its completion requests a pass)."""
    return publish_many([(event_type, source, data, list(topics), correlation_id)], also=also)[0]


def publish_many(items: list[tuple[str, str, dict[str, Any], list[str], str | None]],
                 also: Callable[[Batch], None] | None = None) -> list[HiveEvent]:
    """``publish`` for each (type, source, data, topics, correlation id), in that order,
    in one round trip to Redis (a pass assigning many tasks); ``also`` as for ``publish``."""
    batch = [(HiveEvent(type=kind, source=source, data=data, correlation_id=correlation), with_wildcards(topics))
             for kind, source, data, topics, correlation in items]
    if batch or also is not None:
        transaction.on_commit(lambda: _deliver(batch, also))
    return [event for event, _ in batch]


def _deliver(items: list[tuple[HiveEvent, list[str]]], also: Callable[[Batch], None] | None = None) -> None:
    batch = Batch()
    try:
        direct = _direct_channel_prefix()
        for event, topics in items:
            payload = event.to_json()
            then = None if direct is not None else functools.partial(_send_live, payload, topics)
            batch.script(_APPEND, *_append_call(topics, payload, event, direct), then=then)
        if also is not None:
            also(batch)
        batch.execute()
    except Exception:  # events must never break the state change that caused them
        logger.exception("could not publish %s", ", ".join(sorted({event.type for event, _ in items})))


def _send_live(payload: str, topics: list[str], seqs: list[Any]) -> None:
    _sender().send(payload, list(zip(topics, (int(seq) for seq in seqs), strict=True)))


def append(topics: list[str], payload: str, *, event: HiveEvent | None = None,
           channel_prefix: str | None = None) -> list[int]:
    """Store the event in each topic's log and, given the channel prefix, publish it
    live; returns its sequence number in each topic.

    One round trip for all of it (one script call).
    """
    batch = Batch()
    batch.script(_APPEND, *_append_call(topics, payload, event, channel_prefix))
    return [int(seq) for seq in batch.execute()[0]]


def _append_call(topics: list[str], payload: str, event: HiveEvent | None,
                 channel_prefix: str | None) -> tuple[list[str], list[Any]]:
    keys: list[str] = []
    args: list[Any] = [payload, settings.HIVE_EVENT_RETENTION, settings.HIVE_EVENT_RETENTION_SECONDS]
    for topic in topics:
        keys += [_SEQ_KEY.format(topic=topic), _LOG_KEY.format(topic=topic), "-"]
        args += [topic, "", ""]
        if channel_prefix is not None and event is not None:
            keys[-1] = f"{channel_prefix}{group_name(topic)}"
            args[-2:] = _frame_parts(topic, event.id, event.timestamp)
    return keys, args


@functools.cache
def _direct_channel_prefix() -> str | None:
    """The group-channel prefix when live events can be published from the append
    script itself: the channel layer is channels_redis' pub/sub layer on the Redis
    Hive uses, with its default msgpack serializer and no encryption. Its group_send
    is then exactly PUBLISH "<prefix>__group__<group>" msgpack(message); doing that
    in the script saves two round trips and a thread hop per event. Any other layer
    gets group_send from the sender thread."""
    config = settings.CHANNEL_LAYERS.get("default", {})
    options = config.get("CONFIG", {})
    if (config.get("BACKEND") != "channels_redis.pubsub.RedisPubSubChannelLayer"
            or options.get("hosts") != [settings.REDIS_URL]
            or options.get("serializer_format", "msgpack") != "msgpack"
            or options.get("symmetric_encryption_keys")):
        return None
    return f"{options.get('prefix', 'asgi')}__group__"


def _frame_parts(topic: str, event_id: str | None, timestamp: str | None) -> tuple[str, str]:
    head = json.dumps({"id": event_id, "type": "data", "topic": topic}, separators=(",", ":"))
    return f'{head[:-1]},"seq":', f',"timestamp":{json.dumps(timestamp)},"data":'


def data_frame(topic: str, seq: int, payload: str) -> str:
    """The protocol's ``data`` message for one event, built once for every subscriber.

    ``payload`` is the HiveEvent JSON; its id and timestamp are repeated at the top
    level as the seed's WebSocketMessage has them.
    """
    event = json.loads(payload)
    head, middle = _frame_parts(topic, event.get("id"), event.get("timestamp"))
    return f"{head}{seq}{middle}{payload}}}"


def events_after(topic: str, after: int, limit: int = 500) -> list[dict[str, Any]]:
    """Stored events of a topic with a sequence number above ``after``, oldest first."""
    raw = get_redis().zrangebyscore(_LOG_KEY.format(topic=topic), f"({after}", "+inf", start=0, num=limit)
    return [json.loads(item) for item in raw]


def current_seq(topic: str) -> int:
    value = get_redis().get(_SEQ_KEY.format(topic=topic))
    return int(value) if value else 0


class _Sender:
    """A private event loop thread that owns this process's channel-layer connections.

    One consumer coroutine sends in publish order, so events of one process leave
    in the order they happened.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.layer = get_channel_layer()
        self.queue: asyncio.Queue[tuple[str, list[tuple[str, int]]] | Future[None]] | None = None
        ready = threading.Event()
        threading.Thread(target=self._run, args=(ready,), name="hive-events", daemon=True).start()
        ready.wait(5)

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.queue = asyncio.Queue()
        self.loop.create_task(self._drain())
        ready.set()
        self.loop.run_forever()

    def send(self, payload: str, messages: list[tuple[str, int]]) -> None:
        assert self.queue is not None
        self.loop.call_soon_threadsafe(self.queue.put_nowait, (payload, messages))

    def flush(self, timeout: float) -> None:
        assert self.queue is not None
        done: Future[None] = Future()
        self.loop.call_soon_threadsafe(self.queue.put_nowait, done)
        done.result(timeout)

    async def _drain(self) -> None:
        assert self.queue is not None
        while True:
            item = await self.queue.get()
            if isinstance(item, Future):
                item.set_result(None)
                continue
            payload, messages = item
            for topic, seq in messages:
                if self.layer is None:
                    break
                try:
                    await self.layer.group_send(group_name(topic), {"type": "hive.event", "topic": topic, "seq": seq,
                                                                    "event": payload,
                                                                    "frame": data_frame(topic, seq, payload)})
                except Exception:
                    logger.exception("channel layer send to %s failed", topic)


_senders: dict[int, _Sender] = {}
_senders_lock = threading.Lock()


def _sender() -> _Sender:
    pid = os.getpid()  # a forked worker child needs its own thread and connections
    with _senders_lock:
        if pid not in _senders:
            _senders[pid] = _Sender()
        return _senders[pid]


def flush(timeout: float = 5.0) -> None:
    """Wait until this process's queued sends went out (tests, shutdown)."""
    sender = _senders.get(os.getpid())
    if sender is not None:
        sender.flush(timeout)


def task_event(event_type: str, task: Any, also: Callable[[Batch], None] | None = None, **data: Any) -> HiveEvent:
    """An event about a task, on ``task.<id>`` (and ``task.*``); ``also`` as for ``publish``."""
    return publish(*task_event_args(event_type, task, **data), also=also)


def task_event_args(event_type: str, task: Any, **data: Any) -> tuple[str, str, dict[str, Any], list[str], str]:
    """What ``task_event`` publishes, for ``publish_many``."""
    payload = {"task_id": str(task.pk), "title": task.title, "status": task.status, "priority": task.priority,
               "task_type": task.task_type, "agent_id": getattr(task.assigned_agent, "slug", None)
               if task.assigned_agent_id else None, **data}
    return event_type, "coordinator", payload, [f"task.{task.pk}"], str(task.pk)


def agent_event(event_type: str, agent: Any, **data: Any) -> HiveEvent:
    """An event about an agent, on ``agent.<agent_id>`` (and ``agent.*``)."""
    payload = {"agent_id": agent.slug, "id": str(agent.pk), "name": agent.name, "status": agent.display_status, **data}
    return publish(event_type, "agent_manager", payload, [f"agent.{agent.slug}"])
