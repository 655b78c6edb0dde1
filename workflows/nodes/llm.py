"""LLM nodes: n8n's Ollama model sub-nodes and Basic LLM Chain, and Hive's own Agent Task.

Every prompt runs as a Hive task (``ctx.services.run_llm``), so it is placed, retried,
cancelled and measured like any other task. The Ollama model nodes are n8n *sub-nodes*:
they are never executed on the main path; the chain reads their parameters through its
``ai_languageModel`` connection.
"""
from __future__ import annotations

import json
from typing import Any, ClassVar

from workflows.engine.contract import (
    Item,
    Node,
    NodeContext,
    NodeError,
    NodeSpec,
    Outputs,
    ValidationIssue,
    register,
)
from workflows.engine.jsvalues import json_object_param

LM_CHAT_OLLAMA = "@n8n/n8n-nodes-langchain.lmChatOllama"
LM_OLLAMA = "@n8n/n8n-nodes-langchain.lmOllama"
CHAIN_LLM = "@n8n/n8n-nodes-langchain.chainLlm"
AGENT_TASK = "n8n-nodes-hive.agentTask"
LANGUAGE_MODEL = "ai_languageModel"
DEFAULT_MODEL = "llama3.2"
_ABSENT = object()

# n8n's Ollama option names -> Ollama's (the task's ``options``).
OLLAMA_OPTIONS = {
    "temperature": "temperature", "topK": "top_k", "topP": "top_p", "numPredict": "num_predict",
    "frequencyPenalty": "frequency_penalty", "presencePenalty": "presence_penalty",
    "repeatPenalty": "repeat_penalty", "repeatLastN": "repeat_last_n", "numCtx": "num_ctx", "numKeep": "num_keep",
    "mirostat": "mirostat", "mirostatEta": "mirostat_eta", "mirostatTau": "mirostat_tau", "seed": "seed",
    "stop": "stop", "tfsZ": "tfs_z", "typicalP": "typical_p", "numBatch": "num_batch", "numGpu": "num_gpu",
    "mainGpu": "main_gpu", "lowVram": "low_vram", "numThread": "num_thread", "penalizeNewline": "penalize_newline",
    "useMLock": "use_mlock", "useMMap": "use_mmap", "vocabOnly": "vocab_only",
}
# Request-level settings the model node may carry that are not generation options:
# Hive's agents manage model residency, and a task's reply is always text. f16KV is an
# option Ollama has removed (it ignores it), so it is not passed on.
IGNORED_OPTIONS = {"keepAlive", "format", "f16KV"}


def ollama_options(raw: Any) -> dict[str, Any]:
    """The model node's ``options`` translated to Ollama's names (unknown names pass as written)."""
    if not isinstance(raw, dict):
        return {}
    options: dict[str, Any] = {}
    for key, value in raw.items():
        if key in IGNORED_OPTIONS or value is None or value == "":
            continue
        if key == "stop" and isinstance(value, str):
            value = [s.strip() for s in value.split(",") if s.strip()]
        options[OLLAMA_OPTIONS.get(key, key)] = value
    return options


def checked_options(options: dict[str, Any]) -> dict[str, Any]:
    """The translated options checked before the prompt runs; a bad one fails the node."""
    from workflows.llm import checked_options as check  # Django-side; nodes import without it

    return check(options)


def _options_json(text: str) -> Any:
    """The options parameter given as JSON text: depth-limited and without NaN, like any
    JSON from outside Hive (a parameter is a string, so the REST parser's limit does not
    reach inside it)."""
    from hive_project.jsonsafe import loads

    return loads(text) if text.strip() else {}


class _SubNode(Node):
    """A model sub-node: attached through ``ai_languageModel``, never run on the main path."""

    def input_count(self, node: NodeSpec) -> int:
        return 0

    def output_count(self, node: NodeSpec) -> int:
        return 0

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        return super().validate(node) + _literal_option_issues(node, node.parameters.get("options", {}))

    def execute(self, ctx: NodeContext) -> Outputs | None:
        raise NodeError(f"'{ctx.node.name}' is a language model sub-node: connect it to a Basic LLM Chain "
                        "through its Model connection instead of running it on its own")


@register
class LmChatOllama(_SubNode):
    type = LM_CHAT_OLLAMA


@register
class LmOllama(_SubNode):
    type = LM_OLLAMA


