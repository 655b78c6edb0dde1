"""The program a Python Code node runs in: ``python -I -S python_child.py`` (stdlib only).

It reads one JSON request on stdin, locks itself in with the kernel, then runs the
user's code and writes one JSON answer to stdout. Everything the user's code could
switch off from inside this interpreter is a convenience here, never a defence; the
containment is what the kernel enforces once :func:`lock_down` has run, and none of
it can be undone by the process:

* **uid** — when started as root, the process drops to ``nobody`` (no groups, no
  capabilities; only ``CAP_DAC_READ_SEARCH`` is kept when the standard library sits
  under a directory ``nobody`` cannot traverse, such as pyenv's ``/root/.pyenv``, and
  Landlock still limits what may be read to the paths below);
* **Landlock** — file access is limited to reading the standard library and the time
  zone database: no other reads, no writes, no new files anywhere; TCP bind/connect
  (ABI 4+) and signals or abstract unix sockets outside the sandbox (ABI 6+) are
  refused too;
* **seccomp** — no sockets of any family, no new processes (threads only), no exec,
  no signals to other processes, no ptrace or cross-process memory access, no
  namespaces, mounts, io_uring, bpf, keyrings or SysV IPC, no uid/permission changes;
  a syscall of a foreign ABI (32-bit ``int 0x80``, x32) kills the process;
* **rlimits** — address space, CPU seconds, output file size (stdout and stderr are
  files the parent reads), no core dumps; the parent kills the process group at the
  node's timeout, and the parent's death kills this process.

If any of it is unavailable the request is answered with ``{"sandbox": "<what is
missing>"}`` and the user's code never runs.
"""
import ast
import ctypes
import datetime
import decimal
import errno
import io
import json
import math
import os
import resource
import sys
import traceback

# Extension modules that load shared libraries from outside the standard library
# (libz, libcrypto, libffi ...): loaded now, before Landlock hides those directories.
for _ext in ("binascii", "zlib", "_hashlib", "_bz2", "_lzma", "_uuid"):
    try:
        __import__(_ext)
    except ImportError:
        pass

req = json.loads(sys.stdin.buffer.read())
_out = os.fdopen(os.dup(1), "w", encoding="utf-8")


def _answer(obj):
    try:
        text = json.dumps(obj, default=_default, allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(obj), default=_default)
    _out.write(text)
    _out.flush()


# --- Kernel containment --------------------------------------------------------

class SandboxUnavailable(Exception):
    """A kernel mechanism the sandbox needs is missing; the message names it."""


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]

PR_SET_PDEATHSIG = 1
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
NOBODY = 65534
CAP_DAC_READ_SEARCH = 2


def _check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(f"{what} failed: {os.strerror(err)} (errno {err})")
    return result


def drop_root(keep_read_search):
    """setuid to nobody for good; optionally keep only CAP_DAC_READ_SEARCH (see module doc)."""
    if os.geteuid() != 0:
        return
    for cap in range(64):
        if keep_read_search and cap == CAP_DAC_READ_SEARCH:
            continue
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() == errno.EINVAL:
            break   # past the last capability this kernel knows
    if keep_read_search:
        _check(_libc.prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)
    if keep_read_search:
        class Header(ctypes.Structure):
            _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

        class Data(ctypes.Structure):
            _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32)]

        header = Header(0x20080522, 0)   # _LINUX_CAPABILITY_VERSION_3
        data = (Data * 2)()
        data[0].effective = data[0].permitted = 1 << CAP_DAC_READ_SEARCH
        _check(_libc.syscall(126 if os.uname().machine == "x86_64" else 91, ctypes.byref(header), data), "capset")
    if os.getuid() == 0 or os.geteuid() == 0:
        raise SandboxUnavailable("could not drop root")


