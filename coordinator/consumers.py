"""The /ws/events WebSocket: the seed's message protocol over the event bus.

Client → server: ``{"id": "c1", "type": "subscribe", "topic": "task.*", "last_seq": 12}``,
``unsubscribe``, ``ping``. Server → client: ``data`` (one event, with its topic's
``seq``), ``error``, ``pong``, and an echo of ``subscribe``/``unsubscribe`` as the
acknowledgement. Events of a topic reach the client in sequence order, each once:
a gap (the channel layer dropped or reordered a message) is filled from the
topic's log, and duplicates are skipped.

A socket lives only as long as what opened it: every ``HIVE_WS_RECHECK_SECONDS`` it
checks its credential again (see ``hive_project.ws_auth``) and closes with 4401 once
the token is revoked or expired, the session ended or the user deactivated, with 4403
once the user loses the last permission to see events; a subscription the user may
no longer see is dropped with an error frame. A user holds at most ``HIVE_WS_MAX_CONNECTIONS_PER_USER``
sockets (4429 beyond that).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import UTC, datetime
from typing import Any

import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.db import DatabaseError

from coordinator import events
from hive_project import jsonsafe, ws_auth
from monitoring.prometheus import WEBSOCKET_CONNECTIONS

logger = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
CLOSE_INTERNAL_ERROR = 1011
MAX_SUBSCRIPTIONS = 100
AUTHENTICATION_REQUIRED = ("Authentication required: pass ?token=<JWT or API token>, an Authorization header, "
                           "or log in through the admin first.")
CREDENTIALS_ENDED = ("Authentication required: the token or session that opened this connection was revoked or has "
                     "expired, or its user was deactivated; connect again with a valid one.")
MAX_MESSAGE_BYTES = 64 * 1024

def now() -> str:
    return datetime.now(UTC).isoformat()


class EventConsumer(AsyncWebsocketConsumer):
    closing = False  # once set, nothing more is sent or handled
    counted = False  # in the WEBSOCKET_CONNECTIONS gauge
    slot_user: Any = None  # whose per-user connection count this socket is in
    rechecker: asyncio.Task[None] | None = None
    grants: ws_auth.Grants | None = None  # from the last check of the credential

    async def connect(self) -> None:
        self.subscriptions: dict[str, int] = {}
        self.credential: ws_auth.Credential | None = self.scope.get(ws_auth.CREDENTIAL_SCOPE_KEY)
        await self.accept()  # close codes reach the client only after the handshake
        grants = await self.check()
        if not await self.admit(grants):
            return
        claimed = await sync_to_async(ws_auth.claim_connection, thread_sensitive=False)(grants.pk, self.channel_name)
        if not claimed:
            limit = settings.HIVE_WS_MAX_CONNECTIONS_PER_USER
            await self.refuse(CLOSE_TOO_MANY, f"Too many connections: at most {limit} open WebSockets per user "
                                              "(HIVE_WS_MAX_CONNECTIONS_PER_USER); close one first.")
            return
        self.slot_user = grants.pk
        self.counted = True
        WEBSOCKET_CONNECTIONS.inc()
        self.rechecker = asyncio.create_task(self.recheck_forever(), name=f"ws-recheck:{self.channel_name}")

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.rechecker is not None:
            self.rechecker.cancel()
            await asyncio.wait([self.rechecker])  # it has ended before the slot is released
            self.rechecker = None
        if self.counted:
            WEBSOCKET_CONNECTIONS.dec()
            self.counted = False
        if self.slot_user is not None:
            await sync_to_async(ws_auth.release_connection, thread_sensitive=False)(self.slot_user, self.channel_name)
            self.slot_user = None
        await self.drop_subscriptions()

    async def check(self) -> ws_auth.Grants | None:
        if self.credential is None:  # nothing authenticated this socket
            return None
        return await database_sync_to_async(ws_auth.recheck, thread_sensitive=False)(
            self.credential, events.TOPIC_PERMISSIONS.values())

    async def admit(self, grants: ws_auth.Grants | None) -> bool:
        """Keep the socket for these grants (dropping topics no longer allowed) or close it."""
        if grants is None:
            await self.refuse(CLOSE_UNAUTHENTICATED, CREDENTIALS_ENDED if self.grants is not None else AUTHENTICATION_REQUIRED)
            return False
        # A user without any role may still connect (the dashboard then shows what is
        # refused); one who loses the last permission to see events is shown the door.
        if self.grants is not None and self.grants.sees_anything and not grants.sees_anything:
            await self.refuse(CLOSE_FORBIDDEN, "You may no longer see any events: your role was removed.")
            return False
        self.grants = grants
        for topic in list(self.subscriptions):
            if not events.may_see(grants, topic):
                await self.discard(topic)
                await self.error(f"you may no longer see {topic}; unsubscribed", None, topic=topic, code=403)
        return True

    async def recheck_forever(self) -> None:
        interval = settings.HIVE_WS_RECHECK_SECONDS
        try:
            while not self.closing:
                await asyncio.sleep(interval)
                try:
                    await sync_to_async(ws_auth.refresh_connection, thread_sensitive=False)(self.slot_user, self.channel_name)
                    grants = await self.check()
                except (DatabaseError, redis.RedisError):
                    logger.warning("WebSocket re-check failed; trying again in %ss", interval, exc_info=True)
                    continue
                if not await self.admit(grants):
                    return
        except Exception:
            # Unchecked, the socket would keep whatever it had: end it, the client reconnects.
            logger.exception("WebSocket re-check crashed; closing the connection")
            with contextlib.suppress(Exception):
                await self.refuse(CLOSE_INTERNAL_ERROR, "internal error while re-checking your credentials")

    async def refuse(self, code: int, message: str) -> None:
        await self.send_json({"type": "error", "data": {"code": code, "message": message}})
        self.closing = True  # nothing more goes out, whatever is still on its way in
        await self.drop_subscriptions()
        await self.close(code=code)

    async def drop_subscriptions(self) -> None:
        for topic in list(self.subscriptions):
            await self.discard(topic)

    async def discard(self, topic: str) -> None:
        self.subscriptions.pop(topic, None)
        await self.channel_layer.group_discard(events.group_name(topic), self.channel_name)

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        if not self.closing:
            await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def send_json(self, message: dict[str, Any]) -> None:
        message.setdefault("timestamp", now())
        await self.send(text_data=json.dumps(message, separators=(",", ":")))

    async def error(self, message: str, request_id: Any = None, **extra: Any) -> None:
        await self.send_json({"id": request_id, "type": "error", "data": {"message": message, **extra}})

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.closing:
            return
        if text_data is None:
            await self.error("binary frames are not supported; send JSON text")
            return
        if len(text_data) > MAX_MESSAGE_BYTES:
            await self.error(f"message too large ({len(text_data)} bytes; limit {MAX_MESSAGE_BYTES})")
            return
        try:
            message = jsonsafe.loads(text_data)
        except jsonsafe.UnsafeJSON as exc:
            await self.error(f"refused JSON: {exc}")
            return
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
        if self.grants is None or not events.may_see(self.grants, topic):
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
        await self.discard(topic)
        await self.send_json({"id": request_id, "type": "unsubscribe", "topic": topic, "data": {"subscribed": False}})

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
