"""The one Ollama HTTP client for Hive (sync, on httpx).

Metadata calls (`version`, `tags`, `ps`, `show`) return parsed JSON. `generate` and
`chat` return an `OllamaStream` that sends the request when iteration starts and
yields the NDJSON chunks; any thread may `abort()` it, which closes the TCP connection
so Ollama stops generating. Every failure is an `OllamaError` whose `retryable` says
whether trying again (on this node or another) can help.
"""
from __future__ import annotations

import functools
import os
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, fields
from types import TracebackType
from typing import Any, Literal, Self

import httpx

from hive_project import jsonsafe

__all__ = [
    "OllamaClient",
    "OllamaError",
    "OllamaHTTPError",
    "OllamaStream",
    "OllamaStreamAborted",
    "OllamaStreamBroken",
    "OllamaTimeout",
    "OllamaUnavailable",
    "Timings",
]

Kind = Literal["generate", "chat"]

_WRITE_TIMEOUT = 30.0
_POOL_TIMEOUT = 30.0
_ERROR_BODY_LIMIT = 500


class OllamaError(Exception):
    """Base of every error raised by this module."""

    default_retryable = False
    what = "Ollama request failed"

    # Every argument but `message` is optional so Celery/pickle can rebuild the error
    # from its args alone.
    def __init__(self, message: str, *, url: str = "", retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.url = url
        self.retryable = self.default_retryable if retryable is None else retryable

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        return f"{self.what}{where}: {self.message}"


class OllamaUnavailable(OllamaError):
    """Could not reach Ollama, or it closed the connection before answering."""

    default_retryable = True
    what = "Ollama unavailable"


class OllamaTimeout(OllamaError):
    """Ollama accepted the connection but sent nothing for longer than the read timeout."""

    default_retryable = True
    what = "Ollama timed out"


class OllamaHTTPError(OllamaError):
    """Ollama answered with a non-2xx status; `message` is its `{"error": ...}` text."""

    what = "Ollama returned an error"

    def __init__(
        self,
        message: str,
        *,
        url: str = "",
        status_code: int = 0,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(
            message,
            url=url,
            retryable=(status_code >= 500) if retryable is None else retryable,
        )
        self.status_code = status_code

    def __str__(self) -> str:
        where = f" ({self.url})" if self.url else ""
        return f"Ollama returned HTTP {self.status_code}{where}: {self.message}"


class OllamaStreamBroken(OllamaError):
    """A streaming response ended without its final `done` chunk or carried garbage."""

    default_retryable = True
    what = "Ollama stream broken"


class OllamaStreamAborted(OllamaError):
    """The stream was ended on purpose by `OllamaStream.abort()`."""

    default_retryable = False
    what = "Ollama stream aborted"


@dataclass
class Timings:
    """The timing fields of Ollama's final chunk (durations in nanoseconds)."""

    total_duration: int = 0
    load_duration: int = 0
    prompt_eval_count: int = 0
    prompt_eval_duration: int = 0
    eval_count: int = 0
    eval_duration: int = 0

    @classmethod
    def from_chunk(cls, chunk: Mapping[str, Any]) -> Timings:
        values: dict[str, int] = {}
        for field in fields(cls):
            try:
                values[field.name] = int(chunk.get(field.name) or 0)
            except (TypeError, ValueError):
                values[field.name] = 0
        return cls(**values)

    @property
    def tokens_per_second(self) -> float:
        if self.eval_duration <= 0:
            return 0.0
        return self.eval_count / (self.eval_duration / 1e9)

    def as_dict(self) -> dict[str, int | float]:
        data: dict[str, int | float] = dict(asdict(self))
        data["tokens_per_second"] = self.tokens_per_second
        return data


def _error_message(response: httpx.Response) -> str:
    """Ollama's `{"error": "..."}` text, else the start of the body, else the reason."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str) and data["error"]:
        return data["error"]
    text = response.text.strip()
    if text:
        return text[:_ERROR_BODY_LIMIT]
    return response.reason_phrase or "no error message"


def _transport_error(exc: httpx.TransportError, url: str, *, mid_stream: bool, read_timeout: float | None) -> OllamaError:
    """Map an httpx transport failure to the error a caller can act on."""
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout):
        return OllamaUnavailable(f"connect timed out: {detail}", url=url)
    if isinstance(exc, httpx.ConnectError):
        return OllamaUnavailable(f"cannot connect: {detail}", url=url)
    if isinstance(exc, httpx.PoolTimeout):
        return OllamaUnavailable(f"no free connection in the client pool: {detail}", url=url)
    if isinstance(exc, httpx.ReadTimeout):
        waited = f" in {read_timeout:g} s" if read_timeout is not None else ""
        return OllamaTimeout(f"no data received{waited}", url=url)
    if isinstance(exc, httpx.TimeoutException):
        return OllamaTimeout(detail, url=url)
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError | httpx.ProxyError):
        return OllamaError(detail, url=url, retryable=False)
    if mid_stream:
        return OllamaStreamBroken(f"connection dropped mid-stream: {detail}", url=url)
    return OllamaUnavailable(f"connection closed before a response: {detail}", url=url)


class OllamaStream:
    """One streaming /api/generate or /api/chat call.

    The request is sent when iteration starts, so the object can be handed to another
    thread (for `abort()`) before anything blocks. Iterate it once.
    """

    def __init__(
        self,
        http: httpx.Client,
        url: str,
        payload: dict[str, Any],
        kind: Kind,
        *,
        read_timeout: float | None = None,
    ) -> None:
        self.url = url
        self.kind: Kind = kind
        self.payload = payload
        self.final: dict[str, Any] | None = None
        self.chunk_count = 0
        self._http = http
        self._read_timeout = read_timeout
        self._parts: list[str] = []
        self._lock = threading.Lock()
        self._aborted = False
        self._finished = False
        self._busy = False
        self._response: httpx.Response | None = None
        self._network_stream: Any = None
        self._chunks: Iterator[bytes] | None = None
        self._buffer = b""
        self._eof = False

    # -- results ---------------------------------------------------------------------

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def timings(self) -> Timings:
        """Timings of the final chunk; all zeros until the stream has completed."""
        return Timings.from_chunk(self.final or {})

    @property
    def done(self) -> bool:
        return self.final is not None

    @property
    def aborted(self) -> bool:
        return self._aborted

    # -- control ---------------------------------------------------------------------

    def abort(self) -> None:
        """End the stream from any thread; the iterating thread gets OllamaStreamAborted.

        Shutting the socket down is what wakes a thread blocked in recv() (closing the
        file descriptor would not) and sends Ollama the FIN that cancels generation.
        """
        with self._lock:
            if self._aborted or self._finished:
                return
            self._aborted = True
            stream = self._network_stream
            busy = self._busy
        self._shutdown_socket(stream)
        if not busy:
            # No thread is inside httpx for this stream, so closing here cannot race.
            self._release()

    def close(self) -> None:
        """Release the connection; idempotent. If another thread is iterating, abort it."""
        with self._lock:
            if self._busy:
                busy = True
            else:
                busy = False
                self._finished = True
        if busy:
            self.abort()
        else:
            self._release()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- iteration -------------------------------------------------------------------

    def __iter__(self) -> OllamaStream:
        return self

    def __next__(self) -> dict[str, Any]:
        with self._lock:
            if self._aborted:
                raise self._aborted_error()
            if self._finished:
                raise StopIteration
            if self._busy:
                raise RuntimeError("OllamaStream is being iterated by another thread")
            self._busy = True
        try:
            chunk = self._next_chunk()
        except httpx.TransportError as exc:
            self._end()
            if self._aborted:
                raise self._aborted_error() from None
            raise _transport_error(
                exc, self.url, mid_stream=self._response is not None, read_timeout=self._read_timeout
            ) from exc
        except OllamaError:
            self._end()
            if self._aborted:
                raise self._aborted_error() from None
            raise
        except BaseException:
            self._end()
            raise
        with self._lock:
            self._busy = False
            aborted = self._aborted
        if aborted:
            self._end()
            raise self._aborted_error()
        if self.final is not None:
            # Release the connection now: a caller may stop at the done chunk.
            self._end()
        return chunk

    def _next_chunk(self) -> dict[str, Any]:
        if self._response is None:
            self._open()
        line = self._read_line()
        while line is not None and not line.strip():
            line = self._read_line()
        if line is None:
            if self._aborted:
                raise self._aborted_error()
            raise OllamaStreamBroken(
                f"stream ended after {self.chunk_count} chunks without a final 'done' chunk",
                url=self.url,
            )
        try:
            chunk = jsonsafe.loads(line)   # a node may lie: a line nested 10^5 deep must not crash the worker
        except ValueError:
            raise OllamaStreamBroken(
                f"invalid JSON line in stream: {line[:200]!r}", url=self.url
            ) from None
        if not isinstance(chunk, dict):
            raise OllamaStreamBroken(f"stream line is not a JSON object: {line[:200]!r}", url=self.url)
        if chunk.get("error"):
            raise OllamaStreamBroken(str(chunk["error"]), url=self.url)
        self.chunk_count += 1
        piece = chunk.get("response") if self.kind == "generate" else (chunk.get("message") or {}).get("content")
        if isinstance(piece, str) and piece:
            self._parts.append(piece)
        if chunk.get("done"):
            self.final = chunk
        return chunk

    def _open(self) -> None:
        request = self._http.build_request(
            "POST", self.url, json=self.payload, extensions={"trace": self._trace}
        )
        response = self._http.send(request, stream=True)
        with self._lock:
            self._response = response
            if self._network_stream is None:
                self._network_stream = response.extensions.get("network_stream")
        if response.status_code >= 300:
            response.read()
            raise OllamaHTTPError(_error_message(response), url=self.url, status_code=response.status_code)
        self._chunks = response.iter_bytes()

    def _read_line(self) -> bytes | None:
        # Split on b"\n" ourselves: httpx's iter_lines() also splits on U+0085/U+2028,
        # which Ollama's JSON encoder may leave unescaped inside strings.
        assert self._chunks is not None
        while True:
            newline = self._buffer.find(b"\n")
            if newline >= 0:
                line, self._buffer = self._buffer[:newline], self._buffer[newline + 1 :]
                return line
            if self._eof:
                line, self._buffer = self._buffer, b""
                return line if line.strip() else None
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                self._eof = True

    def _trace(self, event: str, info: dict[str, Any]) -> None:
        # httpcore reports each new TCP (and then TLS) stream here, before the request
        # is written, so abort() can reach the socket even while Ollama is still loading
        # the model and has not sent headers yet.
        if not event.endswith(".complete") or not event.startswith(
            ("connection.connect_tcp", "connection.connect_unix_socket", "connection.start_tls")
        ):
            return
        with self._lock:
            self._network_stream = info.get("return_value")
            aborted = self._aborted
            stream = self._network_stream
        if aborted:
            self._shutdown_socket(stream)

    @staticmethod
    def _shutdown_socket(stream: Any) -> None:
        # Foreign transports (mocks, custom ones) may have no stream or no socket.
        get_extra_info = getattr(stream, "get_extra_info", None)
        sock = get_extra_info("socket") if callable(get_extra_info) else None
        if isinstance(sock, socket.socket):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _aborted_error(self) -> OllamaStreamAborted:
        return OllamaStreamAborted(f"aborted by caller after {self.chunk_count} chunks", url=self.url)

    def _end(self) -> None:
        with self._lock:
            self._busy = False
            self._finished = True
        self._release()

    def _release(self) -> None:
        response = self._response
        if response is not None:
            try:
                response.close()
            except (httpx.HTTPError, OSError):
                pass


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """Building an SSL context loads the CA bundle (~50 ms of CPU): once per process."""
    return httpx.create_ssl_context()


_shared: dict[tuple[int, str, float, float], OllamaClient] = {}
_shared_lock = threading.Lock()


def shared_client(base_url: str, *, connect_timeout: float, read_timeout: float) -> OllamaClient:
    """One long-lived client per node and process, for callers that run often (task
    execution). Streams still get a fresh connection each (see ``_stream_http``), so
    sharing is safe; what is saved is building two httpx clients per task. Keyed by
    process id: a forked worker child must not use its parent's sockets."""
    key = (os.getpid(), base_url, connect_timeout, read_timeout)
    client = _shared.get(key)
    if client is None:
        with _shared_lock:
            client = _shared.get(key)
            if client is None:
                client = _shared[key] = OllamaClient(base_url, connect_timeout=connect_timeout,
                                                     read_timeout=read_timeout)
    return client


class OllamaClient:
    """Client for one Ollama node."""

    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout: float = 3.0,
        read_timeout: float = 300.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if "://" not in base_url:
            base_url = f"http://{base_url}"
        self.base_url = base_url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.timeout = httpx.Timeout(
            connect=connect_timeout,
            read=read_timeout,
            write=_WRITE_TIMEOUT,
            pool=_POOL_TIMEOUT,
        )
        self._headers = {"Accept": "application/json", "User-Agent": "hive-ollama-client"}
        self._transport = transport
        self._http = httpx.Client(timeout=self.timeout, headers=self._headers, transport=transport,
                                  verify=_ssl_context())
        self._stream_client: httpx.Client | None = None

    @property
    def _stream_http(self) -> httpx.Client:
        # Streams get a fresh connection each: abort() needs the socket of exactly this
        # request, and a connection that was aborted must never go back to a pool.
        # Built on first use: probes never stream.
        if self._stream_client is None:
            self._stream_client = httpx.Client(
                timeout=self.timeout,
                headers={**self._headers, "Accept": "application/x-ndjson"},
                transport=self._transport,
                limits=httpx.Limits(max_keepalive_connections=0),
                verify=_ssl_context(),
            )
        return self._stream_client

    def __repr__(self) -> str:
        return f"OllamaClient({self.base_url!r})"

    def close(self) -> None:
        self._http.close()
        if self._stream_client is not None:
            self._stream_client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> Any:
        url = self.url(path)
        try:
            response = self._http.request(method, url, json=payload)
        except httpx.TransportError as exc:
            raise _transport_error(exc, url, mid_stream=False, read_timeout=self.read_timeout) from exc
        if response.status_code >= 300:
            raise OllamaHTTPError(_error_message(response), url=url, status_code=response.status_code)
        try:
            return response.json()
        except ValueError:
            raise OllamaError(
                f"response is not JSON: {response.text[:200]!r}", url=url, retryable=False
            ) from None

    def version(self) -> str:
        data = self._request("GET", "/api/version")
        return str(data.get("version", "")) if isinstance(data, dict) else ""

    def tags(self) -> list[dict[str, Any]]:
        data = self._request("GET", "/api/tags")
        return list(data.get("models") or []) if isinstance(data, dict) else []

    def ps(self) -> list[dict[str, Any]]:
        data = self._request("GET", "/api/ps")
        return list(data.get("models") or []) if isinstance(data, dict) else []

    def show(self, model: str) -> dict[str, Any]:
        data = self._request("POST", "/api/show", {"model": model})
        return data if isinstance(data, dict) else {}

    def generate(
        self,
        model: str,
        prompt: str,
        *,
        options: dict[str, Any] | None = None,
        system: str | None = None,
        keep_alive: str | int | None = None,
    ) -> OllamaStream:
        payload: dict[str, Any] = {"model": model, "prompt": prompt, "stream": True}
        if system is not None:
            payload["system"] = system
        return self._stream("/api/generate", payload, "generate", options, keep_alive)

    def chat(
        self,
        model: str,
        messages: list[dict[str, Any]],
        *,
        options: dict[str, Any] | None = None,
        keep_alive: str | int | None = None,
    ) -> OllamaStream:
        payload: dict[str, Any] = {"model": model, "messages": messages, "stream": True}
        return self._stream("/api/chat", payload, "chat", options, keep_alive)

    def _stream(
        self,
        path: str,
        payload: dict[str, Any],
        kind: Kind,
        options: dict[str, Any] | None,
        keep_alive: str | int | None,
    ) -> OllamaStream:
        if options:
            payload["options"] = options
        if keep_alive is not None:
            payload["keep_alive"] = keep_alive
        return OllamaStream(self._stream_http, self.url(path), payload, kind, read_timeout=self.read_timeout)
