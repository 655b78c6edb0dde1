"""JavaScript value semantics for node handlers: what n8n's TypeScript does with JSON data.

``undefined`` (UNDEFINED) versus ``null`` (None), ``typeof``, ``String(x)``,
``JSON.stringify`` with JavaScript number formatting and key order, and lodash's
path syntax (``a.b[0]["c"]``). Shared by the node families so they agree.
"""
from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterable
from typing import Any


class _Undefined:
    """JavaScript's ``undefined`` (a missing value), distinct from ``None`` (``null``); survives deep copies."""

    _instance: _Undefined | None = None

    def __new__(cls) -> _Undefined:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __copy__(self) -> _Undefined:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> _Undefined:
        return self

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "undefined"


UNDEFINED: Any = _Undefined()

def js_typeof(value: Any) -> str:
    """``typeof value`` for JSON data."""
    if value is UNDEFINED:
        return "undefined"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object"  # None, dict, list


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_array_index(key: str) -> bool:
    return key.isdigit() and (key == "0" or not key.startswith("0")) and int(key) < 4294967295


def js_key_order(keys: Iterable[str]) -> list[str]:
    """Own-key order of a JavaScript object: array-index keys ascending, then insertion order."""
    keys = list(keys)
    indexes = sorted((k for k in keys if is_array_index(k)), key=int)
    return indexes + [k for k in keys if not is_array_index(k)]


def js_keys(obj: dict[str, Any]) -> list[str]:
    return js_key_order(obj.keys())


def js_number_to_string(number: float | int) -> str:
    """``String(number)`` (ECMAScript Number::toString)."""
    if isinstance(number, int):
        return str(number)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "Infinity" if number > 0 else "-Infinity"
    if number == 0:
        return "0"
    sign = "-" if number < 0 else ""
    digits, exponent = _shortest_digits(abs(number))
    k = len(digits)
    n = exponent
    if k <= n <= 21:
        return sign + digits + "0" * (n - k)
    if 0 < n <= 21:
        return sign + digits[:n] + "." + digits[n:]
    if -6 < n <= 0:
        return sign + "0." + "0" * (-n) + digits
    e = n - 1
    mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"


def _shortest_digits(number: float) -> tuple[str, int]:
    """Shortest round-trip digits and the decimal exponent n (value = 0.digits * 10**n)."""
    text = repr(number)
    mantissa, _, exp = text.partition("e")
    exponent = int(exp) if exp else 0
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac).lstrip("0")
    point = len(whole) + exponent
    stripped_leading = len(whole + frac) - len((whole + frac).lstrip("0"))
    digits = digits.rstrip("0") or "0"
    return digits, point - stripped_leading


