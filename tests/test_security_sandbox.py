"""Python Code nodes against an attacker who owns the interpreter they run in.

Every attack runs through the real workflow engine, and starts with TAMPER: the
user's code first overwrites every Python-level defence it can reach (the globals of
the child program, its functions, os.path.realpath, audit hooks), as the red team
did to the audit hook this sandbox used to have. What still stops the attack is the
kernel: seccomp, Landlock, rlimits, the uid and the process group. CI runs as root,
so the drop to ``nobody`` is exercised there.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import sysconfig
import textwrap
import threading
import time
from pathlib import Path

import psutil
import pytest
from django.conf import settings

from workflows.engine import python_sandbox
from workflows.engine.contract import EngineSettings
from workflows.engine.runtime import run_workflow

SETTINGS = EngineSettings(js_timeout_ms=1000, python_timeout_s=3, python_memory_mb=128)

# Switch off everything the child program does in Python: after this, only the
# kernel's limits are left.
TAMPER = textwrap.dedent("""
    import gc, os, sys, types
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and obj.__globals__.get("__name__") == "__main__":
            g = obj.__globals__
            for name in ("DENIED", "lock_down", "landlock", "seccomp_filter", "drop_root", "_hook",
                         "_BLOCKED", "_READ_ROOTS", "SandboxUnavailable"):
                if name in g:
                    g[name] = () if name.isupper() else (lambda *a, **k: None)
    frame = sys._getframe()
    while frame is not None:
        frame.f_globals["req"] = {"sandbox": {}}
        frame = frame.f_back
    os.path.realpath = lambda p, *a, **k: "/usr/lib/python3/x"
    sys.audit = lambda *a, **k: None
