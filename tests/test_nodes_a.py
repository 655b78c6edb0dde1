"""Set, If, Switch, Filter, Date & Time, Crypto and Rename Keys handlers.

Unit tests drive the handlers through a small fake NodeContext (parameters are literal
values, no expressions). The fixture tests run n8n's own test workflows through the
real runtime; fixtures whose Code nodes only return constants get those constants
precomputed in V8 and swapped for test-data nodes, so they do not depend on the Code node.
"""
from __future__ import annotations

import base64
import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from workflows.engine.contract import MISSING, EngineSettings, NodeContext, NodeError, NodeSpec, get_node, lookup
from workflows.nodes import conditions as cond
from workflows.nodes import datetime_node as dt


class FakeContext(NodeContext):
    """Parameters are taken literally; items are deep-copied like the runtime does."""

    def __init__(self, type_: str, version: float, parameters: dict[str, Any], items: list[dict[str, Any]] | None = None,
                 *, timezone: str | None = None, mode: str = "manual") -> None:
        self.node = NodeSpec(name="Node", type=type_, type_version=version, parameters=parameters)
        self.items = items if items is not None else [{"json": {}}]
        self.settings = EngineSettings()
        self.workflow = {"settings": {"timezone": timezone}} if timezone else {}
        self.mode = mode
        self.run_index = 0

    def input_items(self, index: int = 0) -> list[dict[str, Any]]:
        return copy.deepcopy(self.items)

    def input_count(self) -> int:
        return 1

    def has_input(self, index: int) -> bool:
        return True

    def param(self, path: str, item_index: int = 0, default: Any = MISSING) -> Any:
        value = lookup(self.node.parameters, path)
        if value is MISSING:
            if default is MISSING:
                raise NodeError(f"missing parameter {path}")
            return default
        return copy.deepcopy(value)

    def raw_param(self, path: str, default: Any = MISSING) -> Any:
        return self.param(path, 0, default)

    def evaluate(self, value: Any, item_index: int = 0) -> Any:
        return copy.deepcopy(value)


def run(type_: str, version: float, parameters: dict[str, Any], items: list[dict[str, Any]] | None = None,
        **kwargs: Any) -> list[list[dict[str, Any]]]:
    ctx = FakeContext(type_, version, parameters, items, **kwargs)
    return get_node(type_).execute(ctx)  # type: ignore[union-attr]


def jsons(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item["json"] for item in output]


def issues(type_: str, version: float, parameters: dict[str, Any]) -> list[str]:
    node = NodeSpec(name="N", type=type_, type_version=version, parameters=parameters)
    return [str(i) for i in get_node(type_).validate(node)]  # type: ignore[union-attr]


# --------------------------------------------------------------------------- JS helpers


def test_js_number_and_string_follow_javascript() -> None:
    assert cond.js_number(" ") == 0
    assert cond.js_number("3.14") == 3.14
    assert cond.is_nan(cond.js_number("3,14"))
    assert cond.js_number("0x10") == 16
    assert cond.js_number([5]) == 5
    assert cond.is_nan(cond.js_number([1, 2]))
    assert cond.js_string(1.334535) == "1.334535"
    assert cond.js_string(3.0) == "3"
    assert cond.js_string([1, None, "a"]) == "1,,a"
    assert cond.js_string(1e21) == "1e+21"


def test_lodash_paths() -> None:
    data: dict[str, Any] = {"list": ["foo"]}
    cond.path_set(data, "list[2]", True)
    cond.path_set(data, "a.b[0].c", 1)
    assert data == {"list": ["foo", None, True], "a": {"b": [{"c": 1}]}}
    assert cond.path_get(data, "a.b[0].c") == 1
    assert cond.path_unset(data, "a.b")
    assert data["a"] == {}


# --------------------------------------------------------------------------- Set


SET = "n8n-nodes-base.set"