def js_string(value: Any) -> str:
    """``String(value)`` for JSON data."""
    if value is UNDEFINED:
        return "undefined"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        return js_number_to_string(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ",".join("" if v is None or v is UNDEFINED else js_string(v) for v in value)
    return "[object Object]"


def json_stringify(value: Any) -> str:
    """``JSON.stringify(value)`` with JavaScript number formatting (undefined -> 'undefined')."""
    if value is UNDEFINED:
        return "undefined"
    return _stringify(value)


def _stringify(value: Any) -> str:
    if value is None or value is UNDEFINED:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
            return "null"
        return js_number_to_string(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ",".join(_stringify(v) for v in value) + "]"
    if isinstance(value, dict):
        parts = [f"{json.dumps(str(k), ensure_ascii=False)}:{_stringify(value[k])}" for k in js_keys(value)
                 if value[k] is not UNDEFINED]
        return "{" + ",".join(parts) + "}"
    return json.dumps(str(value))



_PATH_TOKEN = re.compile(r"""[^.[\]]+|\[(?:(-?\d+(?:\.\d+)?)|(["'])((?:(?!\2)[^\\]|\\.)*?)\2)\]|(?=(?:\.|\[\])(?:\.|\[\]|$))""")
_PLAIN_PROP = re.compile(r"^\w*$")
_DEEP_PROP = re.compile(r"""\.|\[(?:[^[\]]*|(["'])(?:(?!\1)[^\\]|\\.)*?\1)\]""")


def to_path(path: str | list[str], obj: Any = None) -> list[str]:
    """lodash ``castPath``: a direct key wins, else dots and brackets split the path."""
    if isinstance(path, list):
        return [str(p) for p in path]
    if _PLAIN_PROP.match(path) or not _DEEP_PROP.search(path) or (isinstance(obj, dict) and path in obj):
        return [path]
    parts: list[str] = []
    if path.startswith("."):
        parts.append("")
    for match in _PATH_TOKEN.finditer(path):
        number, quote, quoted = match.group(1), match.group(2), match.group(3)
        if quote:
            parts.append(re.sub(r"\\(\\)?", r"\1", quoted))
        elif number is not None:
            parts.append(number)
        else:
            parts.append(match.group(0))
    return parts


def _child(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return value.get(key, UNDEFINED)
    if isinstance(value, (list, str)):
        if key == "length":
            return len(value)
        if is_array_index(key) and int(key) < len(value):
            return value[int(key)]
    return UNDEFINED


def lodash_get(obj: Any, path: str | list[str], default: Any = UNDEFINED) -> Any:
    """lodash ``get``."""
    value = obj
    for key in to_path(path, obj):
        if value is None or value is UNDEFINED:
            return default
        value = _child(value, key)
    return default if value is UNDEFINED else value


def lodash_has(obj: Any, path: str | list[str]) -> bool:
    value = obj
    for key in to_path(path, obj):
        if isinstance(value, dict) and key in value:
            value = value[key]
        elif isinstance(value, list) and is_array_index(key) and int(key) < len(value):
            value = value[int(key)]
        else:
            return False
    return True


def lodash_set(obj: Any, path: str | list[str], value: Any) -> Any:
    """lodash ``set``: creates missing containers (a list when the next key is an index)."""
    parts = to_path(path, obj)
    if not isinstance(obj, (dict, list)):
        return obj
    current = obj
    for position, key in enumerate(parts):
        last = position == len(parts) - 1
        if last:
            _assign(current, key, value)
            break
        nxt = _child(current, key)
        if not isinstance(nxt, (dict, list)):
            nxt = [] if is_array_index(parts[position + 1]) else {}
            _assign(current, key, nxt)
        current = nxt
    return obj


def _assign(container: dict | list, key: str, value: Any) -> None:
    if isinstance(container, list):
        if is_array_index(key):
            index = int(key)
            while len(container) <= index:
                container.append(None)
            container[index] = value
        return
    container[key] = value


def lodash_unset(obj: Any, path: str | list[str]) -> bool:
    parts = to_path(path, obj)
    parent = obj
    for key in parts[:-1]:
        parent = _child(parent, key)
        if not isinstance(parent, (dict, list)):
            return True
    if isinstance(parent, dict):
        parent.pop(parts[-1], None)
    return True


def lodash_pick(obj: dict[str, Any], paths: Iterable[str]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for path in paths:
        if lodash_has(obj, path):
            lodash_set(result, to_path(path, obj), copy.deepcopy(lodash_get(obj, path)))
    return result


def flatten_keys(obj: Any, path: tuple[str, ...] = ()) -> dict[str, Any]:
    """n8n's ``flattenKeys``: leaf paths joined by dots (empty objects and arrays vanish)."""
    if not isinstance(obj, (dict, list)):
        return {".".join(path): obj}
    result: dict[str, Any] = {}
    entries = [(k, obj[k]) for k in js_keys(obj)] if isinstance(obj, dict) else [(str(i), v) for i, v in enumerate(obj)]
    for key, value in entries:
        result.update(flatten_keys(value, (*path, key)))
    return result


def json_object_param(value: Any, name: str, expected: str = "a JSON object") -> dict[str, Any]:
    """A parameter that holds an object, given as one or as JSON text (empty: {})."""
    from workflows.engine.contract import NodeError

    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise NodeError(f"The parameter '{name}' is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise NodeError(f"The parameter '{name}' must be {expected}, not {js_typeof(value)}")
    return value
