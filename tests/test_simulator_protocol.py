"""The simulator speaks Ollama's protocol: checked with the official `ollama` client."""
from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import httpx
import ollama
import pytest

from agents.simulator import SimulatedNode, normalize_model_name, parse_keep_alive

if TYPE_CHECKING:
    from tests.simulator_fixtures import SimulatorProcess

pytest_plugins = ("tests.simulator_fixtures",)

MODEL = "llama3.2:3b"
ClientFactory = Callable[[SimulatedNode], ollama.Client]


@pytest.fixture
def client_for() -> Iterator[Callable[[SimulatedNode], ollama.Client]]:
    clients: list[ollama.Client] = []

    def connect(node: SimulatedNode) -> ollama.Client:
        client = ollama.Client(host=node.base_url, timeout=10)
        clients.append(client)
        return client

    yield connect
    for client in clients:
        client.close()


def loaded_models(client: ollama.Client) -> list[str]:
    return [m.model or "" for m in client.ps().models]


def test_root_and_version(simulator: SimulatedNode) -> None:
    root = httpx.get(f"{simulator.base_url}/")
    assert root.status_code == 200
    assert root.text == "Ollama is running"
    assert httpx.head(f"{simulator.base_url}/").status_code == 200
    assert httpx.get(f"{simulator.base_url}/api/version").json() == {"version": "0.6.5"}
    assert httpx.get(f"{simulator.base_url}/api/nope").status_code == 404


def test_list_and_show(start_simulator: Callable[..., SimulatedNode], client_for: ClientFactory) -> None:
    node = start_simulator(models="llama3.2:3b,codellama:7b,mistral")
    client = client_for(node)

    listed = client.list().models
    assert [m.model for m in listed] == ["llama3.2:3b", "codellama:7b", "mistral:latest"]
    first = listed[0]
    assert isinstance(first.modified_at, datetime)
    assert first.size is not None and first.size > 1_000_000_000
    assert first.digest is not None and len(first.digest) == 64
    assert first.details is not None
    assert first.details.format == "gguf"
    assert first.details.family == "llama"
    assert first.details.families == ["llama"]
    assert first.details.parameter_size == "3B"
    assert first.details.quantization_level == "Q4_K_M"
    raw = httpx.get(f"{node.base_url}/api/tags").json()["models"][0]
    assert raw["name"] == raw["model"] == "llama3.2:3b"

    shown = client.show("codellama:7b")
    assert shown.details is not None and shown.details.parameter_size == "7B"
    assert shown.modelinfo is not None and shown.modelinfo["general.architecture"] == "llama"
    assert shown.capabilities is not None and "completion" in shown.capabilities
    assert shown.template and shown.modelfile and shown.parameters and shown.license
    assert client.show("mistral").details is not None  # short name means :latest

    with pytest.raises(ollama.ResponseError) as excinfo:
        client.show("nope:1b")
    assert excinfo.value.status_code == 404
    assert "not found" in excinfo.value.error


def test_generate_non_stream(simulator: SimulatedNode, client_for: ClientFactory) -> None:
    client = client_for(simulator)
    response = client.generate(MODEL, "Why is the sky blue?", options={"num_predict": 7})
    assert isinstance(response, ollama.GenerateResponse)
    assert response.done is True
    assert response.done_reason == "length"
    assert response.model == MODEL
    assert response.eval_count == 7
    assert response.response is not None and len(response.response.split()) == 7
    assert response.context and len(response.context) == (response.prompt_eval_count or 0) + 7
    assert response.created_at and response.created_at.endswith("Z")
    assert response.total_duration and response.eval_duration and response.prompt_eval_duration
    assert response.total_duration >= response.eval_duration
    assert response.prompt_eval_count and response.prompt_eval_count > 0

    again = client.generate(MODEL, "Why is the sky blue?", options={"num_predict": 7})
    assert again.response == response.response, "output is deterministic per prompt"
    other = client.generate(MODEL, "Something else entirely", options={"num_predict": 7})
    assert other.response != response.response


def test_generate_stream(simulator: SimulatedNode, client_for: ClientFactory) -> None:
    client = client_for(simulator)
    chunks = list(client.generate(MODEL, "Tell me a story", stream=True))
    *tokens, final = chunks
    assert all(isinstance(c, ollama.GenerateResponse) for c in chunks)
    assert all(c.done is False and c.response for c in tokens)
    assert final.done is True
    assert final.done_reason == "stop"
    assert final.response == ""
    assert 20 <= len(tokens) <= 60
    assert final.eval_count == len(tokens)
    assert final.load_duration is not None and final.eval_duration is not None
    assert final.eval_count / (final.eval_duration / 1e9) == pytest.approx(200, rel=0.5)

    whole = client.generate(MODEL, "Tell me a story")
    assert whole.response == "".join(c.response or "" for c in tokens)

    limited = list(client.generate(MODEL, "Tell me a story", stream=True, options={"num_predict": 3, "seed": 1, "bogus": 2}))
    assert len(limited) == 4
    assert limited[-1].done_reason == "length"


