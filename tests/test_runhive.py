"""`make run` for real: `manage.py runhive` with the embedded default (SQLite and an
embedded Redis under a fresh var dir, simulated Ollama nodes), driven over HTTP and
stopped with Ctrl-C (SIGINT), as a user would.

No pytest-django database here: the process under test has its own. It is observed
only through HTTP, its output and the files under its var dir.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from tests.processes import ROOT, Proc, free_port, wait_for

pytestmark = pytest.mark.e2e

ADMIN_USER = "boss"
ADMIN_PASSWORD = "pw-boss-runhive-4711"
SIM_AGENTS = {"sim-acacia": 2, "sim-walnut": 2, "sim-ironwood": 1}  # slug -> slots
READY_TIMEOUT = 90
STOP_TIMEOUT = 20


# --- helpers ------------------------------------------------------------------------


def consecutive_free_ports(count: int) -> int:
    """A base port such that base .. base+count-1 are all free (and below 65000,
    the highest HIVE_SIM_BASE_PORT accepted)."""
    for _ in range(200):
        base = free_port()
        if base + count > 65000:
            continue
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise AssertionError(f"no {count} consecutive free ports found")


@pytest.fixture
def var_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh var dir, short enough for the embedded Redis's unix socket."""
    path = (tmp_path / "v").resolve()
    fallback = None
    if len(str(path / "redis.sock")) >= 100:
        fallback = path = Path(tempfile.mkdtemp(prefix="hv-", dir="/tmp")).resolve()
    assert len(str(path / "redis.sock")) < 100
    yield path
    if fallback is not None:
        shutil.rmtree(fallback, ignore_errors=True)


class Setup:
    """Ports and environment of one Hive installation (one var dir)."""

    def __init__(self, var_dir: Path, **extra: str | None) -> None:
        """extra: variables to set, or to remove with None."""
        self.var_dir = var_dir
        self.port = free_port()
        self.flower_port = free_port()
        self.sim_base = consecutive_free_ports(3)
        self.site = f"http://127.0.0.1:{self.port}"
        self.flower = f"http://127.0.0.1:{self.flower_port}/"
        # Nothing of the test session's configuration leaks in: no REDIS_URL or
        # DATABASE_URL (the embedded default), no HIVE_* from tests/settings.py.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("HIVE_") and k not in ("REDIS_URL", "DATABASE_URL", "DJANGO_SETTINGS_MODULE")}
        env.update({
            "DJANGO_SETTINGS_MODULE": "hive_project.settings",
            "PYTHONUNBUFFERED": "1",
            "HIVE_VAR_DIR": str(var_dir),
            "HIVE_PORT": str(self.port),
            "HIVE_FLOWER_PORT": str(self.flower_port),
            "HIVE_SIM_BASE_PORT": str(self.sim_base),
            "HIVE_ADMIN_USER": ADMIN_USER,
            "HIVE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "HIVE_TASK_LEASE_SECONDS": "4",
            "HIVE_RECONCILE_INTERVAL": "2",
            "HIVE_SCHEDULER_INTERVAL": "2",
            "HIVE_WORKER_CONCURRENCY": "2",
        })
        env.update(extra)
        self.env = {k: v for k, v in env.items() if v is not None}


