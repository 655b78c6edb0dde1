"""A simulated Ollama node that speaks Ollama's HTTP API.

Used by the tests, the standalone demo and the benchmarks in place of a GPU box. It is
served with asyncio streams + h11 rather than an ASGI server because the faults must be
real at the TCP level: 'refuse' closes the connection without a response,
'die-mid-stream' drops it in the middle of a chunked body, 'stall' sends headers and
then nothing.

Run it with `python manage.py simulate_ollama --port 11435` or
`python -m agents.simulator --port 11435`; in-process with
`SimulatedNode(SimulatorConfig(port=0)).start()` (a background thread) and `.stop()`.

Beyond Ollama's API it answers `GET /_sim/stats` and `POST /_sim/fault {"mode": ...}`.

Memory: with `max_loaded` N > 0 at most N models are resident at once, as VRAM
allows on a real node. Loading one more first evicts the least recently used model
that no request is using; when every resident model is in use the load waits until
one is released. Like Ollama's scheduler, which serves pending requests one at a
time, newer requests for other models wait behind such a load, so the models in use
drain instead of starving it. Evictions are counted in the stats.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import http
import json
import logging
import math
import random
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.utils import formatdate
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import h11

from hive_project.jsonsafe import loads as safe_json_loads

__all__ = [
    "FAULTS",
    "MAX_PREDICT",
    "SimulatedNode",
    "SimulatorConfig",
    "add_arguments",
    "config_from_options",
    "main",
    "normalize_model_name",
    "parse_keep_alive",
    "token_limit",
]

log = logging.getLogger("hive.simulator")

FAULTS = ("none", "refuse", "503", "stall", "die-mid-stream")
OLLAMA_VERSION = "0.6.5"
DEFAULT_MODELS = ("llama3.2:3b", "codellama:7b")
BUSY_MESSAGE = "server busy, please try again.  maximum pending requests exceeded"

_MAX_BODY = 64 * 1024 * 1024
_READ_SIZE = 64 * 1024
# Ollama's "forever" is time.Duration(math.MaxInt64): about 292 years.
_FOREVER_SECONDS = (2**63 - 1) / 1e9
# Prompt processing runs this many times faster than generation, as on a GPU.
_PROMPT_SPEEDUP = 25.0
_TEMPLATE_TOKENS = 12
# The most tokens one request generates, whatever its num_predict: a request that
# bypassed Hive's own cap (HIVE_MAX_NUM_PREDICT) must not keep a slot busy for ever.
# Tokens are produced one at a time, so memory does not grow with the count either
# (only a non-streamed reply holds its text: about 8 bytes a token).
MAX_PREDICT = 65_536
# Go's encoding/json refuses nesting deeper than this, as a real node does.
_MAX_JSON_DEPTH = 10_000


@dataclass
class SimulatorConfig:
    host: str = "127.0.0.1"
    port: int = 11434
    models: Sequence[str] | str = DEFAULT_MODELS
    tps: float = 40.0
    parallel: int = 2
    load_delay: float = 1.5
    keep_alive: float = 300.0
    fault: str = "none"
    name: str = ""
    # Models resident at once (like VRAM); 0 = unlimited.
    max_loaded: int = 0

    def __post_init__(self) -> None:
        names = self.models.split(",") if isinstance(self.models, str) else list(self.models)
        self.models = tuple(normalize_model_name(m) for m in names if m.strip())
        if not self.models:
            raise ValueError("the simulator needs at least one model")
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; choose one of {', '.join(FAULTS)}")
        if self.parallel < 1:
            raise ValueError("parallel must be at least 1")
        if self.tps < 0 or self.load_delay < 0:
            raise ValueError("tps and load_delay must not be negative")
        if self.max_loaded < 0:
            raise ValueError("max_loaded must not be negative (0 = unlimited)")
        if not self.name:
            self.name = f"sim-{self.port}"


def normalize_model_name(name: str) -> str:
    """Ollama's short form: a name without a tag means ':latest'."""
    name = name.strip()
    tail = name.rsplit("/", 1)[-1]
    return name if ":" in tail else f"{name}:latest"


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _parse_go_duration(text: str) -> float:
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    total, pos = 0.0, 0
    for match in _DURATION_PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def parse_keep_alive(value: Any) -> float | None:
    """Seconds to keep a model loaded, None for forever (Ollama: any negative value).

    Numbers are seconds; strings are Go durations ("5m", "1h30m") or plain numbers.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"invalid keep_alive {value!r}")
    if isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            seconds = _parse_go_duration(text)
    else:
        seconds = float(value)
    if math.isnan(seconds):
        raise ValueError("invalid keep_alive NaN")
    return None if seconds < 0 else seconds


def _rfc3339(epoch_ns: int) -> str:
    seconds, nanos = divmod(epoch_ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def _now_rfc3339() -> str:
    return _rfc3339(time.time_ns())


def _ns(seconds: float) -> int:
    return max(0, int(seconds * 1e9))


# -- the model catalogue ---------------------------------------------------------------

_FAMILIES = (
    ("codellama", "llama"),
    ("llama", "llama"),
    ("qwen2.5", "qwen2"),
    ("qwen", "qwen2"),
    ("mistral", "llama"),
    ("mixtral", "llama"),
    ("gemma3", "gemma3"),
    ("gemma2", "gemma2"),
    ("gemma", "gemma"),
    ("phi3", "phi3"),
    ("phi4", "phi3"),
    ("deepseek", "qwen2"),
    ("starcoder", "starcoder2"),
)
_TOOL_FAMILIES = {"llama", "qwen2", "phi3"}


@dataclass(frozen=True)
class _Model:
    name: str
    family: str
    parameter_count: int
    parameter_size: str
    quantization_level: str
    size: int
    digest: str
    modified_at: str
    context_length: int
    embedding_length: int

    @classmethod
    def describe(cls, name: str) -> _Model:
        digest = hashlib.sha256(name.encode()).hexdigest()
        base, _, tag = name.rpartition("/")[2].partition(":")
        family = next((fam for prefix, fam in _FAMILIES if base.startswith(prefix)), None)
        if family is None:
            family = re.sub(r"[^a-z]", "", base.lower()) or "llama"
        match = re.search(r"(\d+(?:\.\d+)?)b\b", tag.lower()) or re.search(r"(\d+(?:\.\d+)?)b\b", base.lower())
        billions = float(match.group(1)) if match else 7.0
        params = int(billions * 1e9)
        # Q4_K_M stores about 4.85 bits per weight.
        size = int(params * 4.85 / 8) + 300_000_000
        modified = 1_736_935_200 + int(digest[:6], 16) % 5_000_000
        return cls(
            name=name,
            family=family,
            parameter_count=params,
            parameter_size=f"{billions:g}B",
            quantization_level="Q4_K_M",
            size=size,
            digest=digest,
            modified_at=_rfc3339(modified * 1_000_000_000 + int(digest[6:14], 16) % 1_000_000_000),
            context_length=131072 if family == "llama" and "3." in base else 16384,
            embedding_length=3072 if billions < 5 else 4096,
        )

    @property
    def details(self) -> dict[str, Any]:
        return {
            "parent_model": "",
            "format": "gguf",
            "family": self.family,
            "families": [self.family],
            "parameter_size": self.parameter_size,
            "quantization_level": self.quantization_level,
        }

    def tag_entry(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": self.modified_at,
            "size": self.size,
            "digest": self.digest,
            "details": self.details,
        }

    def show_entry(self) -> dict[str, Any]:
        template = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
        prefix = self.family
        return {
            "license": "Simulated model weights; no license applies.",
            "modelfile": (
                '# Modelfile generated by "ollama show"\n'
                "# To build a new Modelfile based on this, replace FROM with:\n"
                f"# FROM {self.name}\n\n"
                f"FROM /root/.ollama/models/blobs/sha256-{self.digest}\n"
                f'TEMPLATE """{template}"""\n'
                'PARAMETER stop "<|eot_id|>"\n'
            ),
            "parameters": 'stop                           "<|eot_id|>"',
            "template": template,
            "details": self.details,
            "model_info": {
                "general.architecture": self.family,
                "general.file_type": 15,
                "general.parameter_count": self.parameter_count,
                "general.quantization_version": 2,
                f"{prefix}.context_length": self.context_length,
                f"{prefix}.embedding_length": self.embedding_length,
                f"{prefix}.block_count": 28 if self.parameter_count < 5e9 else 32,
                "tokenizer.ggml.model": "gpt2",
            },
            "capabilities": ["completion", "tools"] if self.family in _TOOL_FAMILIES else ["completion"],
            "modified_at": self.modified_at,
        }


_WORDS = (
    "the", "model", "node", "cluster", "token", "queue", "worker", "slot", "task", "prompt",
    "stream", "answer", "system", "data", "value", "graph", "signal", "memory", "cache", "layer",
    "vector", "kernel", "batch", "thread", "result", "quickly", "slowly", "always", "often",
    "rarely", "never", "simply", "clearly", "carefully", "gently", "runs", "builds", "reads",
    "writes", "moves", "holds", "sends", "finds", "keeps", "turns", "checks", "makes", "bright",
    "quiet", "rapid", "steady", "simple", "hidden", "shared", "remote", "local", "final", "early",
    "and", "or", "but", "so", "then", "while", "because", "after", "before", "with", "without",
    "over", "under", "into",
)


def token_limit(num_predict: Any) -> int | None:
    """How many tokens ``num_predict`` asks for, capped at MAX_PREDICT; None: the model's
    natural length (Ollama's -1 "until the model stops", -2 "until the context is full",
    0, or anything that is not a number)."""
    if isinstance(num_predict, bool) or not isinstance(num_predict, (int, float)):
        return None
    if isinstance(num_predict, float):
        if math.isnan(num_predict):
            return None
        if math.isinf(num_predict):
            return MAX_PREDICT if num_predict > 0 else None
        num_predict = int(num_predict)  # as Ollama reads a JSON number into an int option
    return min(num_predict, MAX_PREDICT) if num_predict > 0 else None


def _generate_tokens(seed_text: str, count: int | None) -> tuple[int, Iterator[str], str]:
    """Deterministic words for a prompt: one token per word, sentences end with '.'.

    Returns (how many, the tokens, done_reason); the tokens are produced lazily, and
    ``count`` comes through token_limit, so it is at most MAX_PREDICT.
    """
    rng = random.Random(hashlib.sha256(seed_text.encode()).digest())
    natural = rng.randint(20, 60)
    total = count if count is not None else natural

    def words() -> Iterator[str]:
        sentence_left = rng.randint(5, 12)
        start = True
        for index in range(total):
            word = rng.choice(_WORDS)
            if start:
                word = word.capitalize()
            sentence_left -= 1
            start = sentence_left <= 0
            if start:
                word += "."
                sentence_left = rng.randint(5, 12)
            yield word if index == 0 else f" {word}"

    return total, words(), ("length" if count is not None else "stop")


def _count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4)) + _TEMPLATE_TOKENS


def _context_ids(seed_text: str, count: int, limit: int) -> list[int]:
    """The conversation's token ids; like a real context, never longer than ``limit``."""
    rng = random.Random(hashlib.sha256(b"ctx:" + seed_text.encode()).digest())
    return [rng.randrange(1, 128_256) for _ in range(min(count, limit))]


