"""The simulator's VRAM limit: at most max_loaded models resident, LRU eviction of idle ones."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx
import ollama
import pytest

from agents.simulator import SimulatedNode, SimulatorConfig

pytest_plugins = ("tests.simulator_fixtures",)


def loaded(node: SimulatedNode) -> list[str]:
    return sorted(m["name"] for m in httpx.get(f"{node.base_url}/api/ps", timeout=5).json()["models"])


def test_loading_past_the_limit_evicts_the_least_recently_used_model(
    start_simulator: Callable[..., SimulatedNode],
) -> None:
    node = start_simulator(models="a:1b,b:1b,c:1b", load_delay=0.05, max_loaded=2)
    with ollama.Client(host=node.base_url, timeout=10) as client:
        client.generate("a:1b", "hi", options={"num_predict": 2})
        client.generate("b:1b", "hi", options={"num_predict": 2})
        client.generate("a:1b", "again", options={"num_predict": 2})  # b is now the least recently used
        assert loaded(node) == ["a:1b", "b:1b"]

        client.generate("c:1b", "hi", options={"num_predict": 2})
        assert loaded(node) == ["a:1b", "c:1b"]
        stats = node.stats()
        assert stats["loads"] == 3 and stats["evictions"] == 1 and stats["max_loaded"] == 2

        cold = client.generate("b:1b", "back", options={"num_predict": 2})
        assert cold.load_duration is not None and cold.load_duration >= 0.04e9
        assert loaded(node) == ["b:1b", "c:1b"]
        assert node.stats()["evictions"] == 2


def test_a_load_waits_while_every_resident_model_is_in_use(start_simulator: Callable[..., SimulatedNode]) -> None:
    node = start_simulator(models="a:1b,b:1b", tps=20, load_delay=0.05, parallel=2, max_loaded=1)
    busy_done = threading.Event()

    def long_generation() -> None:
        with ollama.Client(host=node.base_url, timeout=10) as client:
            client.generate("a:1b", "long", options={"num_predict": 10})  # 0.5 s on a
        busy_done.set()

    worker = threading.Thread(target=long_generation)
    worker.start()
    deadline = time.monotonic() + 5
    while node.stats()["running"] == 0:  # a is loaded and generating
        assert time.monotonic() < deadline
        time.sleep(0.01)

    started = time.monotonic()
    with ollama.Client(host=node.base_url, timeout=10) as client:
        second = client.generate("b:1b", "short", options={"num_predict": 1})
    waited = time.monotonic() - started
    worker.join(5)

    assert busy_done.is_set()
    assert waited >= 0.3, "b could only load once a finished"
    assert second.load_duration is not None and second.load_duration >= 0.3e9
    assert loaded(node) == ["b:1b"]
    stats = node.stats()
    assert stats["loads"] == 2 and stats["evictions"] == 1


def test_requests_behind_a_waiting_load_wait_too_as_in_ollama(start_simulator: Callable[..., SimulatedNode]) -> None:
    """Otherwise a stream of requests for the resident model would starve the load forever."""
    node = start_simulator(models="a:1b,b:1b", tps=20, load_delay=0.05, parallel=4, max_loaded=1)
    finished: list[str] = []

    def generate(model: str, tokens: int) -> None:
        with ollama.Client(host=node.base_url, timeout=10) as client:
            client.generate(model, f"{model} {tokens}", options={"num_predict": tokens})
        finished.append(model)

    first = threading.Thread(target=generate, args=("a:1b", 8))
    first.start()
    deadline = time.monotonic() + 5
    while node.stats()["running"] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cold = threading.Thread(target=generate, args=("b:1b", 2))
    cold.start()
    while node.stats()["loading"] != ["b:1b"]:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    behind = threading.Thread(target=generate, args=("a:1b", 1))  # a is resident, but b asked first
    behind.start()
    for thread in (first, cold, behind):
        thread.join(10)

    assert finished == ["a:1b", "b:1b", "a:1b"]
    stats = node.stats()
    assert stats["loads"] == 3 and stats["evictions"] == 2


def test_unlimited_by_default_and_a_negative_limit_is_refused(start_simulator: Callable[..., SimulatedNode]) -> None:
    node = start_simulator(models="a:1b,b:1b,c:1b", load_delay=0.01)
    for name in ("a:1b", "b:1b", "c:1b"):
        httpx.post(f"{node.base_url}/api/generate", json={"model": name}, timeout=5).raise_for_status()
    assert loaded(node) == ["a:1b", "b:1b", "c:1b"]
    assert node.stats()["evictions"] == 0
    with pytest.raises(ValueError, match="max_loaded"):
        SimulatorConfig(max_loaded=-1)
