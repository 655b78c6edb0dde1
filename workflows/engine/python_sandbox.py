"""Python Code nodes, each call in a fresh child process that the kernel contains.

CPython cannot be sandboxed from inside: whatever the user's code runs in, it can
rewrite. So the child (``python -I -S workflows/engine/python_child.py``: no site, no
user paths, an empty environment, ``/`` as cwd) reads its request, then, before any
user code is parsed, drops root, applies Landlock and a seccomp filter and sets
rlimits (python_child.py says exactly what each one refuses). The parent gives it
files for stdin, stdout and stderr (so the output-size limit is the kernel's
RLIMIT_FSIZE, not a read loop), starts it in a session of its own and kills that
process group when the node ends, whatever happened. Where the kernel lacks a
mechanism the node fails with a message naming it; nothing runs uncontained.

The helpers mirror n8n's Pyodide runner: ``_input.all()``, ``_input.item``, ``_json``,
``_('Name').first()``, ``_now``, ``_runIndex`` ... (``$x`` becomes ``_x``).
"""
from __future__ import annotations

import ctypes.util
import functools
import json
import math
import os
import re
import select
import signal
import subprocess
import sys
import sysconfig
import tempfile
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from workflows.engine.contract import EngineSettings, NodeError

__all__ = ["DISABLED_MESSAGE", "SANDBOX_UNAVAILABLE", "run_python"]

DISABLED_MESSAGE = "Python Code nodes are disabled on this Hive (HIVE_WORKFLOW_PYTHON_ENABLED=false)"
SANDBOX_UNAVAILABLE = "Python Code nodes cannot run here: the kernel sandbox is unavailable"

_PER_ITEM_MODES = {"runOnceForEachItem"}
_CHILD = str(Path(__file__).with_name("python_child.py"))
# Largest answer (JSON on stdout) a code node may write; stderr has the same cap. The
# engine's items cost far more than their JSON (a 63 MB answer of empty objects took a
# worker past 20 GB), so the answer is bounded in bytes and in items. Each bound grows to
# twice the node's input: whatever the engine already held may always come back.
OUTPUT_LIMIT_BYTES = 8 * 1024 * 1024
MAX_ITEMS = 100_000
MAX_CONTAINERS = 500_000   # objects and arrays at any depth: ~0.3 KB of worker memory each
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)
MAX_MESSAGE_CHARS = 2000
LIBSECCOMP = ctypes.util.find_library("seccomp") or "libseccomp.so.2"


@functools.cache
def _read_roots() -> tuple[str, ...]:
    """Directories the child may read: the base interpreter's standard library (imports;
    not a virtualenv's, whose site-packages hold Hive's own dependencies) and the tz database."""
    base = {"base": sys.base_prefix, "installed_base": sys.base_prefix,
            "platbase": sys.base_exec_prefix, "installed_platbase": sys.base_exec_prefix}
    roots = {os.path.realpath(sysconfig.get_path(name, vars=base)) for name in ("stdlib", "platstdlib")}
    if os.path.isdir("/usr/share/zoneinfo"):
        roots.add(os.path.realpath("/usr/share/zoneinfo"))
    return tuple(sorted(roots))


@functools.cache
def _hidden_tops(roots: tuple[str, ...]) -> tuple[str, ...]:
    """The outermost directories above ``roots`` that other users cannot enter (no o+x):
    a child that drops from root to nobody covers them to reach the roots (python_child.expose)."""
    tops: set[str] = set()
    for root in roots:
        for directory in reversed(Path(root).parents):
            if directory != Path("/") and not os.stat(directory).st_mode & 0o001:
                tops.add(str(directory))
                break
    return tuple(sorted(tops))


def _sandbox_spec(cpu_s: int, output_bytes: int = OUTPUT_LIMIT_BYTES) -> dict[str, Any]:
    roots = _read_roots()
    return {
        "read_roots": list(roots),
        "cpu_s": cpu_s,
        "output_bytes": output_bytes,
        "hidden_tops": list(_hidden_tops(roots)) if os.geteuid() == 0 else [],
        "parent_pid": os.getpid(),
        "libseccomp": LIBSECCOMP,
    }


def _exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    """Did the child exit within ``timeout``? It is not reaped here: until the process
    group is killed, its pid (the group's id) must not be free for reuse. A pidfd wakes
    us at the exit itself (Popen.wait(timeout) polls with sleeps of up to 50 ms)."""
    pidfd = os.pidfd_open(proc.pid)
    try:
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(pidfd)


