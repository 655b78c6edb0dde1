"""n8n expressions in V8: templates, $-globals, extensions, limits, syntax checks."""
from __future__ import annotations

import re

import pytest

from workflows.engine.contract import EngineSettings, ExpressionError
from workflows.engine.expressions import Evaluator, is_expression, referenced_nodes, syntax_error


def _data(**over):
    data = {
        "itemIndex": 0, "runIndex": 2,
        "json": {"a": 1, "name": "Bob", "obj": {"x": [1, 2]}, "s": "12"},
        "binary": {},
        "input": {"all": [{"json": {"a": 1}}, {"json": {"a": 2}}], "item": {"json": {"a": 1}}},
        "inputs": [[{"json": {"a": 1}}, {"json": {"a": 2}}]],
        "nodes": {
            "Start": {"isExecuted": True, "all": [{"json": {"n": 5}}], "outputs": [[{"json": {"n": 5}}]], "runs": 1,
                      "item": {"json": {"n": 5}}, "pairedError": None, "params": {"p": 1},
                      "context": {"noItemsLeft": True, "currentRunIndex": 3}},
            "Later": {"isExecuted": False, "all": [], "outputs": [], "runs": 0, "item": None,
                      "pairedError": "node 'Later' hasn't been executed", "params": {}, "context": {}},
        },
        "prevNode": {"name": "Start", "outputIndex": 0, "runIndex": 0},
        "workflow": {"id": "7", "name": "wf", "active": False},
        "execution": {"id": "e1", "mode": "manual", "resumeUrl": None},
        "node": {"name": "Set", "type": "n8n-nodes-base.set", "typeVersion": 1, "parameters": {"k": "v"}},
        "timezone": "America/New_York", "vars": {},
    }
    data.update(over)
    return data


@pytest.fixture(scope="module")
def ev():
    evaluator = Evaluator(EngineSettings(js_timeout_ms=400, js_memory_mb=64))
    yield evaluator
    evaluator.close()


def test_is_expression():
    assert is_expression("={{ 1 }}") and is_expression("=x")
    assert not is_expression("x") and not is_expression(5)


@pytest.mark.parametrize("expr, expected", [
    ("=literal", "literal"),
    ("={{ $json.a }}", 1),
    ("={{ $json.obj }}", {"x": [1, 2]}),
    ("={{ $json.a + 1 }}", 2),
    ("={{ $json.missing }}", None),
    ("={{ $json.missing.deeper }}", None),
    ("=Hi {{ $json.name }}!", "Hi Bob!"),
    ("=x {{ $json.obj }}", 'x {"x":[1,2]}'),
    ("=a{{ $json.missing }}b{{ null }}c", "abc"),
    ("=n={{ 0 }} b={{ false }}", "n=0 b=false"),
    ("={{ {a: {b: 1}} }}", {"a": {"b": 1}}),
    ("={{ `t${1 + 1}` }}", "t2"),
])
def test_templates_and_single_values(ev, expr, expected):
    assert ev.evaluate(expr, _data()) == expected


@pytest.mark.parametrize("expr, expected", [
    ("={{ $input.all().length }}", 2),
    ("={{ $input.first().json.a }}", 1),
    ("={{ $input.last().json.a }}", 2),
    ("={{ $input.item.json.a }}", 1),
    ("={{ $input.params.k }}", "v"),
    ("={{ $('Start').item.json.n }}", 5),
    ("={{ $('Start').first().json.n }}", 5),
    ("={{ $('Start').all().length }}", 1),
    ("={{ $('Start').params.p }}", 1),
    ("={{ $('Start').isExecuted }}", True),
    ("={{ $('Later').isExecuted }}", False),
    ("={{ $node['Start'].json.n }}", 5),
    ("={{ $node.Start.json.n }}", 5),
    ("={{ $node['Start'].context['noItemsLeft'] }}", True),
    ("={{ $node['Start'].parameter.p }}", 1),
    ("={{ $items('Start')[0].json.n }}", 5),
    ("={{ $items().length }}", 2),
    ("={{ $item(1).$json.a }}", 2),
    ("={{ $itemIndex }}", 0),
    ("={{ $runIndex }}", 2),
    ("={{ $prevNode.name }}", "Start"),
    ("={{ $workflow.name }}", "wf"),
    ("={{ $execution.id }}", "e1"),
    ("={{ $mode }}", "manual"),
    ("={{ $parameter.k }}", "v"),
])
def test_data_globals(ev, expr, expected):
    assert ev.evaluate(expr, _data()) == expected


def test_luxon_now_and_timezone(ev):
    assert re.fullmatch(r"\d{4}", ev.evaluate("={{ $now.toFormat('yyyy') }}", _data()))
    today = ev.evaluate("={{ $today }}", _data())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT00:00:00\.000-0[45]:00", today)
    assert ev.evaluate("={{ DateTime.fromISO('2023-01-01').minus({days: 1}).toISODate() }}", _data()) == "2022-12-31"
    assert ev.evaluate("={{ DateTime.fromISO('2023-07-01T12:00').toISO() }}", _data()) == "2023-07-01T12:00:00.000-04:00"
    assert ev.evaluate("={{ $now.zoneName }}", _data(timezone="Europe/Berlin")) == "Europe/Berlin"


