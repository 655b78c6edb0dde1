"""Simulated Ollama nodes for tests.

Enable in a test module with ``pytest_plugins = ("tests.simulator_fixtures",)`` and use:

- ``start_simulator(**config) -> SimulatedNode``: a node on a free loopback port, served
  on a background thread of the test process; ``node.base_url``, ``node.stats()``,
  ``node.set_fault(mode)``. Keyword arguments are ``SimulatorConfig`` fields; the
  defaults are the fast ``FAST`` settings. Stopped at teardown.
- ``simulator``: one node with the ``FAST`` settings.
- ``spawn_simulator(**options) -> SimulatorProcess``: the same node as a separate
  process (``python -m agents.simulator``), for tests that need a real process (e2e,
  killing it). ``proc.base_url``, ``proc.stats()``, ``proc.set_fault(mode)``,
  ``proc.stop()``. Stopped (SIGTERM, then SIGKILL) at teardown.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.simulator import SimulatedNode, SimulatorConfig

ROOT = Path(__file__).resolve().parent.parent

# Fast enough for unit tests, slow enough that streaming, queueing and cold loads are
# observable.
FAST: dict[str, Any] = {"tps": 200.0, "load_delay": 0.2, "parallel": 2, "keep_alive": 300.0}

_LISTENING = re.compile(r"listening on (http://\S+)")


@pytest.fixture
def start_simulator() -> Iterator[Callable[..., SimulatedNode]]:
    nodes: list[SimulatedNode] = []

    def start(**config: Any) -> SimulatedNode:
        settings = {**FAST, "host": "127.0.0.1", "port": 0, **config}
        settings.setdefault("name", f"test-sim-{len(nodes) + 1}")
        node = SimulatedNode(SimulatorConfig(**settings)).start()
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def simulator(start_simulator: Callable[..., SimulatedNode]) -> SimulatedNode:
    return start_simulator()


class SimulatorProcess:
    """A simulator running as a child process (`python -m agents.simulator`)."""

    def __init__(self, process: subprocess.Popen[bytes], base_url: str, log_path: Path) -> None:
        self.process = process
        self.base_url = base_url
        self.log_path = log_path

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/_sim/stats", timeout=5).json()

    def set_fault(self, mode: str) -> None:
        httpx.post(f"{self.base_url}/_sim/fault", json={"mode": mode}, timeout=5).raise_for_status()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        return self.process.returncode


def spawn(log_path: Path, **options: Any) -> SimulatorProcess:
    """Start `python -m agents.simulator` on a free port; options are CLI flags."""
    settings = {**FAST, "host": "127.0.0.1", "port": 0, **options}
    argv = [sys.executable, "-m", "agents.simulator"]
    for key, value in settings.items():
        text = ",".join(value) if isinstance(value, list | tuple) else str(value)
        argv += [f"--{key.replace('_', '-')}", text]
    log_file = log_path.open("wb")
    process = subprocess.Popen(argv, cwd=ROOT, stdout=log_file, stderr=subprocess.STDOUT, env={**os.environ})
    log_file.close()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        match = _LISTENING.search(log_path.read_text(errors="replace"))
        if match:
            return SimulatorProcess(process, match.group(1), log_path)
        if process.poll() is not None:
            break
        time.sleep(0.02)
    process.kill()
    process.wait()
    raise RuntimeError(f"simulator process did not start:\n{log_path.read_text(errors='replace')}")


@pytest.fixture
def spawn_simulator(tmp_path: Path) -> Iterator[Callable[..., SimulatorProcess]]:
    processes: list[SimulatorProcess] = []

    def start(**options: Any) -> SimulatorProcess:
        proc = spawn(tmp_path / f"simulator-{len(processes) + 1}.log", **options)
        processes.append(proc)
        return proc

    yield start
    for proc in processes:
        proc.stop()