def _model_of(ctx: NodeContext, index: int) -> tuple[str, dict[str, Any]]:
    """(model name, Ollama options) of the model node wired to this node."""
    models = ctx.connected_nodes(LANGUAGE_MODEL) if hasattr(ctx, "connected_nodes") else []
    if not models:
        raise NodeError(f"No language model is connected to '{ctx.node.name}': connect an Ollama Chat Model "
                        "(or Ollama Model) node to its Model input")
    spec = models[0]
    if spec.type not in (LM_CHAT_OLLAMA, LM_OLLAMA):
        raise NodeError(f"The model node '{spec.name}' ({spec.type}) is not supported: Hive runs prompts on its "
                        "Ollama cluster, so use an Ollama Chat Model or Ollama Model node")
    model = ctx.evaluate(spec.parameters.get("model", DEFAULT_MODEL), index)
    options = ctx.evaluate(spec.parameters.get("options", {}), index)
    if not isinstance(model, str):
        raise NodeError(f"The model of '{spec.name}' must be a model name, not {type(model).__name__}")
    return model.strip(), checked_options(ollama_options(options))


def _literal_option_issues(node: NodeSpec, options: Any) -> list[ValidationIssue]:
    """Options written out (no expression anywhere) are checked when the workflow is stored."""
    if not isinstance(options, dict) or _has_expression(options):
        return []
    try:
        checked_options(ollama_options(options))
    except NodeError as exc:
        return [ValidationIssue(exc.message, node.name, "options")]
    return []


