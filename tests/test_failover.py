"""Failover end to end: real Celery worker(s), beat, simulated Ollama nodes with faults.

Each test builds a small cluster (simulated nodes in their own processes, agents
registered and probed from this process, one or two Celery workers, beat where the
reconciler matters), submits tasks through the REST API in-process, breaks something
for real (a node dies mid-stream, refuses, answers 503 or is gone; a pool process or a
whole worker is SIGKILLed; Redis is flushed; an execution message is delivered again)
and checks what a user and an operator would see: the task's status and result, its
attempt history, the agent's health.

tests/settings.py shortens the lease to 4 s and the reconcile/scheduler intervals to
2 s, so every recovery here happens in seconds.
"""
from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from datetime import timedelta
from functools import partial
from typing import Any

import httpx
import psutil
import pytest
import redis
from django.conf import settings
from django.utils import timezone

from agents import services as agent_services
from agents.models import Agent
from coordinator import scheduler
from coordinator.dispatch import marker_key
from coordinator.models import Task, TaskAttempt
from coordinator.tasks import execute_task
from hive_project import queues
from hive_project.bootstrap import ensure_setup
from tests.processes import Proc, simulator, start_beat, start_worker

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MODEL = "llama3.2:3b"
FINISHED = {Task.Status.COMPLETED, Task.Status.FAILED, Task.Status.CANCELLED}


# -- the cluster under test ----------------------------------------------------------


