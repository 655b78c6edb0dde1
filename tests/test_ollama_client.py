"""Hive's Ollama client against the simulated node (and a few canned transports)."""
from __future__ import annotations

import json
import pickle
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from agents.ollama import (
    OllamaClient,
    OllamaError,
    OllamaHTTPError,
    OllamaStream,
    OllamaStreamAborted,
    OllamaStreamBroken,
    OllamaTimeout,
    OllamaUnavailable,
    Timings,
)
from agents.simulator import SimulatedNode

pytest_plugins = ("tests.simulator_fixtures",)

MODEL = "llama3.2:3b"


def wait_for(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def abort_later(stream: OllamaStream, delay: float) -> dict[str, float]:
    """Abort `stream` from another thread after `delay`; returns when it was aborted."""
    record: dict[str, float] = {}

    def run() -> None:
        time.sleep(delay)
        record["aborted_at"] = time.monotonic()
        stream.abort()

    threading.Thread(target=run, daemon=True).start()
    return record


def test_metadata(simulator: SimulatedNode) -> None:
    with OllamaClient(simulator.base_url) as client:
        assert client.version() == "0.6.5"
        assert [m["name"] for m in client.tags()] == ["llama3.2:3b", "codellama:7b"]
        assert client.tags()[0]["details"]["parameter_size"] == "3B"
        assert client.ps() == []
        shown = client.show("codellama:7b")
        assert shown["details"]["family"] == "llama"
        assert "general.architecture" in shown["model_info"]
        with client.generate(MODEL, "") as stream:
            assert list(stream)[-1]["done_reason"] == "load"
        (loaded,) = client.ps()
        assert loaded["name"] == MODEL and loaded["expires_at"]


def test_generate_stream(simulator: SimulatedNode) -> None:
    with OllamaClient(simulator.base_url) as client:
        stream = client.generate(MODEL, "Write a haiku", options={"num_predict": 12}, system="Be poetic", keep_alive="1m")
        chunks = list(stream)
    assert len(chunks) == 13
    assert stream.done and not stream.aborted
    assert stream.final is chunks[-1] and stream.final["done_reason"] == "length"
    assert stream.text == "".join(c["response"] for c in chunks)
    assert len(stream.text.split()) == 12
    timings = stream.timings
    assert timings.eval_count == 12
    assert timings.prompt_eval_count > 0
    assert timings.total_duration >= timings.eval_duration > 0
    assert timings.load_duration > 0
    assert timings.tokens_per_second == pytest.approx(200, rel=0.5)
    as_dict = timings.as_dict()
    assert set(as_dict) == {
        "total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
        "eval_count", "eval_duration", "tokens_per_second",
    }
    with pytest.raises(StopIteration):
        next(stream)


def test_chat_stream(simulator: SimulatedNode) -> None:
    with (
        OllamaClient(simulator.base_url) as client,
        client.chat(MODEL, [{"role": "user", "content": "Hi"}], options={"num_predict": 4}) as stream,
    ):
        chunks = list(stream)
    assert len(chunks) == 5
    assert stream.text == "".join(c["message"]["content"] for c in chunks)
    assert len(stream.text.split()) == 4
    assert stream.timings.eval_count == 4
    assert stream.timings.tokens_per_second > 0


def test_unknown_model_is_http_error(simulator: SimulatedNode) -> None:
    with OllamaClient(simulator.base_url) as client:
        with pytest.raises(OllamaHTTPError) as excinfo:
            list(client.generate("nope:1b", "hi"))
        error = excinfo.value
        assert error.status_code == 404
        assert error.message == 'model "nope:1b" not found, try pulling it first'
        assert error.retryable is False
        assert f"{simulator.base_url}/api/generate" in str(error)
        assert "404" in str(error)

        with pytest.raises(OllamaHTTPError) as excinfo:
            client.show("nope:1b")
        assert excinfo.value.status_code == 404
        assert excinfo.value.message == "model 'nope:1b' not found"


def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{unused_port()}"
    with OllamaClient(url, connect_timeout=1) as client:
        with pytest.raises(OllamaUnavailable) as excinfo:
            client.version()
        assert excinfo.value.retryable is True
        assert f"{url}/api/version" in str(excinfo.value)
        with pytest.raises(OllamaUnavailable):
            list(client.chat(MODEL, [{"role": "user", "content": "hi"}]))


def test_503_is_retryable_http_error(simulator: SimulatedNode) -> None:
    simulator.set_fault("503")
    with OllamaClient(simulator.base_url) as client:
        with pytest.raises(OllamaHTTPError) as excinfo:
            list(client.generate(MODEL, "hi"))
        assert excinfo.value.status_code == 503
        assert excinfo.value.retryable is True
        assert "server busy" in excinfo.value.message
        with pytest.raises(OllamaHTTPError) as excinfo:
            client.tags()
        assert excinfo.value.retryable is True


def test_refuse_is_unavailable(simulator: SimulatedNode) -> None:
    with OllamaClient(simulator.base_url) as client:
        assert client.version() == "0.6.5"  # leaves a pooled keep-alive connection behind
        simulator.set_fault("refuse")
        with pytest.raises(OllamaUnavailable) as excinfo:
            client.version()
        assert "before a response" in str(excinfo.value)
        with pytest.raises(OllamaUnavailable):
            list(client.generate(MODEL, "hi"))
    assert simulator.stats()["refused"] == 2


def test_die_mid_stream_is_broken(simulator: SimulatedNode) -> None:
    simulator.set_fault("die-mid-stream")
    with OllamaClient(simulator.base_url) as client:
        stream = client.generate(MODEL, "hi", options={"num_predict": 10})
        with pytest.raises(OllamaStreamBroken) as excinfo:
            list(stream)
    assert stream.chunk_count == 5
    assert len(stream.text.split()) == 5
    assert excinfo.value.retryable is True
    assert "mid-stream" in str(excinfo.value)
    assert stream.final is None
    assert simulator.stats()["dropped"] == 1


def test_stall_hits_read_timeout(simulator: SimulatedNode) -> None:
    simulator.set_fault("stall")
    with OllamaClient(simulator.base_url, read_timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(OllamaTimeout) as excinfo:
            list(client.generate(MODEL, "hi"))
        assert time.monotonic() - started < 2
    assert excinfo.value.retryable is True
    assert wait_for(lambda: simulator.stats()["disconnects"] == 1)


def test_abort_during_stall(simulator: SimulatedNode) -> None:
    simulator.set_fault("stall")
    with OllamaClient(simulator.base_url) as client:
        stream = client.generate(MODEL, "hi")
        record = abort_later(stream, 0.3)
        with pytest.raises(OllamaStreamAborted) as excinfo:
            list(stream)
        latency = time.monotonic() - record["aborted_at"]
    assert latency < 0.5
    assert stream.aborted
    assert excinfo.value.retryable is False
    assert wait_for(lambda: simulator.stats()["disconnects"] == 1)
    assert simulator.stats()["active"] == 0


def test_abort_while_streaming(start_simulator: Callable[..., SimulatedNode]) -> None:
    node = start_simulator(tps=20, parallel=1)
    received: list[dict[str, Any]] = []
    with OllamaClient(node.base_url) as client:
        stream = client.generate(MODEL, "long story", options={"num_predict": 400})
        record: dict[str, float] = {}
        with pytest.raises(OllamaStreamAborted):
            for chunk in stream:
                received.append(chunk)
                if len(received) == 3:
                    record = abort_later(stream, 0.2)
        latency = time.monotonic() - record["aborted_at"]
        assert latency < 0.5
        assert 3 <= len(received) < 10
        assert stream.final is None
        assert wait_for(lambda: node.stats()["disconnects"] == 1)
        stats = node.stats()
        assert stats["running"] == 0 and stats["active"] == 0 and stats["completed"] == 0

        # The single slot is free again.
        follow_up = client.generate(MODEL, "short", options={"num_predict": 2})
        assert len(list(follow_up)) == 3


def test_abort_during_cold_load_before_headers(start_simulator: Callable[..., SimulatedNode]) -> None:
    node = start_simulator(load_delay=5)
    with OllamaClient(node.base_url) as client:
        stream = client.generate(MODEL, "hi")
        record = abort_later(stream, 0.3)
        with pytest.raises(OllamaStreamAborted):
            next(iter(stream))
        assert time.monotonic() - record["aborted_at"] < 0.5
    assert wait_for(lambda: node.stats()["disconnects"] == 1)
    assert node.stats()["loading"] == [MODEL]  # like Ollama, the load itself carries on


def test_abort_before_iteration_sends_nothing(simulator: SimulatedNode) -> None:
    with OllamaClient(simulator.base_url) as client:
        stream = client.generate(MODEL, "hi")
        stream.abort()
        stream.abort()
        with pytest.raises(OllamaStreamAborted):
            next(stream)
    assert stream.aborted
    assert simulator.stats()["requests"] == 0


def test_abort_after_completion_is_a_no_op(simulator: SimulatedNode) -> None:
    with OllamaClient(simulator.base_url) as client:
        stream = client.generate(MODEL, "hi", options={"num_predict": 2})
        for chunk in stream:
            if chunk["done"]:
                break
        stream.abort()
    assert not stream.aborted and stream.done
    assert stream.text


def test_parallel_streams_share_one_client(start_simulator: Callable[..., SimulatedNode]) -> None:
    node = start_simulator(parallel=4)
    results: list[str] = []
    with OllamaClient(node.base_url) as client:

        def run(i: int) -> None:
            with client.generate(MODEL, f"prompt {i}", options={"num_predict": 5}) as stream:
                list(stream)
                results.append(stream.text)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert len(results) == 4 and len(set(results)) == 4
    assert node.stats()["max_running"] == 4


# -- canned transports: protocol breakage a real node rarely produces -----------------


def canned(body: bytes, status: int = 200, content_type: str = "application/x-ndjson") -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"Content-Type": content_type})

    return httpx.MockTransport(handler)


