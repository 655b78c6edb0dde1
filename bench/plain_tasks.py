"""The dispatch benchmark's baseline: a plain Celery task making the same Ollama call.

Loaded into a worker with ``-I bench.plain_tasks`` (the application never imports it).
It streams ``/api/generate`` with httpx exactly as Hive's executor does, and records
submit / start / end times in a Redis hash, as a well-written plain Celery task would:
no database, no scheduler, one HTTP client per worker process.
"""
from __future__ import annotations

import json
import time

import httpx

from hive_project.celery import app
from hive_project.redis_client import get_redis

QUEUE = "bench.plain"
_client: httpx.Client | None = None


def client() -> httpx.Client:
    global _client
    if _client is None:
        _client = httpx.Client(timeout=httpx.Timeout(connect=3.0, read=300.0, write=30.0, pool=30.0))
    return _client


@app.task(name="bench.plain_generate", ignore_result=True, acks_late=True)
def plain_generate(url: str, model: str, prompt: str, num_predict: int, submitted: float, key: str, index: int) -> None:
    started = time.time()
    text = []
    body = {"model": model, "prompt": prompt, "stream": True, "options": {"num_predict": num_predict}}
    with client().stream("POST", f"{url}/api/generate", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line:
                text.append(json.loads(line).get("response", ""))
    get_redis().hset(key, str(index), json.dumps([submitted, started, time.time(), len("".join(text))]))
