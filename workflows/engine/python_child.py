"""The program a Python Code node runs in: ``python -I -S python_child.py`` (stdlib only).

It reads one JSON request on stdin, locks itself in with the kernel, then runs the
user's code and writes one JSON answer to stdout. Everything the user's code could
switch off from inside this interpreter is a convenience here, never a defence; the
containment is what the kernel enforces once :func:`lock_down` has run, and none of
it can be undone by the process:

* **uid** — when started as root, the process drops to ``nobody`` for good (no
  groups, no capabilities). If the standard library sits under a directory ``nobody``
  cannot enter (pyenv's ``/root/.pyenv``), a private mount namespace first covers that
  directory with an empty tmpfs and binds the standard library back, read-only;
* **Landlock** — file access is limited to reading the standard library (not the
  third-party packages in its site-packages) and the time zone database: no other
  reads, no writes, no new files anywhere; TCP bind/connect (ABI 4+) and signals or
  abstract unix sockets outside the sandbox (ABI 6+) are refused too;
* **seccomp** — an allow-list: memory, reading and writing open files, time, its own
  signals; everything else fails with EPERM — sockets of any family, processes and
  threads, exec, signals to others, ptrace, namespaces, mounts, io_uring, bpf,
  memfd, fallocate, inotify, xattrs, locks, priorities, prctl (so PDEATHSIG stays),
  and every system call newer than the list; a system call of a foreign ABI
  (32-bit ``int 0x80``, x32) kills the process;
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

# The request (input items from other nodes) is parsed within the address-space limit,
# which therefore comes on the command line.
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[1]), int(sys.argv[1])))
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
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
NOBODY = 65534
CLONE_NEWNS = 0x00020000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]


def _check(result, what):
    if result < 0:
        err = ctypes.get_errno()
        raise SandboxUnavailable(f"{what} failed: {os.strerror(err)} (errno {err})")
    return result


def _mount(source, target, fstype, flags, data=None):
    def enc(value):
        return value.encode() if isinstance(value, str) else value
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount({target})")


def expose(roots, hidden_tops):
    """Let nobody reach ``roots`` that lie under directories it cannot enter (pyenv's /root):
    in a mount namespace of this process only, an empty tmpfs covers each such directory
    and the roots are bound back, read-only, at their own paths. Everything else that was
    under those directories is gone from this process's view."""
    _check(_libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    # Opened in the new namespace (a bind mount's source must be one of its own mounts),
    # before the tmpfs hides the paths.
    fds = {root: os.open(root, os.O_PATH | os.O_DIRECTORY) for root in roots}
    for top in hidden_tops:
        _mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=64k")
    for root, fd in fds.items():
        if any(root == top or root.startswith(top + "/") for top in hidden_tops):
            os.makedirs(root, mode=0o755, exist_ok=True)
            _mount(f"/proc/self/fd/{fd}", root, None, MS_BIND | MS_REC)
            _mount(None, root, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)


def drop_root(spec):
    """When started as root: make the read roots reachable, then become nobody for good
    (no groups, an empty capability bounding set, no capabilities)."""
    if os.geteuid() != 0:
        return
    if spec["hidden_tops"]:
        expose(spec["read_roots"], spec["hidden_tops"])
    for cap in range(64):
        if _libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 and ctypes.get_errno() == errno.EINVAL:
            break   # past the last capability this kernel knows
    os.setgroups([])
    os.setresgid(NOBODY, NOBODY, NOBODY)
    os.setresuid(NOBODY, NOBODY, NOBODY)   # clears every capability
    if 0 in os.getresuid() or 0 in os.getresgid():
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


def _readable(read_roots):
    """(path, rights) rules: each root readable, except third-party packages installed in
    the standard library's own directory (site-packages), whose names stay listable only."""
    for root in read_roots:
        names = os.listdir(root)
        if "site-packages" not in names and "dist-packages" not in names:
            yield root, FS_READ_FILE | FS_READ_DIR
            continue
        yield root, FS_READ_DIR
        for name in names:
            if name in ("site-packages", "dist-packages"):
                continue
            path = os.path.join(root, name)
            yield path, FS_READ_FILE | FS_READ_DIR if os.path.isdir(path) else FS_READ_FILE


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
    for path, rights in _readable(read_roots):
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        rule = _PathBeneath(rights, fd)
        _check(_libc.syscall(SYS_LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule),
                             ctypes.c_uint32(0)), f"landlock_add_rule({path})")
        os.close(fd)
    _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)), "landlock_restrict_self")
    os.close(ruleset)


