"""A small process supervisor for the embedded default (``manage.py runhive``).

Each child runs in its own session (so its own process group): a Ctrl-C in the
terminal reaches only the supervisor, which then stops the children in order, and a
stop signal sent to a group also reaches the child's own children (Celery's pool
processes, a shell's commands). Output goes to ``<log_dir>/<name>.log``; lifecycle
events (start, death with exit code, restart, stop, kill) go to the given logger.

Ordering: a child started with ``wait_ready`` is treated as a dependency of every
child started after it. ``stop_all`` stops the dependents first (all of them at
once, each given ``timeout`` seconds before SIGKILL) and only then the dependency,
so Redis outlives the workers that are finishing their tasks.

No Django imports: this module is used before settings matter and in tests that need
no database.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

_PR_SET_PDEATHSIG = 1


class SupervisorError(RuntimeError):
    """A child could not be started or did not become ready."""


class StopRequested(SupervisorError):
    """A stop signal arrived while children were still being started."""


@dataclass
class ChildSpec:
    name: str
    argv: list[str]
    # Extra variables, merged over the supervisor's own environment at each start.
    env: dict[str, str] | None = None
    cwd: str | None = None
    stop_signal: int = signal.SIGTERM
    ready_check: Callable[[], bool] | None = None
    # Send the stop signal to the whole process group (True) or to the child only;
    # stragglers in the group are SIGKILLed after the timeout either way.
    signal_group: bool = True


@dataclass
class ChildStatus:
    name: str
    pid: int | None
    running: bool
    restarts: int
    last_exit_code: int | None


@dataclass
class _Child:
    spec: ChildSpec
    log_path: Path
    barrier: bool = False
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    restarts: int = 0
    last_exit_code: int | None = None
    next_delay: float = 0.0
    restart_at: float | None = None
    stopped: bool = False

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def _parent_death_preexec() -> Callable[[], None] | None:
    """On Linux, have each child get SIGTERM if the supervisor dies (even by SIGKILL),
    so a crashed supervisor leaves no Redis holding the socket under var/. The kernel
    ties this to the spawning *thread*: start and run the supervisor from one thread
    that lives as long as the children should."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        # The parent may have died between fork and prctl.
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Supervisor:
    def __init__(
        self,
        log_dir: Path,
        logger: logging.Logger,
        *,
        poll_interval: float = 0.5,
        backoff_initial: float = 1.0,
        backoff_max: float = 30.0,
        backoff_reset_after: float = 60.0,
        stop_timeout: float = 10.0,
        ready_poll_interval: float = 0.1,
        die_with_parent: bool = True,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.logger = logger
        self.poll_interval = poll_interval
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.backoff_reset_after = backoff_reset_after
        self.stop_timeout = stop_timeout
        self.ready_poll_interval = ready_poll_interval
        self._preexec = _parent_death_preexec() if die_with_parent else None
        self._children: list[_Child] = []
        self._stop_requested = False
        self._stopping = False
        self._old_handlers: dict[int, object] = {}

    # --- public API -----------------------------------------------------------

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def request_stop(self) -> None:
        """Ask ``run_forever`` to stop all children and return (any thread)."""
        self._stop_requested = True

    def start(self, spec: ChildSpec, wait_ready: float | None = None) -> subprocess.Popen[bytes]:
        """Start a child. With ``wait_ready``, wait that many seconds for its
        ``ready_check`` to pass (and treat it as a dependency of later children).
        Raises SupervisorError if it exits or times out first (the child is then
        stopped and forgotten), StopRequested if a stop signal has arrived."""
        if self._stop_requested:
            raise StopRequested("stop requested")
        if any(child.spec.name == spec.name for child in self._children):
            raise ValueError(f"a child named {spec.name!r} is already supervised")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        child = _Child(spec=spec, log_path=self.log_dir / f"{spec.name}.log",
                       barrier=wait_ready is not None, next_delay=self.backoff_initial)
        try:
            self._spawn(child)
        except OSError as exc:
            raise SupervisorError(f"{spec.name}: cannot start {spec.argv[0]!r}: {exc}") from exc
        self._children.append(child)
        if wait_ready is not None and spec.ready_check is not None:
            try:
                self._wait_ready(child, wait_ready)
            except SupervisorError:
                self._children.remove(child)
                self._stop_group([child], self.stop_timeout)
                raise
            self.logger.info("%s is ready", spec.name)
        assert child.process is not None
        return child.process

    def run_forever(self) -> None:
        """Watch the children, restart those that die, until SIGINT/SIGTERM (or
        ``request_stop``); then stop them all and return. A second signal kills
        every child at once and raises KeyboardInterrupt."""
        self.install_signal_handlers()
        try:
            while not self._stop_requested:
                self._check_children()
                self._sleep(self.poll_interval)
            self.stop_all()
        finally:
            self._reap()
            self.restore_signal_handlers()

    def stop_all(self, timeout: float | None = None) -> None:
        """Stop every child, newest first, dependency tier by tier: send each its
        stop signal (to its process group), wait up to ``timeout`` seconds, then
        SIGKILL the group of any straggler."""
        timeout = self.stop_timeout if timeout is None else timeout
        self._stopping = True
        for child in self._children:
            child.restart_at = None
        tiers: list[list[_Child]] = []
        current: list[_Child] = []
        for child in reversed(self._children):
            if child.barrier and current:
                tiers.append(current)
                current = []
            current.append(child)
        if current:
            tiers.append(current)
        for tier in tiers:
            self._stop_group(tier, timeout)

    def status(self) -> list[ChildStatus]:
        return [
            ChildStatus(
                name=child.spec.name,
                pid=child.process.pid if child.process else None,
                running=child.alive,
                restarts=child.restarts,
                last_exit_code=child.last_exit_code,
            )
            for child in self._children
        ]

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def install_signal_handlers(self) -> None:
        """Route SIGINT/SIGTERM to a graceful stop. Call it early to cover start-up;
        it does nothing outside the main thread."""
        if self._old_handlers or threading.current_thread() is not threading.main_thread():
            return
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._old_handlers[signum] = signal.signal(signum, self._on_signal)

    def restore_signal_handlers(self) -> None:
        for signum, handler in self._old_handlers.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        self._old_handlers = {}

    # --- internals ------------------------------------------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._stop_requested:
            self.logger.warning("%s again: killing all children now", name)
            for child in self._children:
                self._killpg(child, signal.SIGKILL)
            raise KeyboardInterrupt
        self.logger.info("%s received: stopping all children (repeat to kill them at once)", name)
        self._stop_requested = True

    def _spawn(self, child: _Child) -> None:
        spec = child.spec
        env = {**os.environ, **(spec.env or {})}
        with child.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            log.write(f"\n=== {stamp} supervisor: starting {spec.name}: {' '.join(spec.argv)}\n".encode())
            log.flush()
            child.process = subprocess.Popen(
                spec.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                preexec_fn=self._preexec,  # noqa: PLW1509 - no threads spawn children here
            )
        child.started_at = time.monotonic()
        child.restart_at = None
        self.logger.info("started %s (pid %d), log %s", spec.name, child.process.pid, child.log_path)

    def _wait_ready(self, child: _Child, timeout: float) -> None:
        assert child.process is not None and child.spec.ready_check is not None
        deadline = time.monotonic() + timeout
        while True:
            if self._stop_requested:
                raise StopRequested("stop requested")
            code = child.process.poll()
            if code is not None:
                child.last_exit_code = code
                raise SupervisorError(
                    f"{child.spec.name} exited ({describe_exit(code)}) before it was ready; "
                    f"see {child.log_path}\n{self._tail(child.log_path)}"
                )
            try:
                ready = child.spec.ready_check()
            except Exception as exc:  # noqa: BLE001 - a failing probe just means "not yet"
                self.logger.debug("%s: readiness probe failed: %s", child.spec.name, exc)
                ready = False
            if ready:
                return
            if time.monotonic() >= deadline:
                raise SupervisorError(
                    f"{child.spec.name} was not ready within {timeout:g}s; "
                    f"see {child.log_path}\n{self._tail(child.log_path)}"
                )
            time.sleep(self.ready_poll_interval)

    def _check_children(self) -> None:
        now = time.monotonic()
        for child in self._children:
            if child.stopped or self._stopping:
                continue
            if child.restart_at is not None:
                if now >= child.restart_at:
                    self._restart(child)
                continue
            assert child.process is not None
            code = child.process.poll()
            if code is None:
                continue
            uptime = now - child.started_at
            child.last_exit_code = code
            # Whatever the child left behind in its group would clash with the
            # replacement (ports, Celery node names).
            self._killpg(child, signal.SIGKILL)
            if uptime >= self.backoff_reset_after:
                child.next_delay = self.backoff_initial
            delay = child.next_delay
            child.next_delay = min(delay * 2, self.backoff_max)
            child.restart_at = now + delay
            self.logger.warning(
                "%s (pid %d) died: %s after %.1fs; restarting in %gs (restart #%d)",
                child.spec.name, child.process.pid, describe_exit(code), uptime, delay, child.restarts + 1,
            )

    def _restart(self, child: _Child) -> None:
        child.restarts += 1
        try:
            self._spawn(child)
        except OSError as exc:
            delay = child.next_delay
            child.next_delay = min(delay * 2, self.backoff_max)
            child.restart_at = time.monotonic() + delay
            self.logger.error("%s: restart failed (%s); retrying in %gs", child.spec.name, exc, delay)
            return
        assert child.process is not None
        self.logger.info("restarted %s (pid %d, restart #%d)", child.spec.name, child.process.pid, child.restarts)

    def _stop_group(self, children: list[_Child], timeout: float) -> None:
        running = []
        for child in children:
            child.stopped = True
            child.restart_at = None
            if child.alive:
                assert child.process is not None
                self.logger.info("stopping %s (pid %d) with %s", child.spec.name, child.process.pid,
                                 signal.Signals(child.spec.stop_signal).name)
                if child.spec.signal_group:
                    self._killpg(child, child.spec.stop_signal)
                else:
                    try:
                        os.kill(child.process.pid, child.spec.stop_signal)
                    except ProcessLookupError:
                        pass
                running.append(child)
        deadline = time.monotonic() + timeout
        while any(child.alive for child in running) and time.monotonic() < deadline:
            time.sleep(0.05)
        for child in running:
            assert child.process is not None
            if child.alive:
                self.logger.warning("%s (pid %d) did not stop within %gs: SIGKILL",
                                    child.spec.name, child.process.pid, timeout)
            # Also sweeps grandchildren that outlived their parent.
            self._killpg(child, signal.SIGKILL)
            try:
                code = child.process.wait(5)
            except subprocess.TimeoutExpired:
                self.logger.error("%s (pid %d) survived SIGKILL", child.spec.name, child.process.pid)
                continue
            child.last_exit_code = code
            self.logger.info("%s stopped (%s)", child.spec.name, describe_exit(code))

    def _killpg(self, child: _Child, signum: int) -> None:
        if child.process is None:
            return
        try:
            # start_new_session made the child its group's leader: pgid == pid.
            os.killpg(child.process.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def _reap(self) -> None:
        for child in self._children:
            if child.process is not None:
                try:
                    child.process.wait(1)
                except subprocess.TimeoutExpired:
                    pass

    def _sleep(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not self._stop_requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            time.sleep(min(remaining, 0.05))

    @staticmethod
    def _tail(path: Path, lines: int = 15) -> str:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])
