"""ASGI entry point: HTTP today; the WebSocket route joins it in the events issue."""
from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hive_project.settings")

application = get_asgi_application()