# seccomp through libseccomp (it knows each architecture's syscall numbers and adds
# the architecture check). An allow-list: anything not named here fails with EPERM,
# including system calls newer than this list. What a permitted open() may reach is
# Landlock's decision; the rest is each call's own business within this process.
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_FLTATR_ACT_BADARCH = 2
SCMP_CMP_EQ, SCMP_CMP_MASKED_EQ = 4, 7
ALLOWED = (
    # memory
    "brk", "mmap", "munmap", "mremap", "mprotect", "madvise", "msync", "mincore",
    # files already open or opened under Landlock
    "read", "write", "readv", "writev", "pread64", "pwrite64", "preadv", "pwritev",
    "lseek", "close", "close_range", "open", "openat", "openat2", "stat", "fstat", "lstat", "newfstatat",
    "statx", "access", "faccessat", "faccessat2", "readlink", "readlinkat", "getdents64", "getcwd", "dup",
    "dup2", "dup3", "statfs", "fstatfs", "fsync", "fdatasync", "pipe", "pipe2",
    "select", "pselect6", "poll", "ppoll", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_wait",
    "epoll_pwait", "epoll_pwait2",
    # time
    "clock_gettime", "clock_getres", "clock_nanosleep", "nanosleep", "gettimeofday", "time", "times",
    "getitimer", "setitimer", "alarm",
    # about itself
    "getpid", "getppid", "gettid", "getuid", "geteuid", "getgid", "getegid", "getgroups", "getresuid",
    "getresgid", "getpgrp", "getpgid", "getsid", "getrusage", "sysinfo", "uname", "sched_yield", "getcpu",
    "getrandom", "capget", "rseq", "set_robust_list", "set_tid_address", "restart_syscall",
    "exit", "exit_group",
    # its own signal handling
    "rt_sigaction", "rt_sigprocmask", "rt_sigreturn", "rt_sigpending", "rt_sigsuspend", "rt_sigtimedwait",
    "sigaltstack", "pause",
)
F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC = 0, 1, 2, 3, 4, 1030
# ioctl: asking whether an fd is a terminal, (non)blocking and close-on-exec flags, bytes
# waiting; not the file-system ioctls that map the disk or name its UUID.
TCGETS, TIOCGWINSZ, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX = 0x5401, 0x5413, 0x541B, 0x5421, 0x5450, 0x5451
FUTEX_PRIVATE_FLAG = 128
AF_UNIX, SOCK_STREAM, SOCK_TYPE_MASK = 1, 1, 0xF


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
    ctx = lib.seccomp_init(0x00050000 | errno.EPERM)
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

    for name in ALLOWED:
        rule(name, SCMP_ACT_ALLOW)
    pid = os.getpid()
    # Only this process: signals to itself, its own CPU set and limits (read), and no
    # fcntl that sends signals (F_SETOWN/F_SETSIG) or takes locks other processes see.
    for name, arg in (("kill", 0), ("tkill", 0), ("tgkill", 0), ("sched_getaffinity", 0)):
        rule(name, SCMP_ACT_ALLOW, _ArgCmp(arg, SCMP_CMP_EQ, pid, 0))
    rule("sched_getaffinity", SCMP_ACT_ALLOW, _ArgCmp(0, SCMP_CMP_EQ, 0, 0))
    # asyncio wakes its event loop through a socketpair: a unix stream pair is connected only
    # to itself, and with socket(), connect() and accept() refused (and no process to pass an
    # fd to) the socket calls below can only ever reach such a pair. Not a datagram pair:
    # sendto() with an address sends from one to any unix datagram socket (/dev/log).
    rule("socketpair", SCMP_ACT_ALLOW, _ArgCmp(0, SCMP_CMP_EQ, AF_UNIX, 0),
         _ArgCmp(1, SCMP_CMP_MASKED_EQ, SOCK_TYPE_MASK, SOCK_STREAM))
    for name in ("sendto", "recvfrom", "sendmsg", "recvmsg", "shutdown", "getsockopt", "setsockopt", "getsockname",
                 "getpeername"):
        rule(name, SCMP_ACT_ALLOW)
    rule("prlimit64", SCMP_ACT_ALLOW, _ArgCmp(0, SCMP_CMP_EQ, 0, 0), _ArgCmp(2, SCMP_CMP_EQ, 0, 0))
    for command in (F_DUPFD, F_GETFD, F_SETFD, F_GETFL, F_SETFL, F_DUPFD_CLOEXEC):
        rule("fcntl", SCMP_ACT_ALLOW, _ArgCmp(1, SCMP_CMP_EQ, command, 0))
    for command in (TCGETS, TIOCGWINSZ, FIONREAD, FIONBIO, FIONCLEX, FIOCLEX):
        rule("ioctl", SCMP_ACT_ALLOW, _ArgCmp(1, SCMP_CMP_EQ, command, 0))
    # Private futexes only: a shared one on a mapped stdlib file would be a channel to
    # another node mapping the same file.
    rule("futex", SCMP_ACT_ALLOW, _ArgCmp(1, SCMP_CMP_MASKED_EQ, FUTEX_PRIVATE_FLAG, FUTEX_PRIVATE_FLAG))
    # No threads either: one process, one fd table, nothing that outlives exit_group.
    # clone3 passes its flags in memory, so it answers ENOSYS (the C library's cue to try clone).
    rule("clone3", 0x00050000 | errno.ENOSYS)

    def load():
        result = lib.seccomp_load(ctx)
        if result < 0:
            raise SandboxUnavailable(f"seccomp_load failed: {os.strerror(-result)}")
    return load


