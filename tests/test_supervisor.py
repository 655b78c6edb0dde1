"""The process supervisor behind `make run`, exercised with real processes.

No database: these tests only start short Python one-liners.
"""
from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hive_project.supervisor import ChildSpec, Supervisor, SupervisorError

ROOT = Path(__file__).resolve().parent.parent
LOGGER = "tests.supervisor"
PY = sys.executable


def python(code: str) -> list[str]:
    return [PY, "-c", textwrap.dedent(code)]


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (we may not be its parent)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # pragma: no cover - no procfs
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def log_says(path: Path, line: str) -> Callable[[], bool]:
    """The child printed this line (the supervisor's header line quotes argv, so a
    substring match would succeed before the child even ran)."""
    return lambda: path.exists() and line in path.read_text().splitlines()


@pytest.fixture
def make_supervisor(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    created: list[Supervisor] = []

    def make(**kwargs: float) -> Supervisor:
        params: dict[str, float] = {"poll_interval": 0.02, "backoff_initial": 0.1, "backoff_max": 0.4,
                                    "stop_timeout": 2.0, "ready_poll_interval": 0.02}
        params.update(kwargs)
        supervisor = Supervisor(tmp_path / "logs", logging.getLogger(LOGGER), **params)  # type: ignore[arg-type]
        created.append(supervisor)
        return supervisor

    yield make
    for supervisor in created:
        supervisor.stop_all(timeout=0.5)


def run_in_thread(supervisor: Supervisor) -> threading.Thread:
    thread = threading.Thread(target=supervisor.run_forever, daemon=True)
    thread.start()
    return thread


def restart_delays(caplog: pytest.LogCaptureFixture, name: str) -> list[float]:
    pattern = re.compile(rf"^{name} \(pid \d+\) died: .* restarting in ([\d.]+)s")
    return [float(m.group(1)) for r in caplog.records if (m := pattern.match(r.getMessage()))]


def test_a_child_that_dies_is_restarted_with_growing_backoff(make_supervisor, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    supervisor = make_supervisor()
    supervisor.start(ChildSpec("crasher", python("import sys; sys.exit(3)")))
    thread = run_in_thread(supervisor)

    assert wait_for(lambda: supervisor.status()[0].restarts >= 4, timeout=8)
    supervisor.request_stop()
    thread.join(5)
    assert not thread.is_alive()

    delays = restart_delays(caplog, "crasher")
    assert delays[:4] == [0.1, 0.2, 0.4, 0.4]  # doubles, then capped at backoff_max
    messages = [r.getMessage() for r in caplog.records]
    assert any("died: exit code 3" in m for m in messages)
    assert any(m.startswith("restarted crasher (pid") for m in messages)
    # Each start is marked in the child's log file.
    assert (supervisor.log_path("crasher")).read_text().count("supervisor: starting crasher") >= 5


def test_the_backoff_resets_once_a_child_has_stayed_up(make_supervisor, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    supervisor = make_supervisor(backoff_reset_after=0.15)
    supervisor.start(ChildSpec("flaky", python("import sys, time; time.sleep(0.25); sys.exit(1)")))
    thread = run_in_thread(supervisor)

    assert wait_for(lambda: supervisor.status()[0].restarts >= 3, timeout=8)
    supervisor.request_stop()
    thread.join(5)

    assert restart_delays(caplog, "flaky")[:3] == [0.1, 0.1, 0.1]


def test_stop_all_terminates_children_and_their_grandchildren(make_supervisor, tmp_path) -> None:
    supervisor = make_supervisor()
    parent = supervisor.start(ChildSpec("parent", python("""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        print("grandchild", child.pid, flush=True)
        time.sleep(60)
    """)))
    sleeper = supervisor.start(ChildSpec("sleeper", python("import time; time.sleep(60)")))
    log = supervisor.log_path("parent")
    printed = re.compile(r"^grandchild (\d+)$", re.MULTILINE)
    assert wait_for(lambda: log.exists() and printed.search(log.read_text()) is not None)
    grandchild = int(printed.search(log.read_text()).group(1))  # type: ignore[union-attr]
    assert pid_alive(grandchild)

    started = time.monotonic()
    supervisor.stop_all(timeout=5)

    assert time.monotonic() - started < 3
    assert parent.returncode == -signal.SIGTERM
    assert sleeper.returncode == -signal.SIGTERM
    assert wait_for(lambda: not pid_alive(grandchild), timeout=2)
    assert all(not s.running for s in supervisor.status())


def test_a_child_ignoring_sigterm_is_killed_after_the_timeout(make_supervisor, caplog) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    supervisor = make_supervisor()
    log = supervisor.log_path("stubborn")
    process = supervisor.start(
        ChildSpec("stubborn", python("""
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ignoring SIGTERM", flush=True)
            time.sleep(60)
        """), ready_check=log_says(log, "ignoring SIGTERM")),
        wait_ready=5,
    )

    started = time.monotonic()
    supervisor.stop_all(timeout=0.5)
    elapsed = time.monotonic() - started

    assert 0.5 <= elapsed < 2.5
    assert process.returncode == -signal.SIGKILL
    assert any("did not stop within 0.5s: SIGKILL" in r.getMessage() for r in caplog.records)


def test_children_started_after_a_ready_child_stop_before_it(make_supervisor, tmp_path) -> None:
    supervisor = make_supervisor()
    marks = tmp_path / "marks"
    on_term = """
        import signal, sys, time
        def stop(*_):
            time.sleep({delay})
            with open({marks!r}, "a") as f:
                f.write("{name}\\n")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        print("up", flush=True)
        time.sleep(60)
    """
    dep_log = supervisor.log_path("dependency")
    supervisor.start(
        ChildSpec("dependency", python(on_term.format(delay=0, marks=str(marks), name="dependency")),
                  ready_check=log_says(dep_log, "up")),
        wait_ready=5,
    )
    # This one takes a while to stop; the dependency must still wait for it.
    supervisor.start(ChildSpec("dependent", python(on_term.format(delay=0.3, marks=str(marks), name="dependent"))))
    assert wait_for(log_says(supervisor.log_path("dependent"), "up"))

    supervisor.stop_all(timeout=3)

    assert marks.read_text().split() == ["dependent", "dependency"]


def test_start_fails_when_the_child_exits_before_it_is_ready(make_supervisor) -> None:
    supervisor = make_supervisor()
    spec = ChildSpec("broken", python("import sys; print('bad config', flush=True); sys.exit(3)"),
                     ready_check=lambda: False)

    with pytest.raises(SupervisorError, match=r"broken exited \(exit code 3\) before it was ready") as info:
        supervisor.start(spec, wait_ready=5)

    assert "bad config" in str(info.value)
    assert supervisor.status() == []


def test_start_fails_when_the_child_is_not_ready_in_time(make_supervisor) -> None:
    supervisor = make_supervisor()
    spec = ChildSpec("slow", python("import time; time.sleep(60)"), ready_check=lambda: False)

    with pytest.raises(SupervisorError, match=r"slow was not ready within 0.3s"):
        supervisor.start(spec, wait_ready=0.3)

    assert supervisor.status() == []


SUPERVISOR_SCRIPT = """
import logging, sys, time
from pathlib import Path
from hive_project.supervisor import ChildSpec, Supervisor

logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
supervisor = Supervisor(Path(sys.argv[1]), logging.getLogger("sup"), poll_interval=0.05, stop_timeout=float(sys.argv[2]))
ignore = sys.argv[3] == "ignore-term"
code = "import signal, time\\n"
if ignore:
    code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\\n"
code += "print('up', flush=True)\\ntime.sleep(60)\\n"
log = Path(sys.argv[1]) / "child.log"
process = supervisor.start(ChildSpec("child", [sys.executable, "-c", code],
                                     ready_check=lambda: log.exists() and "up" in log.read_text().splitlines()), wait_ready=10)
print("child pid", process.pid, flush=True)
try:
    supervisor.run_forever()
except KeyboardInterrupt:
    print("forced", flush=True)
    sys.exit(130)
print("returned", flush=True)
"""


def start_supervisor_process(tmp_path: Path, stop_timeout: float, mode: str) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [PY, "-c", SUPERVISOR_SCRIPT, str(tmp_path / "logs"), str(stop_timeout), mode],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("child pid "):
            return process, int(line.split()[-1])
    process.kill()
    raise AssertionError("the supervisor never reported its child")


def test_run_forever_returns_after_sigterm_to_the_supervisor(tmp_path) -> None:
    process, child = start_supervisor_process(tmp_path, stop_timeout=5, mode="plain")
    time.sleep(0.2)  # let it enter run_forever

    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=10)

    assert process.returncode == 0, output
    assert "SIGTERM received" in output
    assert "child stopped (killed by SIGTERM)" in output
    assert output.rstrip().endswith("returned")
    assert not pid_alive(child)


def test_a_second_interrupt_kills_the_children_at_once(tmp_path) -> None:
    process, child = start_supervisor_process(tmp_path, stop_timeout=30, mode="ignore-term")
    time.sleep(0.2)

    process.send_signal(signal.SIGINT)
    time.sleep(0.5)  # first one: graceful stop, which this child ignores
    assert process.poll() is None
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=10)

    assert time.monotonic() - started < 3
    assert process.returncode == 130, output
    assert "SIGINT again: killing all children now" in output
    assert wait_for(lambda: not pid_alive(child), timeout=2)
