"""Test settings: the production settings module, pointed at a private var dir.

Defaults mirror the embedded mode (SQLite + embedded Redis, started by
tests/conftest.py); DATABASE_URL / REDIS_URL switch to PostgreSQL and a real Redis.
Processes the tests start (workers, ASGI server) use this module too.
"""
from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
# One directory per test session (its SQLite file, embedded Redis socket, logs), so
# two sessions never share state. Processes a test starts inherit HIVE_VAR_DIR.
os.environ.setdefault("HIVE_VAR_DIR", str(_ROOT / "var" / "test" / f"run-{os.getpid()}"))
# Short leases and intervals so crash-recovery tests finish in seconds.
os.environ.setdefault("HIVE_TASK_LEASE_SECONDS", "4")
os.environ.setdefault("HIVE_PROBE_TIMEOUT", "2")
os.environ.setdefault("HIVE_OLLAMA_CONNECT_TIMEOUT", "1")
os.environ.setdefault("HIVE_RECONCILE_INTERVAL", "2")
os.environ.setdefault("HIVE_SCHEDULER_INTERVAL", "2")
os.environ.setdefault("HIVE_QUEUED_REDISPATCH_SECONDS", "5")
# Status snapshots at once, not from a timer thread that could outlive a test's database.
os.environ.setdefault("HIVE_STATUS_INTERVAL", "0")

from hive_project.settings import *  # noqa: E402,F403
from hive_project.settings import HIVE_THROTTLE_RATES  # noqa: E402

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
for _role in HIVE_THROTTLE_RATES:
    HIVE_THROTTLE_RATES[_role] = os.environ.get(f"HIVE_THROTTLE_{_role.upper()}", "100000/min")