def lock_down(spec):
    """Apply every limit in ``spec`` (built by python_sandbox.py) or raise SandboxUnavailable."""
    for name, value in (("RLIMIT_CPU", spec["cpu_s"]), ("RLIMIT_FSIZE", spec["output_bytes"]), ("RLIMIT_CORE", 0),
                        ("RLIMIT_NOFILE", 64), ("RLIMIT_MEMLOCK", 0), ("RLIMIT_MSGQUEUE", 0),
                        ("RLIMIT_SIGPENDING", 16)):
        resource.setrlimit(getattr(resource, name), (value, value))
    drop_root(spec)
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

# The input items, wrapped once: _input.all(), _input.item, _json, items and item are the
# same objects, so code that changes them and returns _input.all() (n8n's own template)
# returns its changes.
_ALL = _wrap((data.get("input") or {}).get("all") or [])
_raw_item = (data.get("input") or {}).get("item")
_ITEM = _ALL[item_index] if 0 <= item_index < len(_ALL) and _ALL[item_index] == _raw_item else _wrap(_raw_item)
_BRANCHES = {}


class _Input:
    def all(self, branch_index=0):
        if branch_index:
            if branch_index not in _BRANCHES:
                inputs = data.get("inputs") or []
                _BRANCHES[branch_index] = _wrap(inputs[branch_index] if branch_index < len(inputs) else [])
            return _BRANCHES[branch_index]
        return _ALL
    def first(self):
        return _ALL[0] if _ALL else None
    def last(self):
        return _ALL[-1] if _ALL else None
    @property
    def item(self):
        return _ITEM
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

_current_json = _ITEM.get("json") if isinstance(_ITEM, dict) and isinstance(_ITEM.get("json"), dict) else _Obj()
g = {
    "__name__": "__n8n_code__",
    "_input": _Input(),
    "_json": _current_json,
    "_binary": _wrap((_raw_item or {}).get("binary") or {}),
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
    g["item"] = _ITEM
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
    elif isinstance(e, RuntimeError) and "new thread" in msg:
        msg += " (Python Code nodes run without threads, as in n8n)"
    _answer({"error": {"name": type(e).__name__, "message": msg or type(e).__name__, "line": _line(e.__traceback__),
                       "n8n": isinstance(e, _Err)}})