def test_set_v1_defaults_dot_notation_and_arrays() -> None:
    items = [{"json": {"nested": {"foo": "bar"}, "list": ["foo"]}}]
    out = run(SET, 1, {"values": {"number": [{}], "string": [{"name": "nested.s", "value": "x"}],
                                  "boolean": [{"name": "list[2]", "value": "false"}]}}, items)[0]
    assert jsons(out) == [{"nested": {"foo": "bar", "s": "x"}, "list": ["foo", None, True], "propertyName": 0}]
    out = run(SET, 1, {"keepOnlySet": True, "values": {"string": [{"name": "a.b", "value": "x"}]},
                       "options": {"dotNotation": False}}, items)[0]
    assert jsons(out) == [{"a.b": "x"}]


def test_set_v2_converts_numeric_strings() -> None:
    out = run(SET, 2, {"keepOnlySet": True, "values": {"number": [{"name": "n", "value": "123456"}]}})[0]
    assert jsons(out) == [{"n": 123456}]
    out = run(SET, 1, {"keepOnlySet": True, "values": {"number": [{"name": "n", "value": "123456"}]}})[0]
    assert jsons(out) == [{"n": "123456"}]


def test_set_v3_type_conversion_and_include_modes() -> None:
    items = [{"json": {"name": "John", "age": 32, "object": {"nested": True}}, "binary": {"f": {"data": "eA=="}}}]
    params = {"fields": {"values": [
        {"name": "s", "stringValue": [1, 2]},
        {"name": "n", "type": "numberValue", "numberValue": "3.14"},
        {"name": "b", "type": "booleanValue", "booleanValue": "0"},
        {"name": "a", "type": "arrayValue", "arrayValue": "['x', 'y']"},
        {"name": "o", "type": "objectValue", "objectValue": '{"a": 1}'},
    ]}, "include": "none", "options": {}}
    out = run(SET, 3, params, items)[0]
    assert jsons(out) == [{"s": "[1,2]", "n": 3.14, "b": False, "a": ["x", "y"], "o": {"a": 1}}]
    assert "binary" not in out[0]
    selected = run(SET, 3.2, {"fields": {"values": [{"name": "t", "stringValue": "foo"}]}, "include": "selected",
                              "includeFields": "name, object.nested, missing"}, items)[0]
    assert jsons(selected) == [{"name": "John", "nested": True, "t": "foo"}]
    excepted = run(SET, 3.3, {"assignments": {"assignments": [{"name": "t", "type": "string", "value": "foo"}]},
                              "includeOtherFields": True, "include": "except", "excludeFields": "age"}, items)[0]
    assert jsons(excepted) == [{"name": "John", "object": {"nested": True}, "t": "foo"}]
    keep_binary = run(SET, 3.4, {"assignments": {"assignments": []}, "includeOtherFields": True}, items)[0]
    assert keep_binary[0]["binary"] == {"f": {"data": "eA=="}}


def test_set_v3_conversion_errors() -> None:
    params = {"assignments": {"assignments": [{"name": "n", "type": "number", "value": "hello"}]}}
    with pytest.raises(NodeError) as err:
        run(SET, 3.3, params)
    assert err.value.message == "'n' expects a number but we got 'hello' [item 0]"
    assert err.value.item_index == 0
    ignored = run(SET, 3.3, {**params, "options": {"ignoreConversionErrors": True}})[0]
    assert jsons(ignored) == [{"n": "hello"}]
    with pytest.raises(NodeError, match="'flag' expects a boolean but we got '3'"):
        run(SET, 3.3, {"assignments": {"assignments": [{"name": "flag", "type": "boolean", "value": "3"}]}})
    with pytest.raises(NodeError, match="'s' expects a string but we got 'null'"):
        run(SET, 3.1, {"fields": {"values": [{"name": "s", "stringValue": None}]}})
    assert jsons(run(SET, 3.2, {"fields": {"values": [{"name": "s", "stringValue": None}]}, "include": "none"})[0]) == [
        {"s": None}]