def test_chat(simulator: SimulatedNode, client_for: ClientFactory) -> None:
    client = client_for(simulator)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    reply = client.chat(MODEL, messages=messages, options={"num_predict": 5})
    assert isinstance(reply, ollama.ChatResponse)
    assert reply.message.role == "assistant"
    assert reply.message.content is not None and len(reply.message.content.split()) == 5
    assert reply.done_reason == "length"
    assert reply.eval_count == 5

    chunks = list(client.chat(MODEL, messages=messages, stream=True, options={"num_predict": 5}))
    assert len(chunks) == 6
    assert all(c.message.role == "assistant" for c in chunks)
    assert "".join(c.message.content or "" for c in chunks) == reply.message.content
    assert chunks[-1].done and chunks[-1].message.content == ""
    assert chunks[-1].eval_count == 5
    assert "context" not in httpx.post(
        f"{simulator.base_url}/api/chat", json={"model": MODEL, "messages": messages, "stream": False}
    ).json()


def test_cold_load_keep_alive_and_ps(start_simulator: Callable[..., SimulatedNode], client_for: ClientFactory) -> None:
    node = start_simulator(load_delay=0.3)
    client = client_for(node)
    assert client.ps().models == []

    cold = client.generate(MODEL, "hi", options={"num_predict": 2})
    assert cold.load_duration is not None and cold.load_duration >= 0.25e9
    running = client.ps().models
    assert [m.model for m in running] == [MODEL]
    entry = running[0]
    assert entry.name == MODEL
    assert entry.size_vram == entry.size and entry.size is not None and entry.size > 0
    assert entry.details is not None and entry.details.family == "llama"
    assert entry.expires_at is not None
    expected = datetime.now(UTC) + timedelta(seconds=300)
    assert abs((entry.expires_at - expected).total_seconds()) < 5

    warm = client.generate(MODEL, "hi", options={"num_predict": 2})
    assert warm.load_duration is not None and warm.load_duration < 0.05e9

    client.generate(MODEL, "hi", options={"num_predict": 2}, keep_alive="10m")
    (entry,) = client.ps().models
    assert entry.expires_at is not None
    expected = datetime.now(UTC) + timedelta(minutes=10)
    assert abs((entry.expires_at - expected).total_seconds()) < 5

    client.generate(MODEL, "hi", options={"num_predict": 2}, keep_alive=-1)
    (entry,) = client.ps().models
    assert entry.expires_at is not None and entry.expires_at.year > 2200

    client.generate(MODEL, "hi", options={"num_predict": 2}, keep_alive=0)
    assert loaded_models(client) == []

    client.generate(MODEL, "hi", options={"num_predict": 2}, keep_alive=0.3)
    assert loaded_models(client) == [MODEL]
    time.sleep(0.45)
    assert loaded_models(client) == []
    assert node.stats()["loads"] == 2  # cold start, and again after keep_alive=0


