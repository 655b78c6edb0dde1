"""Code (JS/Python), Function and Function Item nodes, and the Python sandbox."""
from __future__ import annotations

import pytest

from workflows.engine.contract import EngineSettings, NodeError, NodeSpec, get_node
from workflows.engine.python_sandbox import DISABLED_MESSAGE, run_python
from workflows.engine.runtime import run_workflow

SETTINGS = EngineSettings(js_timeout_ms=1000, python_timeout_s=5, python_memory_mb=128)
DATA = [{"value": 1, "country": "US"}, {"value": 2, "country": "CO"}]


def _wf(node: dict, data=DATA) -> dict:
    node = {"name": "Code", "typeVersion": 2, "position": [400, 0], **node}
    return {
        "nodes": [
            {"name": "Trigger", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0], "parameters": {}},
            {"name": "Data", "type": "n8n-nodes-testing.testData", "typeVersion": 1, "position": [200, 0], "parameters": {"data": data}},
            node,
        ],
        "connections": {"Trigger": {"main": [[{"node": "Data", "type": "main", "index": 0}]]},
                        "Data": {"main": [[{"node": "Code", "type": "main", "index": 0}]]}},
    }


def _out(result, name="Code", output=0):
    runs = result.run_data[name]
    return [{k: v for k, v in item.items() if k != "pairedItem"} for item in (runs[-1].outputs or [[]])[output]]


def _code(params: dict, **node) -> dict:
    return {"type": "n8n-nodes-base.code", "parameters": params, **node}


def test_all_items_mode_and_normalisation():
    code = "let s = 0; for (const i of $input.all()) s += i.json.value; return [{s}];"
    res = run_workflow(_wf(_code({"jsCode": code})), settings=SETTINGS)
    assert res.status == "success" and _out(res) == [{"json": {"s": 3}}]
    res = run_workflow(_wf(_code({"jsCode": "return {one: 1}"})), settings=SETTINGS)
    assert _out(res) == [{"json": {"one": 1}}]
    res = run_workflow(_wf(_code({"jsCode": "return [{json: {a: 1}}, {json: {a: 2}}]"})), settings=SETTINGS)
    assert _out(res) == [{"json": {"a": 1}}, {"json": {"a": 2}}]
    res = run_workflow(_wf(_code({"jsCode": "let t = 0; for (const i of items) t += i.json.value; return [{t}]"})), settings=SETTINGS)
    assert _out(res) == [{"json": {"t": 3}}]


def test_async_code():
    code = "const v = await new Promise(r => setTimeout(() => r(7), 20)); return [{v}]"
    assert _out(run_workflow(_wf(_code({"jsCode": code})), settings=SETTINGS)) == [{"json": {"v": 7}}]


@pytest.mark.parametrize("code, message", [
    ("return 5", "Code doesn't return items properly"),
    ("return [1, 2]", "Code doesn't return items properly"),
    ("return [{json: 1}]", "A 'json' property isn't an object"),
    ("return [{json: {}, foo: 1}]", "Invalid output format"),
    ("return [{json: {}}, {a: 1}]", "Unknown top-level item key: a"),
])
def test_invalid_returns(code, message):
    res = run_workflow(_wf(_code({"jsCode": code})), settings=SETTINGS)
    assert res.status == "error" and message in res.error


def test_each_item_mode():
    code = "$input.item.json.double = $input.item.json.value * 2;\nreturn $input.item;"
    res = run_workflow(_wf(_code({"mode": "runOnceForEachItem", "jsCode": code})), settings=SETTINGS)
    assert [i["json"]["double"] for i in _out(res)] == [2, 4]
    legacy = "item.json.x = item.json.value;\nreturn item;"
    res = run_workflow(_wf(_code({"mode": "runOnceForEachItem", "jsCode": legacy})), settings=SETTINGS)
    assert [i["json"]["x"] for i in _out(res)] == [1, 2]


EACH_ERROR = ("// first line\n$input.item.json.seen = 1;\n\nif ($input.item.json.country === 'US') {\n"
              "  throw new Error('This is an error');\n}\nreturn $input.item;")


def test_each_item_error_names_line_and_item():
    res = run_workflow(_wf(_code({"mode": "runOnceForEachItem", "jsCode": EACH_ERROR})), settings=SETTINGS)
    assert res.status == "error"
    assert "This is an error [line 5, for item 0]" in res.error


def test_each_item_error_continue_regular_output():
    res = run_workflow(_wf(_code({"mode": "runOnceForEachItem", "jsCode": EACH_ERROR}, onError="continueRegularOutput")),
                       settings=SETTINGS)
    out = _out(res)
    assert out[0]["json"] == {"error": "This is an error [line 5, for item 0]"}
    assert out[1]["json"]["seen"] == 1 and out[1]["json"]["country"] == "CO"


def test_all_items_error_line():
    res = run_workflow(_wf(_code({"jsCode": "const a = 1;\nnull.x;\nreturn []"})), settings=SETTINGS)
    assert res.status == "error" and "[line 2]" in res.error