# Landlock (linux/landlock.h). The syscall numbers are the same on every architecture.
SYS_LANDLOCK_CREATE_RULESET, SYS_LANDLOCK_ADD_RULE, SYS_LANDLOCK_RESTRICT_SELF = 444, 445, 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 2, 1 << 3
FS_RIGHTS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock(read_roots):
    abi = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0),
                        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    if abi < 1:
        raise SandboxUnavailable("Landlock is not available in this kernel (needs Linux 5.13+ with "
                                 "CONFIG_SECURITY_LANDLOCK and 'landlock' in the lsm= boot list)")
    fs = FS_RIGHTS_BY_ABI[max(k for k in FS_RIGHTS_BY_ABI if k <= abi)]
    attr = _RulesetAttr(fs, NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0,
                        SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = _check(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size),
                                   ctypes.c_uint32(0)), "landlock_create_ruleset")
    for root in read_roots:
        fd = os.open(root, os.O_PATH | os.O_CLOEXEC)
        rule = _PathBeneath(FS_READ_FILE | FS_READ_DIR, fd)
        _check(_libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule),
                             ctypes.c_uint32(0)), f"landlock_add_rule({root})")
        os.close(fd)
    _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)), "landlock_restrict_self")
    os.close(ruleset)


# seccomp through libseccomp (it knows each architecture's syscall numbers and adds
# the architecture check). Default: allow; the calls below fail with EPERM.
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_CMP_NE, SCMP_CMP_MASKED_EQ = 1, 7
CLONE_THREAD = 0x00010000
DENIED = (
    # network, of any family
    "socket", "socketpair", "connect", "bind", "listen", "accept", "accept4", "sendto", "sendmsg", "sendmmsg",
    "recvfrom", "recvmsg", "recvmmsg", "getsockopt", "setsockopt", "getsockname", "getpeername", "shutdown",
    # new processes and programs (threads: see clone below)
    "fork", "vfork", "execve", "execveat",
    # other processes: signals, tracing, their memory, their resource limits
    "kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_open", "pidfd_send_signal",
    "pidfd_getfd", "ptrace", "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp",
    "setsid", "setpgid", "setrlimit",
    # identity and permissions
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups", "setfsuid", "setfsgid",
    "capset", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat", "utime",
    "utimes", "utimensat", "futimesat", "setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr",
    "fremovexattr", "truncate", "mknod", "mknodat", "open_by_handle_at", "name_to_handle_at",
    # namespaces, mounts, the kernel itself
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsconfig", "fsmount", "fspick", "mount_setattr", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup",
    "io_uring_enter", "io_uring_register", "keyctl", "add_key", "request_key", "init_module", "finit_module",
    "delete_module", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "syslog", "acct",
    "quotactl", "quotactl_fd", "personality", "uselib", "vhangup", "iopl", "ioperm", "modify_ldt",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
    "fanotify_init", "lookup_dcookie", "nfsservctl", "memfd_secret", "move_pages", "migrate_pages",
    # System V IPC and POSIX message queues reach other processes
    "shmget", "shmat", "shmctl", "shmdt", "semget", "semop", "semctl", "semtimedop", "msgget", "msgsnd",
    "msgrcv", "msgctl", "mq_open", "mq_unlink", "mq_timedsend", "mq_timedreceive", "mq_notify", "mq_getsetattr",
)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64),
                ("datum_b", ctypes.c_uint64)]


