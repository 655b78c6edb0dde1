"""Input that must never reach a node unchecked or crash a request (issue #15).

Ollama options are validated in one place (coordinator.options) by the API, the admin
and the workflow LLM nodes; num_predict/num_ctx are capped; every REST route refuses
JSON nested deeper than HIVE_MAX_JSON_DEPTH and NaN/Infinity with a 400; the simulated
node bounds what one request may make it generate.
"""
from __future__ import annotations

import json
import math
import tracemalloc
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.core.exceptions import ValidationError
from django.test import Client, override_settings

from agents.simulator import MAX_PREDICT, SimulatedNode, token_limit
from coordinator.api.serializers import TaskSerializer
from coordinator.models import Task
from coordinator.options import MAX_STOP_SEQUENCES, validate_options
from tests.factories import make_task
from workflows.engine.contract import EngineServices, NodeError, NodeSpec, WorkflowInvalid, get_node
from workflows.engine.runtime import run_workflow
from workflows.llm import run_llm_task
from workflows.models import Workflow

pytest_plugins = ("tests.simulator_fixtures",)

CAP = 32768        # HIVE_MAX_NUM_PREDICT's default
CTX_CAP = 131072   # HIVE_MAX_NUM_CTX's default
DEEP = "[" * 100_000 + "]" * 100_000
TASKS = "/api/tasks"
ADMIN_TASKS = "/admin/coordinator/task/"


def task_body(**options: Any) -> dict[str, Any]:
    return {"title": "t", "prompt": "p", "options": options}


def refused(response: Any, *words: str) -> str:
    """The error sentence of a 400, which must contain every one of ``words``."""
    assert response.status_code == 400, response.content[:500]
    body = response.json()
    assert body["status"] == 400
    for word in words:
        assert word in body["error"], body["error"]
    return str(body["error"])


# --- the validator ------------------------------------------------------------------------


def test_valid_options_pass_through_unchanged() -> None:
    options = {"temperature": 0.2, "top_k": 40, "top_p": 0.9, "min_p": 0.05, "num_ctx": 4096, "seed": 42,
               "repeat_last_n": -1, "mirostat": 2, "mirostat_tau": 5.0, "penalize_newline": False,
               "stop": ["\n\n", "User:"], "numa": False, "use_mmap": True, "num_gpu": -1, "tfs_z": 1}
    assert validate_options(options) == options


def test_validation_is_idempotent() -> None:
    once = validate_options({"num_predict": -1, "stop": "END", "num_ctx": 2048.0, "seed": None})
    assert once == {"num_predict": CAP, "stop": ["END"], "num_ctx": 2048}
    assert validate_options(once) == once


def test_integral_floats_are_read_as_whole_numbers_and_other_floats_are_refused() -> None:
    assert validate_options({"num_predict": 64.0}) == {"num_predict": 64}
    assert type(validate_options({"num_predict": 64.0})["num_predict"]) is int
    with pytest.raises(ValidationError, match="top_k must be a whole number"):
        validate_options({"top_k": 0.5})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_float_that_is_not_finite_is_refused_naming_the_option(value: float) -> None:
    with pytest.raises(ValidationError, match="temperature must be a finite number"):
        validate_options({"temperature": value})
    with pytest.raises(ValidationError, match="num_ctx must be"):
        validate_options({"num_ctx": value})


def test_the_caps_come_from_settings() -> None:
    with override_settings(HIVE_MAX_NUM_PREDICT=100, HIVE_MAX_NUM_CTX=1000):
        assert validate_options({"num_predict": -2}) == {"num_predict": 100}
        with pytest.raises(ValidationError, match=r"num_predict must be at most 100 \(HIVE_MAX_NUM_PREDICT\)"):
            validate_options({"num_predict": 101})
        with pytest.raises(ValidationError, match=r"num_ctx must be at most 1000 \(HIVE_MAX_NUM_CTX\)"):
            validate_options({"num_ctx": 1001})


def test_every_bad_option_is_named_in_one_error() -> None:
    with pytest.raises(ValidationError) as caught:
        validate_options({"temprature": 1, "top_p": 2, "stop": [""]})
    text = " ".join(caught.value.messages)
    assert "'temprature' is not an Ollama option" in text
    assert "top_p must be at most 1" in text and "stop[0] may not be empty" in text


# --- the task API -------------------------------------------------------------------------