# -- one HTTP exchange -----------------------------------------------------------------


class _Exchange:
    """One request/response on a connection, with client-disconnect detection."""

    def __init__(
        self,
        conn: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: h11.Request,
        body: bytes,
    ) -> None:
        self.conn = conn
        self.reader = reader
        self.writer = writer
        self.method = request.method.decode("ascii", "replace")
        self.target = request.target.decode("ascii", "replace")
        self.path = urlsplit(self.target).path or "/"
        self.body = body
        self.status = 0
        self.gone = False
        self.dropped = False
        self.gone_event = asyncio.Event()
        self._waiter: asyncio.Future[None] | None = None
        self._watcher: asyncio.Task[None] | None = None

    def watch_disconnect(self) -> None:
        # Reading is the only way to see the peer's FIN promptly; anything that is not
        # EOF is a pipelined next request and goes to h11's buffer for the next cycle.
        if self._watcher is None:
            self._watcher = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        try:
            while True:
                data = await self.reader.read(_READ_SIZE)
                if not data:
                    break
                self.conn.receive_data(data)
        except (ConnectionError, OSError):
            pass
        self._mark_gone()

    def _mark_gone(self) -> None:
        if not self.gone:
            self.gone = True
            self.gone_event.set()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def finish(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            # asyncio.wait, not `await watcher`: the watcher's CancelledError must not be
            # confused with (and swallow) a cancellation of this task at shutdown.
            await asyncio.wait({self._watcher})
            self._watcher = None

    async def pause(self, seconds: float) -> bool:
        """Sleep, cut short if the client goes away. True if the client is still here."""
        if self.gone:
            return False
        if seconds <= 0:
            await asyncio.sleep(0)
            return not self.gone
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = loop.call_later(seconds, _resolve, waiter)
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None
        return not self.gone

    async def wait(self, future: asyncio.Future[Any]) -> bool:
        """Wait for `future` or for the client to go away. True if the future finished."""
        if future.done():
            return True
        gone = asyncio.ensure_future(self.gone_event.wait())
        try:
            await asyncio.wait({future, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        return future.done()

    async def _write(self, data: bytes) -> bool:
        if self.gone or self.writer.is_closing():
            self._mark_gone()
            return False
        self.writer.write(data)
        try:
            await self.writer.drain()
        except (ConnectionError, OSError):
            self._mark_gone()
            return False
        return True

    def _response(self, status: int, headers: list[tuple[str, str]]) -> bytes:
        self.status = status
        headers = [*headers, ("Date", formatdate(usegmt=True))]
        return self.conn.send(
            h11.Response(status_code=status, headers=headers, reason=http.HTTPStatus(status).phrase)
        )

    async def send_body(self, status: int, body: bytes, content_type: str) -> bool:
        data = self._response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        if self.method != "HEAD":
            data += self.conn.send(h11.Data(data=body))
        data += self.conn.send(h11.EndOfMessage())
        return await self._write(data)

    async def send_json(self, status: int, payload: Any) -> bool:
        body = json.dumps(payload, separators=(",", ":")).encode()
        return await self.send_body(status, body, "application/json; charset=utf-8")

    async def send_error(self, status: int, message: str) -> bool:
        return await self.send_json(status, {"error": message})

    async def start_stream(self) -> bool:
        # No Content-Length: h11 uses chunked encoding, as Ollama (Go) does.
        return await self._write(self._response(200, [("Content-Type", "application/x-ndjson")]))

    async def send_line(self, payload: Any) -> bool:
        line = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        return await self._write(self.conn.send(h11.Data(data=line)))

    async def end_stream(self) -> bool:
        return await self._write(self.conn.send(h11.EndOfMessage()))

    def drop(self) -> None:
        """Close the TCP connection wherever the response is (flushing what was sent)."""
        self.dropped = True
        self.writer.close()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


@dataclass
class _Loaded:
    name: str
    keep_alive: float | None
    ready: asyncio.Future[None]
    refs: int = 0
    expires_at: float = math.inf
    loaded_at: float = 0.0
    # Holds one of the max_loaded places (loading or loaded).
    resident: bool = False
    last_used: float = 0.0
    # Set while the load waits for a place; resolved to make it look again.
    room: asyncio.Future[None] | None = None

    def expiry(self, now: float) -> float:
        if self.refs > 0:
            return math.inf if self.keep_alive is None else now + self.keep_alive
        return self.expires_at


class _BadRequest(Exception):
    pass


@dataclass
class _Stats:
    requests: int = 0
    completed: int = 0
    disconnects: int = 0
    dropped: int = 0
    errors: int = 0
    refused: int = 0
    http_requests: int = 0
    active: int = 0
    queued: int = 0
    running: int = 0
    max_running: int = 0
    loads: int = 0
    evictions: int = 0


Handler = Callable[[_Exchange], Awaitable[None]]


class SimulatedNode:
    """One simulated Ollama node.

    `serve()` blocks (the management command); `start()`/`stop()` run it on a
    background thread for tests; `run()` is the coroutine both use.
    """

    def __init__(self, config: SimulatorConfig | None = None, **overrides: Any) -> None:
        self.config = replace(config or SimulatorConfig(), **overrides) if overrides else (config or SimulatorConfig())
        self.fault = self.config.fault
        self.port = self.config.port
        self.catalogue = {name: _Model.describe(name) for name in self.config.models}
        self.counters = _Stats()
        self._loaded: dict[str, _Loaded] = {}
        # Loads waiting for a place among max_loaded, first come first served.
        self._memory_waiters: deque[_Loaded] = deque()
        # Resolved when no load waits for room any more (see _acquire_model).
        self._gate: asyncio.Future[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._connections: set[asyncio.Task[Any]] = set()
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._routes: dict[tuple[str, str], Handler] = {
            ("GET", "/"): self._root,
            ("GET", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags,
            ("GET", "/api/ps"): self._ps,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/generate"): self._generate,
            ("POST", "/api/chat"): self._chat,
            ("GET", "/_sim/stats"): self._sim_stats,
            ("POST", "/_sim/fault"): self._sim_fault,
        }

    # -- lifecycle -------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = self.config.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    def __repr__(self) -> str:
        return f"SimulatedNode({self.config.name!r}, {self.base_url})"

    def serve(self, *, install_signal_handlers: bool = False) -> None:
        """Run in the foreground until stop(), or SIGTERM/SIGINT when handlers are installed."""
        asyncio.run(self.run(install_signal_handlers=install_signal_handlers))

    async def run(self, *, install_signal_handlers: bool = False) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        self._slots = asyncio.Semaphore(self.config.parallel)
        try:
            server = await asyncio.start_server(
                self._handle_connection, self.config.host, self.config.port, reuse_address=True
            )
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
            raise
        self.port = server.sockets[0].getsockname()[1]
        if install_signal_handlers:
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._loop.add_signal_handler(signum, self._stopping.set)
        log.info(
            "%s: Ollama simulator listening on %s (models=%s tps=%g parallel=%d load_delay=%gs keep_alive=%gs "
            "max_loaded=%d fault=%s)",
            self.config.name,
            self.base_url,
            ",".join(self.config.models),
            self.config.tps,
            self.config.parallel,
            self.config.load_delay,
            self.config.keep_alive,
            self.config.max_loaded,
            self.fault,
        )
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            tasks = list(self._connections) + list(self._background)
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks, timeout=5)
            await server.wait_closed()
            if install_signal_handlers:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    self._loop.remove_signal_handler(signum)
            log.info("%s: stopped", self.config.name)

    def start(self, timeout: float = 10.0) -> Self:
        """Serve on a daemon thread; returns once the port is bound (see `base_url`)."""
        self._ready.clear()
        self._thread = threading.Thread(target=self._serve_quietly, name=f"ollama-sim-{self.config.name}", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"simulator {self.config.name} did not start within {timeout} s")
        if self._startup_error is not None:
            raise RuntimeError(f"simulator {self.config.name} failed to start: {self._startup_error}")
        return self

    def _serve_quietly(self) -> None:
        with contextlib.suppress(OSError):
            self.serve()

    def stop(self, timeout: float = 10.0) -> None:
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("%s: did not stop within %g s", self.config.name, timeout)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control from other threads ------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A snapshot of the counters; callable from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running() or _running_loop() is loop:
            return self._snapshot()

        async def snapshot() -> dict[str, Any]:
            return self._snapshot()

        return asyncio.run_coroutine_threadsafe(snapshot(), loop).result(10)

    def set_fault(self, mode: str) -> None:
        if mode not in FAULTS:
            raise ValueError(f"unknown fault {mode!r}; choose one of {', '.join(FAULTS)}")
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            self._apply_fault(mode)
        else:
            loop.call_soon_threadsafe(self._apply_fault, mode)

    def _apply_fault(self, mode: str) -> None:
        if mode != self.fault:
            log.info("%s: fault %s -> %s", self.config.name, self.fault, mode)
        self.fault = mode

    def _snapshot(self) -> dict[str, Any]:
        self._prune()
        data: dict[str, Any] = {"name": self.config.name}
        data.update(vars(self.counters))
        data["loaded"] = sorted(name for name, entry in self._loaded.items() if entry.ready.done())
        data["loading"] = sorted(name for name, entry in self._loaded.items() if not entry.ready.done())
        data["fault"] = self.fault
        data["parallel"] = self.config.parallel
        data["max_loaded"] = self.config.max_loaded
        data["tps"] = self.config.tps
        data["models"] = list(self.config.models)
        return data

    # -- connections -----------------------------------------------------------------

    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                received = await self._read_request(conn, reader, writer)
                if received is None:
                    break
                request, body = received
                exchange = _Exchange(conn, reader, writer, request, body)
                try:
                    await self._dispatch(exchange)
                finally:
                    await exchange.finish()
                if exchange.dropped or exchange.gone:
                    break
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # Shutdown. Ending normally matters: asyncio 3.11 logs an error for a
            # cancelled connection task (StreamReaderProtocol calls task.exception()).
            pass
        finally:
            if task is not None:
                self._connections.discard(task)
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                await self._reject(conn, writer, exc)
                return None
            if event is h11.NEED_DATA:
                if conn.they_are_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
                try:
                    data = await reader.read(_READ_SIZE)
                except (ConnectionError, OSError):
                    return None
                conn.receive_data(data)
            elif isinstance(event, h11.Request):
                request = event
                path = urlsplit(event.target.decode("ascii", "replace")).path
                if self.fault == "refuse" and not path.startswith("/_sim/"):
                    # Refuse means no response at all, not even an error status.
                    self.counters.refused += 1
                    return None
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > _MAX_BODY:
                    return None
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            else:
                return None

    async def _reject(self, conn: h11.Connection, writer: asyncio.StreamWriter, exc: h11.RemoteProtocolError) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = f"{exc.error_status_hint} {http.HTTPStatus(exc.error_status_hint).phrase}".encode()
        try:
            writer.write(
                conn.send(
                    h11.Response(
                        status_code=exc.error_status_hint,
                        headers=[("Content-Type", "text/plain"), ("Content-Length", str(len(body))), ("Connection", "close")],
                    )
                )
                + conn.send(h11.Data(data=body))
                + conn.send(h11.EndOfMessage())
            )
            await writer.drain()
        except (h11.LocalProtocolError, ConnectionError, OSError):
            pass

    async def _dispatch(self, ex: _Exchange) -> None:
        started = time.monotonic()
        self.counters.http_requests += 1
        method = "GET" if ex.method == "HEAD" else ex.method
        handler = self._routes.get((method, ex.path))
        try:
            if self.fault == "503" and ex.path.startswith("/api/"):
                if ex.path in ("/api/generate", "/api/chat"):
                    self.counters.requests += 1
                    self.counters.errors += 1
                await ex.send_error(503, BUSY_MESSAGE)
            elif handler is None:
                await ex.send_body(404, b"404 page not found", "text/plain")
            else:
                await handler(ex)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s: %s %s failed", self.config.name, ex.method, ex.target)
            if ex.status == 0:
                await ex.send_error(500, "internal simulator error")
            else:
                ex.drop()
        level = logging.DEBUG if ex.path.startswith("/_sim/") else logging.INFO
        outcome = ex.status or "-"
        if ex.dropped:
            outcome = f"{outcome} dropped"
        elif ex.gone and ex.path in ("/api/generate", "/api/chat"):
            outcome = f"{outcome} client gone"
        log.log(level, "%s: %s %s %s %.3fs", self.config.name, ex.method, ex.target, outcome, time.monotonic() - started)

    # -- Ollama's API ----------------------------------------------------------------

    async def _root(self, ex: _Exchange) -> None:
        await ex.send_body(200, b"Ollama is running", "text/plain; charset=utf-8")

    async def _version(self, ex: _Exchange) -> None:
        await ex.send_json(200, {"version": OLLAMA_VERSION})

    async def _tags(self, ex: _Exchange) -> None:
        await ex.send_json(200, {"models": [model.tag_entry() for model in self.catalogue.values()]})

    async def _ps(self, ex: _Exchange) -> None:
        self._prune()
        now = time.time()
        models = []
        for name, entry in self._loaded.items():
            if not entry.ready.done():
                continue
            model = self.catalogue[name]
            size = model.size + 256 * 1024 * 1024 * self.config.parallel
            expiry = min(entry.expiry(now), now + _FOREVER_SECONDS)
            models.append(
                {
                    "name": name,
                    "model": name,
                    "size": size,
                    "digest": model.digest,
                    "details": model.details,
                    "expires_at": _rfc3339(int(expiry * 1e9)),
                    "size_vram": size,
                }
            )
        await ex.send_json(200, {"models": models})

    async def _show(self, ex: _Exchange) -> None:
        try:
            request = self._parse_body(ex.body)
        except _BadRequest as exc:
            await ex.send_error(400, str(exc))
            return
        name = request.get("model") or request.get("name")
        if not isinstance(name, str) or not name:
            await ex.send_error(400, "model is required")
            return
        model = self.catalogue.get(normalize_model_name(name))
        if model is None:
            await ex.send_error(404, f"model '{name}' not found")
            return
        await ex.send_json(200, model.show_entry())

    async def _generate(self, ex: _Exchange) -> None:
        await self._generation(ex, "generate")

    async def _chat(self, ex: _Exchange) -> None:
        await self._generation(ex, "chat")

    @staticmethod
    def _parse_body(body: bytes) -> dict[str, Any]:
        if not body.strip():
            raise _BadRequest("missing request body")
        try:
            request = safe_json_loads(body, limit=_MAX_JSON_DEPTH)
        except ValueError as exc:
            raise _BadRequest(f"invalid JSON in request body: {exc}") from None
        if not isinstance(request, dict):
            raise _BadRequest("request body must be a JSON object")
        return request

    async def _generation(self, ex: _Exchange, kind: str) -> None:
        self.counters.requests += 1
        self.counters.active += 1
        try:
            await self._generation_inner(ex, kind)
        finally:
            self.counters.active -= 1

    async def _generation_inner(self, ex: _Exchange, kind: str) -> None:
        counters = self.counters
        try:
            request = self._parse_body(ex.body)
            name, keep_alive, stream, options = self._parse_generation(request)
        except _BadRequest as exc:
            counters.errors += 1
            await ex.send_error(400, str(exc))
            return
        ex.watch_disconnect()

        if self.fault == "stall":
            if stream:
                await ex.start_stream()
            await ex.gone_event.wait()
            counters.disconnects += 1
            return

        model = self.catalogue.get(name)
        if model is None:
            counters.errors += 1
            await ex.send_error(404, f'model "{request["model"]}" not found, try pulling it first')
            return

        if kind == "generate":
            prompt = request.get("prompt") or ""
            system = request.get("system") or ""
            load_only = not prompt
            seed_text = f"{name}\n{system}\n{prompt}"
        else:
            messages = request.get("messages") or []
            if not isinstance(messages, list):
                counters.errors += 1
                await ex.send_error(400, "messages must be a list")
                return
            load_only = not messages
            seed_text = name + "".join(
                f"\n{m.get('role', '')}: {m.get('content', '')}" for m in messages if isinstance(m, dict)
            )

        if load_only and keep_alive == 0:
            self._unload(name)
            counters.completed += 1
            await ex.send_json(200, self._bare_done(kind, name, "unload"))
            return

        request_started = time.monotonic()
        entry = await self._acquire_model(ex, name, keep_alive)
        if entry is None:
            counters.disconnects += 1
            return
        load_ns = _ns(time.monotonic() - request_started)
        holding_slot = False
        try:
            if load_only:
                self._release_model(entry)
                entry = None
                counters.completed += 1
                await ex.send_json(200, self._bare_done(kind, name, "load"))
                return

            holding_slot = await self._acquire_slot(ex)
            if not holding_slot or ex.gone:
                counters.disconnects += 1
                return

            count, tokens, done_reason = _generate_tokens(seed_text, token_limit(options.get("num_predict")))
            prompt_tokens = _count_tokens(seed_text)

            prompt_started = time.monotonic()
            prompt_seconds = prompt_tokens / (self.config.tps * _PROMPT_SPEEDUP) if self.config.tps > 0 else 0.0
            if not await ex.pause(min(prompt_seconds, 2.0)):
                counters.disconnects += 1
                return
            prompt_ns = max(1, _ns(time.monotonic() - prompt_started))

            die_after = max(1, count // 2) if self.fault == "die-mid-stream" else None
            if stream and not await ex.start_stream():
                counters.disconnects += 1
                return
            eval_started = time.monotonic()
            text: list[str] = []  # kept only for a non-streamed reply
            for index, token in enumerate(tokens):
                if die_after is not None and index >= die_after:
                    counters.dropped += 1
                    ex.drop()
                    return
                if self.config.tps > 0:
                    due = eval_started + (index + 1) / self.config.tps
                    if not await ex.pause(due - time.monotonic()):
                        counters.disconnects += 1
                        return
                if stream:
                    if not await ex.send_line(self._token_chunk(kind, name, token)):
                        counters.disconnects += 1
                        return
                elif ex.gone:
                    counters.disconnects += 1
                    return
                else:
                    text.append(token)
            if die_after is not None:
                counters.dropped += 1
                ex.drop()
                return
            eval_ns = max(1, _ns(time.monotonic() - eval_started))

            # Free the slot and start the keep-alive clock before the final chunk goes
            # out, so a client that asks /api/ps right after sees the new state.
            self._release_slot()
            holding_slot = False
            self._release_model(entry)
            entry = None

            final = self._bare_done(kind, name, done_reason)
            if kind == "generate":
                final["context"] = _context_ids(seed_text, prompt_tokens + count, model.context_length)
            final.update(
                {
                    "total_duration": _ns(time.monotonic() - request_started),
                    "load_duration": load_ns,
                    "prompt_eval_count": prompt_tokens,
                    "prompt_eval_duration": prompt_ns,
                    "eval_count": count,
                    "eval_duration": eval_ns,
                }
            )
            if stream:
                sent = await ex.send_line(final) and await ex.end_stream()
            else:
                reply = "".join(text)
                if kind == "generate":
                    final["response"] = reply
                else:
                    final["message"]["content"] = reply
                sent = await ex.send_json(200, final)
            if sent:
                counters.completed += 1
            else:
                counters.disconnects += 1
        finally:
            if holding_slot:
                self._release_slot()
            if entry is not None:
                self._release_model(entry)

    def _parse_generation(self, request: dict[str, Any]) -> tuple[str, float | None, bool, dict[str, Any]]:
        raw_name = request.get("model")
        if not isinstance(raw_name, str) or not raw_name.strip():
            raise _BadRequest("model is required")
        keep_alive: float | None = self.config.keep_alive if self.config.keep_alive >= 0 else None
        if request.get("keep_alive") is not None:
            try:
                keep_alive = parse_keep_alive(request["keep_alive"])
            except (TypeError, ValueError) as exc:
                raise _BadRequest(str(exc)) from None
        options = request.get("options") or {}
        if not isinstance(options, dict):
            raise _BadRequest("options must be a JSON object")
        stream = request.get("stream")
        return normalize_model_name(raw_name), keep_alive, stream is None or bool(stream), options

    @staticmethod
    def _bare_done(kind: str, name: str, reason: str) -> dict[str, Any]:
        if kind == "generate":
            return {"model": name, "created_at": _now_rfc3339(), "response": "", "done": True, "done_reason": reason}
        return {
            "model": name,
            "created_at": _now_rfc3339(),
            "message": {"role": "assistant", "content": ""},
            "done_reason": reason,
            "done": True,
        }

    @staticmethod
    def _token_chunk(kind: str, name: str, token: str) -> dict[str, Any]:
        if kind == "generate":
            return {"model": name, "created_at": _now_rfc3339(), "response": token, "done": False}
        return {
            "model": name,
            "created_at": _now_rfc3339(),
            "message": {"role": "assistant", "content": token},
            "done": False,
        }

    # -- slots and the model lifecycle -----------------------------------------------

    async def _acquire_slot(self, ex: _Exchange) -> bool:
        """Wait for a free slot (Ollama's request queue); False if the client left first."""
        slots = self._slots
        assert slots is not None
        counters = self.counters
        counters.queued += 1
        acquire = asyncio.ensure_future(slots.acquire())
        try:
            await ex.wait(acquire)
        finally:
            counters.queued -= 1
            if not acquire.done():
                acquire.cancel()
                # A task can still win the slot after cancel(); give such a slot back.
                acquire.add_done_callback(lambda task: None if task.cancelled() else slots.release())
        if not acquire.done() or acquire.cancelled():
            return False
        counters.running += 1
        counters.max_running = max(counters.max_running, counters.running)
        return True

    def _release_slot(self) -> None:
        assert self._slots is not None
        self.counters.running -= 1
        self._slots.release()

    async def _acquire_model(self, ex: _Exchange, name: str, keep_alive: float | None) -> _Loaded | None:
        """Take a reference on a loaded model, loading it first when cold."""
        self._prune()
        entry = self._loaded.get(name)
        # Head-of-line blocking, as in Ollama: while a load waits for room, requests
        # behind it wait too, unless they are for that same model.
        while self._memory_waiters and (entry is None or entry not in self._memory_waiters):
            if not await ex.wait(self._gate_closed()):
                return None
            self._prune()
            entry = self._loaded.get(name)
        if entry is None:
            loop = asyncio.get_running_loop()
            entry = _Loaded(name=name, keep_alive=keep_alive, ready=loop.create_future())
            self._loaded[name] = entry
            task = asyncio.ensure_future(self._load(entry))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        entry.refs += 1
        entry.keep_alive = keep_alive
        entry.last_used = time.monotonic()
        try:
            ready = await ex.wait(entry.ready)
        except BaseException:
            self._release_model(entry)
            raise
        if not ready or ex.gone:
            self._release_model(entry)
            return None
        return entry

    async def _load(self, entry: _Loaded) -> None:
        if not await self._make_room(entry):
            return
        log.info("%s: loading %s (%.2fs)", self.config.name, entry.name, self.config.load_delay)
        await asyncio.sleep(self.config.load_delay)
        self.counters.loads += 1
        entry.loaded_at = time.time()
        entry.last_used = time.monotonic()
        if not entry.ready.done():
            entry.ready.set_result(None)
        if entry.refs == 0:
            self._start_expiry(entry)
            self._wake_memory_waiter()

    async def _make_room(self, entry: _Loaded) -> bool:
        """Take one of the max_loaded places, evicting an idle model or waiting for one.

        False if every request for the model left while it waited (the load is dropped).
        """
        limit = self.config.max_loaded
        waited = False
        while True:
            if waited and entry.refs == 0:
                self._drop_entry(entry)
                self._wake_memory_waiter()  # in case a place was freed for this load too
                return False
            self._prune()
            resident = [e for e in self._loaded.values() if e.resident and e is not entry]
            if limit <= 0 or len(resident) < limit:
                entry.resident = True
                return True
            idle = [e for e in resident if e.refs == 0 and e.ready.done()]
            if idle:
                victim = min(idle, key=lambda e: e.last_used)
                log.info("%s: evicting %s to load %s", self.config.name, victim.name, entry.name)
                self.counters.evictions += 1
                victim.resident = False  # its place goes to this load, not to the next waiter
                self._drop_entry(victim)
                entry.resident = True
                return True
            entry.room = asyncio.get_running_loop().create_future()
            # A load woken for a place that someone else took first keeps its turn.
            if waited:
                self._memory_waiters.appendleft(entry)
            else:
                self._memory_waiters.append(entry)
            waited = True
            try:
                await entry.room
            finally:
                entry.room = None
                with contextlib.suppress(ValueError):
                    self._memory_waiters.remove(entry)
                if not self._memory_waiters and self._gate is not None and not self._gate.done():
                    self._gate.set_result(None)

    def _gate_closed(self) -> asyncio.Future[None]:
        """A future resolved once no load waits for room."""
        if self._gate is None or self._gate.done():
            self._gate = asyncio.get_running_loop().create_future()
        return self._gate

    def _wake_memory_waiter(self) -> None:
        """A place may be free (a model was dropped or became idle): let the next load look."""
        while self._memory_waiters:
            waiter = self._memory_waiters.popleft()
            if waiter.room is not None and not waiter.room.done():
                waiter.room.set_result(None)
                return

    def _release_model(self, entry: _Loaded) -> None:
        entry.refs -= 1
        entry.last_used = time.monotonic()
        if entry.refs == 0 and entry.ready.done():
            self._start_expiry(entry)
            self._wake_memory_waiter()
        elif entry.refs == 0 and entry.room is not None and not entry.room.done():
            entry.room.set_result(None)  # nobody wants it any more: stop waiting for a place

    def _start_expiry(self, entry: _Loaded) -> None:
        if entry.keep_alive == 0:
            self._drop_entry(entry)
            return
        entry.expires_at = math.inf if entry.keep_alive is None else time.time() + entry.keep_alive

    def _unload(self, name: str) -> None:
        entry = self._loaded.get(name)
        if entry is None:
            return
        entry.keep_alive = 0
        if entry.refs == 0 and entry.ready.done():
            self._drop_entry(entry)

    def _drop_entry(self, entry: _Loaded) -> None:
        if self._loaded.get(entry.name) is entry:
            del self._loaded[entry.name]
            log.info("%s: unloaded %s", self.config.name, entry.name)
            if entry.resident:
                entry.resident = False
                self._wake_memory_waiter()

    def _prune(self) -> None:
        now = time.time()
        for entry in list(self._loaded.values()):
            if entry.refs == 0 and entry.ready.done() and entry.expires_at <= now:
                self._drop_entry(entry)

    # -- control endpoints -----------------------------------------------------------

    async def _sim_stats(self, ex: _Exchange) -> None:
        await ex.send_json(200, self._snapshot())

    async def _sim_fault(self, ex: _Exchange) -> None:
        try:
            request = self._parse_body(ex.body)
        except _BadRequest as exc:
            await ex.send_error(400, str(exc))
            return
        mode = request.get("mode")
        if mode not in FAULTS:
            await ex.send_error(400, f"mode must be one of {', '.join(FAULTS)}")
            return
        self._apply_fault(mode)
        await ex.send_json(200, {"fault": self.fault})


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


# -- command line ------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by `manage.py simulate_ollama` and `python -m agents.simulator`."""
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=11434, help="port to bind; 0 picks a free one")
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help="comma-separated models to offer (default %(default)s)"
    )
    parser.add_argument("--tps", type=float, default=40.0, help="generated tokens per second per request")
    parser.add_argument("--parallel", type=int, default=2, help="generations run at once (OLLAMA_NUM_PARALLEL)")
    parser.add_argument("--load-delay", type=float, default=1.5, help="seconds to cold-load a model")
    parser.add_argument(
        "--keep-alive", default="300", help="default keep-alive: seconds or a duration like 5m; negative = forever"
    )
    parser.add_argument("--fault", choices=FAULTS, default="none", help="fault to inject from the start")
    parser.add_argument("--name", default="", help="node name used in logs and /_sim/stats")
    parser.add_argument(
        "--max-loaded", type=int, default=0,
        help="models resident at once, like VRAM; loading another evicts the least recently used idle one (0 = unlimited)",
    )


def config_from_options(options: Mapping[str, Any]) -> SimulatorConfig:
    keep_alive = parse_keep_alive(options.get("keep_alive", 300))
    return SimulatorConfig(
        host=options.get("host") or "127.0.0.1",
        port=int(options.get("port", 11434)),
        models=options.get("models") or DEFAULT_MODELS,
        tps=float(options.get("tps", 40.0)),
        parallel=int(options.get("parallel", 2)),
        load_delay=float(options.get("load_delay", 1.5)),
        keep_alive=-1.0 if keep_alive is None else keep_alive,
        fault=options.get("fault") or "none",
        name=options.get("name") or "",
        max_loaded=int(options.get("max_loaded") or 0),
    )


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr unless the host process already routes our logger somewhere."""
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False


def run_from_options(options: Mapping[str, Any]) -> None:
    configure_logging()
    SimulatedNode(config_from_options(options)).serve(install_signal_handlers=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agents.simulator", description="Serve a simulated Ollama node.")
    add_arguments(parser)
    try:
        run_from_options(vars(parser.parse_args(argv)))
    except ValueError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
