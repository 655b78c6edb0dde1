"""JSON from outside Hive: bounded nesting and no NaN/Infinity, checked before parsing.

Python's parser recurses once per nesting level, so a body of 100,000 ``[`` raises
RecursionError (a 500, or a dropped WebSocket); and ``NaN``/``Infinity`` parse into
floats that PostgreSQL's JSON columns refuse. Every parser of untrusted JSON (REST,
webhooks, WebSocket frames) goes through :func:`loads`, which raises
:class:`UnsafeJSON` (a ``ValueError``) naming the problem instead.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from django.conf import settings

__all__ = ["UnsafeJSON", "check_depth", "loads"]

# A JSON string literal; brackets inside one do not nest anything.
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_BRACKETS = re.compile(rb"[\[\]{}]")
_OPENERS = frozenset(b"[{")
_SURROGATE = re.compile("[\ud800-\udfff]")


class UnsafeJSON(ValueError):
    """JSON refused before or while parsing; the message says why."""


DEFAULT_MAX_DEPTH = 200


def _max_depth() -> int:
    # Also used outside Django (the Ollama client in tools and benchmarks).
    return int(getattr(settings, "HIVE_MAX_JSON_DEPTH", DEFAULT_MAX_DEPTH)) if settings.configured else DEFAULT_MAX_DEPTH


def check_depth(raw: bytes | str, limit: int | None = None) -> None:
    """Raise UnsafeJSON when arrays/objects in ``raw`` nest deeper than ``limit``."""
    limit = _max_depth() if limit is None else limit
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= limit:
        return
    depth = 0
    for match in _BRACKETS.finditer(_STRING.sub(b'""', data)):
        if match.group()[0] in _OPENERS:
            depth += 1
            if depth > limit:
                raise UnsafeJSON(f"JSON nested deeper than {limit} levels")
        else:
            depth -= 1


def _refuse_constant(name: str) -> Any:
    raise UnsafeJSON(f"{name} is not valid JSON (use null or a finite number)")


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):   # 1e400: Python reads it as inf
        raise UnsafeJSON(f"the number {text[:40]} is too large")
    return number


def _lone_surrogate(value: Any) -> bool:
    """Does any string (or key) hold half of a UTF-16 pair? JSON escapes can write one
    ("\\ud800"); no database column or UTF-8 output can store it."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def loads(raw: bytes | str, limit: int | None = None) -> Any:
    """``json.loads`` for untrusted input: depth-limited; NaN, Infinity, numbers too
    large for a float and unpaired surrogates refused."""
    check_depth(raw, limit)
    try:
        value = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite)
    except RecursionError as exc:  # a limit set above what the interpreter's stack allows
        raise UnsafeJSON("JSON nested too deeply") from exc
    escapes = raw.lower().count(b"\\ud" if isinstance(raw, bytes) else "\\ud")
    if escapes and _lone_surrogate(value):
        raise UnsafeJSON("a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff)")
    return value