def ndjson(*chunks: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(c).encode() + b"\n" for c in chunks)


def test_stream_without_done_chunk_is_broken() -> None:
    body = ndjson({"response": "a", "done": False}, {"response": "b", "done": False})
    with OllamaClient("http://node", transport=canned(body)) as client:
        stream = client.generate(MODEL, "hi")
        with pytest.raises(OllamaStreamBroken) as excinfo:
            list(stream)
    assert "without a final" in str(excinfo.value)
    assert stream.text == "ab"


def test_invalid_json_line_is_broken() -> None:
    body = ndjson({"response": "a", "done": False}) + b"{garbage\n" + ndjson({"response": "", "done": True})
    with OllamaClient("http://node", transport=canned(body)) as client, pytest.raises(OllamaStreamBroken) as excinfo:
        list(client.generate(MODEL, "hi"))
    assert "invalid JSON" in excinfo.value.message


def test_error_chunk_mid_stream_is_broken() -> None:
    body = ndjson({"response": "a", "done": False}, {"error": "out of memory"})
    with OllamaClient("http://node", transport=canned(body)) as client, pytest.raises(OllamaStreamBroken) as excinfo:
        list(client.generate(MODEL, "hi"))
    assert excinfo.value.message == "out of memory"
    assert "http://node/api/generate" in str(excinfo.value)