def seccomp_filter(library):
    """Build the filter (libseccomp is loaded now, before Landlock hides it); returns its loader."""
    try:
        lib = ctypes.CDLL(library, use_errno=True)
    except OSError as exc:
        raise SandboxUnavailable(f"libseccomp is not installed ({library}: {exc}); "
                                 "install the libseccomp2 package") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
                                           ctypes.POINTER(_ArgCmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    eperm = 0x00050000 | errno.EPERM
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise SandboxUnavailable("seccomp_init failed")
    result = lib.seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS)
    if result < 0:
        raise SandboxUnavailable(f"seccomp_attr_set failed: {os.strerror(-result)}")

    def rule(name, action, *cmps):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return   # not a syscall on this architecture
        array = (_ArgCmp * max(len(cmps), 1))(*cmps)
        result = lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
        if result < 0:
            raise SandboxUnavailable(f"seccomp rule for {name} failed: {os.strerror(-result)}")

    for name in DENIED:
        rule(name, eperm)
    # clone() makes threads (CLONE_THREAD set) or processes; clone3 passes its flags in
    # memory a filter cannot read, so it answers ENOSYS and the C library uses clone.
    rule("clone", eperm, _ArgCmp(0, SCMP_CMP_MASKED_EQ, CLONE_THREAD, 0))
    rule("clone3", 0x00050000 | errno.ENOSYS)
    # prlimit64 may read limits (new_limit NULL), never set them.
    rule("prlimit64", eperm, _ArgCmp(2, SCMP_CMP_NE, 0, 0))

    def load():
        result = lib.seccomp_load(ctx)
        if result < 0:
            raise SandboxUnavailable(f"seccomp_load failed: {os.strerror(-result)}")
    return load


def lock_down(spec):
    """Apply every limit in ``spec`` (built by python_sandbox.py) or raise SandboxUnavailable."""
    for name, value in (("RLIMIT_AS", spec["memory_bytes"]), ("RLIMIT_CPU", spec["cpu_s"]),
                        ("RLIMIT_FSIZE", spec["output_bytes"]), ("RLIMIT_CORE", 0), ("RLIMIT_NOFILE", 64)):
        resource.setrlimit(getattr(resource, name), (value, value))
    drop_root(spec["keep_read_search"])
    # The parent's death kills this process (set after the uid change, which clears it).
    _check(_libc.prctl(PR_SET_PDEATHSIG, 9, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != spec["parent_pid"]:
        os._exit(1)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    load_seccomp = seccomp_filter(spec["libseccomp"])
    landlock(spec["read_roots"])
    load_seccomp()
    os.close(0)


try:
    lock_down(req["sandbox"])
except (SandboxUnavailable, OSError) as exc:
    _out.write(json.dumps({"sandbox": str(exc)}))
    _out.flush()
    os._exit(3)


# --- n8n's helpers: _input, _json, _('Node') ... ---------------------------------------

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
        raise _Err(f"Referenced node doesn't exist: '{name}'")
    return info

def _outputs(name, info, run_index=None):
    if not info.get("isExecuted"):
        raise _Err(f"Can't get data for expression: node '{name}' hasn't been executed")
    last = (info.get("runs") or 1) - 1
    if run_index in (None, -1, last):
        return info.get("outputs") or [info.get("all") or []]
    runs = info.get("runOutputs")
    if runs and 0 <= run_index < len(runs):
        return runs[run_index] or []
    raise _Err(f'Run {run_index} of node "{name}" not found')

def _items(name, output_index=0, run_index=None):
    outs = _outputs(name, _info(name), run_index)
    output_index = output_index or 0
    if output_index < 0 or output_index >= max(len(outs), 1):
        raise _Err(f'The node "{name}" has no output with index {output_index}')
    return _wrap(outs[output_index] if output_index < len(outs) else [])

def _no_pair(name):
    here = (data.get("node") or {}).get("name") or "this node"
    return _Err(f"Can't get data for expression (no item of '{name}' matches this item of '{here}')")

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
            raise _Err(f'No data found for item-index: "{item_index}"')
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
        return f"{base}{sign}{total // 60:02d}:{total % 60:02d}"
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
    msg = str(e) if not isinstance(e, KeyError) else f"KeyError: {e}"
    if isinstance(e, PermissionError):
        msg += " (Python Code nodes cannot use files, the network or other processes)"
    _answer({"error": {"name": type(e).__name__, "message": msg or type(e).__name__, "line": _line(e.__traceback__),
                       "n8n": isinstance(e, _Err)}})
