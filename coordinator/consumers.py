"""The /ws/events WebSocket: the seed's message protocol over the event bus.

Client → server: ``{"id": "c1", "type": "subscribe", "topic": "task.*", "last_seq": 12}``,
``unsubscribe``, ``ping``. Server → client: ``data`` (one event, with its topic's
``seq``), ``error``, ``pong``, and an echo of ``subscribe``/``unsubscribe`` as the
acknowledgement. Events of a topic reach the client in sequence order, each once:
a gap (the channel layer dropped or reordered a message) is filled from the
topic's log, and duplicates are skipped.
"""
from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from coordinator import events
from monitoring.prometheus import WEBSOCKET_CONNECTIONS

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
MAX_SUBSCRIPTIONS = 100
MAX_MESSAGE_BYTES = 64 * 1024

def now() -> str:
    return datetime.now(UTC).isoformat()


class EventConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.subscriptions: dict[str, int] = {}
        user = self.scope.get("user")
        await self.accept()
        self.counted = bool(user is not None and user.is_authenticated)
        if self.counted:
            WEBSOCKET_CONNECTIONS.inc()
        if user is None or not user.is_authenticated:
            await self.send_json({"type": "error", "data": {
                "code": CLOSE_UNAUTHENTICATED,
                "message": "Authentication required: pass ?token=<JWT or API token>, an Authorization header, "
                           "or log in through the admin first."}})
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def disconnect(self, code: int) -> None:
        if getattr(self, "counted", False):
            WEBSOCKET_CONNECTIONS.dec()
            self.counted = False
        for topic in list(getattr(self, "subscriptions", {})):
            await self.channel_layer.group_discard(events.group_name(topic), self.channel_name)

    async def send_json(self, message: dict[str, Any]) -> None:
        message.setdefault("timestamp", now())
        await self.send(text_data=json.dumps(message, separators=(",", ":")))

    async def error(self, message: str, request_id: Any = None, **extra: Any) -> None:
        await self.send_json({"id": request_id, "type": "error", "data": {"message": message, **extra}})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if text_data is None:
            await self.error("binary frames are not supported; send JSON text")
            return
        if len(text_data) > MAX_MESSAGE_BYTES:
            await self.error(f"message too large ({len(text_data)} bytes; limit {MAX_MESSAGE_BYTES})")
            return
        try:
            message = json.loads(text_data)
        except ValueError as exc:
            await self.error(f"malformed JSON: {exc}")
            return
        if not isinstance(message, dict):
            await self.error("a message must be a JSON object with a 'type'")
            return
        request_id = message.get("id")
        kind = message.get("type")
        if kind == "ping":
            await self.send_json({"id": request_id, "type": "pong", "data": message.get("data")})
        elif kind == "subscribe":
            await self.subscribe(message, request_id)
        elif kind == "unsubscribe":
            await self.unsubscribe(message, request_id)
        else:
            await self.error(f"unknown message type {kind!r}; use subscribe, unsubscribe or ping", request_id)

    async def subscribe(self, message: dict[str, Any], request_id: Any) -> None:
        topic = message.get("topic")
        if not isinstance(topic, str) or not events.valid_topic(topic):
            await self.error(f"invalid topic {topic!r}; use e.g. agent.<id>, task.<id>, task.*, "
                             "execution.<id>, cluster.status, alerts.<severity>", request_id)
            return
        last_seq = message.get("last_seq")
        if last_seq is not None and (isinstance(last_seq, bool) or not isinstance(last_seq, int) or last_seq < 0):
            await self.error("last_seq must be a non-negative integer", request_id, topic=topic)
            return
        if not await self.may_see(topic):
            await self.error(f"you may not subscribe to {topic}", request_id, topic=topic, code=403)
            return
        if topic not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            await self.error(f"at most {MAX_SUBSCRIPTIONS} subscriptions per connection", request_id, topic=topic)
            return
        # Join first, then read the position: nothing published in between is missed.
        await self.channel_layer.group_add(events.group_name(topic), self.channel_name)
        current = await database_sync_to_async(events.current_seq, thread_sensitive=False)(topic)
        start = current if last_seq is None else min(last_seq, current)
        self.subscriptions[topic] = start
        await self.send_json({"id": request_id, "type": "subscribe", "topic": topic,
                              "data": {"subscribed": True, "seq": current}})
        if last_seq is not None and last_seq < current:
            await self.catch_up(topic)

    async def unsubscribe(self, message: dict[str, Any], request_id: Any) -> None:
        topic = message.get("topic")
        if topic not in self.subscriptions:
            await self.error(f"not subscribed to {topic!r}", request_id)
            return
        del self.subscriptions[topic]
        await self.channel_layer.group_discard(events.group_name(topic), self.channel_name)
        await self.send_json({"id": request_id, "type": "unsubscribe", "topic": topic, "data": {"subscribed": False}})

    @database_sync_to_async
    def may_see(self, topic: str) -> bool:
        return events.may_see(self.scope["user"], topic)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # channels closes stale database connections before every message, a thread hop
        # each time: for live events (one per subscriber per event, and they touch no
        # database) that was a third of the web process's time. The handlers that do use
        # the database go through database_sync_to_async, which closes them itself.
        if message["type"] == "hive.event":
            await self.hive_event(message)
            return
        await super().dispatch(message)

    async def hive_event(self, message: dict[str, Any]) -> None:
        """A live event from the channel layer."""
        topic, seq = message["topic"], message["seq"]
        last = self.subscriptions.get(topic)
        if last is None or seq <= last:
            return  # unsubscribed meanwhile, or already delivered from the log
        if seq == last + 1:
            # The frame was encoded once by the publisher for every subscriber.
            self.subscriptions[topic] = seq
            await self.send(text_data=message["frame"])
        else:
            await self.catch_up(topic)

    async def catch_up(self, topic: str) -> None:
        while True:
            last = self.subscriptions.get(topic)
            if last is None:
                return
            stored = await database_sync_to_async(events.events_after, thread_sensitive=False)(topic, last)
            for event in stored:
                seq = event.pop("seq")
                if seq > self.subscriptions.get(topic, seq):
                    await self.deliver(topic, seq, event)
            if len(stored) < 500:
                return

    async def deliver(self, topic: str, seq: int, event: dict[str, Any]) -> None:
        self.subscriptions[topic] = seq
        await self.send(text_data=events.data_frame(topic, seq, json.dumps(event, separators=(",", ":"))))