def test_code_timeout_and_recovery():
    res = run_workflow(_wf(_code({"jsCode": "while (true) {}"})), settings=SETTINGS)
    assert res.status == "error" and "timed out after 1000 ms" in res.error


def test_function_and_function_item_legacy():
    fn = {"name": "Code", "type": "n8n-nodes-base.function", "typeVersion": 1,
          "parameters": {"functionCode": "return items.map(i => ({json: {v: i.json.value + 10}}));"}}
    assert [i["json"] for i in _out(run_workflow(_wf(fn), settings=SETTINGS))] == [{"v": 11}, {"v": 12}]
    fn["parameters"]["functionCode"] = "return {success: true};"
    assert _out(run_workflow(_wf(fn), settings=SETTINGS)) == [{"json": {"success": True}}]
    fi = {"name": "Code", "type": "n8n-nodes-base.functionItem", "typeVersion": 1,
          "parameters": {"functionCode": "item.more = item.value + 1;\nreturn item;"}}
    assert [i["json"]["more"] for i in _out(run_workflow(_wf(fi), settings=SETTINGS))] == [2, 3]


def test_validation_reports_syntax_errors():
    handler = get_node("n8n-nodes-base.code")
    bad = NodeSpec.from_json({"name": "C", "type": "n8n-nodes-base.code", "parameters": {"jsCode": "return {a:"}})
    assert any("syntax" in i.message for i in handler.validate(bad))
    bad_py = NodeSpec.from_json({"name": "C", "type": "n8n-nodes-base.code", "parameters": {"language": "python", "pythonCode": "def ("}})
    assert any("Python syntax error" in i.message for i in handler.validate(bad_py))
    ok = NodeSpec.from_json({"name": "C", "type": "n8n-nodes-base.code", "parameters": {"jsCode": "return [{a: 1}]"}})
    assert handler.validate(ok) == []


# ----------------------------------------------------------------------------- Python


def test_python_code_node():
    code = "out = []\nfor item in _input.all():\n    out.append({'v': item.json.value * 3})\nreturn out"
    res = run_workflow(_wf(_code({"language": "python", "pythonCode": code})), settings=SETTINGS)
    assert [i["json"] for i in _out(res)] == [{"v": 3}, {"v": 6}]
    code = "return {'x': _json['value'], 'idx': _itemIndex}"
    res = run_workflow(_wf(_code({"language": "python", "mode": "runOnceForEachItem", "pythonCode": code})), settings=SETTINGS)
    assert [i["json"] for i in _out(res)] == [{"x": 1, "idx": 0}, {"x": 2, "idx": 1}]


def test_python_disabled():
    settings = EngineSettings(python_code_enabled=False)
    res = run_workflow(_wf(_code({"language": "python", "pythonCode": "return []"})), settings=settings)
    assert res.status == "error" and DISABLED_MESSAGE in res.error


PY_DATA = {"itemIndex": 0, "runIndex": 0, "json": {"a": 1}, "input": {"all": [{"json": {"a": 1}}], "item": {"json": {"a": 1}}},
           "nodes": {}, "execution": {"mode": "manual"}, "timezone": "UTC"}


def _py(code, mode="runOnceForAllItems", settings=SETTINGS):
    return run_python(code, PY_DATA, mode=mode, settings=settings)


def test_python_sandbox_basics():
    assert _py("import json, math\nreturn [{'r': math.floor(2.5), 'j': json.dumps([1])}]") == [{"r": 2, "j": "[1]"}]
    assert _py("return {'today': _today}")["today"].endswith("T00:00:00.000Z")
    with pytest.raises(NodeError, match=r"bad \[line 2, for item 0\]"):
        _py("x = 1\nraise ValueError('bad')", mode="runOnceForEachItem")


@pytest.mark.parametrize("code, message", [
    ("open('/etc/passwd').read()", "Permission denied.*cannot use files"),
    ("open('out.txt', 'w').write('x')", "Permission denied.*cannot use files"),
    ("import socket\nsocket.socket()", "Operation not permitted.*the network"),
    ("import subprocess\nsubprocess.run(['id'])", "Operation not permitted"),
    ("return _env.HOME", "access to env vars denied"),
])
def test_python_sandbox_refuses_host_access(code, message):
    with pytest.raises(NodeError, match=message):
        _py(code)


def test_python_sandbox_environment_is_empty():
    env = _py("import os\nreturn dict(os.environ)")
    assert not any(k in env for k in ("PATH", "HOME", "DJANGO_SETTINGS_MODULE", "SECRET_KEY"))


def test_python_sandbox_limits():
    fast = EngineSettings(python_timeout_s=1.5, python_memory_mb=128)
    with pytest.raises(NodeError, match="timed out"):
        _py("while True:\n    pass", settings=fast)
    with pytest.raises(NodeError, match="memory limit"):
        _py("a = 'x' * (1024 ** 3)", settings=fast)