def test_set_raw_mode_and_errors() -> None:
    out = run(SET, 3.4, {"mode": "raw", "jsonOutput": '{"a": 1, "b": {"c": true}}'})[0]
    assert jsons(out) == [{"a": 1, "b": {"c": True}}]
    loose = run(SET, 3.4, {"mode": "raw", "jsonOutput": "{a: 'x',}"})[0]
    assert jsons(loose) == [{"a": "x"}]
    with pytest.raises(NodeError, match="The 'JSON Output' in item 0 contains invalid JSON"):
        run(SET, 3.4, {"mode": "raw", "jsonOutput": "{nope"})
    with pytest.raises(NodeError, match="does not contain a valid JSON object"):
        run(SET, 3.4, {"mode": "raw", "jsonOutput": "[1, 2]"})


def test_set_duplicate_and_validation() -> None:
    out = run(SET, 3.4, {"assignments": {"assignments": [{"name": "x", "type": "number", "value": 1}]},
                         "duplicateItem": True, "duplicateCount": 2})[0]
    assert jsons(out) == [{"x": 1}] * 3
    assert issues(SET, 3.4, {"mode": "bogus"}) == ["node 'N' parameter 'mode': unknown mode 'bogus' (expected 'manual' or 'raw')"]
    assert issues(SET, 3.4, {"assignments": {"assignments": [{"name": "x", "type": "date"}]}})
    assert issues(SET, 1, {"values": {"date": []}})


# --------------------------------------------------------------------------- If


IF = "n8n-nodes-base.if"


def _filter(conditions: list[dict[str, Any]], *, combinator: str = "and", type_validation: str = "strict",
            case_sensitive: bool = True, version: int = 2) -> dict[str, Any]:
    return {"options": {"caseSensitive": case_sensitive, "typeValidation": type_validation, "version": version},
            "conditions": conditions, "combinator": combinator}


def test_if_v1_conditions() -> None:
    items = [{"json": {"value": 1}}, {"json": {"value": 2}}]
    true, false = run(IF, 1, {"conditions": {"number": [{"value1": 1, "operation": "smaller", "value2": 2}]}}, items)
    assert len(true) == 2 and false == []
    true, false = run(IF, 1, {"conditions": {"string": [{"value1": "alpha-1", "operation": "regex", "value2": "/^ALPHA/i"}],
                                             "boolean": [{"value1": True, "value2": False}]}, "combineOperation": "any"})
    assert len(true) == 1
    true, false = run(IF, 1, {"conditions": {"dateTime": [{"value1": "2023-01-02T00:00:00.000-05:00",
                                                           "value2": "2023-01-01T00:00:00.000-05:00"}]}})
    assert len(true) == 1
    with pytest.raises(NodeError, match='The value "nope" is not a valid DateTime.'):
        run(IF, 1, {"conditions": {"dateTime": [{"value1": "nope", "value2": "2023-01-01"}]}})
    true, false = run(IF, 1, {"conditions": {"number": [{"value1": None, "operation": "isEmpty"}]}})
    assert len(true) == 1


def test_if_v2_filter_strict_and_loose() -> None:
    items = [{"json": {"admin": v}} for v in (False, True, "false", "0", 1)]
    cond_ = {"leftValue": None, "rightValue": "", "operator": {"type": "boolean", "operation": "true", "singleValue": True}}

    def run_each(version: float, params: dict[str, Any]) -> list[bool]:
        results = []
        for item in items:
            c = {**cond_, "leftValue": item["json"]["admin"]}
            true, _ = run(IF, version, {**params, "conditions": _filter([c], type_validation=params.pop("_tv", "loose"))},
                          [item])
            results.append(bool(true))
        return results

    assert run_each(2.2, {"looseTypeValidation": True}) == [False, True, False, False, True]
    with pytest.raises(NodeError) as err:
        run(IF, 2.2, {"conditions": _filter([{**cond_, "leftValue": "false"}])})
    assert err.value.message == "Wrong type: 'false' is a string but was expecting a boolean [condition 0, item 0]"


