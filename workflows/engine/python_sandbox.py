"""Python Code nodes, run in a fresh, locked-down child interpreter per call.

Why a subprocess: CPython cannot be sandboxed in-process. The child is ``python -I -S`` (no site,
no user env) with an empty environment, a temp dir as cwd, rlimits on address space, CPU time,
open files and processes, and an audit hook (installed before user code runs) that refuses
sockets, subprocesses, file writes and file reads outside the standard library. Data goes in and
out as JSON over stdin/stdout. The helpers mirror n8n's Pyodide runner: ``_input.all()``,
``_input.item``, ``_json``, ``_('Name').first()``, ``_now``, ``_runIndex`` ... (``$x`` becomes ``_x``).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import sysconfig
import tempfile
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from workflows.engine.contract import EngineSettings, NodeError

__all__ = ["DISABLED_MESSAGE", "run_python"]

DISABLED_MESSAGE = "Python Code nodes are disabled on this Hive (HIVE_WORKFLOW_PYTHON_ENABLED=false)"

_PER_ITEM_MODES = {"runOnceForEachItem"}

# The child program. It reads one JSON request from stdin and writes one JSON answer to the real stdout.
_BOOTSTRAP = r'''
import sys, os, resource
_req_raw = sys.stdin.buffer.read()
import json, ast, io, traceback, math, datetime, decimal
req = json.loads(_req_raw)
lim = req["limits"]
mem = lim["memory_bytes"]
resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
resource.setrlimit(resource.RLIMIT_CPU, (lim["cpu_s"], lim["cpu_s"] + 1))
resource.setrlimit(resource.RLIMIT_NOFILE, (16, 16))
resource.setrlimit(resource.RLIMIT_NPROC, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))
_out = os.fdopen(os.dup(1), "w", encoding="utf-8")
_READ_ROOTS = tuple(req["read_roots"])
_BLOCKED = ("socket.", "subprocess.", "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
            "os.kill", "os.killpg", "os.putenv", "os.unsetenv", "os.remove", "os.unlink", "os.rename", "os.rmdir",
            "os.mkdir", "os.chmod", "os.chown", "os.link", "os.symlink", "os.truncate", "os.utime", "os.listdir",
            "os.scandir", "os.chdir", "os.chroot", "os.walk", "os.startfile", "shutil.", "ctypes.", "mmap.", "pty.",
            "webbrowser.", "sys.setprofile", "sys.settrace", "resource.setrlimit", "urllib.Request",
            "glob.glob", "fcntl.", "signal.", "winreg.")

def _hook(event, args):
    if event == "open":
        path, mode = args[0], args[1]
        if isinstance(path, (bytes, str)):
            p = os.path.realpath(os.fsdecode(path))
            readonly = mode is None or (isinstance(mode, str) and set(mode) <= set("rbt"))
            if readonly and p.startswith(_READ_ROOTS):
                return
        raise PermissionError("file access is not allowed in Python Code nodes")
    if event.startswith(_BLOCKED):
        if event.startswith("socket."):
            raise PermissionError("network access is not allowed in Python Code nodes")
        raise PermissionError(f"'{event}' is not allowed in Python Code nodes")

sys.addaudithook(_hook)

class _Obj(dict):
    """A dict whose keys are also attributes, like n8n's JsProxy objects (item.json.name)."""
    __slots__ = ()
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None
    def __setattr__(self, name, value):
        self[name] = value
    def __delattr__(self, name):
        try:
            del self[name]
        except KeyError:
            raise AttributeError(name) from None

def _wrap(v):
    if isinstance(v, dict):
        return _Obj((k, _wrap(x)) for k, x in v.items())
    if isinstance(v, list):
        return [_wrap(x) for x in v]
    return v

class _Err(Exception):
    pass

data = req["data"]
nodes = data.get("nodes") or {}
item_index = data.get("itemIndex") or 0

def _info(name):
    info = nodes.get(name)
    if info is None:
        raise _Err("Referenced node doesn't exist: '%s'" % name)
    return info

def _outputs(name, info, run_index=None):
    if not info.get("isExecuted"):
        raise _Err("Can't get data for expression: node '%s' hasn't been executed" % name)
    last = (info.get("runs") or 1) - 1
    if run_index in (None, -1, last):
        return info.get("outputs") or [info.get("all") or []]
    runs = info.get("runOutputs")
    if runs and 0 <= run_index < len(runs):
        return runs[run_index] or []
    raise _Err('Run %s of node "%s" not found' % (run_index, name))

def _items(name, output_index=0, run_index=None):
    outs = _outputs(name, _info(name), run_index)
    output_index = output_index or 0
    if output_index < 0 or output_index >= max(len(outs), 1):
        raise _Err('The node "%s" has no output with index %s' % (name, output_index))
    return _wrap(outs[output_index] if output_index < len(outs) else [])

def _no_pair(name):
    here = (data.get("node") or {}).get("name") or "this node"
    return _Err("Can't get data for expression (no item of '%s' matches this item of '%s')" % (name, here))

