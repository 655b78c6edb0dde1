"""n8n expressions and JavaScript Code bodies, evaluated in a V8 isolate (mini-racer).

Why V8: n8n expressions are JavaScript (``={{ $json.a.toUpperCase() }}``), so the only faithful way
to run them is a JS engine. The isolate is bare V8: no file, network or process access exists in it
and no Python callback is exposed, so user code can only compute. Each :class:`Evaluator` owns one
isolate (one per execution); runaway code is stopped by a time limit and a heap limit, after which
the isolate is replaced so the execution can continue.

Per call the runtime's ``data`` (plain JSON, see expr_contract.md) is sent as one JSON string and the
JS runtime (``js/runtime.js``) builds n8n's globals (``$json``, ``$input``, ``$('Name')``, ``$node``,
``$items``, ``$now`` ...) from it. Results come back as JSON. Trivial values (``=literal`` and
``={{ $json.a.b }}`` paths that exist) are resolved in Python without entering V8.
"""
from __future__ import annotations

import json
import math
import re
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from workflows.engine.contract import EngineSettings, ExpressionError, NodeError

__all__ = ["Evaluator", "code_syntax_error", "is_expression", "referenced_nodes", "syntax_error"]

_JS_DIR = Path(__file__).resolve().parent / "js"


def is_expression(value: object) -> bool:
    """n8n: a string parameter starting with ``=`` is an expression."""
    return isinstance(value, str) and value.startswith("=")


# --------------------------------------------------------------------------- template parsing


class _Code:
    __slots__ = ("code",)

    def __init__(self, code: str) -> None:
        self.code = code

    def __repr__(self) -> str:
        return f"_Code({self.code!r})"


def _scan_code_end(s: str, start: int) -> int:
    """Index of the ``}}`` closing the segment whose code starts at ``start``, or -1.

    Skips JS string / template literals and balanced ``{...}`` so ``{{ {a: {b: 1}} }}`` works.
    """
    depth = 0
    i = start
    n = len(s)
    while i < n:
        c = s[i]
        if c in "'\"`":
            i = _skip_string(s, i)
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            if depth == 0:
                if i + 1 < n and s[i + 1] == "}":
                    return i
            else:
                depth -= 1
        i += 1
    return -1


def _skip_string(s: str, i: int) -> int:
    quote = s[i]
    i += 1
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if quote == "`" and c == "$" and i + 1 < n and s[i + 1] == "{":
            # inside a template literal `${ ... }` ends with a single "}"
            depth = 0
            j = i + 2
            while j < n:
                if s[j] in "'\"`":
                    j = _skip_string(s, j)
                    continue
                if s[j] == "{":
                    depth += 1
                elif s[j] == "}":
                    if depth == 0:
                        break
                    depth -= 1
                j += 1
            i = j + 1
            continue
        if c == quote:
            return i + 1
        i += 1
    return n


@lru_cache(maxsize=4096)
def _split(template: str) -> tuple[Any, ...]:
    """Split the text after ``=`` into literal strings and :class:`_Code` segments.

    An unclosed ``{{`` is literal text (as in n8n's tmpl).
    """
    parts: list[Any] = []
    pos = 0
    buf = ""
    while True:
        open_at = template.find("{{", pos)
        if open_at < 0:
            buf += template[pos:]
            break
        end = _scan_code_end(template, open_at + 2)
        if end < 0:
            buf += template[pos:]
            break
        buf += template[pos:open_at]
        if buf:
            parts.append(buf)
            buf = ""
        parts.append(_Code(template[open_at + 2:end]))
        pos = end + 2
    if buf:
        parts.append(buf)
    return tuple(parts)


# --------------------------------------------------------------------------- referenced nodes

_STR = r"""(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)"|`((?:[^`\\$]|\\.)*)`)"""
_REF_PATTERNS = [
    re.compile(r"(?<![\w$])\$\(\s*" + _STR + r"\s*\)"),          # $('Name')
    re.compile(r"(?<![\w$])\$node\s*\[\s*" + _STR + r"\s*\]"),     # $node["Name"]
    re.compile(r"(?<![\w$])\$items\(\s*" + _STR),                  # $items("Name", ...)
    re.compile(r"(?<![\w$])_\(\s*" + _STR + r"\s*\)"),             # Python: _('Name')
    re.compile(r"(?<![\w$])_node\s*\[\s*" + _STR + r"\s*\]"),      # Python: _node["Name"]
]
_NODE_DOT = re.compile(r"(?<![\w$])\$node\.([A-Za-z_$][\w$]*)")
_UNESCAPE = re.compile(r"\\(.)")