@pytest.mark.parametrize("expr, expected", [
    ("={{ $json.s.toInt() + 1 }}", 13),
    ("={{ '3.5'.toFloat() }}", 3.5),
    ("={{ ''.isEmpty() }}", True),
    ("={{ 'hello world'.toTitleCase() }}", "Hello World"),
    ("={{ 'Hello World'.toSnakeCase() }}", "hello_world"),
    ("={{ 'a@b.co'.isEmail() }}", True),
    ("={{ 'aGk='.base64Decode() }}", "hi"),
    ("={{ 'hi'.base64Encode() }}", "aGk="),
    ("={{ '2023-05-01'.toDateTime().year }}", 2023),
    ("={{ [1, 2, 3].sum() }}", 6),
    ("={{ [3, 1].first() }}", 3),
    ("={{ [3, 1].last() }}", 1),
    ("={{ [1, 1, 2].unique() }}", [1, 2]),
    ("={{ [1, null, '', 2].compact() }}", [1, 2]),
    ("={{ [1, 2, 3, 4].chunk(2) }}", [[1, 2], [3, 4]]),
    ("={{ [{a: 1}, {a: 2}].pluck('a') }}", [1, 2]),
    ("={{ [2, 4].average() }}", 3),
    ("={{ $json.obj.keys() }}", ["x"]),
    ("={{ $json.obj.isEmpty() }}", False),
    ("={{ {a: 1, b: null}.compact() }}", {"a": 1}),
    ("={{ {}.isEmpty() }}", True),
    ("={{ (1.256).round(2) }}", 1.26),
    ("={{ (4).isEven() }}", True),
    ("={{ true.toInt() }}", 1),
    ("={{ DateTime.fromISO('2024-03-15').beginningOf('month').day }}", 1),
    ("={{ DateTime.fromISO('2024-03-15').plus(2, 'days').day }}", 17),
    ("={{ DateTime.fromISO('2024-03-16').isWeekend() }}", True),
])
def test_extension_functions(ev, expr, expected):
    assert ev.evaluate(expr, _data()) == expected


def test_items_are_copies(ev):
    data = _data()
    ev.evaluate("={{ (() => { $json.a = 99; $input.all()[0].json.a = 99; return 1 })() }}", data)
    assert data["json"]["a"] == 1 and data["input"]["all"][0]["json"]["a"] == 1
    assert ev.evaluate("={{ $json.a }}", _data()) == 1


def test_errors(ev):
    with pytest.raises(ExpressionError, match="access to env vars denied"):
        ev.evaluate("={{ $env.HOME }}", _data())
    with pytest.raises(ExpressionError, match="Referenced node doesn't exist"):
        ev.evaluate("={{ $('Nope').item.json }}", _data())
    with pytest.raises(ExpressionError, match="hasn't been executed"):
        ev.evaluate("={{ $('Later').first() }}", _data())
    with pytest.raises(ExpressionError, match="invalid syntax"):
        ev.evaluate("={{ $json.a + }}", _data())
    with pytest.raises(ExpressionError, match="please add \\(\\)"):
        ev.evaluate("={{ $json.name.toUpperCase }}", _data())
    with pytest.raises(ExpressionError, match="Run 3 of node \"Start\" not found"):
        ev.evaluate("={{ $items('Start', 0, 3) }}", _data())


def test_runaway_code_is_stopped_and_evaluator_survives(ev):
    with pytest.raises(ExpressionError, match="expression timed out after 400 ms"):
        ev.evaluate("={{ (() => { while (true) {} })() }}", _data())
    assert ev.evaluate("={{ $json.a + 1 }}", _data()) == 2
    with pytest.raises(ExpressionError, match="exceeded the memory limit"):
        ev.evaluate("={{ (() => { const a = []; while (true) a.push(new Array(1e6).fill(1)) })() }}", _data())
    assert ev.evaluate("={{ $json.name.toUpperCase() }}", _data()) == "BOB"


def test_no_host_access(ev):
    assert ev.evaluate("={{ typeof require }}", _data()) == "undefined"
    assert ev.evaluate("={{ typeof process }}", _data()) == "undefined"
    assert ev.evaluate("={{ typeof fetch }}", _data()) == "undefined"


def test_referenced_nodes():
    src = "$('A').item $node[\"B c\"].json $node.C $items('D', 0) _('E') $(\"F\\\"x\") $json.x"
    assert referenced_nodes(src) == {"A", "B c", "C", "D", "E", 'F"x'}
    assert referenced_nodes("no refs") == set()


def test_syntax_error():
    assert syntax_error("={{ $json.a }}") is None
    assert syntax_error("=text {{ $json.a; }}") is None
    assert syntax_error("=no expression") is None
    assert syntax_error("plain") is None
    assert "invalid syntax" in syntax_error("={{ $json.a + }}")
    assert "empty expression" in syntax_error("={{ }}")


def test_fast_path_is_fast(ev):
    import time

    data = _data()
    started = time.perf_counter()
    for _ in range(2000):
        ev.evaluate("={{ $json.obj.x[1] }}", data)
    assert (time.perf_counter() - started) / 2000 < 0.0002