def test_if_v2_string_operations_and_case() -> None:
    item = [{"json": {}}]

    def check(operation: str, left: Any, right: Any, *, case_sensitive: bool = True) -> bool:
        c = {"leftValue": left, "rightValue": right, "operator": {"type": "string", "operation": operation}}
        true, _ = run(IF, 2, {"conditions": _filter([c], case_sensitive=case_sensitive)}, item)
        return bool(true)

    assert check("startsWith", "Shane", "s", case_sensitive=False)
    assert not check("startsWith", "Shane", "s")
    assert check("endsWith", "a@yahoo.com", "@yahoo.com")
    assert check("regex", "alpha-12", "/^alpha-\\d+$/")
    assert check("notContains", "Adam", "s")
    assert check("empty", "", "")
    assert check("exists", "x", "")


def test_if_v2_number_date_array_object() -> None:
    def check(type_: str, operation: str, left: Any, right: Any = "", tv: str = "strict") -> bool:
        c = {"leftValue": left, "rightValue": right, "operator": {"type": type_, "operation": operation}}
        true, _ = run(IF, 2.2, {"conditions": _filter([c], type_validation=tv)})
        return bool(true)

    assert check("number", "gt", 2, 1)
    assert check("number", "lte", "3", 3, tv="loose")
    assert check("dateTime", "after", "2020-10-05T14:48:00.000Z", "2018-12-31T22:00:00")
    assert check("dateTime", "before", "2020-10-05T14:48:00.000Z", "2021-08-03T03:30:08")
    assert check("array", "contains", ["A", "b"], "a", tv="strict") is False
    assert check("array", "lengthGt", [1, 2, 3], 2)
    assert check("object", "notEmpty", {"a": 1})
    with pytest.raises(NodeError, match="Wrong type: 'abc' is a string but was expecting a number"):
        check("number", "gt", "abc", 1)
    with pytest.raises(NodeError, match="Conversion error: the string 'abc' can't be converted to a number"):
        check("number", "gt", "abc", 1, tv="loose")


def test_if_validation() -> None:
    assert issues(IF, 2, {"conditions": _filter([{"operator": {"type": "string", "operation": "nope"}}])})
    assert issues(IF, 1, {"conditions": {"number": [{"operation": "contains"}]}})
    assert not issues(IF, 2, {"conditions": _filter([{"operator": {"type": "number", "operation": "gt"}}])})


# --------------------------------------------------------------------------- Filter and Switch


def test_filter_v1_and_v2() -> None:
    items = [{"json": {"id": i}} for i in (1, 2, 3)]
    out = run("n8n-nodes-base.filter", 1, {"conditions": {"number": [{"value1": 2, "operation": "equal", "value2": 2}]},
                                            "combineConditions": "OR"}, items)
    assert len(out) == 1 and len(out[0]) == 3
    c = {"leftValue": 2, "rightValue": 1, "operator": {"type": "number", "operation": "gt"}}
    out = run("n8n-nodes-base.filter", 2, {"conditions": _filter([c])}, items)
    assert len(out[0]) == 3


SWITCH = "n8n-nodes-base.switch"


def _rule(value: str, right: str) -> dict[str, Any]:
    return {"conditions": _filter([{"leftValue": value, "rightValue": right,
                                    "operator": {"type": "string", "operation": "equals"}}])}