class Cluster:
    """Processes and rows of one test; everything it starts is stopped in ``close``."""

    def __init__(self, actors: Any) -> None:
        self.api = actors.client(actors.developer)
        self.procs: list[Proc] = []
        self.workers: dict[str, Proc] = {}
        self._nodes: dict[str, AbstractContextManager[str]] = {}
        self._children_before = {p.pid for p in psutil.Process().children()}

    # processes

    def up(self, *, nodes: dict[str, dict[str, Any]] | None = None, workers: dict[str, int] | None = None,
           beat: bool = False) -> dict[str, str]:
        """Start simulated nodes, workers and beat side by side; the nodes' base URLs by name.

        Process start-up is most of these tests' time, so it is done in parallel.
        """
        if beat:
            ensure_setup()  # the periodic jobs beat runs: reconciler, scheduling pass, health sweep
        jobs: dict[tuple[str, str], Callable[[], Any]] = {}
        for name, options in (nodes or {}).items():
            jobs["node", name] = partial(_enter_node, name, options)
        for name, concurrency in (workers or {}).items():
            jobs["worker", name] = partial(start_worker, name, concurrency=concurrency)
        if beat:
            jobs["beat", "beat"] = start_beat
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            futures = {key: pool.submit(job) for key, job in jobs.items()}
        urls: dict[str, str] = {}
        errors: list[BaseException] = []
        for (kind, name), future in futures.items():
            try:
                started = future.result()
            except BaseException as exc:  # the others are registered (and stopped) all the same
                errors.append(exc)
                continue
            if kind == "node":
                self._nodes[name], urls[name] = started
            else:
                self.procs.append(started)
                if kind == "worker":
                    self.workers[name] = started
        if errors:
            raise errors[0]
        return urls

    def node(self, name: str, **options: Any) -> str:
        return self.up(nodes={name: options})[name]

    def stop_node(self, name: str) -> None:
        self._nodes.pop(name).__exit__(None, None, None)

    def worker(self, name: str = "w", concurrency: int = 3) -> Proc:
        self.up(workers={name: concurrency})
        return self.workers[name]

    def logs(self, limit: int = 4000) -> str:
        return "\n".join(f"----- {p.name} (pid {p.process.pid}) -----\n{p.output()[-limit:]}" for p in self.procs)

    def _started_here(self) -> list[psutil.Process]:
        return [c for c in psutil.Process().children() if c.pid not in self._children_before]

    def _signal_all(self, sig: int) -> None:
        # Every process a test starts (tests/processes.py) leads its own process group.
        for child in self._started_here():
            try:
                os.killpg(child.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def close(self) -> None:
        # SIGKILL, all at once: a graceful stop costs seconds per process and nothing
        # here outlives the test (the database and Redis are emptied after it). It
        # also ends anything a helper left behind when it raised while waiting.
        try:
            self._signal_all(signal.SIGKILL)
            for proc in self.procs:
                proc.kill(signal.SIGKILL)  # reaps it
                proc.stop()  # closes its log
            for node in self._nodes.values():
                node.__exit__(None, None, None)
        finally:
            self._signal_all(signal.SIGKILL)

    # rows

    def agent(self, slug: str, url: str, *, preferred: bool = False, **fields: Any) -> Agent:
        """Register an agent for a node and probe it, as POST /api/agents would."""
        defaults: dict[str, Any] = {"name": slug.title(), "endpoint": url, "model": MODEL, "max_concurrency": 2,
                                    "capabilities": [{"name": "general", "proficiency": 0.5}]}
        agent = Agent.objects.create(slug=slug, **{**defaults, **fields})
        agent_services.probe_agent(agent)
        agent.refresh_from_db()
        assert agent.status == Agent.Status.ONLINE, agent.last_error
        if preferred:
            prefer(agent)
        return agent

    def submit(self, **fields: Any) -> str:
        body = {"title": "failover", "prompt": "Tell me about failover", "priority": 3, **fields}
        response = self.api.post("/api/tasks", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()["id"]

    def wait(self, task_id: str, statuses: set[str], timeout: float) -> Task:
        deadline = time.monotonic() + timeout
        task = Task.objects.get(pk=task_id)
        while time.monotonic() < deadline:
            task = Task.objects.get(pk=task_id)
            if task.status in statuses:
                return task
            time.sleep(0.1)
        agents = list(Agent.objects.values_list("slug", "status", "draining", "consecutive_failures", "last_error"))
        raise AssertionError(
            f"task {task_id} still {task.status} after {timeout:.1f}s (want {sorted(statuses)}); "
            f"error={task.error!r} attempts={history(task_id)} agents={agents} "
            f"waiting={scheduler.queue_info([task_id])} scheduler lock held={bool(redis_client().exists(scheduler.LOCK_KEY))}"
            f"\n{self.logs()}")


@pytest.fixture
def cluster(actors: Any) -> Iterator[Cluster]:
    running = Cluster(actors)
    try:
        yield running
    finally:
        running.close()


def _enter_node(name: str, options: dict[str, Any]) -> tuple[AbstractContextManager[str], str]:
    node = simulator(name=name, **options)
    return node, node.__enter__()


def prefer(agent: Agent) -> None:
    """Make placement pick this agent first: model already loaded there and fastest.

    warm_first ranks (model loaded, proficiency, tokens/s, fewer busy slots); a node
    that just completed a task is warm, so only warm + faster reliably wins.
    """
    expires = (timezone.now() + timedelta(hours=1)).isoformat()
    Agent.objects.filter(pk=agent.pk).update(
        tokens_per_second=1000.0, models_loaded=[{"name": MODEL, "model": MODEL, "expires_at": expires}])


def redis_client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL)


def set_fault(url: str, mode: str) -> None:
    httpx.post(f"{url}/_sim/fault", json={"mode": mode}, timeout=5).raise_for_status()


def sim_stats(url: str) -> dict[str, Any]:
    return httpx.get(f"{url}/_sim/stats", timeout=5).json()


def attempts_of(task_id: str) -> list[TaskAttempt]:
    return list(TaskAttempt.objects.filter(task_id=task_id).select_related("agent").order_by("number"))


def history(task_id: str) -> list[tuple[int, str | None, str, str]]:
    return [(a.number, a.agent.slug if a.agent else None, a.outcome, a.error[:120]) for a in attempts_of(task_id)]


def eventually(check: Callable[[], bool], timeout: float, what: str, cluster: Cluster) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not within {timeout}s\n{cluster.logs()}")


# -- 1. a node dies mid-stream -------------------------------------------------------


def test_a_node_dying_mid_stream_hands_the_task_to_a_healthy_node(cluster: Cluster) -> None:
    urls = cluster.up(nodes={"ash": {}, "birch": {}}, workers={"w": 3})
    ash_url = urls["ash"]
    ash = cluster.agent("ash", ash_url, preferred=True)
    birch = cluster.agent("birch", urls["birch"])
    set_fault(ash_url, "die-mid-stream")

    task_id = cluster.submit(title="Outlive a node", options={"num_predict": 40, "temperature": 0})
    task = cluster.wait(task_id, FINISHED, 30)

    assert task.status == Task.Status.COMPLETED, (task.error, history(task_id), cluster.logs())
    assert task.assigned_agent_id == birch.pk
    assert task.timings["eval_count"] == 40
    assert len(task.result.split()) == 40, "the result is the healthy node's full answer, not the dead stream's half"
    log = attempts_of(task_id)
    assert [(a.agent.slug, a.outcome) for a in log] == [("ash", "failed"), ("birch", "succeeded")], history(task_id)
    died = log[0]
    assert "mid-stream" in died.error, died.error
    assert died.duration is not None and died.duration > 0
    assert log[1].duration is not None and log[1].error == ""
    assert task.attempts == 2 and str(ash.pk) in task.excluded_agents
    assert sim_stats(ash_url)["dropped"] >= 1, "the node really cut the stream"

    ash.refresh_from_db()
    birch.refresh_from_db()
    assert ash.consecutive_failures == 1
    assert ash.status == Agent.Status.ONLINE, "one failure does not open the circuit"
    assert birch.consecutive_failures == 0

    # The history as the API shows it.
    body = cluster.api.get(f"/api/tasks/{task_id}").json()
    assert [(a["agent"]["agent_id"], a["outcome"]) for a in body["attempt_log"]] == [("ash", "failed"),
                                                                                     ("birch", "succeeded")]
    assert body["attempt_log"][0]["error"] and body["attempt_log"][0]["duration"] > 0


# -- 2. refused / 503 / gone, and a lone node that always fails ------------------------


@pytest.mark.parametrize(("fault", "expected_error"), [
    ("503", "HTTP 503"),
    ("refuse", "connection closed before a response"),
    ("stopped", "cannot connect"),
])
def test_a_failing_node_hands_the_task_to_a_healthy_node(cluster: Cluster, fault: str, expected_error: str) -> None:
    urls = cluster.up(nodes={"good": {}, "bad": {}}, workers={"w": 3})
    bad = cluster.agent("bad", urls["bad"], preferred=True)
    good = cluster.agent("good", urls["good"])
    if fault == "stopped":
        cluster.stop_node("bad")  # registered while it answered, then gone: Hive still believes it online
    else:
        set_fault(urls["bad"], fault)

    task_id = cluster.submit(options={"num_predict": 8})
    task = cluster.wait(task_id, FINISHED, 30)

    assert task.status == Task.Status.COMPLETED, (task.error, history(task_id), cluster.logs())
    assert task.assigned_agent_id == good.pk
    assert task.timings["eval_count"] == 8
    log = attempts_of(task_id)
    assert [(a.agent.slug, a.outcome) for a in log] == [("bad", "failed"), ("good", "succeeded")], history(task_id)
    assert expected_error in log[0].error, log[0].error
    assert log[0].finished_at is not None
    bad.refresh_from_db()
    assert bad.consecutive_failures == 1


def test_a_task_on_a_lone_failing_node_fails_after_its_attempts_with_the_last_error(cluster: Cluster) -> None:
    url = cluster.up(nodes={"lone": {}}, workers={"w": 3})["lone"]
    lone = cluster.agent("lone", url)
    set_fault(url, "503")

    task_id = cluster.submit(options={"num_predict": 8}, max_attempts=2)
    task = cluster.wait(task_id, FINISHED, 30)

    assert task.status == Task.Status.FAILED, (history(task_id), cluster.logs())
    assert task.attempts == 2 and task.max_attempts == 2
    log = attempts_of(task_id)
    assert [(a.number, a.agent.slug, a.outcome) for a in log] == [(1, "lone", "failed"), (2, "lone", "failed")]
    assert all("HTTP 503" in a.error and a.finished_at for a in log), history(task_id)
    assert "2 attempt" in task.error and task.error.endswith(log[-1].error), task.error
    assert task.completed_at is not None and task.lease_expires_at is None
    assert sim_stats(url)["requests"] == 2, "each attempt reached the node once"
    lone.refresh_from_db()
    assert lone.consecutive_failures == 2
    assert lone.status == Agent.Status.ONLINE, "2 failures stay below HIVE_CIRCUIT_FAILURES"

    body = cluster.api.get(f"/api/tasks/{task_id}").json()
    assert body["status"] == "failed" and len(body["attempt_log"]) == 2 and "HTTP 503" in body["error"]


# -- 3. circuit breaker ---------------------------------------------------------------


def test_the_circuit_opens_after_consecutive_failures_and_a_good_probe_closes_it(cluster: Cluster) -> None:
    assert settings.HIVE_CIRCUIT_FAILURES == 3 and settings.HIVE_MAX_ATTEMPTS == 3
    urls = cluster.up(nodes={"cedar": {}, "dogwood": {}}, workers={"w": 3})
    cedar_url = urls["cedar"]
    cedar = cluster.agent("cedar", cedar_url)
    set_fault(cedar_url, "503")

    # Alone, cedar gets all three attempts of a task; the third failure trips the circuit.
    doomed = cluster.submit(title="Trip the circuit", options={"num_predict": 8})
    task = cluster.wait(doomed, FINISHED, 30)
    assert task.status == Task.Status.FAILED, history(doomed)
    assert [a.outcome for a in attempts_of(doomed)] == ["failed"] * 3
    cedar.refresh_from_db()
    assert cedar.status == Agent.Status.OFFLINE
    assert "circuit" in cedar.last_error and "HTTP 503" in cedar.last_error, cedar.last_error
    assert cedar.consecutive_failures == 3
    assert cedar.next_probe_at is not None and cedar.next_probe_at > timezone.now() - timedelta(seconds=1)
    seen_by_cedar = sim_stats(cedar_url)["requests"]
    assert seen_by_cedar == 3

    # An open circuit gets no new work: it goes to another node ...
    dogwood = cluster.agent("dogwood", urls["dogwood"])
    elsewhere = cluster.submit(title="Goes elsewhere", options={"num_predict": 8})
    task = cluster.wait(elsewhere, FINISHED, 30)
    assert task.status == Task.Status.COMPLETED and task.assigned_agent_id == dogwood.pk, history(elsewhere)
    assert [(a.agent.slug, a.outcome) for a in attempts_of(elsewhere)] == [("dogwood", "succeeded")]
    # ... or waits when there is none.
    agent_services.set_draining(dogwood, True)
    waiting = cluster.submit(title="Waits for cedar", options={"num_predict": 8})
    time.sleep(2.5)  # more than a scheduling pass or two
    assert Task.objects.get(pk=waiting).status == Task.Status.PENDING, history(waiting)
    assert sim_stats(cedar_url)["requests"] == seen_by_cedar, "cedar received a generation while its circuit was open"

    # Cleared fault + successful probe: half-open, online, and it takes the waiting task.
    set_fault(cedar_url, "none")
    probed = Agent.objects.get(pk=cedar.pk)
    assert agent_services.probe_agent(probed).available
    # (probe_agent saved these fields of ``probed``; the task it lets in may already
    # have reset the counter in the database.)
    assert probed.status == Agent.Status.ONLINE and probed.last_error == ""
    assert probed.consecutive_failures == settings.HIVE_CIRCUIT_FAILURES - 1, "half-open: one more failure trips it"
    task = cluster.wait(waiting, FINISHED, 30)
    assert task.status == Task.Status.COMPLETED and task.assigned_agent_id == cedar.pk, history(waiting)
    assert [(a.agent.slug, a.outcome) for a in attempts_of(waiting)] == [("cedar", "succeeded")]
    # record_success runs just after the completed status is committed.
    eventually(lambda: Agent.objects.get(pk=cedar.pk).consecutive_failures == 0, 5,
               "a success closing the circuit fully (consecutive_failures back to 0)", cluster)


# -- 4. a worker's pool process is killed mid-stream -------------------------------------


def test_killing_the_pool_process_mid_stream_still_completes_the_task_once(cluster: Cluster) -> None:
    url = cluster.up(nodes={"elm": {"tps": 30}}, workers={"solo": 1}, beat=True)["elm"]
    cluster.agent("elm", url)
    worker = cluster.workers["solo"]

    task_id = cluster.submit(title="Survive a pool crash", options={"num_predict": 120})  # ~4 s of streaming
    cluster.wait(task_id, {Task.Status.RUNNING}, 20)
    eventually(lambda: bool(Task.objects.get(pk=task_id).result), 10, "partial output saved", cluster)

    children = psutil.Process(worker.process.pid).children()
    assert len(children) == 1, children  # concurrency 1: the one pool process, and it is streaming
    children[0].send_signal(signal.SIGKILL)
    killed = time.monotonic()

    task = cluster.wait(task_id, FINISHED, 30)
    took = time.monotonic() - killed
    print(f"pool process killed -> completed in {took:.1f}s; attempts {history(task_id)}")
    assert task.status == Task.Status.COMPLETED, (task.error, history(task_id), cluster.logs())
    assert took < 30
    assert worker.process.poll() is None, "only the pool process died; the worker itself carries on"
    assert "SIGKILL" in worker.output() or "signal 9" in worker.output(), worker.output()[-3000:]
    assert task.timings["eval_count"] == 120
    assert len(task.result.split()) == 120, "the result is stored once, not appended to the dead run's part"
    outcomes = [a.outcome for a in attempts_of(task_id)]
    assert outcomes.count(TaskAttempt.Outcome.SUCCEEDED) == 1, history(task_id)
    assert outcomes[0] == TaskAttempt.Outcome.LOST and outcomes[-1] == TaskAttempt.Outcome.SUCCEEDED, history(task_id)
    assert task.attempts == len(outcomes)


# -- 5. a whole worker is killed ---------------------------------------------------------


def test_a_killed_worker_s_task_is_returned_by_the_reconciler_and_completes_within_30s(cluster: Cluster) -> None:
    # Two workers and beat (the reconciler); the one that takes the task dies, so the
    # time to recovery measures the lease and the reconciler rather than a
    # replacement's start-up on a busy machine.
    url = cluster.up(nodes={"fir": {"tps": 30}}, workers={"first": 3, "second": 3}, beat=True)["fir"]
    cluster.agent("fir", url)

    task_id = cluster.submit(title="Survive a worker crash", options={"num_predict": 120})  # ~4 s of streaming
    task = cluster.wait(task_id, {Task.Status.RUNNING}, 20)
    victim = task.worker.partition("@")[0]
    assert victim in cluster.workers, task.worker
    (survivor,) = set(cluster.workers) - {victim}
    first_dispatch = task.dispatch_id
    time.sleep(0.5)
    # A kill that lands inside a scheduling pass is the xfail test below; this worker
    # dies while it only streams.
    client = redis_client()
    eventually(lambda: not client.exists(scheduler.LOCK_KEY), 5, "a moment between passes", cluster)
    cluster.workers[victim].kill()  # SIGKILL to the worker and its pool: nothing acks, nothing cleans up
    killed = time.monotonic()

    task = cluster.wait(task_id, FINISHED, 30)
    took = time.monotonic() - killed
    print(f"worker killed -> completed in {took:.1f}s; attempts {history(task_id)}")

    assert task.status == Task.Status.COMPLETED, (task.error, history(task_id), cluster.logs())
    assert took < 30, took
    assert task.timings["eval_count"] == 120 and len(task.result.split()) == 120
    lost, succeeded = attempts_of(task_id)  # exactly two
    assert lost.outcome == TaskAttempt.Outcome.LOST and succeeded.outcome == TaskAttempt.Outcome.SUCCEEDED
    # The reconciler, not a redelivery of the old message (Redis's visibility timeout
    # is an hour), did it: it wrote the lost attempt and the task was dispatched anew.
    assert "stopped renewing its lease" in lost.error, lost.error
    assert lost.dispatch_id == first_dispatch
    assert succeeded.dispatch_id != first_dispatch and task.dispatch_id == succeeded.dispatch_id
    assert lost.worker.startswith(f"{victim}@") and succeeded.worker.startswith(f"{survivor}@")


def test_a_scheduling_lock_left_by_a_killed_worker_does_not_stall_placement(cluster: Cluster) -> None:
    url = cluster.up(nodes={"gum": {}}, workers={"w": 3}, beat=True)["gum"]
    cluster.agent("gum", url)
    # Exactly what a worker SIGKILLed in the middle of a pass leaves behind: redis-py's
    # Lock key with the holder's token, never released, expiring after LOCK_TIMEOUT.
    # Taken the way a pass takes it (SET NX), so no running pass loses its lock to us.
    client = redis_client()
    eventually(lambda: bool(client.set(scheduler.LOCK_KEY, "token-of-the-killed-pass", nx=True,
                                       ex=scheduler.LOCK_TIMEOUT)), 10, "the scheduling lock", cluster)
    task_id = cluster.submit(options={"num_predict": 8})
    # Placement normally takes well under a second; a crashed pass may cost a few
    # reconcile intervals, not a minute of a stalled cluster.
    task = cluster.wait(task_id, FINISHED, 20)
    assert task.status == Task.Status.COMPLETED, history(task_id)


# -- 6. Redis loses the queued messages ---------------------------------------------------


def test_tasks_queued_when_redis_is_flushed_are_resent_by_the_reconciler_and_run_once(cluster: Cluster) -> None:
    urls = cluster.up(nodes={"oak": {}, "pine": {}})
    oak_url, pine_url = urls["oak"], urls["pine"]
    # Both warm, so the pass dispatches to every free slot now instead of reserving
    # a warm busy slot over a cold free one (warm_first's waiting).
    cluster.agent("oak", oak_url, preferred=True)
    cluster.agent("pine", pine_url, preferred=True)

    # No worker yet: place the tasks by running a scheduling pass here.
    ids = [cluster.submit(title=f"Queued {i}", options={"num_predict": 10}) for i in range(4)]
    placed = scheduler.run_pass()
    assert placed is not None and len(placed.placed) == 4
    tasks = {str(t.pk): t for t in Task.objects.filter(pk__in=ids)}
    assert {t.status for t in tasks.values()} == {Task.Status.QUEUED}
    dispatches = {tid: t.dispatch_id for tid, t in tasks.items()}
    client = redis_client()
    assert all(client.exists(marker_key(d)) for d in dispatches.values()), "a marker beside each message"
    assert sum(client.llen(q) for q in queues.EXECUTION_QUEUES) == 4

    client.flushdb()
    flushed = timezone.now()
    assert sum(client.llen(q) for q in queues.EXECUTION_QUEUES) == 0
    assert not any(client.exists(marker_key(d)) for d in dispatches.values())

    cluster.up(workers={"after-flush": 4}, beat=True)
    worker = cluster.workers["after-flush"]
    up = time.monotonic()
    claimed_after: float | None = None
    deadline = up + 30
    while time.monotonic() < deadline:
        statuses = list(Task.objects.filter(pk__in=ids).values_list("status", flat=True))
        if claimed_after is None and Task.Status.QUEUED not in statuses:
            claimed_after = time.monotonic() - up
        if all(s in FINISHED for s in statuses):
            break
        time.sleep(0.1)

    print(f"worker up -> all tasks claimed in {claimed_after}s")
    final = {str(t.pk): t for t in Task.objects.filter(pk__in=ids)}
    assert all(t.status == Task.Status.COMPLETED for t in final.values()), (
        {tid: (t.status, t.error) for tid, t in final.items()}, cluster.logs())
    assert claimed_after is not None and claimed_after < 10, claimed_after
    for tid, task in final.items():
        assert task.attempts == 1, history(tid)
        assert task.dispatch_id == dispatches[tid], "the same dispatch was sent again, not a new placement"
        assert task.queued_at > flushed, "the reconciler re-sent it (and stamped queued_at)"
        assert [(a.outcome, a.dispatch_id) for a in attempts_of(tid)] == [("succeeded", dispatches[tid])]
    redispatched = sum(int(n) for n in re.findall(r"'redispatched': (\d+)", worker.output()))
    assert redispatched >= 4, worker.output()[-4000:]
    assert sim_stats(oak_url)["requests"] + sim_stats(pine_url)["requests"] == 4, "each ran exactly once"


# -- 7. the same execution message delivered again --------------------------------------


def test_duplicate_deliveries_of_an_execution_message_run_the_task_once(cluster: Cluster) -> None:
    url = cluster.node("yew", tps=30)
    cluster.agent("yew", url)

    task_id = cluster.submit(title="Delivered thrice", options={"num_predict": 60})  # ~2 s of streaming
    assert scheduler.run_pass() is not None
    task = Task.objects.get(pk=task_id)
    assert task.status == Task.Status.QUEUED
    queue = queues.queue_for_priority(task.priority)

    def deliver_again() -> None:
        execute_task.apply_async(args=(task_id, str(task.dispatch_id)), queue=queue)

    deliver_again()  # while queued: three messages for one dispatch
    deliver_again()
    worker = cluster.worker("dup", concurrency=3)
    cluster.wait(task_id, {Task.Status.RUNNING}, 20)
    deliver_again()  # while running
    done = cluster.wait(task_id, FINISHED, 30)
    assert done.status == Task.Status.COMPLETED, (done.error, history(task_id), cluster.logs())
    deliver_again()  # after completion

    def skipped() -> int:
        return len(set(re.findall(r"hive\.execute_task\[([0-9a-f-]+)\] succeeded in [0-9.]+s: 'skipped'",
                                  worker.output())))

    # 5 messages: one ran it; the others (retried while the lease was held) did nothing.
    eventually(lambda: skipped() == 4, 25, "4 duplicate deliveries skipped", cluster)
    time.sleep(0.5)
    after = Task.objects.get(pk=task_id)
    assert after.status == Task.Status.COMPLETED
    assert after.attempts == 1
    assert (after.result, after.completed_at, after.timings) == (done.result, done.completed_at, done.timings)
    assert [(a.number, a.outcome) for a in attempts_of(task_id)] == [(1, "succeeded")]
    assert len(after.result.split()) == 60
    assert sim_stats(url)["requests"] == 1, "the node saw one generation"


# -- the handoff (coordinator.handoff) under real workers -------------------------------


def handed_off(task: Task) -> bool:
    """Started by the execution that freed its slot: no round queued it, no message ran it."""
    return task.queued_at is not None and task.queued_at == task.started_at


def test_a_higher_priority_task_submitted_mid_chain_takes_the_next_slot(cluster: Cluster, monkeypatch) -> None:
    # One slot and nothing sent ahead into Ollama's queue: every task after the first
    # waits for the slot, and the execution that frees it hands it to the next.
    monkeypatch.setenv("HIVE_QUEUE_AHEAD", "0")
    url = cluster.up(nodes={"oak": {"tps": 40}}, workers={"w": 2})["oak"]
    cluster.agent("oak", url, max_concurrency=1, preferred=True)
    chain = [cluster.submit(title=f"chain {i}", priority=2, options={"num_predict": 30}) for i in range(4)]

    second = cluster.wait(chain[1], {Task.Status.RUNNING, *FINISHED}, 30)
    assert handed_off(second), (second.queued_at, second.started_at, cluster.logs())
    urgent = cluster.submit(title="urgent", priority=5, options={"num_predict": 5})
    time.sleep(0.2)  # a handoff popped just before the submission commits its claim meanwhile
    still_waiting = [t for t in chain if Task.objects.get(pk=t).status == Task.Status.PENDING]
    assert still_waiting, "the chain was still going when the urgent task arrived"

    done = {t: cluster.wait(t, FINISHED, 30) for t in [*chain, urgent]}
    assert all(t.status == Task.Status.COMPLETED for t in done.values()), {t: h.error for t, h in done.items()}
    assert all(len(attempts_of(t)) == 1 for t in done), {t: history(t) for t in done}
    assert done[urgent].started_at < min(done[t].started_at for t in still_waiting), \
        "the urgent task was not passed over by the reservations made before it arrived"
    assert sum(handed_off(task) for task in done.values()) >= 2, [(t.queued_at, t.started_at) for t in done.values()]


def test_a_worker_killed_mid_chain_loses_nothing(cluster: Cluster, monkeypatch) -> None:
    monkeypatch.setenv("HIVE_QUEUE_AHEAD", "0")
    url = cluster.up(nodes={"elm": {"tps": 30}}, workers={"first": 2, "second": 2}, beat=True)["elm"]
    cluster.agent("elm", url, max_concurrency=1, preferred=True)
    opener = cluster.submit(title="opener", options={"num_predict": 10})
    chained = cluster.submit(title="chained", options={"num_predict": 120})  # ~4 s of streaming

    task = cluster.wait(chained, {Task.Status.RUNNING}, 30)
    assert handed_off(task), (task.queued_at, task.started_at)
    victim = task.worker.partition("@")[0]
    first_dispatch = task.dispatch_id
    client = redis_client()
    eventually(lambda: not client.exists(scheduler.LOCK_KEY), 5, "a moment between passes", cluster)
    cluster.workers[victim].kill()
    killed = time.monotonic()

    task = cluster.wait(chained, FINISHED, 30)
    assert task.status == Task.Status.COMPLETED, (task.error, history(chained), cluster.logs())
    assert time.monotonic() - killed < 30
    assert task.timings["eval_count"] == 120 and len(task.result.split()) == 120, "the result is stored once"
    lost, succeeded = attempts_of(chained)
    assert lost.outcome == TaskAttempt.Outcome.LOST and "stopped renewing its lease" in lost.error
    assert lost.dispatch_id == first_dispatch and succeeded.outcome == TaskAttempt.Outcome.SUCCEEDED
    assert [a.outcome for a in attempts_of(opener)] == [TaskAttempt.Outcome.SUCCEEDED]


def test_a_worker_shutting_down_says_so_and_a_restarted_one_takes_handoffs_again(cluster: Cluster) -> None:
    from coordinator.handoff import stopping_key

    worker = cluster.worker("quitter", concurrency=1)
    hostname = re.search(r"(quitter@\S+) v\d", worker.output())
    assert hostname, worker.output()[-2000:]
    key = stopping_key(hostname.group(1))
    client = redis_client()
    assert not client.exists(key)
    worker.kill(signal.SIGTERM)  # warm shutdown: running tasks finish, no handoff after them
    eventually(lambda: bool(client.exists(key)), 20, "the stopping flag", cluster)
    cluster.worker("quitter", concurrency=1)
    assert not client.exists(key), "a worker that is ready again takes handoffs"


def test_a_worker_hands_off_only_tasks_of_the_queues_it_consumes(cluster: Cluster, monkeypatch) -> None:
    # Workers dedicated to a priority queue (as compose runs them) keep to it: the
    # low-queue worker finishing a task does not take the high-priority one waiting
    # for the same slot; that one goes to hive.high and waits for a worker there.
    monkeypatch.setenv("HIVE_QUEUE_AHEAD", "0")
    url = cluster.node("ash", tps=40)
    low = start_worker("low", queue_names=(queues.LOW, queues.CONTROL), concurrency=2)
    cluster.procs.append(low)
    cluster.agent("ash", url, max_concurrency=1, preferred=True)
    slow = cluster.submit(title="low work", priority=1, options={"num_predict": 30})
    cluster.wait(slow, {Task.Status.RUNNING}, 30)
    urgent = cluster.submit(title="urgent", priority=5, options={"num_predict": 5})
    assert cluster.wait(slow, FINISHED, 30).status == Task.Status.COMPLETED
    queued = cluster.wait(urgent, {Task.Status.QUEUED}, 30)
    time.sleep(0.5)
    assert Task.objects.get(pk=urgent).status == Task.Status.QUEUED, "nobody consumes hive.high yet"

    cluster.worker("high", concurrency=1)  # consumes every queue
    done = cluster.wait(urgent, FINISHED, 30)
    assert done.status == Task.Status.COMPLETED and done.dispatch_id == queued.dispatch_id
    assert done.worker.startswith("high@") and not handed_off(done)