@pytest.mark.django_db
def test_an_unknown_option_is_a_400_naming_it_and_creates_no_task(dev_api: Any) -> None:
    refused(dev_api.post(TASKS, task_body(temprature=0.2), format="json"), "options", "'temprature'")
    assert not Task.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"num_ctx": True}, "num_ctx must be a whole number"),
        ({"seed": [1]}, "seed must be a whole number"),
        ({"top_k": 2.5}, "top_k must be a whole number"),
        ({"mirostat": 3}, "mirostat must be at most 2"),
        ({"penalize_newline": 1}, "penalize_newline must be true or false"),
        ({"use_mmap": "yes"}, "use_mmap must be true or false"),
        ({"stop": [1]}, "stop[0] must be a string"),
        ({"stop": {"a": 1}}, "stop must be a list of strings"),
        ({"stop": ["x" * 257]}, "stop[0] may be at most 256 characters"),
        ({"stop": [str(i) for i in range(MAX_STOP_SEQUENCES + 1)]}, "stop may hold at most 16 strings"),
        ({"num_predict": 10**40}, "num_predict must be at most 32768 (HIVE_MAX_NUM_PREDICT)"),
        ({"num_predict": 1e40}, "num_predict must be at most 32768 (HIVE_MAX_NUM_PREDICT)"),
        ({"num_predict": CAP + 1}, "HIVE_MAX_NUM_PREDICT"),
        ({"num_predict": 0}, "num_predict must be a number of tokens from 1"),
        ({"num_predict": -3}, "num_predict must be a number of tokens from 1"),
        ({"num_ctx": CTX_CAP + 1}, "num_ctx must be at most 131072 (HIVE_MAX_NUM_CTX)"),
        ({"num_ctx": 0}, "num_ctx must be at least 1"),
        ({"seed": 2**64}, "seed must be at most"),
    ],
)
def test_a_bad_option_value_is_a_400_naming_the_option_and_creates_no_task(dev_api: Any, options: dict[str, Any],
                                                                           named: str) -> None:
    refused(dev_api.post(TASKS, task_body(**options), format="json"), "options", named)
    assert not Task.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("unlimited", [-1, -2, -1.0])
def test_unlimited_num_predict_is_stored_as_the_cap(dev_api: Any, unlimited: int) -> None:
    response = dev_api.post(TASKS, task_body(num_predict=unlimited, temperature=0), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["options"] == {"num_predict": CAP, "temperature": 0}
    assert Task.objects.get().options["num_predict"] == CAP


@pytest.mark.django_db
def test_a_stop_string_is_stored_as_a_list_and_null_options_are_dropped(dev_api: Any) -> None:
    response = dev_api.post(TASKS, task_body(stop="###", seed=None), format="json")
    assert response.status_code == 201, response.json()
    assert Task.objects.get().options == {"stop": ["###"]}


@pytest.mark.django_db
def test_the_serializer_refuses_nan_that_json_cannot_carry() -> None:
    serializer = TaskSerializer(data=task_body(temperature=math.nan))
    assert not serializer.is_valid() and "options" in serializer.errors


@pytest.mark.django_db
def test_the_model_refuses_a_bad_option_wherever_the_task_comes_from() -> None:
    task = Task(title="t", prompt="p", options={"num_predict": 10**9})
    with pytest.raises(ValidationError) as caught:
        task.full_clean()
    assert "num_predict must be at most 32768" in " ".join(caught.value.message_dict["options"])
    task.options = {"num_predict": -1}
    task.full_clean()
    assert task.options == {"num_predict": CAP}


@pytest.mark.django_db
def test_the_batch_endpoint_validates_each_item_and_creates_none_when_one_is_bad(dev_api: Any) -> None:
    body = {"tasks": [task_body(temperature=0.1), task_body(num_predict=10**40)]}
    refused(dev_api.post(f"{TASKS}/batch", body, format="json"), "tasks[1].options", "HIVE_MAX_NUM_PREDICT")
    assert not Task.objects.exists()

    body = {"tasks": [task_body(num_predict=-1), task_body(stop="x")]}
    response = dev_api.post(f"{TASKS}/batch", body, format="json")
    assert response.status_code == 201, response.json()
    assert [t["options"] for t in response.json()] == [{"num_predict": CAP}, {"stop": ["x"]}]


@pytest.mark.django_db
def test_patch_validates_options_the_same_and_leaves_the_task_unchanged_when_refused(admin_api: Any) -> None:
    task = make_task(options={"temperature": 0.5})
    refused(admin_api.patch(f"{TASKS}/{task.pk}", {"options": {"num_ctx": "big"}}, format="json"), "num_ctx")
    refused(admin_api.patch(f"{TASKS}/{task.pk}", {"options": {"bogus": 1}}, format="json"), "'bogus'")
    task.refresh_from_db()
    assert task.options == {"temperature": 0.5}

    response = admin_api.patch(f"{TASKS}/{task.pk}", {"options": {"num_predict": -2}}, format="json")
    assert response.status_code == 200, response.json()
    task.refresh_from_db()
    assert task.options == {"num_predict": CAP}


# --- the admin ----------------------------------------------------------------------------


@pytest.fixture
def staff(db: None) -> Client:
    from django.contrib.auth.models import User

    client = Client()
    client.force_login(User.objects.create_superuser("root", email="", password="pw-root"))
    return client


def admin_form(options: str) -> dict[str, str]:
    return {"title": "from the admin", "prompt": "p", "system": "", "task_type": "general", "model": "",
            "options": options, "priority": "3", "max_attempts": "3", "pinned_agent": "", "metadata": "{}",
            "dependency_links-TOTAL_FORMS": "0", "dependency_links-INITIAL_FORMS": "0",
            "attempt_log-TOTAL_FORMS": "0", "attempt_log-INITIAL_FORMS": "0"}


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ('{"num_predict": 1e40}', "num_predict must be at most"),
        ('{"temprature": 1}', "'temprature' is not an Ollama option"),
        ('{"temperature": NaN}', "NaN is not valid JSON"),
        ('{"temperature": Infinity}', "Infinity is not valid JSON"),
        (DEEP, "nested deeper than 200 levels"),
    ],
)
def test_the_admin_form_refuses_a_bad_option_and_writes_nothing(staff: Client, options: str, named: str) -> None:
    response = staff.post(f"{ADMIN_TASKS}add/", admin_form(options))
    assert response.status_code == 200, response.content[:500]
    errors = response.context["adminform"].form.errors
    assert named in " ".join(errors.get("options", [])), errors
    assert not Task.objects.exists()


