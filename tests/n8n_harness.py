"""Run n8n's own test workflows (``tests/fixtures/n8n``, copied from n8n-io/n8n; SOURCES.md there) and compare like n8n does.

n8n's harness (packages/core/nodes-testing/node-test-harness.ts) removes ``pinData``
from the workflow, runs it from the start node with ``[{json: {}}]`` and, for each
pinned node, compares the first output (``main[0]``) of every run with
``[pinData[node]]``: ``pairedItem`` ignored, empty ``binary`` dropped, error objects
reduced, key order irrelevant.

HTTP: the two HttpRequest fixtures call https://dummyjson.com; :class:`ReplayServer`
answers those calls on 127.0.0.1 from the responses the pinData shows and the
workflow's URLs are rewritten to it (127.0.0.1 is allow-listed via
``EngineSettings.http_allow``).

Time: like n8n's tests (jest fake timers) the harness runs on a fake clock. Its
``services.sleep`` returns at once and moves the JavaScript clock forward by the
time slept: during a fixture run the expressions ``Evaluator`` is replaced by a
subclass that points Luxon's ``Settings.now`` (what ``$now`` / ``$today`` /
``DateTime.now()`` read) at ``Date.now() + offset``. So the Wait fixture sees its
42 s pass without waiting. DateTime fixtures use fixed input dates and need nothing.
"""
from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from workflows.engine.contract import EngineServices, EngineSettings, ExecutionResult, load_nodes

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "n8n"
DUMMYJSON = "https://dummyjson.com"


def fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.rglob("*.json"))


def fixture_id(path: Path) -> str:
    return str(path.relative_to(FIXTURES))