def test_switch_v3_rules_fallback_and_all_matching() -> None:
    params = {"rules": {"values": [_rule("a", "a"), _rule("a", "b")]}, "options": {"fallbackOutput": "extra"}}
    node = NodeSpec(name="S", type=SWITCH, type_version=3, parameters=params)
    assert get_node(SWITCH).output_count(node) == 3  # type: ignore[union-attr]
    outputs = run(SWITCH, 3, params)
    assert [len(o) for o in outputs] == [1, 0, 0]
    params = {"rules": {"values": [_rule("x", "a"), _rule("x", "b")]}, "options": {"fallbackOutput": "extra"}}
    assert [len(o) for o in run(SWITCH, 3, params)] == [0, 0, 1]
    params = {"rules": {"values": [_rule("a", "a"), _rule("a", "a")]}, "options": {"allMatchingOutputs": True}}
    assert [len(o) for o in run(SWITCH, 3.2, params)] == [1, 1]
    params = {"rules": {"values": [_rule("x", "a"), _rule("x", "b")]}, "options": {"fallbackOutput": 1}}
    assert [len(o) for o in run(SWITCH, 3, params)] == [0, 1]


def test_switch_expression_mode_and_errors() -> None:
    assert [len(o) for o in run(SWITCH, 3, {"mode": "expression", "numberOutputs": 3, "output": 2})] == [0, 0, 1]
    with pytest.raises(NodeError, match="The ouput 3 is not allowed"):
        run(SWITCH, 3, {"mode": "expression", "numberOutputs": 3, "output": 3})
    assert [len(o) for o in run(SWITCH, 2, {"mode": "expression", "outputsAmount": 2, "output": 1})] == [0, 1]
    with pytest.raises(NodeError, match="It has to be between 0 and 1"):
        run(SWITCH, 2, {"mode": "expression", "outputsAmount": 2, "output": 5})


def test_switch_v2_rules_and_v1() -> None:
    items = [{"json": {}}]
    params = {"dataType": "number", "value1": 5, "rules": {"rules": [{"operation": "larger", "value2": 10},
                                                                     {"operation": "smallerEqual", "value2": 5}]},
              "fallbackOutput": -1}
    assert [len(o) for o in run(SWITCH, 2, params, items)] == [0, 1]
    params = {"dataType": "string", "value1": "beta", "rules": {"rules": [{"operation": "regex", "value2": "/^alpha/"}]},
              "fallbackOutput": 0}
    assert [len(o) for o in run(SWITCH, 2, params, items)] == [1]
    v1 = {"dataType": "string", "value1": "x", "rules": {"rules": [{"value2": "x", "output": 3}]}}
    assert [len(o) for o in run(SWITCH, 1, v1, items)] == [0, 0, 0, 1]
    assert issues(SWITCH, 3, {"mode": "nope"})
    assert issues(SWITCH, 2, {"dataType": "string", "rules": {"rules": [{"operation": "gt"}]}})


# --------------------------------------------------------------------------- Date & Time


DATETIME = "n8n-nodes-base.dateTime"


def test_moment_and_luxon_formatting() -> None:
    moment = datetime(1986, 4, 9, 13, 7, 3, 45000, tzinfo=UTC)
    assert dt.moment_format(moment, "MM/DD/YYYY") == "04/09/1986"
    assert dt.moment_format(moment, "dddd, MMMM Do YYYY, h:mm:ss a [at] X") == \
        "Wednesday, April 9th 1986, 1:07:03 pm at 513436023"
    assert dt.moment_format(moment, "YYYY-MM-DDTHH:mm:ss.SSSZ") == "1986-04-09T13:07:03.045+00:00"
    assert dt.luxon_format(moment, "yyyy/MM/dd HH:mm:ss.SSS 'week' WW ccc") == "1986/04/09 13:07:03.045 week 15 Wed"
    assert dt.luxon_format(moment, "DD t") == "Apr 9, 1986 1:07 PM"
    assert dt.luxon_iso(moment) == "1986-04-09T13:07:03.045Z"