def referenced_nodes(source: str) -> set[str]:
    """Names used as ``$('Name')``, ``$node["Name"]``, ``$node.Name``, ``$items("Name")`` (and the
    Python forms ``_('Name')`` / ``_node['Name']``). Dynamic names (``$(variable)``) can't be seen."""
    if not isinstance(source, str) or ("$" not in source and "_" not in source):
        return set()
    names: set[str] = set()
    for pattern in _REF_PATTERNS:
        for m in pattern.finditer(source):
            raw = next(g for g in m.groups() if g is not None) if any(g is not None for g in m.groups()) else ""
            names.add(_UNESCAPE.sub(r"\1", raw))
    for m in _NODE_DOT.finditer(source):
        names.add(m.group(1))
    return names


# --------------------------------------------------------------------------- syntax checks

_CHECK_JS = r"""
globalThis.__check = function (code, kind) {
  try {
    if (kind === 'expr') {
      let body = code.trim();
      while (body.endsWith(';')) body = body.slice(0, -1).trimEnd();
      new Function('return (\n' + body + '\n);');
    } else if (kind === 'async') {
      (0, eval)('(async function () {\n' + code + '\n})');
    } else {
      new Function(code);
    }
    return null;
  } catch (e) {
    return String(e && e.message ? e.message : e);
  }
};
"""

_checker: Any = None
_checker_lock = threading.Lock()


def _check(code: str, kind: str) -> str | None:
    global _checker
    from py_mini_racer import MiniRacer

    with _checker_lock:
        for attempt in range(2):
            if _checker is None:
                _checker = MiniRacer()
                _checker.set_hard_memory_limit(32 * 1024 * 1024)
                _checker.eval(_CHECK_JS)
            try:
                result = _checker.eval(f"__check({json.dumps(code)}, {json.dumps(kind)})", timeout_sec=2)
                return result if isinstance(result, str) else None
            except Exception as exc:  # the checker isolate broke (limit hit): replace it once
                _close_quietly(_checker)
                _checker = None
                if attempt:
                    return f"could not be checked: {exc}"
    return None


def syntax_error(value: str) -> str | None:
    """Compile-only check of every ``{{ }}`` segment of an expression (nothing is executed)."""
    if not is_expression(value):
        return None
    for part in _split(value[1:]):
        if isinstance(part, _Code):
            if not part.code.strip():
                return "invalid syntax: empty expression {{ }}"
            if _fast_path(part.code) is not None:
                continue
            message = _check(part.code, "expr")
            if message:
                return f"invalid syntax in {{{{{part.code}}}}}: {message}"
    return None


def code_syntax_error(code: str) -> str | None:
    """Compile-only check of a JavaScript Code / Function node body."""
    if not isinstance(code, str):
        return "code must be a string"
    return _check(code, "async" if _AWAIT.search(code) else "body")


# --------------------------------------------------------------------------- fast path

_FAST = re.compile(r"""^\s*\$json((?:\s*\.\s*[A-Za-z_$][\w$]*|\s*\[\s*(?:"[^"\\]*"|'[^'\\]*'|\d+)\s*\])*)\s*$""")
_STEP = re.compile(r"""\.\s*([A-Za-z_$][\w$]*)|\[\s*(?:"([^"\\]*)"|'([^'\\]*)'|(\d+))\s*\]""")
_MISS = object()


@lru_cache(maxsize=4096)
def _fast_path(code: str) -> tuple[Any, ...] | None:
    """Steps of a plain ``$json.a["b"][0]`` access, or None when the code is anything else."""
    m = _FAST.match(code)
    if not m:
        return None
    steps: list[Any] = []
    for s in _STEP.finditer(m.group(1)):
        name, dq, sq, idx = s.groups()
        if idx is not None:
            steps.append(int(idx))
        else:
            steps.append(name if name is not None else (dq if dq is not None else sq))
    return tuple(steps)


def _resolve_fast(steps: tuple[Any, ...], data: dict[str, Any]) -> Any:
    """Follow the steps through dicts and lists; _MISS whenever JS semantics are needed."""
    value: Any = data.get("json")
    if value is None:
        value = {}
    for step in steps:
        if isinstance(value, dict):
            key = str(step)
            if key not in value:
                return _MISS
            value = value[key]
        elif isinstance(value, list) and isinstance(step, int):
            if step >= len(value):
                return _MISS
            value = value[step]
        else:
            return _MISS
    return value