def _kill_group(proc: subprocess.Popen[bytes]) -> int:
    """Kill whatever is left in the child's process group, then reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.wait()


def _containers(text: str, limit: int) -> int:
    """How many JSON objects and arrays ``text`` holds (brackets inside strings aside);
    exact only when the rough count is over ``limit``."""
    rough = text.count("{") + text.count("[")
    if rough <= limit:
        return rough
    return sum(1 for c in _JSON_STRING.sub("", text) if c in "{[")


def _tail(stream: IO[bytes], limit: int = 4096) -> str:
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    stream.seek(max(0, size - limit))
    return stream.read().decode("utf-8", "replace")


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
    memory = int(settings.python_memory_mb) * 1024 * 1024
    try:
        data_json = json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise NodeError(f"input data is not JSON: {exc}") from exc
    output_limit = max(OUTPUT_LIMIT_BYTES, 2 * len(data_json))
    max_items = max(MAX_ITEMS, 2 * len((data.get("input") or {}).get("all") or []))
    max_containers = max(MAX_CONTAINERS, 2 * (data_json.count("{") + data_json.count("[")))
    request = {
        "code": code,
        "mode": mode,
        "now": _luxon_iso(now),
        "today": _luxon_iso(today),
        "utc": tz_name.upper() in ("UTC", "ETC/UTC", "Z", "GMT"),
        "sandbox": _sandbox_spec(max(1, math.ceil(timeout)), output_limit),
    }
    payload = ('{"data": ' + data_json + ", " + json.dumps(request)[1:]).encode("utf-8")
    with tempfile.TemporaryFile() as stdin, tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        stdin.write(payload)
        stdin.seek(0)
        proc = subprocess.Popen(  # noqa: S603 - fixed argv: this interpreter, isolated mode, our child program
            [sys.executable, "-I", "-S", _CHILD, str(memory)], stdin=stdin, stdout=stdout, stderr=stderr, env={}, cwd="/",
            start_new_session=True,
        )
        exited = False
        try:
            exited = _exited(proc, timeout)
        finally:
            returncode = _kill_group(proc)
        if not exited:
            raise NodeError(f"Python code timed out after {timeout:g} s")
        size = stdout.seek(0, os.SEEK_END)
        stdout.seek(0)
        out = stdout.read(output_limit).decode("utf-8", "replace").strip()
        err = _tail(stderr).strip().splitlines()
    if returncode in (-signal.SIGXFSZ, 128 + signal.SIGXFSZ) or size >= output_limit:
        raise NodeError(f"Python code wrote more than {output_limit // (1024 * 1024)} MB of output")
    if not out:
        if returncode in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU):   # from the CPU limit
            raise NodeError(f"Python code timed out after {timeout:g} s (CPU limit)")
        if returncode == -signal.SIGSYS:
            raise NodeError("Python code was killed by the sandbox (a system call of a foreign architecture)")
        if any("MemoryError" in line for line in err):
            raise NodeError(f"Python code exceeded the memory limit ({settings.python_memory_mb} MB)")
        raise NodeError("Python code failed", description=(err[-1] if err else f"exit status {returncode}"))
    if _containers(out, max_containers) > max_containers:
        raise NodeError(f"Python code returned more than {max_containers} objects and arrays")
    try:
        answer = json.loads(out)
    except (ValueError, RecursionError, MemoryError) as exc:
        raise NodeError("Python code returned output that is not JSON") from exc
    if not isinstance(answer, dict):
        raise NodeError("Python code returned output that is not JSON")
    if "sandbox" in answer:
        raise NodeError(f"{SANDBOX_UNAVAILABLE}: {answer['sandbox']}")
    value = answer.get("value")
    if isinstance(value, list) and len(value) > max_items:
        raise NodeError(f"Python code returned {len(value)} items; at most {max_items} are allowed")
    error = answer.get("error")
    if error and not isinstance(error, dict):
        raise NodeError("Python code failed", description=str(error)[:1000])
    if error:
        if error.get("memory"):
            raise NodeError(f"Python code exceeded the memory limit ({settings.python_memory_mb} MB)")
        message = str(error.get("message"))[:MAX_MESSAGE_CHARS]
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
    return value