def test_the_admin_stores_unlimited_num_predict_as_the_cap(staff: Client) -> None:
    response = staff.post(f"{ADMIN_TASKS}add/", admin_form('{"num_predict": -1}'))
    assert response.status_code == 302, response.content.decode()[:3000]
    assert Task.objects.get().options == {"num_predict": CAP}


# --- workflows ----------------------------------------------------------------------------


class RecordingHost(EngineServices):
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run_llm(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {"response": "ok", "task_id": "t1", "agent": "oak", "model": "m", "tokens_per_second": 1.0,
                "timings": {}}


START = {"name": "Start", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0],
         "parameters": {}}


def chain_workflow(model_options: dict[str, Any]) -> dict[str, Any]:
    chain = {"name": "Chain", "type": "@n8n/n8n-nodes-langchain.chainLlm", "typeVersion": 1.5, "position": [200, 0],
             "parameters": {"promptType": "define", "text": "Say hi"}}
    model = {"name": "Model", "type": "@n8n/n8n-nodes-langchain.lmChatOllama", "typeVersion": 1,
             "position": [200, 200], "parameters": {"model": "llama3.2:3b", "options": model_options}}
    return {"name": "llm", "nodes": [START, chain, model], "settings": {"executionOrder": "v1"}, "connections": {
        "Start": {"main": [[{"node": "Chain", "type": "main", "index": 0}]]},
        "Model": {"ai_languageModel": [[{"node": "Chain", "type": "ai_languageModel", "index": 0}]]}}}


def agent_task_workflow(options: Any) -> dict[str, Any]:
    node = {"name": "Agent", "type": "n8n-nodes-hive.agentTask", "typeVersion": 1, "position": [200, 0],
            "parameters": {"prompt": "Review", "options": options}}
    return {"name": "agent", "nodes": [START, node], "settings": {"executionOrder": "v1"},
            "connections": {"Start": {"main": [[{"node": "Agent", "type": "main", "index": 0}]]}}}


def test_a_chain_whose_model_option_evaluates_to_a_bad_value_fails_the_node_naming_it() -> None:
    host = RecordingHost()
    result = run_workflow(chain_workflow({"numPredict": "={{ 1e40 }}"}), services=host)
    assert result.status == "error" and result.error_node == "Chain", result.error
    assert "Invalid Ollama options: num_predict must be at most 32768" in (result.error or "")
    assert host.calls == [], "no task is asked for"