def test_unicode_line_separators_inside_strings_survive() -> None:
    # httpx's iter_lines() would split these; Ollama's JSON encoder leaves U+0085 raw.
    body = (
        json.dumps({"response": "a\u0085b\u2028c", "done": False}, ensure_ascii=False).encode()
        + b"\n"
        + ndjson({"response": "", "done": True, "eval_count": 1})
    )
    with OllamaClient("http://node", transport=canned(body)) as client:
        stream = client.generate(MODEL, "hi")
        list(stream)
    assert stream.text == "a\u0085b\u2028c"


def test_http_error_without_json_body() -> None:
    transport = canned(b"bad gateway", 502, "text/plain")
    with OllamaClient("http://node", transport=transport) as client, pytest.raises(OllamaHTTPError) as excinfo:
        client.ps()
    assert excinfo.value.status_code == 502 and excinfo.value.retryable
    assert excinfo.value.message == "bad gateway"


def test_timings_and_errors_are_plain_values() -> None:
    timings = Timings.from_chunk({"eval_count": 50, "eval_duration": 2_000_000_000, "load_duration": None, "x": 1})
    assert timings.tokens_per_second == 25.0
    assert timings.load_duration == 0
    assert Timings().tokens_per_second == 0.0
    assert timings.as_dict()["tokens_per_second"] == 25.0

    error = OllamaHTTPError("boom", url="http://node/api/chat", status_code=503)
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.message, clone.url, clone.status_code, clone.retryable) == ("boom", "http://node/api/chat", 503, True)
    assert str(clone) == str(error) == "Ollama returned HTTP 503 (http://node/api/chat): boom"
    assert OllamaHTTPError("boom").retryable is False
    assert isinstance(OllamaStreamAborted("x"), OllamaError)
    assert str(OllamaUnavailable("down", url="http://n/api/ps")) == "Ollama unavailable (http://n/api/ps): down"