def test_datetime_v1_format_timestamps_and_timezones() -> None:
    for value in (1682918315906, 1682918315.906, "1682918315", "1682918315906"):
        out = run(DATETIME, 1, {"value": value, "options": {}})[0]
        assert out[0]["json"]["data"] == "05/01/2023", value
    out = run(DATETIME, 1, {"value": "2023-03-31T06:31:01.000-04:00", "toFormat": "X", "options": {"toTimezone": "UTC"}})[0]
    assert out[0]["json"]["data"] == "1680258661"
    out = run(DATETIME, 1, {"value": "31.12.2022 23:30", "toFormat": "YYYY-MM-DD HH:mm",
                            "options": {"fromFormat": "DD.MM.YYYY HH:mm", "fromTimezone": "Europe/Berlin",
                                        "toTimezone": "UTC"}})[0]
    assert out[0]["json"]["data"] == "2022-12-31 22:30"
    with pytest.raises(NodeError, match="could not be recognized"):
        run(DATETIME, 1, {"value": "not a date"})


def test_datetime_v1_calculate() -> None:
    out = run(DATETIME, 1, {"action": "calculate", "value": "2023-01-31T10:00:00Z", "operation": "add", "duration": 1,
                            "timeUnit": "months", "dataPropertyName": "next"}, timezone="UTC")[0]
    assert out[0]["json"]["next"] == "2023-02-28T10:00:00.000Z"
    out = run(DATETIME, 1, {"action": "calculate", "value": "2023-03-12", "operation": "subtract", "duration": 2,
                            "timeUnit": "hours", "options": {"fromFormat": "YYYY-MM-DD"}}, timezone="UTC")[0]
    assert out[0]["json"]["data"] == "2023-03-11T22:00:00.000Z"
    with pytest.raises(NodeError, match="Date input cannot be parsed"):
        run(DATETIME, 1, {"action": "calculate", "value": "2023/03/12", "options": {"fromFormat": "YYYY-MM-DD"}})


def test_datetime_v2_operations() -> None:
    base = {"outputFieldName": "out"}
    out = run(DATETIME, 2, {**base, "operation": "formatDate", "date": 1682918315906, "format": "yyyy/MM/dd"})
    assert jsons(out[0]) == [{"out": "2023/05/01"}]
    out = run(DATETIME, 2, {**base, "operation": "addToDate", "magnitude": "2024-01-31T12:00:00Z", "timeUnit": "months",
                            "duration": 1}, timezone="Europe/Berlin")
    assert jsons(out[0]) == [{"out": "2024-02-29T13:00:00.000+01:00"}]
    out = run(DATETIME, 2, {**base, "operation": "subtractFromDate", "magnitude": "2024-03-31T12:00:00Z",
                            "timeUnit": "days", "duration": 1}, timezone="UTC")
    assert jsons(out[0]) == [{"out": "2024-03-30T12:00:00.000Z"}]
    out = run(DATETIME, 2, {**base, "operation": "roundDate", "date": "2024-05-17T15:20:00Z", "mode": "roundDown",
                            "toNearest": "week"}, timezone="UTC")
    assert jsons(out[0]) == [{"out": "2024-05-13T00:00:00.000Z"}]
    out = run(DATETIME, 2, {**base, "operation": "roundDate", "date": "2024-05-17T15:20:00Z", "mode": "roundUp"},
              timezone="UTC")
    assert jsons(out[0]) == [{"out": "2024-06-01T00:00:00.000Z"}]
    out = run(DATETIME, 2, {**base, "operation": "getTimeBetweenDates", "startDate": "2024-01-01T00:00:00Z",
                            "endDate": "2024-02-02T12:00:00Z", "units": ["month", "day", "hour"]}, timezone="UTC")
    assert jsons(out[0]) == [{"out": {"months": 1, "days": 1, "hours": 12}}]
    out = run(DATETIME, 2, {**base, "operation": "getTimeBetweenDates", "startDate": "2024-01-01T00:00:00Z",
                            "endDate": "2024-01-02T12:00:00Z", "units": ["day"], "options": {"isoString": True}},
              timezone="UTC")
    assert jsons(out[0]) == [{"out": "P1.5D"}]
    out = run(DATETIME, 2, {**base, "operation": "extractDate", "date": "2024-05-17T15:20:00Z", "part": "week"},
              timezone="UTC")
    assert jsons(out[0]) == [{"out": 20}]
    out = run(DATETIME, 2, {**base, "operation": "formatDate", "date": "20240517", "format": "custom",
                            "customFormat": "dd LLL yyyy", "options": {"fromFormat": "yyyyMMdd", "includeInputFields": True}},
              [{"json": {"keep": 1}}])
    assert jsons(out[0]) == [{"keep": 1, "out": "17 May 2024"}]
    out = run(DATETIME, 2, {**base, "operation": "getCurrentDate", "includeTime": False,
                            "options": {"timezone": "Asia/Tokyo"}})
    assert out[0][0]["json"]["out"].endswith("T00:00:00.000+09:00")
    with pytest.raises(NodeError, match="Invalid date format"):
        run(DATETIME, 2, {**base, "operation": "formatDate", "date": "garbage", "format": "yyyy"})
    with pytest.raises(NodeError, match="timezone Mars/Base is not valid"):
        run(DATETIME, 2, {**base, "operation": "getCurrentDate", "options": {"timezone": "Mars/Base"}})