def test_a_chain_passes_the_checked_options_on() -> None:
    host = RecordingHost()
    result = run_workflow(chain_workflow({"numPredict": -1, "stop": "a, b", "f16KV": True}), services=host)
    assert result.status == "success", result.error
    assert host.calls[0]["options"] == {"num_predict": CAP, "stop": ["a", "b"]}


def test_literal_bad_options_are_refused_before_a_workflow_runs() -> None:
    with pytest.raises(WorkflowInvalid, match="'numPrediction' is not an Ollama option"):
        run_workflow(chain_workflow({"numPrediction": 5}), services=RecordingHost())
    with pytest.raises(WorkflowInvalid, match="num_ctx must be at most 131072"):
        run_workflow(agent_task_workflow({"num_ctx": 10**9}), services=RecordingHost())


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ('={{ JSON.stringify({temprature: 1}) }}', "'temprature' is not an Ollama option"),
        ('={{ JSON.stringify({seed: true}) }}', "seed must be a whole number"),
        ({"temperature": "={{ 'hot' }}"}, "temperature must be a number"),
    ],
)
def test_an_agent_task_node_whose_options_evaluate_to_a_bad_one_fails_naming_it(options: Any, named: str) -> None:
    host = RecordingHost()
    result = run_workflow(agent_task_workflow(options), services=host)
    assert result.status == "error" and result.error_node == "Agent", result.error
    assert named in (result.error or "") and host.calls == []


def test_literal_bad_options_are_a_validation_issue_of_the_agent_task_node() -> None:
    handler = get_node("n8n-nodes-hive.agentTask")
    assert handler is not None
    for options, named in (('{"temprature": 1}', "'temprature'"), ({"num_predict": 10**9}, "HIVE_MAX_NUM_PREDICT")):
        issues = handler.validate(NodeSpec.from_json(agent_task_workflow(options)["nodes"][1]))
        assert [(i.parameter, named in i.message) for i in issues] == [("options", True)], issues
    assert handler.validate(NodeSpec.from_json(agent_task_workflow({"temperature": "={{ 1 }}"})["nodes"][1])) == []


def test_an_agent_task_options_string_nested_too_deep_is_refused_not_a_crash() -> None:
    with pytest.raises(WorkflowInvalid, match="options is not valid JSON: JSON nested deeper than 200 levels"):
        run_workflow(agent_task_workflow('{"a":' + DEEP + "}"), services=RecordingHost())


@pytest.mark.django_db
def test_saving_a_workflow_with_a_literal_bad_option_is_a_400_naming_it(dev_api: Any) -> None:
    workflow = agent_task_workflow({"num_ctx": 10**9})
    response = dev_api.post("/api/workflows", {"name": "Bad options", "n8n_data": workflow}, format="json")
    refused(response, "Agent", "HIVE_MAX_NUM_CTX")
    assert not Workflow.objects.exists()


@pytest.mark.django_db
def test_run_llm_task_refuses_bad_options_before_creating_a_task() -> None:
    with pytest.raises(NodeError, match="num_predict must be at most"):
        run_llm_task(prompt="hi", options={"num_predict": 10**40})
    with pytest.raises(NodeError, match="'bogus' is not an Ollama option"):
        run_llm_task(prompt="hi", options={"bogus": 1})
    assert not Task.objects.exists()


# --- JSON bodies on every REST route ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("path", [TASKS, f"{TASKS}/batch", "/api/workflows", "/api/agents"])
def test_a_body_nested_100000_deep_is_a_400_naming_the_nesting(admin_api: Any, path: str) -> None:
    response = admin_api.post(path, '{"tasks": ' + DEEP + "}", content_type="application/json")
    refused(response, "nested deeper than 200 levels")
    response = admin_api.post(path, DEEP, content_type="application/json")
    refused(response, "nested deeper than 200 levels")
    assert not Task.objects.exists() and not Workflow.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("path", [TASKS, f"{TASKS}/batch", "/api/workflows", "/api/agents"])