def _paired(name, idx=None):
    info = _info(name)
    _outputs(name, info)
    if idx is None or idx == item_index:
        if info.get("pairedError"):
            raise _Err(info["pairedError"])
        return _wrap(info.get("item"))
    pairs = info.get("pairedItems")
    if isinstance(pairs, list):
        if not 0 <= idx < len(pairs) or pairs[idx] is None:
            raise _no_pair(name)
        return _wrap(pairs[idx])
    inputs = (data.get("input") or {}).get("all") or []
    if not 0 <= idx < len(inputs):
        raise _no_pair(name)
    prev = data.get("prevNode") or {}
    if prev.get("name") == name:
        p = inputs[idx].get("pairedItem")
        if isinstance(p, list):
            p = p[0] if p else None
        j = idx if p is None else (p if isinstance(p, int) else (p.get("item") or 0))
        all_items = info.get("all") or []
        if j < len(all_items):
            return _wrap(all_items[j])
    raise _no_pair(name)

class _NodeRef:
    def __init__(self, name):
        self._name = name
        self._i = _info(name)
    def all(self, output_index=0, run_index=None):
        return _items(self._name, output_index, run_index)
    def first(self, output_index=0, run_index=None):
        a = _items(self._name, output_index, run_index)
        return a[0] if a else None
    def last(self, output_index=0, run_index=None):
        a = _items(self._name, output_index, run_index)
        return a[-1] if a else None
    @property
    def item(self):
        return _paired(self._name)
    def pairedItem(self, idx=None):
        return _paired(self._name, idx)
    def itemMatching(self, idx):
        return _paired(self._name, idx)
    @property
    def params(self):
        return _wrap(self._i.get("params") or {})
    @property
    def context(self):
        return _wrap(self._i.get("context") or {})
    @property
    def isExecuted(self):
        return bool(self._i.get("isExecuted"))

class _Input:
    def all(self, branch_index=0):
        if branch_index:
            return _wrap((data.get("inputs") or [])[branch_index] if branch_index < len(data.get("inputs") or []) else [])
        return _wrap((data.get("input") or {}).get("all") or [])
    def first(self):
        a = self.all()
        return a[0] if a else None
    def last(self):
        a = self.all()
        return a[-1] if a else None
    @property
    def item(self):
        return _wrap((data.get("input") or {}).get("item"))
    @property
    def params(self):
        return _wrap((data.get("node") or {}).get("parameters") or {})

class _Env:
    def __getattr__(self, name):
        raise _Err("access to env vars denied")
    __getitem__ = __getattr__

class _NodeMap:
    def __getitem__(self, name):
        info = _info(name)
        outs = _outputs(name, info)
        first = outs[0] if outs else []
        it = first[item_index] if item_index < len(first) else None
        if it is None:
            raise _Err('No data found for item-index: "%s"' % item_index)
        return _wrap({"json": it.get("json"), "binary": it.get("binary") or {}, "parameter": info.get("params") or {},
                      "context": info.get("context") or {}, "runIndex": (info.get("runs") or 1) - 1})
    __getattr__ = __getitem__

def _dt(s):
    return datetime.datetime.fromisoformat(s) if s else None

current = (data.get("input") or {}).get("item")
g = {
    "__name__": "__n8n_code__",
    "_input": _Input(),
    "_json": _wrap((current or {}).get("json") or {}),
    "_binary": _wrap((current or {}).get("binary") or {}),
    "_": _NodeRef,
    "_node": _NodeMap(),
    "_items": _items,
    "_itemIndex": item_index,
    "_runIndex": data.get("runIndex") or 0,
    "_prevNode": _wrap(data.get("prevNode") or {}),
    "_workflow": _wrap(data.get("workflow") or {}),
    "_execution": _wrap(data.get("execution") or {}),
    "_mode": (data.get("execution") or {}).get("mode") or "manual",
    "_vars": _wrap(data.get("vars") or {}),
    "_env": _Env(),
    "_now": _dt(req.get("now")),
    "_today": _dt(req.get("today")),
    "_parameter": _wrap((data.get("node") or {}).get("parameters") or {}),
}
if req["mode"] == "runOnceForEachItem":
    g["item"] = _wrap(current)
else:
    g["items"] = g["_input"].all()