def test_load_and_unload_requests(start_simulator: Callable[..., SimulatedNode], client_for: ClientFactory) -> None:
    node = start_simulator(load_delay=0.2)
    client = client_for(node)
    loaded = client.generate("codellama:7b")
    assert loaded.done is True and loaded.done_reason == "load"
    assert loaded_models(client) == ["codellama:7b"]

    unloaded = client.generate("codellama:7b", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert loaded_models(client) == []

    chat_load = client.chat("codellama:7b", messages=[])
    assert chat_load.done_reason == "load"
    assert chat_load.message.role == "assistant"
    assert loaded_models(client) == ["codellama:7b"]


def test_errors(simulator: SimulatedNode, client_for: ClientFactory) -> None:
    client = client_for(simulator)
    with pytest.raises(ollama.ResponseError) as excinfo:
        client.generate("nope:1b", "hi")
    assert excinfo.value.status_code == 404
    assert excinfo.value.error == 'model "nope:1b" not found, try pulling it first'

    with pytest.raises(ollama.ResponseError) as excinfo:
        list(client.chat("nope", messages=[{"role": "user", "content": "hi"}], stream=True))
    assert excinfo.value.status_code == 404
    assert excinfo.value.error == 'model "nope" not found, try pulling it first'

    bad_json = httpx.post(f"{simulator.base_url}/api/generate", content=b"{not json")
    assert bad_json.status_code == 400 and "error" in bad_json.json()
    no_model = httpx.post(f"{simulator.base_url}/api/generate", json={"prompt": "hi"})
    assert no_model.status_code == 400 and no_model.json() == {"error": "model is required"}
    bad_keep_alive = httpx.post(f"{simulator.base_url}/api/generate", json={"model": MODEL, "keep_alive": "soon"})
    assert bad_keep_alive.status_code == 400


def test_parallel_slots_queue_requests(start_simulator: Callable[..., SimulatedNode], client_for: ClientFactory) -> None:
    def run_two(node: SimulatedNode) -> float:
        client = client_for(node)
        client.generate(MODEL)  # load first so only generation time is measured
        barrier = threading.Barrier(2)

        def one(i: int) -> None:
            barrier.wait()
            client.generate(MODEL, f"prompt {i}", options={"num_predict": 30})

        threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        return time.monotonic() - started

    single = start_simulator(parallel=1, tps=100)
    serial = run_two(single)
    assert single.stats()["max_running"] == 1
    double = start_simulator(parallel=2, tps=100)
    concurrent = run_two(double)
    assert double.stats()["max_running"] == 2
    # 30 tokens at 100 tokens/s: 0.3 s per request, so about 0.6 s vs 0.3 s.
    assert serial >= 0.55
    assert serial > 1.5 * concurrent


def test_faults_through_official_client(simulator: SimulatedNode, client_for: ClientFactory) -> None:
    client = client_for(simulator)
    simulator.set_fault("503")
    with pytest.raises(ollama.ResponseError) as excinfo:
        client.generate(MODEL, "hi")
    assert excinfo.value.status_code == 503
    with pytest.raises(ollama.ResponseError):
        client.list()
    assert httpx.get(f"{simulator.base_url}/").status_code == 200

    simulator.set_fault("refuse")
    with pytest.raises(httpx.TransportError):
        client.list()
    assert httpx.get(f"{simulator.base_url}/_sim/stats").json()["fault"] == "refuse"
    response = httpx.post(f"{simulator.base_url}/_sim/fault", json={"mode": "die-mid-stream"})
    assert response.json() == {"fault": "die-mid-stream"}
    with pytest.raises(httpx.RemoteProtocolError):
        list(client.generate(MODEL, "hi", stream=True, options={"num_predict": 6}))

    assert httpx.post(f"{simulator.base_url}/_sim/fault", json={"mode": "bogus"}).status_code == 400
    simulator.set_fault("none")
    assert client.generate(MODEL, "hi", options={"num_predict": 2}).eval_count == 2
    stats = simulator.stats()
    assert stats["dropped"] == 1 and stats["refused"] >= 1


def test_keep_alive_parsing() -> None:
    assert parse_keep_alive(30) == 30
    assert parse_keep_alive("5m") == 300
    assert parse_keep_alive("1h30m") == 5400
    assert parse_keep_alive("250ms") == 0.25
    assert parse_keep_alive("0") == 0
    assert parse_keep_alive("45") == 45
    assert parse_keep_alive(-1) is None
    assert parse_keep_alive("-1m") is None
    for bad in ("soon", "5x", ""):
        with pytest.raises(ValueError):
            parse_keep_alive(bad)
    for bad_type in (True, [1], None):
        with pytest.raises(TypeError):
            parse_keep_alive(bad_type)
    assert normalize_model_name("llama3.2") == "llama3.2:latest"
    assert normalize_model_name("llama3.2:3b") == "llama3.2:3b"
    assert normalize_model_name("registry:5000/llama3.2") == "registry:5000/llama3.2:latest"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_process_exits_cleanly_on_signal(spawn_simulator: Callable[..., SimulatorProcess], sig: int) -> None:
    proc = spawn_simulator(name="proc-sim", models="qwen2.5-coder:7b")
    assert httpx.get(f"{proc.base_url}/api/tags").json()["models"][0]["name"] == "qwen2.5-coder:7b"
    assert proc.stats()["name"] == "proc-sim"
    started = time.monotonic()
    assert proc.stop(sig) == 0
    assert time.monotonic() - started < 5
    assert "stopped" in proc.log()
    assert "Traceback" not in proc.log()


def test_management_command_parses_options() -> None:
    from django.core.management import load_command_class

    from agents.simulator import config_from_options

    command = load_command_class("agents", "simulate_ollama")
    parser = command.create_parser("manage.py", "simulate_ollama")
    options = vars(
        parser.parse_args(
            ["--port", "11435", "--models", "a:1b,b", "--tps", "10", "--parallel", "3",
             "--load-delay", "0.5", "--keep-alive", "5m", "--fault", "stall", "--name", "sim-a"]
        )
    )
    config = config_from_options(options)
    assert config.port == 11435
    assert config.models == ("a:1b", "b:latest")
    assert (config.tps, config.parallel, config.load_delay, config.keep_alive) == (10, 3, 0.5, 300)
    assert (config.fault, config.name) == ("stall", "sim-a")