""")


def _run(body: str, settings: EngineSettings = SETTINGS) -> tuple[str, list[dict], str | None]:
    """Run TAMPER + body as a Python Code node; returns (status, output json items, error)."""
    code = TAMPER + textwrap.dedent(body)
    workflow = {
        "nodes": [
            {"name": "Trigger", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0],
             "parameters": {}},
            {"name": "Code", "type": "n8n-nodes-base.code", "typeVersion": 2, "position": [200, 0],
             "parameters": {"language": "python", "pythonCode": code}},
        ],
        "connections": {"Trigger": {"main": [[{"node": "Code", "type": "main", "index": 0}]]}},
    }
    result = run_workflow(workflow, settings=settings)
    runs = result.run_data.get("Code") or []
    items = [item["json"] for item in ((runs[-1].outputs or [[]])[0] if runs else [])]
    return result.status, items, result.error


def _refused(body: str) -> str:
    status, _, error = _run(body)
    assert status == "error", f"the attack succeeded: {body}"
    assert error
    return error


def _is_code_node(proc: psutil.Process) -> bool:
    try:
        return any(part.endswith("python_child.py") for part in proc.cmdline())
    except psutil.Error:
        return False


def _children_running() -> list[psutil.Process]:
    """Code-node processes of this test process, and any orphaned one (an escape, whoever's):
    not those of another test run sharing the machine."""
    ours = psutil.Process().children(recursive=True)
    orphans = [proc for proc in psutil.process_iter() if proc.ppid() in (0, 1)]
    return [proc for proc in [*ours, *orphans] if _is_code_node(proc)]


def test_ordinary_code_still_runs_with_the_standard_library():
    status, items, error = _run("""
        import json, math, re, hashlib, base64, zlib, decimal, statistics, uuid, zoneinfo, datetime, time, random
        time.sleep(0.01)
        return [{"sha": hashlib.sha256(b"x").hexdigest()[:6], "b64": base64.b64encode(b"hi").decode(),
                 "z": len(zlib.compress(b"a" * 100)), "tz": str(zoneinfo.ZoneInfo("Europe/Paris")),
                 "mean": statistics.mean([1, 2, 3]), "r": 0 <= random.random() < 1}]
    """)
    assert (status, error) == ("success", None)
    assert items == [{"sha": "2d7116", "b64": "aGk=", "z": 12, "tz": "Europe/Paris", "mean": 2, "r": True}]


def test_asyncio_runs_its_event_loop():
    status, items, error = _run("""
        import asyncio
        async def double(x):
            await asyncio.sleep(0.01)
            return 2 * x
        async def main():
            return await asyncio.gather(double(1), double(2))
        return [{"v": asyncio.run(main())}]
    """)
    assert (status, error, items) == ("success", None, [{"v": [2, 4]}])


def test_changes_to_the_input_items_are_returned_as_in_n8ns_template():
    status, items, error = _run("""
        for item in _input.all():
            item.json.myNewField = 1
        return _input.all()
    """)
    assert (status, error, items) == ("success", None, [{"myNewField": 1}])


def test_threads_are_refused_as_in_n8ns_own_python_runtime():
    error = _refused("import threading\nthreading.Thread(target=print).start()")
    assert "can't start new thread" in error


@pytest.mark.skipif(os.geteuid() != 0, reason="the uid drop happens only when Hive runs as root")
def test_code_runs_as_nobody_without_capabilities_when_hive_runs_as_root():
    status, items, _ = _run("""
        import os
        return [{"ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid()], "groups": os.getgroups()}]
    """)
    assert status == "success"
    assert items == [{"ids": [65534, 65534, 65534, 65534], "groups": []}]


@pytest.mark.parametrize("path", [
    "/etc/passwd",
    "/etc/hostname",
    str(Path(settings.VAR_DIR) / "secret_key"),
    str(Path(settings.VAR_DIR) / "jwt_signing_key"),
    f"/proc/{os.getpid()}/environ",       # the worker's environment (it held HIVE_ADMIN_PASSWORD)
    "/proc/self/environ",
    "/proc/self/maps",
    str(Path(__file__)),                  # Hive's own source
    sys.prefix + "/pyvenv.cfg",
    # third-party packages: Hive's own dependencies, and those installed beside the stdlib
    str(Path(psutil.__file__)),
    str(Path(sysconfig.get_path("purelib", vars={"base": sys.base_prefix})) / "pip" / "__init__.py"),
    str(Path.home() / ".bashrc"),
])
def test_it_cannot_read_files_outside_the_standard_library(path):
    error = _refused(f"return [{{'data': open({path!r}, 'rb').read(64).hex()}}]")
    assert "Permission denied" in error or "Operation not permitted" in error or "No such file" in error


def test_it_cannot_list_directories_outside_the_standard_library():
    _refused("import os\nreturn [{'ls': os.listdir('/')}]")
    _refused(f"import os\nreturn [{{'ls': os.listdir({str(settings.VAR_DIR)!r})}}]")


def test_it_cannot_write_anywhere_not_even_into_the_python_installation(tmp_path):
    stdlib = Path(sysconfig.get_path("stdlib"))
    target = stdlib / "hive_sandbox_probe.py"
    victim = stdlib / "this.py"
    before = victim.read_bytes()
    for body in (
        f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)",
        f"import os\nos.open({str(victim)!r}, os.O_WRONLY | os.O_TRUNC)",
        f"open({str(victim)!r}, 'r+b').write(b'x')",
        f"import os\nos.truncate({str(victim)!r}, 0)",
        f"open({str(tmp_path / 'out')!r}, 'w').write('x')",
        "open('/tmp/hive-sandbox-probe', 'w').write('x')",
        "import os\nos.mkdir('/tmp/hive-sandbox-dir')",
        f"import os\nos.symlink('/etc/passwd', {str(tmp_path / 'link')!r})",
        "import os\nos.mkfifo('/tmp/hive-sandbox-fifo')",
    ):
        _refused(body)
    assert not target.exists()
    assert victim.read_bytes() == before
    assert list(tmp_path.iterdir()) == []
    assert not any(Path("/tmp", n).exists() for n in ("hive-sandbox-probe", "hive-sandbox-dir", "hive-sandbox-fifo"))


def test_proc_self_mem_cannot_be_opened():
    _refused("open('/proc/self/mem', 'r+b')")


@pytest.fixture()
def listener():
    """A TCP server on loopback that records whether anybody connected."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join(2)
    server.close()


def test_it_cannot_open_any_socket(listener):
    port, accepted = listener
    for body in (
        f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)",
        "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('127.0.0.1', 53))",
        "import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_STREAM)",
        "import socket\nsocket.socketpair(socket.AF_INET)",   # a unix stream pair (asyncio's wake-up) reaches only itself
        # a datagram pair could sendto() any unix datagram socket by path (/dev/log)
        "import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\na.sendto(b'x', '/dev/log')",
        "import socket\nsocket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)",
        f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(Path(settings.VAR_DIR) / 'redis.sock')!r})",
        "import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect('\\0hive-abstract')",
        # straight to the kernel, past Python's socket module
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.syscall(41, 2, 1, 0)\nassert fd < 0, fd\nraise PermissionError(ctypes.get_errno(), 'refused')",
    ):
        _refused(body)
    time.sleep(0.3)
    assert accepted == []


