"""ASGI entry point: Django for HTTP, the event WebSocket at /ws/events."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import re_path  # noqa: E402

from coordinator.consumers import EventConsumer  # noqa: E402
from hive_project.ws_auth import HiveAuthStack, OriginCheck  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_application,
    "websocket": OriginCheck(HiveAuthStack(URLRouter([
        re_path(r"^ws/events/?$", EventConsumer.as_asgi()),
    ]))),
})