def test_nan_and_infinity_bodies_are_a_400(admin_api: Any, path: str, constant: str) -> None:
    body = '{"title": "t", "prompt": "p", "options": {"temperature": ' + constant + "}}"
    refused(admin_api.post(path, body, content_type="application/json"), constant, "not valid JSON")
    assert not Task.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize("body, named", [
    ('{"title": 1e400, "prompt": "p"}', "too large"),
    ('{"title": "t", "prompt": "p", "metadata": {"x": -1e999}}', "too large"),
    ('{"title": "\\ud800", "prompt": "p"}', "unpaired UTF-16 surrogate"),
    ('{"title": "t", "prompt": "p", "metadata": {"\\udfff": 1}}', "unpaired UTF-16 surrogate"),
])
@pytest.mark.parametrize("path", [TASKS, "/api/workflows", "/api/agents", "/api/mcp-servers"])
def test_numbers_past_a_float_and_lone_surrogates_are_a_400(admin_api: Any, path: str, body: str, named: str) -> None:
    """1e400 parses as inf and "\\ud800" as half a character; neither can be stored or sent on."""
    refused(admin_api.post(path, body, content_type="application/json"), named)
    assert not Task.objects.exists() and not Workflow.objects.exists()


@pytest.mark.django_db
def test_a_paired_surrogate_escape_is_an_ordinary_character(admin_api: Any) -> None:
    response = admin_api.post(TASKS, '{"title": "\\ud83d\\ude00", "prompt": "p"}', content_type="application/json")
    assert response.status_code == 201 and response.json()["title"] == "\U0001F600"


@pytest.mark.django_db
def test_form_and_multipart_bodies_still_parse(dev_api: Any) -> None:
    assert dev_api.post(TASKS, {"title": "form", "prompt": "p"}).status_code == 201  # multipart
    response = dev_api.post(TASKS, "title=urlencoded&prompt=p", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201, response.json()
    assert Task.objects.count() == 2


# --- the simulated node -------------------------------------------------------------------


def test_the_simulator_reads_num_predict_with_its_own_cap() -> None:
    assert token_limit(7) == 7 and token_limit(7.0) == 7
    assert token_limit(10**40) == MAX_PREDICT and token_limit(math.inf) == MAX_PREDICT
    for natural in (-1, -2, 0, None, True, "100", math.nan, -math.inf):
        assert token_limit(natural) is None, natural


def test_the_simulator_answers_a_huge_num_predict_at_its_cap_without_growing(
    start_simulator: Callable[..., SimulatedNode],
) -> None:
    node = start_simulator(tps=0, load_delay=0)
    tracemalloc.start()
    try:
        huge = httpx.post(f"{node.base_url}/api/generate", timeout=60, json={
            "model": "llama3.2:3b", "prompt": "go", "stream": False, "options": {"num_predict": 10**9}}).json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert huge["eval_count"] == MAX_PREDICT and huge["done_reason"] == "length"
    assert len(huge["context"]) <= 131072
    assert peak < 64 * 1024 * 1024, f"peak {peak / 1e6:.0f} MB"

    unlimited = httpx.post(f"{node.base_url}/api/generate", timeout=30, json={
        "model": "llama3.2:3b", "prompt": "go", "stream": False, "options": {"num_predict": -1}}).json()
    assert unlimited["done_reason"] == "stop" and unlimited["eval_count"] <= 60


def test_the_simulator_streams_a_huge_request_lazily(start_simulator: Callable[..., SimulatedNode]) -> None:
    node = start_simulator(tps=0, load_delay=0)
    lines = 0
    with httpx.stream("POST", f"{node.base_url}/api/chat", timeout=60, json={
            "model": "llama3.2:3b", "messages": [{"role": "user", "content": "go"}],
            "options": {"num_predict": 1e300}}) as response:
        for line in response.iter_lines():
            lines += 1
            last = json.loads(line)
    assert lines == MAX_PREDICT + 1 and last["done"] and last["eval_count"] == MAX_PREDICT


def test_the_simulator_refuses_deep_or_nan_request_json_with_a_400(simulator: SimulatedNode) -> None:
    for body in ('{"model": "llama3.2:3b", "prompt": ' + DEEP + "}",
                 '{"model": "llama3.2:3b", "prompt": "x", "options": {"temperature": NaN}}'):
        response = httpx.post(f"{simulator.base_url}/api/generate", content=body, timeout=10)
        assert response.status_code == 400 and "invalid JSON" in response.json()["error"]
    assert httpx.get(f"{simulator.base_url}/api/version", timeout=5).status_code == 200


def test_options_ollama_retired_are_dropped_not_refused() -> None:
    """The official ollama client and LiteLLM still send them; Ollama ignores them."""
    assert validate_options({"f16_kv": True, "logits_all": False, "num_gqa": 8, "temperature": 0.5}) == \
        {"temperature": 0.5}