def test_it_cannot_start_processes_by_any_route():
    marker = Path("/tmp/hive-sandbox-ran")
    marker.unlink(missing_ok=True)
    for body in (
        "import os\nos.fork()",
        "import os\nos.system('touch /tmp/hive-sandbox-ran')",
        "import subprocess\nsubprocess.run(['touch', '/tmp/hive-sandbox-ran'])",
        "import os\nos.posix_spawn('/usr/bin/touch', ['touch', '/tmp/hive-sandbox-ran'], {})",
        "import os\nos.execv('/usr/bin/touch', ['touch', '/tmp/hive-sandbox-ran'])",
        "import _posixsubprocess, os\n"
        "_posixsubprocess.fork_exec(['touch', '/tmp/hive-sandbox-ran'], [b'/usr/bin/touch'], True, (), None, None,"
        " -1, -1, -1, -1, -1, -1, *os.pipe(), False, False, -1, None, None, None, -1, None, False)",
        "import ctypes\nr = ctypes.CDLL(None).system(b'touch /tmp/hive-sandbox-ran')\n"
        "raise PermissionError(1, f'system returned {r}')",
        "import ctypes\npid = ctypes.CDLL(None).fork()\nassert pid < 0, pid\nraise PermissionError(1, 'fork refused')",
        # clone(SIGCHLD) = fork; x86_64 syscall 56
        "import ctypes\nr = ctypes.CDLL(None).syscall(56, 17, 0, 0, 0, 0)\nassert r < 0, r\n"
        "raise PermissionError(1, 'clone refused')",
    ):
        _refused(body)
    time.sleep(0.2)
    assert not marker.exists()


def test_a_double_forked_child_cannot_outlive_the_node():
    _refused("""
        import os, time
        if os.fork() == 0:
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
    """)
    assert _children_running() == []


def test_a_sleeping_node_is_killed_at_its_timeout():
    fast = EngineSettings(python_timeout_s=1, python_memory_mb=128)
    started = time.monotonic()
    status, _, error = _run("import time\ntime.sleep(60)", settings=fast)
    assert status == "error" and "timed out" in error
    assert time.monotonic() - started < 10
    assert _children_running() == []


def test_it_cannot_signal_other_processes():
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        for target in (victim.pid, os.getpid(), 1, -1):
            _refused(f"import os, signal\nos.kill({target}, signal.SIGKILL)")
        _refused(f"import ctypes\nr = ctypes.CDLL(None).syscall(62, {victim.pid}, 9)\nassert r < 0, r\n"
                 "raise PermissionError(1, 'kill refused')")
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_it_cannot_trace_or_read_another_process():
    _refused(f"""
        import ctypes
        libc = ctypes.CDLL(None)
        r = libc.ptrace(16, {os.getpid()}, 0, 0)   # PTRACE_ATTACH
        assert r < 0, r
        raise PermissionError(1, 'ptrace refused')
    """)


def test_it_cannot_regain_privileges_or_leave_its_namespaces():
    for body in (
        "import os\nos.setuid(0)",
        "import ctypes\nr = ctypes.CDLL(None).unshare(0x10000000)\nassert r < 0, r\n"   # CLONE_NEWUSER
        "raise PermissionError(1, 'unshare refused')",
        "import os\nos.setsid()",
        "import resource\nresource.setrlimit(resource.RLIMIT_CPU, (10**6, 10**6))",
        "import ctypes\nr = ctypes.CDLL(None).syscall(425, 64, 0)\nassert r < 0, r\n"   # io_uring_setup
        "raise PermissionError(1, 'io_uring refused')",
    ):
        _refused(body)


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="x86-64 machine code")
def test_a_syscall_through_the_32_bit_abi_kills_the_node():
    # mov eax, 359 (socket on i386); int 0x80; ret -- past the filter if it only knew x86-64 numbers
    error = _refused("""
        import ctypes, mmap
        code = bytes([0xB8, 0x67, 0x01, 0x00, 0x00, 0xCD, 0x80, 0xC3])
        buf = mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        buf.write(code)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        r = ctypes.CFUNCTYPE(ctypes.c_int)(addr)()
        raise PermissionError(1, f'int 0x80 returned {r}')
    """)
    assert "killed by the sandbox" in error or "refused" in error
    # x32 ABI: socket with __X32_SYSCALL_BIT
    _refused("import ctypes\nr = ctypes.CDLL(None).syscall(0x40000000 + 41, 2, 1, 0)\nassert r < 0, r\n"
             "raise PermissionError(1, 'x32 refused')")


