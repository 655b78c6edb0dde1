"""LLM nodes (Ollama model sub-nodes, Basic LLM Chain, Hive Agent Task) and run_llm_task.

The nodes run through the real runtime with a fake host that records the prompts;
``run_llm_task`` runs against the database, with the Hive task finished by a thread
playing the worker.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.test import override_settings

from coordinator.models import Task
from workflows.engine.contract import (
    EngineServices,
    ExecutionCancelled,
    NodeError,
    NodeSpec,
    WorkflowInvalid,
    get_node,
)
from workflows.engine.runtime import run_workflow
from workflows.llm import run_llm_task
from workflows.nodes.llm import ollama_options

TRIGGER = {"name": "Start", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0],
           "parameters": {}}


class FakeHost(EngineServices):
    def __init__(self, fail: str | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail = fail

    def run_llm(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        if self.fail:
            raise NodeError(self.fail)
        return {"response": f"  answer to: {kwargs['prompt']}  ", "task_id": f"t{len(self.calls)}", "agent": "oak",
                "model": kwargs["model"] or "default", "tokens_per_second": 42.0, "timings": {"eval_count": 3}}


def chain_workflow(chain_params: dict[str, Any], *, version: float = 1.5, model_params: dict[str, Any] | None = None,
                   model_type: str = "@n8n/n8n-nodes-langchain.lmChatOllama", wired: bool = True,
                   items: list[dict[str, Any]] | None = None, **chain_extra: Any) -> dict[str, Any]:
    code = {"name": "Data", "type": "n8n-nodes-testing.testData", "typeVersion": 1, "position": [200, 0],
            "parameters": {"data": items if items is not None else [{"chatInput": "hi"}]}}
    chain = {"name": "Chain", "type": "@n8n/n8n-nodes-langchain.chainLlm", "typeVersion": version, "position": [400, 0],
             "parameters": chain_params, **chain_extra}
    model = {"name": "Model", "type": model_type, "typeVersion": 1, "position": [400, 200],
             "parameters": model_params if model_params is not None else {"model": "llama3.2:3b", "options": {
                 "temperature": 0.1, "numPredict": 64, "topP": 0.9, "keepAlive": "5m"}}}
    connections: dict[str, Any] = {"Start": {"main": [[{"node": "Data", "type": "main", "index": 0}]]},
                                   "Data": {"main": [[{"node": "Chain", "type": "main", "index": 0}]]}}
    if wired:
        connections["Model"] = {"ai_languageModel": [[{"node": "Chain", "type": "ai_languageModel", "index": 0}]]}
    return {"name": "llm", "nodes": [TRIGGER, code, chain, model], "connections": connections,
            "settings": {"executionOrder": "v1"}}


def needs(*types: str) -> None:
    missing = [t for t in types if get_node(t) is None]
    if missing:
        pytest.skip(f"node types not registered yet: {missing}")


def outputs(result: Any, node: str) -> list[dict[str, Any]]:
    assert result.status == "success", result.error
    return [i["json"] for i in result.run_data[node][0].outputs[0]]


# --------------------------------------------------------------------------- nodes


def test_chain_auto_prompt_uses_chat_input_and_the_connected_model() -> None:
    needs("n8n-nodes-testing.testData")
    host = FakeHost()
    result = run_workflow(chain_workflow({"promptType": "auto"}, items=[{"chatInput": "hi"}, {"chatInput": "yo"}]),
                          services=host)
    assert outputs(result, "Chain") == [{"text": "answer to: hi"}, {"text": "answer to: yo"}]
    assert [c["prompt"] for c in host.calls] == ["hi", "yo"]
    assert host.calls[0]["model"] == "llama3.2:3b"
    assert host.calls[0]["options"] == {"temperature": 0.1, "num_predict": 64, "top_p": 0.9}
    assert "Model" not in result.run_data  # a sub-node never runs on the main path


def test_chain_define_prompt_with_expression_and_system_message() -> None:
    needs("n8n-nodes-testing.testData")
    host = FakeHost()
    params = {"promptType": "define", "text": "=Summarize {{ $json.topic }}", "messages": {"messageValues": [
        {"message": "You are terse."}, {"type": "AIMessagePromptTemplate", "message": "Ready."}]}}
    result = run_workflow(chain_workflow(params, items=[{"topic": "bees"}]), services=host)
    assert outputs(result, "Chain") == [{"text": "answer to: Assistant: Ready.\n\nUser: Summarize bees"}]
    assert host.calls[0]["system"] == "You are terse."


def test_chain_v1_uses_prompt_and_json_input_by_default() -> None:
    needs("n8n-nodes-testing.testData")
    host = FakeHost()
    result = run_workflow(chain_workflow({}, version=1, items=[{"input": "from input"}]), services=host)
    assert outputs(result, "Chain") == [{"text": "answer to: from input"}]
    host = FakeHost()
    result = run_workflow(chain_workflow({"prompt": "fixed"}, version=1.3, items=[{"input": "x"}]), services=host)
    assert outputs(result, "Chain") == [{"text": "answer to: fixed"}]


def test_chain_errors_missing_prompt_model_and_failed_task() -> None:
    needs("n8n-nodes-testing.testData")
    result = run_workflow(chain_workflow({"promptType": "auto"}, items=[{"other": 1}]), services=FakeHost())
    assert result.status == "error" and result.error == "No prompt specified" and result.error_node == "Chain"
    with pytest.raises(WorkflowInvalid, match="(?i)no language model is connected"):  # refused before it runs
        run_workflow(chain_workflow({"promptType": "auto"}, wired=False), services=FakeHost())
    with pytest.raises(WorkflowInvalid, match="unknown node type"):  # other providers' model nodes: not here
        run_workflow(chain_workflow({"promptType": "auto"}, model_type="@n8n/n8n-nodes-langchain.lmChatOpenAi"),
                     services=FakeHost())
    result = run_workflow(chain_workflow({"promptType": "auto"}), services=FakeHost(fail="The Hive task x failed: boom"))
    assert result.status == "error" and result.error == "The Hive task x failed: boom"
    result = run_workflow(chain_workflow({"promptType": "auto"}, onError="continueRegularOutput"),
                          services=FakeHost(fail="boom"))
    assert outputs(result, "Chain") == [{"error": "boom"}]


def test_chain_without_a_model_is_a_validation_issue_naming_the_node() -> None:
    handler = get_node("@n8n/n8n-nodes-langchain.chainLlm")
    assert handler is not None
    workflow = chain_workflow({"promptType": "auto"}, wired=False)
    spec = NodeSpec.from_json(workflow["nodes"][2])
    issues = handler.validate_workflow(spec, workflow)  # type: ignore[attr-defined]
    assert [(i.node, i.parameter) for i in issues] == [("Chain", "ai_languageModel")]
    assert "no language model is connected" in issues[0].message
    assert handler.validate_workflow(spec, chain_workflow({"promptType": "auto"})) == []  # type: ignore[attr-defined]


def test_the_default_host_explains_that_llm_nodes_need_the_cluster() -> None:
    needs("n8n-nodes-testing.testData")
    result = run_workflow(chain_workflow({"promptType": "auto"}))
    assert result.status == "error" and "need the Hive cluster" in (result.error or "")


def test_agent_task_node_passes_type_priority_and_options() -> None:
    needs("n8n-nodes-testing.testData")
    host = FakeHost()
    node = {"name": "Agent", "type": "n8n-nodes-hive.agentTask", "typeVersion": 1, "position": [400, 0],
            "parameters": {"prompt": "=Review {{ $json.file }}", "taskType": "code", "priority": 5,
                           "model": "qwen2.5-coder", "system": "Be strict.", "options": '{"temperature": 0}'}}
    data = {"name": "Data", "type": "n8n-nodes-testing.testData", "typeVersion": 1, "position": [200, 0],
            "parameters": {"data": [{"file": "a.py"}]}}
    workflow = {"nodes": [TRIGGER, data, node], "connections": {
        "Start": {"main": [[{"node": "Data", "type": "main", "index": 0}]]},
        "Data": {"main": [[{"node": "Agent", "type": "main", "index": 0}]]}}}
    result = run_workflow(workflow, services=host)
    assert outputs(result, "Agent") == [{"response": "  answer to: Review a.py  ", "task_id": "t1", "agent": "oak",
                                         "model": "qwen2.5-coder", "tokens_per_second": 42.0,
                                         "timings": {"eval_count": 3}}]
    call = host.calls[0]
    assert (call["task_type"], call["priority"], call["system"], call["options"]) == ("code", 5, "Be strict.",
                                                                                        {"temperature": 0})
    handler = get_node("n8n-nodes-hive.agentTask")
    assert handler is not None
    issues = handler.validate(NodeSpec.from_json({**node, "parameters": {"priority": 9, "options": "{bad"}}))
    assert {i.parameter for i in issues} == {"prompt", "priority", "options"}


def test_ollama_option_names() -> None:
    assert ollama_options({"numPredict": 5, "topK": 3, "stop": "a, b", "format": "json", "custom": 1}) == {
        "num_predict": 5, "top_k": 3, "stop": ["a", "b"], "custom": 1}


# --------------------------------------------------------------------------- run_llm_task against the database


def _finish_when_created(status: str, **fields: Any) -> threading.Thread:
    """A 'worker' thread: waits for the newest workflow task and finishes it."""
    from django.db import connection

    def work() -> None:
        try:
            for _ in range(200):
                task = Task.objects.filter(metadata__source="workflow").order_by("-created_at").first()
                if task is not None:
                    Task.objects.filter(pk=task.pk).update(status=status, **fields)
                    return
                time.sleep(0.02)
        finally:
            connection.close()

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)
def test_run_llm_task_waits_for_the_task_and_returns_its_result() -> None:
    seen: list[Task] = []
    worker = _finish_when_created(Task.Status.COMPLETED, result="forty-two", tokens_per_second=12.5,
                                  timings={"eval_count": 7})
    result = run_llm_task(prompt="What is six times seven?", model="llama3.2:3b", system="Be brief.",
                          task_type="general", priority=4, options={"temperature": 0}, title="wf: node",
                          on_task_created=seen.append)
    worker.join(5)
    assert result["response"] == "forty-two" and result["tokens_per_second"] == 12.5
    assert result["timings"] == {"eval_count": 7} and result["model"] == "llama3.2:3b" and result["agent"] is None
    task = Task.objects.get(pk=result["task_id"])
    assert seen and seen[0].pk == task.pk
    assert (task.title, task.prompt, task.system, task.priority, task.options) == (
        "wf: node", "What is six times seven?", "Be brief.", 4, {"temperature": 0})


@pytest.mark.django_db(transaction=True)
def test_run_llm_task_failed_task_is_a_node_error() -> None:
    worker = _finish_when_created(Task.Status.FAILED, error="model not found")
    with pytest.raises(NodeError, match="failed: model not found"):
        run_llm_task(prompt="hello")
    worker.join(5)


@pytest.mark.django_db(transaction=True)
def test_run_llm_task_cancelled_execution_cancels_the_task() -> None:
    calls = {"n": 0}

    def cancelled() -> bool:
        calls["n"] += 1
        return calls["n"] > 2

    with pytest.raises(ExecutionCancelled):
        run_llm_task(prompt="never mind", is_cancelled=cancelled)
    task = Task.objects.get(metadata__source="workflow")
    assert task.status == Task.Status.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_run_llm_task_deadline_and_bad_input() -> None:
    with override_settings(HIVE_TASK_TIME_LIMIT=0.3), pytest.raises(NodeError, match="did not finish within"):
        run_llm_task(prompt="slow")
    assert Task.objects.get(metadata__source="workflow").status == Task.Status.CANCELLED
    with pytest.raises(NodeError, match="priority must be from 1 to 5"):
        run_llm_task(prompt="x", priority=7)
    with pytest.raises(NodeError, match="prompt is empty"):
        run_llm_task(prompt="  ")
    with pytest.raises(NodeError, match="could not be created: task_type"):
        run_llm_task(prompt="x", task_type="t" * 101)