def test_datetime_validation() -> None:
    assert issues(DATETIME, 2, {"operation": "travel"})
    assert issues(DATETIME, 1, {"action": "calculate", "timeUnit": "fortnights"})
    assert not issues(DATETIME, 2, {"operation": "formatDate"})


# --------------------------------------------------------------------------- Crypto

CRYPTO = "n8n-nodes-base.crypto"
PEM = ("-----BEGIN RSA PRIVATE KEY-----\nMIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8Qu\n"
       "KUpRKfFLfRYC9AIKjbJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEm\no3qGy0t6z09AIJtH+5OeRV1be+N4cDYJKffGzDa88vQENZiRm0GRq6a+HPGQMd2k\n"
       "TQIhAKMSvzIBnni7ot/OSie2TmJLY4SwTQAevXysE2RbFDYdAiEBCUEaRQnMnbp7\n9mxDXDf6AU0cN/RPBjb9qSHDcWZHGzUCIG2Es59z8ugGrDY+pxLQnwfotadxd+Uy\n"
       "v/Ow5T0q5gIJAiEAyS4RaI9YG8EWx/2w0T67ZUVAw8eOMB6BIUg0Xcu+3okCIBOs\n/5OiPgoTdSy7bcF9IGpSE8ZgGKzgYQVZeN97YE00\n"
       "-----END RSA PRIVATE KEY-----")
SECRET = ("-----BEGIN RSA PRIVATE KEY-----|MIIBOgIBAAJBAKj34GkxFhD90vcNLYLInFEX6Ppy1tPf9Cnzj4p4WGeKLs1Pt8QuKUpRKfFLfRYC9AIKj"
          "bJTWit+CqvjWYzvQwECAwEAAQJAIJLixBy2qpFoS4DSmoEmo3qGy0t6z09AIJtH+5OeRV1be+N4cDYJKffGzDa88vQENZiRm0GRq6a+HPGQMd2kTQIhAKMSvz"
          "IBnni7ot/OSie2TmJLY4SwTQAevXysE2RbFDYdAiEBCUEaRQnMnbp79mxDXDf6AU0cN/RPBjb9qSHDcWZHGzUCIG2Es59z8ugGrDY+pxLQnwfotadxd+Uyv/Ow"
          "5T0q5gIJAiEAyS4RaI9YG8EWx/2w0T67ZUVAw8eOMB6BIUg0Xcu+3okCIBOs/5OiPgoTdSy7bcF9IGpSE8ZgGKzgYQVZeN97YE00"
          "-----END RSA PRIVATE KEY-----")