def test_memory_cpu_and_output_are_bounded():
    fast = EngineSettings(python_timeout_s=1.5, python_memory_mb=128)
    status, _, error = _run("a = bytearray(1024 ** 3)", settings=fast)
    assert status == "error" and "memory limit" in error
    status, _, error = _run("while True:\n    pass", settings=fast)
    assert status == "error" and "timed out" in error
    status, _, error = _run("import os\nwhile True:\n    os.write(1, b'x' * 65536)", settings=fast)
    assert status == "error" and "output" in error
    assert _children_running() == []


def test_the_node_dies_with_its_worker(tmp_path):
    """A worker killed mid-node (kill -9) takes its code node with it (PR_SET_PDEATHSIG)."""
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
        from workflows.engine.contract import EngineSettings
        from workflows.engine.python_sandbox import run_python
        run_python("import time\\ntime.sleep(60)", {{"input": {{"all": []}}}}, mode="runOnceForAllItems",
                   settings=EngineSettings(python_timeout_s=60))
    """))
    worker = subprocess.Popen([sys.executable, str(script)])
    try:
        deadline = time.monotonic() + 20
        nodes: list[psutil.Process] = []
        while not nodes and time.monotonic() < deadline:
            time.sleep(0.1)
            nodes = [p for p in psutil.Process(worker.pid).children(recursive=True) if _is_code_node(p)]
        assert nodes, "the code node never started"
        time.sleep(0.5)   # past the child's lock-down
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        deadline = time.monotonic() + 5
        while any(node.is_running() and node.status() != psutil.STATUS_ZOMBIE for node in nodes) \
                and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(node.is_running() and node.status() != psutil.STATUS_ZOMBIE for node in nodes)
    finally:
        worker.kill()
        worker.wait()


def test_code_nodes_refuse_to_run_when_the_kernel_sandbox_is_missing(monkeypatch):
    monkeypatch.setattr(python_sandbox, "LIBSECCOMP", "libseccomp-missing.so.9")
    status, _, error = _run("return [{'ran': True}]")
    assert status == "error"
    assert python_sandbox.SANDBOX_UNAVAILABLE in error and "libseccomp" in error


def test_one_execution_never_sees_another_executions_javascript_globals():
    def js(code: str) -> list[dict]:
        workflow = {
            "nodes": [
                {"name": "Trigger", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0],
                 "parameters": {}},
                {"name": "Code", "type": "n8n-nodes-base.code", "typeVersion": 2, "position": [200, 0],
                 "parameters": {"jsCode": code}},
            ],
            "connections": {"Trigger": {"main": [[{"node": "Code", "type": "main", "index": 0}]]}},
        }
        result = run_workflow(workflow, settings=SETTINGS)
        assert result.status == "success", result.error
        return [item["json"] for item in result.run_data["Code"][-1].outputs[0]]

    js("globalThis.stolen = 'secret'; Object.prototype.polluted = 'yes'; "
       "Array.prototype.map = () => ['hijacked']; return [{}];")
    seen = js("return [{stolen: typeof globalThis.stolen, polluted: ({}).polluted === undefined, "
              "map: [1, 2].map(x => x * 2)}];")
    assert seen == [{"stolen": "undefined", "polluted": True, "map": [2, 4]}]


def test_host_resources_the_rlimits_do_not_count_are_refused():
    """Found by attacking the first version: kernel objects outside RLIMIT_AS/FSIZE/NOFILE."""
    for body in (
        # disk: reserve blocks on the output file without growing its size
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]\n"
        "r = libc.fallocate(2, 1, 0, 30 << 30)\nassert r < 0, r\nraise PermissionError(1, 'fallocate refused')",
        # memory: shared memory files are not address space
        "import os\nos.memfd_create('x')",
        # a thread-like task with a private fd table (no CLONE_FILES), past RLIMIT_NOFILE
        "import ctypes\nr = ctypes.CDLL(None).syscall(56, 0x00010000 | 0x00000100 | 0x00000800, 0, 0, 0, 0)\n"
        "assert r < 0, r\nraise PermissionError(1, 'clone refused')",
        # outliving the worker: clearing PR_SET_PDEATHSIG
        "import ctypes\nr = ctypes.CDLL(None).prctl(1, 0, 0, 0, 0)\nassert r < 0, r\n"
        "raise PermissionError(1, 'prctl refused')",
        # system calls newer than libseccomp's tables (setxattrat, 463 on x86-64)
        "import ctypes\nr = ctypes.CDLL(None).syscall(463, -100, b'/tmp', 0, b'user.x', 0, 0)\nassert r < 0, r\n"
        "raise PermissionError(1, 'setxattrat refused')",
        # watching what the worker opens, and nudging other processes' priorities
        "import ctypes\nr = ctypes.CDLL(None).inotify_init()\nassert r < 0, r\nraise PermissionError(1, 'refused')",
        "import os\nos.setpriority(os.PRIO_USER, 65534, 19)",
        "import os\nos.sched_setaffinity(1, {0})",
        "import fcntl\nfcntl.flock(open('/usr/share/zoneinfo/UTC'), fcntl.LOCK_EX)",
    ):
        _refused(body)


def test_channels_to_other_nodes_and_the_disk_layout_are_refused():
    """Found by the second attack round: what the allow-list first let through."""
    for body in (
        # FS_IOC_GETFSMAP on the output file: the root disk's block map
        "import fcntl\nfcntl.ioctl(1, 0xC0C0583B, bytes(192))",
        # a shared futex on a mapped stdlib file: a channel to another node mapping it
        "import ctypes, mmap\nm = mmap.mmap(open('/usr/share/zoneinfo/UTC', 'rb').fileno(), 0, prot=mmap.PROT_READ)\n"
        "addr = ctypes.addressof(ctypes.c_char.from_buffer_copy(b'x'))\n"
        "r = ctypes.CDLL(None).syscall(202, addr, 1, 1, 0, 0, 0)\nassert r < 0, r\n"
        "raise PermissionError(1, 'shared futex refused')",
        # evicting stdlib pages from the page cache everybody shares
        "import os\nfd = os.open('/usr/share/zoneinfo/UTC', os.O_RDONLY)\n"
        "os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)",
    ):
        _refused(body)


def test_an_answer_the_engine_could_not_hold_is_refused():
    status, _, error = _run("import os\nos.write(1, b'{\"value\": [' + b'{},' * 200_000 + b'{}]}')\nos._exit(0)")
    assert status == "error" and "200001 items; at most 100000" in error
    status, _, error = _run("return [{'x': 'y' * (9 * 1024 * 1024)}]")
    assert status == "error" and "more than 8 MB" in error
    status, _, error = _run("import os\nos.write(1, b'{\"value\": [{\"a\": [' + b'{},' * 600_000 + b'{}]}]}')\n"
                            "os._exit(0)")
    assert status == "error" and "more than 500000 objects and arrays" in error
    status, _, error = _run("import os\nos.write(1, b'{\"error\": \"forged\"}')\nos._exit(0)")
    assert status == "error" and error == "Python code failed"


def test_whatever_came_in_may_go_out_even_past_the_fixed_caps():
    """The answer caps grow with the input: a node passing 9 MB of items on still works."""
    workflow = {
        "nodes": [
            {"name": "Trigger", "type": "n8n-nodes-base.manualTrigger", "typeVersion": 1, "position": [0, 0],
             "parameters": {}},
            {"name": "Make", "type": "n8n-nodes-base.code", "typeVersion": 2, "position": [200, 0],
             "parameters": {"jsCode": "return Array.from({length: 30000}, (_, i) => ({json: {i, s: 'x'.repeat(300)}}));"}},
            {"name": "Code", "type": "n8n-nodes-base.code", "typeVersion": 2, "position": [400, 0],
             "parameters": {"language": "python", "pythonCode": "return _input.all()"}},
        ],
        "connections": {"Trigger": {"main": [[{"node": "Make", "type": "main", "index": 0}]]},
                        "Make": {"main": [[{"node": "Code", "type": "main", "index": 0}]]}},
    }
    result = run_workflow(workflow, settings=SETTINGS)
    assert result.status == "success", result.error
    assert len(result.run_data["Code"][-1].outputs[0]) == 30000