def _iso(d):
    if isinstance(d, datetime.datetime):
        if d.tzinfo is None:
            return d.isoformat(timespec="milliseconds")
        off = d.utcoffset()
        base = d.replace(tzinfo=None).isoformat(timespec="milliseconds")
        if req.get("utc") and off == datetime.timedelta(0):
            return base + "Z"
        total = int(off.total_seconds() // 60)
        sign = "+" if total >= 0 else "-"
        total = abs(total)
        return "%s%s%02d:%02d" % (base, sign, total // 60, total % 60)
    return None

def _default(o):
    s = _iso(o)
    if s is not None:
        return s
    if isinstance(o, (datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, decimal.Decimal):
        return float(o)
    if isinstance(o, bytes):
        return o.decode("utf-8", "replace")
    if isinstance(o, (_NodeRef, _Input, _NodeMap)):
        return {}
    return str(o)

def _finite(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v

def _answer(obj):
    try:
        text = json.dumps(obj, default=_default, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), default=_default)
    _out.write(text)
    _out.flush()

def _line(tb):
    line = None
    for frame in traceback.extract_tb(tb):
        if frame.filename == "<code>":
            line = frame.lineno
    return line

sys.stdout = io.StringIO()
try:
    tree = ast.parse(req["code"], "<code>")
    fn = ast.parse("def __n8n_main():\n    pass\n", "<code>")
    fn.body[0].body = tree.body or [ast.Pass()]
    ast.fix_missing_locations(fn)
    exec(compile(fn, "<code>", "exec"), g)
    result = g["__n8n_main"]()
    _answer({"value": result})
except MemoryError:
    _answer({"error": {"name": "MemoryError", "message": "Python code exceeded the memory limit", "memory": True}})
except SyntaxError as e:
    _answer({"error": {"name": "SyntaxError", "message": str(e.msg), "line": e.lineno}})
except BaseException as e:
    msg = str(e) if not isinstance(e, KeyError) else "KeyError: %s" % e
    _answer({"error": {"name": type(e).__name__, "message": msg or type(e).__name__, "line": _line(e.__traceback__),
                       "n8n": isinstance(e, _Err)}})
'''


def _read_roots() -> list[str]:
    """Directories the child may read: the standard library (imports) and the tz database."""
    roots = {os.path.realpath(p) for p in (sysconfig.get_path("stdlib"), sysconfig.get_path("platstdlib")) if p}
    for tz in ("/usr/share/zoneinfo",):
        if os.path.isdir(tz):
            roots.add(os.path.realpath(tz))
    return sorted(r + os.sep for r in roots)


def _luxon_iso(moment: datetime) -> str:
    """ISO like Luxon's ``toISO()`` (milliseconds, ``+HH:MM`` offset) so _now/_today match $now/$today."""
    off = moment.utcoffset()
    base = moment.replace(tzinfo=None).isoformat(timespec="milliseconds")
    assert off is not None
    minutes = int(off.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{base}{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def run_python(code: str, data: dict[str, Any], *, mode: str, settings: EngineSettings) -> Any:
    """Run one Python Code node body; returns its JSON return value or raises NodeError."""
    if not settings.python_code_enabled:
        raise NodeError(DISABLED_MESSAGE)
    if not isinstance(code, str) or not code.strip():
        raise NodeError("the Python code is empty")
    tz_name = str(data.get("timezone") or settings.timezone)
    try:
        zone = ZoneInfo(tz_name)
    except Exception as exc:
        raise NodeError(f"unknown timezone '{tz_name}'") from exc
    now = datetime.now(zone)
    today = now.replace(hour=0, minute=0, second=0, microsecond=0)
    timeout = float(settings.python_timeout_s)
    request = {
        "code": code,
        "data": data,
        "mode": mode,
        "now": _luxon_iso(now),
        "today": _luxon_iso(today),
        "utc": tz_name.upper() in ("UTC", "ETC/UTC", "Z", "GMT"),
        "read_roots": _read_roots(),
        "limits": {"memory_bytes": int(settings.python_memory_mb) * 1024 * 1024, "cpu_s": max(1, math.ceil(timeout))},
    }
    try:
        payload = json.dumps(request, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise NodeError(f"input data is not JSON: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="hive-py-") as cwd:
        try:
            proc = subprocess.run(  # noqa: S603 - fixed argv: this interpreter, isolated mode, our bootstrap
                [sys.executable, "-I", "-S", "-c", _BOOTSTRAP],
                input=payload, capture_output=True, timeout=timeout, env={}, cwd=cwd, check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise NodeError(f"Python code timed out after {timeout:g} s") from exc
    out = proc.stdout.decode("utf-8", "replace").strip()
    if not out:
        if proc.returncode in (-24, -9) or proc.returncode == 128 + 24:   # SIGXCPU / SIGKILL from the CPU limit
            raise NodeError(f"Python code timed out after {timeout:g} s (CPU limit)")
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        if any("MemoryError" in line for line in err):
            raise NodeError(f"Python code exceeded the memory limit ({settings.python_memory_mb} MB)")
        raise NodeError("Python code failed", description=(err[-1] if err else f"exit status {proc.returncode}"))
    try:
        answer = json.loads(out)
    except ValueError as exc:
        raise NodeError("Python code returned output that is not JSON") from exc
    error = answer.get("error")
    if error:
        if error.get("memory"):
            raise NodeError(f"Python code exceeded the memory limit ({settings.python_memory_mb} MB)")
        message = str(error.get("message"))
        line = error.get("line")
        item_index = int(data.get("itemIndex") or 0) if mode in _PER_ITEM_MODES else None
        if line is not None and item_index is not None:
            message = f"{message} [line {line}, for item {item_index}]"
        elif line is not None:
            message = f"{message} [line {line}]"
        elif item_index is not None:
            message = f"{message} [item {item_index}]"
        description = None if error.get("n8n") else str(error.get("name"))
        raise NodeError(message, description=description, item_index=item_index)
    return answer.get("value")