@dataclass
class HarnessResult:
    fixture: str
    passed: bool
    unsupported: list[str] = field(default_factory=list)
    diffs: dict[str, str] = field(default_factory=dict)
    status: str = ""
    error: str | None = None
    result: ExecutionResult | None = None

    def explain(self) -> str:
        lines = [f"{self.fixture}: status={self.status} error={self.error}"]
        for node, diff in self.diffs.items():
            lines.append(f"--- node '{node}':\n{diff}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- loading


def load_fixture(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    test_dir = str(path.parent)

    def replace(value: Any) -> Any:
        if isinstance(value, str):
            return re.sub(r"C:\\\\?Test\\\\?", test_dir + "/", value) if value.startswith("C:\\Test\\") else value
        if isinstance(value, dict):
            return {k: replace(v) for k, v in value.items()}
        if isinstance(value, list):
            return [replace(v) for v in value]
        return value

    for node in data.get("nodes", []):
        node["parameters"] = replace(node.get("parameters") or {})
    return data


def node_types(workflow: dict[str, Any]) -> set[str]:
    """Every node type the workflow needs, including inline sub-workflows (Execute Workflow source=parameter)."""
    types: set[str] = set()
    for node in workflow.get("nodes", []):
        types.add(node.get("type", ""))
        if node.get("type") == "n8n-nodes-base.executeWorkflow":
            inline = (node.get("parameters") or {}).get("workflowJson")
            if isinstance(inline, str) and not inline.startswith("="):
                try:
                    inline = json.loads(inline)
                except json.JSONDecodeError:
                    inline = None
            if isinstance(inline, dict):
                types |= node_types(inline)
    return types


def unsupported_types(workflow: dict[str, Any]) -> list[str]:
    registry = load_nodes()
    return sorted(t for t in node_types(workflow) if t not in registry)


# --------------------------------------------------------------------------- comparison


def _clean_item(item: Any) -> Any:
    if not isinstance(item, dict):
        return item
    item = dict(item)
    item.pop("pairedItem", None)
    item.pop("index", None)
    if "binary" in item:
        item.pop("binary")          # n8n drops binary unless assertBinaryData
    item.pop("error", None)
    if "json" in item:
        item["json"] = _drop_undefined(item["json"])
    return item


def _drop_undefined(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k == "error" and isinstance(v, dict):
                v = {key: v.get(key) for key in ("message", "name", "description", "context") if key in v}
            out[k] = _drop_undefined(v)
        return out
    if isinstance(value, list):
        return [_drop_undefined(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)           # JavaScript has one number type: 5 and 5.0 are equal
    return value


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, indent=1, ensure_ascii=False, default=str)


def compare(result: ExecutionResult, pin_data: dict[str, list[Any]]) -> dict[str, str]:
    """Per pinned node: '' when equal, else a readable diff."""
    import difflib

    diffs: dict[str, str] = {}
    for node, expected_items in pin_data.items():
        runs = result.run_data.get(node)
        if not runs:
            diffs[node] = "node did not run"
            continue
        actual = []
        for run in runs:
            first = run.outputs[0] if run.outputs else None
            actual.append([_clean_item(i) for i in first] if first is not None else None)
        expected = [[_clean_item(i) for i in expected_items]]
        a, e = _canonical(actual), _canonical(expected)
        if a != e:
            diff = "\n".join(difflib.unified_diff(e.splitlines(), a.splitlines(), "expected", "actual", lineterm="", n=2))
            diffs[node] = diff[:6000]
    return diffs


# --------------------------------------------------------------------------- HTTP replay


class ReplayServer:
    """Loopback stand-in for dummyjson.com, answering what n8n's nock mocks answer."""

    def __init__(self, responses: dict[str, Any]) -> None:
        self.responses = responses
        self.requests: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                outer.requests.append({"path": parts.path, "query": query, "headers": dict(self.headers)})
                body = outer.lookup(parts.path, query, dict(self.headers))
                if body is None:
                    self.send_response(404)
                    payload = b'{"message":"not mocked"}'
                else:
                    self.send_response(200)
                    payload = json.dumps(body).encode()
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def lookup(self, path: str, query: dict[str, str], headers: dict[str, str]) -> Any:
        key = path + ("?" + "&".join(f"{k}={query[k]}" for k in sorted(query)) if query else "")
        return self.responses.get(key)

    def __enter__(self) -> ReplayServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def dummyjson_responses() -> dict[str, Any]:
    todo = {"id": 1, "todo": "Do something nice for someone I care about", "completed": True, "userId": 26}
    todo3 = {"id": 3, "todo": "Watch a classic movie", "completed": False, "userId": 4}
    listing = {
        "todos": [
            {"id": 11, "todo": "Text a friend I haven't talked to in a long time", "completed": False, "userId": 39},
            {"id": 12, "todo": "Organize pantry", "completed": True, "userId": 39},
        ],
        "total": 150, "skip": 10, "limit": 2,
    }
    return {"/todos/1": todo, "/todos/3": todo3, "/todos?limit=2&skip=10": listing}


def _responses_from_pins(workflow: dict[str, Any]) -> dict[str, Any]:
    """Prefer the exact bodies the fixture pinned (so the replay can't drift from the expectation)."""
    responses = dummyjson_responses()
    pins = workflow.get("pinData") or {}
    for node in workflow.get("nodes", []):
        if node.get("type") != "n8n-nodes-base.httpRequest" or node["name"] not in pins:
            continue
        params = node.get("parameters") or {}
        url = str(params.get("url", ""))
        if not url.startswith(DUMMYJSON):
            continue
        path = url[len(DUMMYJSON):]
        query = {}
        for entry in (params.get("queryParametersUi") or params.get("queryParameters") or {}).get("parameter", []) or []:
            query[str(entry.get("name"))] = str(entry.get("value"))
        key = path + ("?" + "&".join(f"{k}={query[k]}" for k in sorted(query)) if query else "")
        items = pins[node["name"]]
        if len(items) == 1 and isinstance(items[0], dict) and "json" in items[0]:
            responses.setdefault(key, items[0]["json"])
    return responses


def _rewrite_urls(value: Any, base: str) -> Any:
    if isinstance(value, str):
        return value.replace(DUMMYJSON, base)
    if isinstance(value, dict):
        return {k: _rewrite_urls(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_urls(v, base) for v in value]
    return value


# --------------------------------------------------------------------------- running


class FakeClock:
    """The offset (ms) added to the JavaScript clock of every evaluator created during a run."""

    def __init__(self) -> None:
        self.offset_ms = 0.0
        self.evaluators: list[Any] = []

    def advance(self, seconds: float) -> None:
        self.offset_ms += seconds * 1000
        for evaluator in self.evaluators:
            evaluator.apply_clock()

    @contextmanager
    def installed(self) -> Iterator[None]:
        """Swap in an Evaluator whose Luxon clock follows this fake clock."""
        from workflows.engine import expressions

        original = expressions.Evaluator
        clock = self

        class FakeClockEvaluator(original):  # type: ignore[misc, valid-type]
            def __init__(self, settings: EngineSettings) -> None:
                super().__init__(settings)
                self._clock_isolate: Any = None
                clock.evaluators.append(self)

            def _isolate(self) -> Any:
                mr = super()._isolate()
                if mr is not self._clock_isolate:
                    self._clock_isolate = mr
                    mr.eval("luxon.Settings.now = () => Date.now() + (globalThis.__hiveClockOffsetMs || 0);")
                    mr.eval(f"globalThis.__hiveClockOffsetMs = {clock.offset_ms};")
                return mr

            def apply_clock(self) -> None:
                if self._mr is not None:
                    self._isolate().eval(f"globalThis.__hiveClockOffsetMs = {clock.offset_ms};")

        expressions.Evaluator = FakeClockEvaluator
        try:
            yield
        finally:
            expressions.Evaluator = original


class HarnessServices(EngineServices):
    """Sleeps return at once and move the fake clock (n8n's tests use fake timers)."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock or FakeClock()
        self.slept = 0.0

    def sleep(self, seconds: float) -> None:
        self.slept += seconds
        self.clock.advance(seconds)


def run_fixture(path: Path, *, settings: EngineSettings | None = None) -> HarnessResult:
    from workflows.engine.runtime import run_workflow

    workflow = load_fixture(path)
    name = fixture_id(path)
    missing = unsupported_types(workflow)
    if missing:
        return HarnessResult(name, False, unsupported=missing, status="unsupported")
    pin_data = workflow.pop("pinData", None)
    if not pin_data:
        return HarnessResult(name, False, status="error", error="fixture has no pinData")
    trigger = workflow.pop("trigger", None) or {}
    mode = trigger.get("mode", "manual")
    input_items = [trigger["input"]] if trigger.get("input") else None
    settings = settings or EngineSettings()
    clock = FakeClock()
    services = HarnessServices(clock)

    uses_http = any(DUMMYJSON in json.dumps(n.get("parameters", {})) for n in workflow.get("nodes", []))
    if uses_http:
        full = load_fixture(path)
        with ReplayServer(_responses_from_pins(full)) as server, clock.installed():
            workflow["nodes"] = _rewrite_urls(workflow["nodes"], server.base_url)
            settings = EngineSettings(**{**settings.__dict__, "http_allow": (*settings.http_allow, "127.0.0.1")})
            result = run_workflow(workflow, input_items=input_items, settings=settings, services=services, mode=mode)
    else:
        with clock.installed():
            result = run_workflow(workflow, input_items=input_items, settings=settings, services=services, mode=mode)
    diffs = compare(result, pin_data)
    passed = not diffs and result.status == "success"
    return HarnessResult(name, passed, diffs=diffs, status=result.status, error=result.error, result=result)


__all__ = ["FIXTURES", "HarnessResult", "ReplayServer", "compare", "fixture_files", "fixture_id", "load_fixture",
           "run_fixture", "unsupported_types"]


def _main() -> None:  # pragma: no cover - manual use: python -m tests.n8n_harness [filter]
    import sys

    import django

    django.setup()
    pattern = sys.argv[1] if len(sys.argv) > 1 else ""
    for path in fixture_files():
        if pattern not in str(path) or path.name == "SOURCES.md":
            continue
        res = run_fixture(path)
        if res.unsupported:
            print(f"SKIP {res.fixture}: {', '.join(res.unsupported)}")
        elif res.passed:
            print(f"PASS {res.fixture}")
        else:
            print(f"FAIL {res.explain() if len(sys.argv) > 2 else res.fixture + ' ' + str(res.error) + ' ' + ','.join(res.diffs)}")


if __name__ == "__main__":  # pragma: no cover
    _main()