def _has_expression(value: Any) -> bool:
    if isinstance(value, str):
        return value.startswith("=")
    if isinstance(value, dict):
        return any(_has_expression(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_expression(v) for v in value)
    return False


MESSAGE_ROLES = {"SystemMessagePromptTemplate": "system", "AIMessagePromptTemplate": "assistant",
                 "HumanMessagePromptTemplate": "user"}


@register
class ChainLlm(Node):
    """n8n's Basic LLM Chain (v1-1.5): one prompt per item, answered by the connected model."""

    type = CHAIN_LLM
    versions = (1, 1.1, 1.2, 1.3, 1.4, 1.5)
    required_connections: ClassVar[tuple[str, ...]] = (LANGUAGE_MODEL,)

    def validate_workflow(self, node: NodeSpec, workflow: dict[str, Any]) -> list[ValidationIssue]:
        """Workflow-level check (needs the connections): a model must be wired to the chain."""
        for types in (workflow.get("connections") or {}).values():
            if not isinstance(types, dict):
                continue
            for conns in types.get(LANGUAGE_MODEL) or []:
                if any(isinstance(c, dict) and c.get("node") == node.name for c in conns or []):
                    return []
        return [ValidationIssue("no language model is connected (connect an Ollama Chat Model node to its Model "
                                "input)", node.name, LANGUAGE_MODEL)]

    def _prompt(self, ctx: NodeContext, item: Item, index: int) -> str:
        version = float(ctx.node.type_version or 1)
        if version <= 1.3:
            prompt = ctx.param("prompt", index, _ABSENT)
            if prompt is _ABSENT:  # n8n's default: ={{ $json.input }}
                prompt = (item.get("json") or {}).get("input")
            if prompt is None or prompt == "":
                raise NodeError("The 'prompt' parameter is empty.")
        else:
            prompt_type = ctx.param("promptType", index, "auto")
            if prompt_type == "auto":
                prompt = (item.get("json") or {}).get("chatInput")
            else:
                prompt = ctx.param("text", index, None)
            if prompt is None:
                raise NodeError("No prompt specified", description="Expected to find the prompt in an input field "
                                "called 'chatInput' (this is what the chat trigger node outputs). To use something "
                                "else, change the 'Prompt' parameter")
        if not isinstance(prompt, str):
            prompt = json.dumps(prompt) if isinstance(prompt, (dict, list)) else str(prompt)
        return prompt

    def _messages(self, ctx: NodeContext, index: int) -> tuple[str, str]:
        """(system text, conversation preamble) from the chain's ``messages.messageValues``."""
        system: list[str] = []
        preamble: list[str] = []
        for message in ctx.param("messages.messageValues", index, []) or []:
            if not isinstance(message, dict):
                continue
            if message.get("messageType", "text") != "text":
                raise NodeError("Image messages are not supported by Hive tasks (text only)")
            role = MESSAGE_ROLES.get(message.get("type") or "SystemMessagePromptTemplate", "system")
            text = str(message.get("message", ""))
            if role == "system":
                system.append(text)
            else:
                preamble.append(f"{'User' if role == 'user' else 'Assistant'}: {text}")
        return "\n\n".join(s for s in system if s), "\n\n".join(preamble)

    def execute(self, ctx: NodeContext) -> Outputs | None:
        if hasattr(ctx, "connected_nodes") and ctx.connected_nodes("ai_outputParser"):
            raise NodeError("Output parsers are not supported: Hive's LLM chain returns the model's text")
        out: list[Item] = []
        for index, item in enumerate(ctx.input_items(0)):
            ctx.check_cancelled()
            try:
                model, options = _model_of(ctx, index)
                prompt = self._prompt(ctx, item, index)
                system, preamble = self._messages(ctx, index)
                if preamble:
                    prompt = f"{preamble}\n\nUser: {prompt}"
                result = ctx.services.run_llm(prompt=prompt, model=model, system=system, options=options,
                                              title=f"{ctx.node.name}: {prompt.strip()[:80]}")
                out.append({"json": {"text": str(result.get("response", "")).strip()}, "pairedItem": {"item": index}})
            except NodeError as exc:
                if not ctx.node.continue_on_fail:
                    if exc.item_index is None:
                        exc.item_index = index
                    raise
                out.append({"json": {"error": exc.message}, "pairedItem": {"item": index}})
        return [out]


@register
class AgentTask(Node):
    """Hive's Agent Task: run this prompt as a Hive task of this type and priority."""

    type = AGENT_TASK
    versions = (1,)
    required = ("prompt",)

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        priority = node.parameters.get("priority", 3)
        if not (isinstance(priority, str) and priority.startswith("=")):
            if isinstance(priority, bool) or not isinstance(priority, (int, float)) or not 1 <= priority <= 5 \
                    or int(priority) != priority:
                issues.append(ValidationIssue("priority must be a whole number from 1 to 5", node.name, "priority"))
        options = node.parameters.get("options", {})
        if isinstance(options, str) and not options.startswith("="):
            try:
                parsed = _options_json(options)
            except ValueError as exc:
                issues.append(ValidationIssue(f"options is not valid JSON: {exc}", node.name, "options"))
                return issues
            if not isinstance(parsed, dict):
                issues.append(ValidationIssue("options must be a JSON object of Ollama options", node.name, "options"))
                return issues
            options = parsed
        return issues + _literal_option_issues(node, options)

    def execute(self, ctx: NodeContext) -> Outputs | None:
        out: list[Item] = []
        for index, _item in enumerate(ctx.input_items(0)):
            ctx.check_cancelled()
            try:
                prompt = ctx.param("prompt", index)
                if not isinstance(prompt, str) or not prompt.strip():
                    raise NodeError("The 'prompt' parameter is empty.")
                priority = ctx.param("priority", index, 3)
                try:
                    priority = int(priority)
                except (TypeError, ValueError):
                    raise NodeError(f"priority must be a whole number from 1 to 5, not {priority!r}") from None
                if not 1 <= priority <= 5:
                    raise NodeError(f"priority must be from 1 to 5, not {priority}")
                raw_options = ctx.param("options", index, {})
                if isinstance(raw_options, str):
                    try:
                        raw_options = _options_json(raw_options)
                    except ValueError as exc:
                        raise NodeError(f"The parameter 'options' is not valid JSON: {exc}") from None
                options = json_object_param(raw_options, "options",
                                            'an object of Ollama options, e.g. {"temperature": 0.2}')
                result = ctx.services.run_llm(
                    prompt=prompt, model=str(ctx.param("model", index, "") or ""),
                    system=str(ctx.param("system", index, "") or ""),
                    task_type=str(ctx.param("taskType", index, "general") or "general"),
                    priority=priority, options=checked_options(ollama_options(options)),
                    title=str(ctx.param("title", index, "") or f"{ctx.node.name}: {prompt.strip()[:80]}"))
                out.append({"json": dict(result), "pairedItem": {"item": index}})
            except NodeError as exc:
                if not ctx.node.continue_on_fail:
                    if exc.item_index is None:
                        exc.item_index = index
                    raise
                out.append({"json": {"error": exc.message}, "pairedItem": {"item": index}})
        return [out]