def test_crypto_matches_n8n_fixture_values() -> None:
    assert jsons(run(CRYPTO, 1, {"value": "test"})[0]) == [{"data": "098f6bcd4621d373cade4e832627b4f6"}]
    assert jsons(run(CRYPTO, 1, {"action": "sign", "value": "test", "algorithm": "RSA-MD5", "encoding": "base64",
                                 "privateKey": PEM})[0]) == [
        {"data": "MVr+iZiOFtHVwO0iKC+CF+QlrZZKcGk7zBvUrWHC1fHBeS6IoWa8B/wrMvazV5H1YR8tbK8baZHD/vUNdfvjiA=="}]
    assert jsons(run(CRYPTO, 1, {"action": "hmac", "value": "test", "secret": SECRET, "encoding": "base64"})[0]) == [
        {"data": "BBXLTeT2o/R6oy5H69Yh7w=="}]
    binary_item = [{"json": {}, "binary": {"data": {"data": base64.b64encode(b"test").decode(), "mimeType": "text/plain"}}}]
    assert jsons(run(CRYPTO, 1, {"binaryData": True}, binary_item)[0]) == [{"data": "098f6bcd4621d373cade4e832627b4f6"}]
    assert jsons(run(CRYPTO, 1, {"action": "hmac", "binaryData": True, "secret": SECRET, "encoding": "base64"},
                     binary_item)[0]) == [{"data": "BBXLTeT2o/R6oy5H69Yh7w=="}]


def test_crypto_other_actions_and_errors() -> None:
    sha = run(CRYPTO, 1, {"type": "SHA3-256", "value": "x", "dataPropertyName": "h.v"}, [{"json": {"h": {"k": 1}}}])[0]
    assert sha[0]["json"]["h"]["k"] == 1 and len(sha[0]["json"]["h"]["v"]) == 64
    uid = run(CRYPTO, 1, {"action": "generate"})[0][0]["json"]["data"]
    assert len(uid) == 36 and uid.count("-") == 4
    for kind in ("hex", "base64", "ascii"):
        assert len(run(CRYPTO, 1, {"action": "generate", "encodingType": kind, "stringLength": 10})[0][0]["json"]["data"]) == 10
    with pytest.raises(NodeError, match="expects the node's input data to contain a binary file 'data'"):
        run(CRYPTO, 1, {"binaryData": True})
    with pytest.raises(NodeError, match="Invalid private key"):
        run(CRYPTO, 1, {"action": "sign", "value": "x", "algorithm": "RSA-SHA256", "privateKey": "nope"})
    assert issues(CRYPTO, 1, {"action": "encrypt"})
    assert issues(CRYPTO, 1, {"type": "CRC32"})


# --------------------------------------------------------------------------- Rename Keys

RENAME = "n8n-nodes-base.renameKeys"


def test_rename_keys() -> None:
    items = [{"json": {"propertyName": {"newPropertyName": 21}, "regex": 0}}]
    out = run(RENAME, 1, {"keys": {"key": [{"currentKey": "propertyName.newPropertyName", "newKey": "test.dot"},
                                           {"currentKey": "missing", "newKey": "x"}, {"currentKey": "regex"}]}}, items)[0]
    assert jsons(out) == [{"propertyName": {}, "regex": 0, "test": {"dot": 21}}]
    out = run(RENAME, 1, {"additionalOptions": {"regexReplacement": {"replacements": [
        {"searchRegex": "(new)(Property)", "replaceRegex": "$2_$1", "options": {"caseInsensitive": True, "depth": -1}}]}}},
        items)[0]
    assert jsons(out) == [{"propertyName": {"Property_newName": 21}, "regex": 0}]
    out = run(RENAME, 1, {"additionalOptions": {"regexReplacement": {"replacements": [
        {"searchRegex": "Name", "replaceRegex": "N", "options": {"depth": 0}}]}}}, items)[0]
    assert jsons(out) == [{"propertyN": {"newPropertyName": 21}, "regex": 0}]