def health_ok(url: str) -> bool:
    try:
        return httpx.get(f"{url}/api/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def hive_processes(var_dir: Path) -> list[psutil.Process]:
    """Live processes that belong to the installation: its var dir is in their
    command line or their HIVE_VAR_DIR (every child inherits it)."""
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == os.getpid():
            continue
        try:
            mine = str(var_dir) in " ".join(proc.info["cmdline"] or [])
            if not mine:
                mine = proc.environ().get("HIVE_VAR_DIR") == str(var_dir)
            if mine and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            continue
    return left


def describe(processes: list[psutil.Process]) -> list[str]:
    out = []
    for proc in processes:
        try:
            out.append(f"{proc.pid}: {' '.join(proc.cmdline())[:160]}")
        except psutil.Error:
            out.append(f"{proc.pid}: ?")
    return out


class Hive:
    """One `manage.py runhive` process, in its own session like a terminal job."""

    def __init__(self, setup: Setup, name: str = "runhive") -> None:
        self.setup = setup
        self.proc = Proc(name, [sys.executable, str(ROOT / "manage.py"), "runhive"], setup.env)
        self.pid = self.proc.process.pid
        self.children: list[psutil.Process] = []

    def output(self) -> str:
        return self.proc.output()

    def wait_ready(self) -> None:
        wait_for(lambda: "Hive is running" in self.output(), READY_TIMEOUT, "runhive banner",
                 self.proc.process, self.proc.log)
        wait_for(lambda: health_ok(self.setup.site), 30, "/api/health", self.proc.process, self.proc.log)
        self.children = psutil.Process(self.pid).children(recursive=True)

    def interrupt(self) -> tuple[float, int]:
        """Ctrl-C: SIGINT to runhive alone (its children run in their own sessions).
        Returns (seconds until it exited, exit code)."""
        started = time.monotonic()
        self.proc.process.send_signal(signal.SIGINT)
        try:
            code = self.proc.process.wait(STOP_TIMEOUT + 10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"runhive did not exit after SIGINT\n{self.output()[-3000:]}") from None
        return time.monotonic() - started, code

    def assert_nothing_left(self) -> None:
        deadline = time.monotonic() + 3  # orphans of SIGKILLed parents are reaped by init
        while True:
            left = alive(self.children) + hive_processes(self.setup.var_dir)
            if not left or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not left, f"processes left after runhive exited: {describe(left)}"

    def kill(self) -> None:
        """Last-resort clean-up: runhive's group, then whatever of this var dir is left."""
        if self.proc.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.process.wait(10)
        for proc in alive(self.children) + hive_processes(self.setup.var_dir):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                proc.kill()
            except psutil.Error:
                pass
        self.proc.stop()


def login(site: str) -> httpx.Client:
    response = httpx.post(f"{site}/api/auth/token/", json={"username": ADMIN_USER, "password": ADMIN_PASSWORD},
                          timeout=10)
    assert response.status_code == 200, response.text
    return httpx.Client(base_url=site, headers={"Authorization": f"Bearer {response.json()['access']}"}, timeout=10)


def submit(api: httpx.Client, title: str, num_predict: int, **extra: Any) -> dict[str, Any]:
    response = api.post("/api/tasks", json={"title": title, "prompt": f"{title}: write something",
                                            "options": {"num_predict": num_predict, "temperature": 0}, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def wait_task(api: httpx.Client, task_id: str, statuses: set[str], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = api.get(f"/api/tasks/{task_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} still {body.get('status')} after {timeout}s: {body}")


def all_tasks(api: httpx.Client) -> dict[str, dict[str, Any]]:
    response = api.get("/api/tasks", params={"page_size": 50})
    assert response.status_code == 200, response.text
    return {task["id"]: task for task in response.json()["results"]}


def supervisor_pid(output: str, pattern: str) -> int:
    match = re.search(pattern, output)
    assert match, f"no line matching {pattern!r} in\n{output[-3000:]}"
    return int(match.group(1))


# --- tests --------------------------------------------------------------------------


def test_hive_starts_stops_on_ctrl_c_and_finishes_interrupted_work_after_a_restart(var_dir: Path) -> None:
    setup = Setup(var_dir)
    with ExitStack() as cleanup:
        # -- first start: everything comes up ------------------------------------------
        first = Hive(setup, "runhive-1")
        cleanup.callback(first.kill)
        first.wait_ready()
        out = first.output()
        site = setup.site
        for line in (f"Dashboard   {site}/", f"Admin       {site}/admin/", f"API         {site}/api/",
                     f"docs: {site}/api/docs/", f"Flower      {setup.flower}", f"Login       {ADMIN_USER}",
                     f"Redis       unix://{var_dir}/redis.sock?db=0  (embedded)", f"Logs        {var_dir}/logs/"):
            assert line in out, f"banner lacks {line!r}:\n{out}"
        for slug in SIM_AGENTS:
            assert slug in out
        assert (var_dir / "hive.sqlite3").exists() and (var_dir / "redis.sock").exists()

        wait_for(lambda: _status(setup.flower) == 200, 30, "Flower", first.proc.process, first.proc.log)
        assert "flower" in httpx.get(setup.flower, timeout=5).text.lower()
        assert httpx.get(f"{site}/admin/", timeout=5).status_code == 302, "the admin asks for a login"

        api = login(site)
        agents = {a["agent_id"]: a for a in api.get("/api/agents").json()["results"]}
        assert set(agents) == set(SIM_AGENTS)
        for slug, slots in SIM_AGENTS.items():
            assert agents[slug]["status"] == "online", agents[slug]
            assert agents[slug]["max_concurrency"] == slots
            assert "llama3.2:3b" in agents[slug]["models_available"]

        short = wait_task(api, submit(api, "short", 10)["id"], {"completed", "failed"}, 30)
        assert short["status"] == "completed", short
        assert short["result"] and short["timings"]["eval_count"] == 10

        # -- a supervised child that dies is restarted ---------------------------------
        old_pid = supervisor_pid(out, r"started worker-hive-low \(pid (\d+)\)")
        old_worker = psutil.Process(old_pid)
        assert "hive-low@" in " ".join(old_worker.cmdline())
        old_pool = old_worker.children(recursive=True)
        os.kill(old_pid, signal.SIGKILL)
        restarted = r"restarted worker-hive-low \(pid (\d+), restart #1\)"
        wait_for(lambda: re.search(restarted, first.output()) is not None, 10, "the worker's restart",
                 first.proc.process, first.proc.log)
        out = first.output()
        assert re.search(rf"worker-hive-low \(pid {old_pid}\) died: killed by SIGKILL after [\d.]+s; "
                         rf"restarting in [\d.]+s \(restart #1\)", out), out[-3000:]
        new_pid = supervisor_pid(out, restarted)
        assert new_pid != old_pid
        new_worker = psutil.Process(new_pid)
        assert new_worker.is_running() and "hive-low@" in " ".join(new_worker.cmdline())
        wait_for(lambda: not alive([old_worker, *old_pool]), 5, "the dead worker's pool processes")
        # The replacement consumes its queue: priority 1 runs on hive.low.
        low = wait_task(api, submit(api, "low", 10, priority=1)["id"], {"completed", "failed"}, 40)
        assert low["status"] == "completed", low
        assert low["attempt_log"][-1]["worker"].startswith("hive-low@"), low["attempt_log"]

        # -- more work than slots, then Ctrl-C -------------------------------------
        # "reasoning" runs only on sim-ironwood (one slot, 15 tokens/s, 4 s model load):
        # ~14 s of work that cannot finish within the 10 s stop timeout, so at least one
        # task is interrupted however gracefully the workers stop. The general tasks
        # fill the other slots, and some have to wait.
        slow = submit(api, "slow reasoning", 150, task_type="reasoning", priority=5)
        general = [submit(api, f"long {n}", 150, priority=priority)["id"]
                   for n, priority in enumerate([5, 3, 3, 1, 1, 3])]
        long_ids = [slow["id"], *general]

        def busy_and_waiting() -> bool:
            tasks = all_tasks(api)
            statuses = [tasks[i]["status"] for i in general]
            return (tasks[slow["id"]]["status"] == "running" and "running" in statuses
                    and statuses.count("pending") + statuses.count("queued") >= 1)

        wait_for(busy_and_waiting, 30, "running and waiting tasks")
        first.children = psutil.Process(first.pid).children(recursive=True)
        assert len(first.children) >= 11, describe(first.children)  # redis, 3 nodes, 4 workers, beat, flower, web
        elapsed, code = first.interrupt()
        out = first.output()
        assert code == 0, out[-3000:]
        assert elapsed < STOP_TIMEOUT, f"stopping took {elapsed:.1f}s"
        assert "SIGINT received: stopping all children" in out
        assert out.rstrip().endswith("Hive stopped"), out[-2000:]
        # Dependencies stop last: Redis outlives the workers.
        assert out.index("worker-hive-high stopped") < out.index("sim-acacia stopped") < out.index("redis stopped")
        first.assert_nothing_left()
        assert not (var_dir / "redis.sock").exists() or not _unix_socket_answers(var_dir / "redis.sock")

        # -- second start: the same installation picks up where it stopped ---------
        second = Hive(setup, "runhive-2")
        cleanup.callback(second.kill)
        second.wait_ready()
        out2 = second.output()
        assert ADMIN_PASSWORD not in out2 and "shown once" not in out2, "the password is printed only once"
        assert f"Login       {ADMIN_USER} (password printed at first start" in out2
        recovered = re.search(r"Recovered (\d+) task\(s\) interrupted by the last shutdown", out2)
        assert recovered, out2[-3000:]

        # A token issued before the restart is still valid (the signing key lives in var/).
        assert api.get("/api/agents").status_code == 200
        everything = [short["id"], low["id"], *long_ids]
        deadline = time.monotonic() + 120
        while True:
            tasks = all_tasks(api)
            if all(tasks[i]["status"] in ("completed", "failed", "cancelled") for i in everything):
                break
            assert time.monotonic() < deadline, {tasks[i]["title"]: tasks[i]["status"] for i in everything}
            time.sleep(0.5)

        assert set(tasks) == set(everything), "no task lost, none added"
        for task_id in everything:
            task = tasks[task_id]
            assert task["status"] == "completed", task
            outcomes = [attempt["outcome"] for attempt in task["attempt_log"]]
            assert outcomes.count("succeeded") == 1, (task["title"], outcomes)
            assert outcomes[-1] == "succeeded" and set(outcomes) <= {"succeeded", "lost"}, (task["title"], outcomes)
        interrupted = [t for t in tasks.values() if any(a["outcome"] == "lost" for a in t["attempt_log"])]
        assert len(interrupted) == int(recovered.group(1)) >= 1
        assert slow["id"] in {t["id"] for t in interrupted}
        assert [a["agent"]["agent_id"] for a in tasks[slow["id"]]["attempt_log"]] == ["sim-ironwood"] * 2
        for task in interrupted:
            lost = next(a for a in task["attempt_log"] if a["outcome"] == "lost")
            assert lost["error"] == "Hive restarted while the task ran"
            assert task["timings"]["eval_count"] == 150, "the interrupted task ran again in full"
        assert tasks[short["id"]]["result"] == short["result"], "a finished result survives restarts"
        assert tasks[short["id"]]["completed_at"] == short["completed_at"]
        assert tasks[short["id"]]["attempt_log"] == short["attempt_log"]

        elapsed, code = second.interrupt()
        assert code == 0, second.output()[-3000:]
        assert elapsed < STOP_TIMEOUT, f"stopping took {elapsed:.1f}s"
        second.assert_nothing_left()


def test_the_first_start_prints_the_generated_admin_password(var_dir: Path) -> None:
    """Cheap way to reach the point after the admin is created: the simulated nodes'
    port is taken, so runhive stops there (printing what it has to show)."""
    setup = Setup(var_dir, HIVE_ADMIN_PASSWORD=None)  # a password is generated
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", setup.sim_base))
        blocker.listen()
        hive = Hive(setup)
        try:
            code = hive.proc.process.wait(60)
        finally:
            hive.kill()
    out = hive.output()
    assert code != 0
    assert "Cannot start the simulated node sim-acacia" in out, out
    hive.assert_nothing_left()
    match = re.search(rf"Admin login: {ADMIN_USER} / (\S+)  \(shown once\)", out)
    assert match, f"the generated password of {ADMIN_USER!r} was never shown:\n{out}"


def test_ctrl_c_lets_a_running_task_finish_within_the_stop_timeout(var_dir: Path) -> None:
    setup = Setup(var_dir)
    hive = Hive(setup)
    try:
        hive.wait_ready()
        api = login(setup.site)
        # "code" runs only on sim-acacia (60 tokens/s): about 1.5 s load + 2 s of tokens,
        # well inside the 10 s stop timeout.
        task = submit(api, "almost done", 120, task_type="code", priority=5)
        wait_task(api, task["id"], {"running"}, 30)
        elapsed, code = hive.interrupt()
        assert code == 0 and elapsed < STOP_TIMEOUT
        hive.assert_nothing_left()
    finally:
        hive.kill()
    with sqlite3.connect(var_dir / "hive.sqlite3") as db:
        status, eval_count = db.execute("select status, json_extract(timings, '$.eval_count') from tasks where id = ?",
                                        (task["id"].replace("-", ""),)).fetchone()
    assert (status, eval_count) == ("completed", 120)


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _unix_socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(str(path))
            return True
        except OSError:
            return False


@pytest.mark.django_db
def test_the_web_process_trusts_forwarded_headers_only_from_a_proxy_the_operator_names(monkeypatch) -> None:
    """Else any local client sets its own address with X-Forwarded-For and escapes the throttles."""
    from hive_project.management.commands.runhive import build_children, load_config

    def web_argv() -> list[str]:
        return next(child.argv for child in build_children(load_config()) if child.name == "web")

    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert "--no-proxy-headers" in web_argv()
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5")
    assert "--no-proxy-headers" not in web_argv()