def _copy_json(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy_json(v) for v in value]
    return value


def _fast_text(value: Any) -> str | None:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) and abs(value) < 2**53:
        return str(value)
    return None


# --------------------------------------------------------------------------- evaluator

_AWAIT = re.compile(r"(?<![\w$.])await(?![\w$])")
_LEGACY = {"runOnceForAllItems": "items", "runOnceForEachItem": "item", "function": "items", "functionItem": "itemJson"}
_PER_ITEM_MODES = {"runOnceForEachItem", "functionItem"}


def _close_quietly(mr: Any) -> None:
    try:
        mr.close()
    except Exception:  # closing a broken isolate must never mask the real error
        pass


def _dumps(data: Any) -> str:
    try:
        return json.dumps(data, allow_nan=False, separators=(",", ":"))
    except ValueError:
        return json.dumps(_finite(data), separators=(",", ":"))
    except TypeError as exc:
        raise NodeError(f"expression data is not JSON: {exc}") from exc


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class Evaluator:
    """One V8 isolate for one execution. Not thread-safe."""

    def __init__(self, settings: EngineSettings) -> None:
        self.settings = settings
        self._mr: Any = None
        self._known: set[str] = set()        # keys compiled in the current isolate
        self._ids: dict[Any, str] = {}
        self._closed = False
        self._retired: list[Any] = []        # isolates stopped by a timeout, closed with the evaluator

    # ----------------------------------------------------------------- isolate lifecycle

    def _isolate(self) -> Any:
        if self._closed:
            raise NodeError("the expression evaluator was closed")
        if self._mr is None:
            from py_mini_racer import MiniRacer

            mr = MiniRacer()
            mr.set_hard_memory_limit(max(16, int(self.settings.js_memory_mb)) * 1024 * 1024)
            mr.eval(_runtime_source(), timeout_sec=30)
            self._mr = mr
            self._known = set()
        return self._mr

    def _replace_isolate(self, *, retire: bool = False) -> None:
        """Drop the current isolate. A synchronously timed-out one is already terminated by V8; it is
        closed with the evaluator so mini-racer's late cancel callback still finds its event loop."""
        if self._mr is not None:
            if retire:
                # let mini-racer deliver the cancelled call's late callback while its loop still runs
                try:
                    self._mr.eval("0", timeout_sec=1)
                except Exception:  # the isolate is being dropped anyway
                    pass
                self._retired.append(self._mr)
            else:
                _close_quietly(self._mr)
        self._mr = None
        self._known = set()

    def close(self) -> None:
        for mr in [*self._retired, self._mr]:
            if mr is not None:
                _close_quietly(mr)
        self._retired = []
        self._mr = None
        self._closed = True

    def __enter__(self) -> Evaluator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _key(self, prefix: str, source: Any) -> str:
        key = self._ids.get((prefix, source))
        if key is None:
            key = f"{prefix}{len(self._ids)}"
            self._ids[(prefix, source)] = key
        return key

    def _eval(self, js: str, what: str) -> Any:
        from py_mini_racer import JSOOMException, JSTimeoutException

        mr = self._isolate()
        timeout_ms = int(self.settings.js_timeout_ms)
        try:
            return mr.eval(js, timeout_sec=timeout_ms / 1000)
        except JSTimeoutException as exc:
            self._replace_isolate(retire=True)
            raise ExpressionError(f"{what} timed out after {timeout_ms} ms") from exc
        except JSOOMException as exc:
            self._replace_isolate()
            raise ExpressionError(f"{what} exceeded the memory limit ({self.settings.js_memory_mb} MB)") from exc
        except Exception as exc:
            broke = mr.was_hard_memory_limit_reached()
            self._replace_isolate()
            if broke:
                raise ExpressionError(f"{what} exceeded the memory limit ({self.settings.js_memory_mb} MB)") from exc
            raise ExpressionError(f"{what} failed in the JavaScript engine: {exc}") from exc

    # ----------------------------------------------------------------- expressions

    def evaluate(self, value: str, data: dict[str, Any]) -> Any:
        """Resolve an ``=...`` parameter string for one item (see module docstring)."""
        if not is_expression(value):
            return value
        parts = _split(value[1:])
        if not any(isinstance(p, _Code) for p in parts):
            return value[1:]
        single = len(parts) == 1
        # Python fast path: $json paths that exist
        fast_values: list[Any] = []
        for p in parts:
            if isinstance(p, _Code):
                steps = _fast_path(p.code)
                if steps is None:
                    break
                v = _resolve_fast(steps, data)
                if v is _MISS:
                    break
                fast_values.append(v)
        else:
            if single:
                return _copy_json(fast_values[0])
            out: list[str] = []
            values = iter(fast_values)
            for p in parts:
                if isinstance(p, str):
                    out.append(p)
                    continue
                text = _fast_text(next(values))
                if text is None:
                    break
                out.append(text)
            else:
                return "".join(out)
        return self._evaluate_js(value, parts, single, data)

    def _evaluate_js(self, value: str, parts: tuple[Any, ...], single: bool, data: dict[str, Any]) -> Any:
        key = self._key("e", value)
        payload = _dumps(data)
        self._isolate()
        if key in self._known:
            spec = "null"
        else:
            spec = json.dumps([p if isinstance(p, str) else {"code": p.code} for p in parts])
        js = f"__hive.evaluate({json.dumps(key)}, {spec}, {'true' if single else 'false'}, {json.dumps(payload)})"
        raw = self._eval(js, "expression")
        self._known.add(key)
        result = json.loads(raw)
        error = result.get("error")
        if error:
            self._known.discard(key)
            if error.get("kind") == "syntax":
                raise ExpressionError("invalid syntax", description=f"{error.get('message')} in {value[1:]!r}")
            raise ExpressionError(str(error.get("message")), description=error.get("description"))
        return result.get("value")

    # ----------------------------------------------------------------- code

    def run_code(self, code: str, data: dict[str, Any], *, mode: str) -> Any:
        """Run a JavaScript Code / Function node body; returns its (JSON) return value."""
        if mode not in _LEGACY:
            raise NodeError(f"unknown code mode '{mode}'")
        is_async = bool(_AWAIT.search(code))
        key = self._key("c", (code, is_async))
        payload = _dumps(data)
        self._isolate()
        if key in self._known:
            spec = "null"
        else:
            spec = json.dumps(code)
        js = (f"__hive.runCode({json.dumps(key)}, {spec}, {'true' if is_async else 'false'}, "
              f"{json.dumps(_LEGACY[mode])}, {json.dumps(payload)})")
        raw = self._eval(js, "code")
        self._known.add(key)
        if not isinstance(raw, str):
            raw = self._await(raw)
        result = json.loads(raw)
        error = result.get("error")
        if error:
            self._known.discard(key)
            raise self._code_error(error, data, mode)
        return result.get("value")

    def _await(self, promise: Any) -> str:
        from py_mini_racer import JSTimeoutException

        timeout_ms = int(self.settings.js_timeout_ms)
        try:
            value = promise.get(timeout=timeout_ms / 1000)
        except JSTimeoutException as exc:
            self._replace_isolate()
            raise ExpressionError(f"code timed out after {timeout_ms} ms") from exc
        except Exception as exc:
            broke = self._mr is not None and self._mr.was_hard_memory_limit_reached()
            self._replace_isolate()
            if broke:
                raise ExpressionError(f"code exceeded the memory limit ({self.settings.js_memory_mb} MB)") from exc
            raise NodeError(f"code failed: {exc}") from exc
        if not isinstance(value, str):
            raise NodeError("code returned a value that could not be read")
        return value

    @staticmethod
    def _code_error(error: dict[str, Any], data: dict[str, Any], mode: str) -> NodeError:
        message = str(error.get("message") or "Unknown error")
        line = error.get("line")
        item_index = int(data.get("itemIndex") or 0) if mode in _PER_ITEM_MODES else None
        if line is not None and item_index is not None:
            message = f"{message} [line {line}, for item {item_index}]"
        elif line is not None:
            message = f"{message} [line {line}]"
        elif item_index is not None:
            message = f"{message} [item {item_index}]"
        name = error.get("name")
        description = error.get("description") or (name if name and name != "Error" else None)
        cls = ExpressionError if error.get("kind") == "expression" else NodeError
        return cls(message, description=description, item_index=item_index)


@lru_cache(maxsize=1)
def _runtime_source() -> str:
    luxon = (_JS_DIR / "luxon.min.js").read_text(encoding="utf-8")
    runtime = (_JS_DIR / "runtime.js").read_text(encoding="utf-8")
    return f"{luxon}\n;\n{runtime}\n;true"
