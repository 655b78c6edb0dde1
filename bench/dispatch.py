"""Dispatch overhead: Hive's full path vs plain Celery, same node, broker and worker settings.

``python -m bench dispatch`` sends N tasks through Hive (create -> scheduling pass on the
control worker -> execution task -> stream from Ollama -> result stored) and N plain
Celery tasks (``bench.plain_tasks``) making the same streaming call with httpx, to the
same zero-latency simulated node (very high tokens/s, no load delay, many slots, 5
tokens per answer). Both run on prefork workers with the same concurrency, prefetch 1
and ``-O fair`` against the same Redis; rounds alternate (plain, Hive, plain, Hive ...)
so both see the same machine.

Reported per side: throughput = N / (last completion - first submit); submit -> start
latency p50/p99 (Hive: created_at -> started_at; plain: the submit time carried in the
message -> the task's first line); CPU seconds used. Then a profile of one Hive task run
in-process: SQL statements, Redis round trips, HTTP clients created and CPU per stage.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import OUT_DIR, Environment, log, percentile, stamp, write_json

MODEL = "llama3.2:3b"
TARGET = 0.50
NODE = {"tps": 100000, "load_delay": 0, "parallel": 256, "models": MODEL}
PLAIN_KEY = "bench:plain:{round}"


def run(n: int, rounds: int, concurrency: int, tokens: int, slots: int, out: Path) -> None:
    from bench.harness import Processes, migrate, setup_django, stop_on_sigterm

    setup_django()
    from django.conf import settings

    from hive_project import queues

    procs = Processes(Path(settings.VAR_DIR) / "logs", dict(os.environ))
    with stop_on_sigterm():
        try:
            url = procs.simulator("zero", **NODE)
            migrate()
            scaling = profile_pass_scaling()
            import httpx

            from agents.services import register_agent
            agent = register_agent({"slug": "zero", "name": "zero", "endpoint": url, "model": MODEL,
                                    "max_concurrency": slots, "hardware": {"gpu_type": "simulated"}})
            httpx.post(f"{url}/api/generate", json={"model": MODEL}, timeout=10).raise_for_status()  # resident
            profile = [profile_one_task(agent, tokens) for _ in range(6)][1:]  # the first pays one-off imports

            plain = procs.worker("plain", ["bench.plain"], concurrency, ("-I", "bench.plain_tasks,bench.worker_probe"))
            hive = procs.worker("hive-exec", list(queues.EXECUTION_QUEUES), concurrency, ("-I", "bench.worker_probe"))
            control = procs.worker("hive-control", [queues.CONTROL], 1)
            procs.wait_ready([plain, hive, control])
            time.sleep(2)  # let the start-up reconcile and the profile's leftover messages go through
            log(f"dispatch: node {url}, workers up (concurrency {concurrency} each + Hive's control worker)")

            # Untimed: every pool process makes its first connections and imports.
            plain_round(-1, 3 * concurrency, url, tokens, plain)
            hive_round(3 * concurrency, tokens, hive, control)
            results: dict[str, list[dict[str, Any]]] = {"plain": [], "hive": []}
            for number in range(rounds):
                results["plain"].append(plain_round(number, n, url, tokens, plain))
                log(f"dispatch: round {number + 1} plain {results['plain'][-1]['throughput']:.0f} tasks/s")
                results["hive"].append(hive_round(n, tokens, hive, control))
                log(f"dispatch: round {number + 1} hive  {results['hive'][-1]['throughput']:.0f} tasks/s")
            write_json(out, {"plain": results["plain"], "hive": results["hive"], "profile": summarize_profile(profile),
                             "pass_scaling": scaling, "handoff_seconds": settings.HIVE_HANDOFF_SECONDS,
                             "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]})
        finally:
            procs.stop_all()


def plain_round(number: int, n: int, url: str, tokens: int, worker: Any) -> dict[str, Any]:
    from bench import worker_probe
    from bench.plain_tasks import QUEUE, plain_generate
    from hive_project.redis_client import get_redis

    key = PLAIN_KEY.format(round=number)
    worker_probe.take("bench.plain_generate")
    cpu_before, own_before, load = worker.cpu(), time.process_time(), os.getloadavg()[0]
    first = time.time()
    for index in range(n):
        plain_generate.apply_async(args=(url, MODEL, f"plain task {index}", tokens, time.time(), key, index), queue=QUEUE)
    submit_cpu = time.process_time() - own_before
    redis = get_redis()
    _wait(lambda: redis.hlen(key) >= n, 300, f"{n} plain tasks")
    rows = [json.loads(v) for v in redis.hgetall(key).values()]
    return {
        "n": n, "throughput": n / (max(r[2] for r in rows) - first),
        "submit_seconds": max(r[0] for r in rows) - first,
        "wait_p50": percentile([r[1] - r[0] for r in rows], 50), "wait_p99": percentile([r[1] - r[0] for r in rows], 99),
        "run_p50": percentile([r[2] - r[1] for r in rows], 50),
        "cpu": {"workers": worker.cpu() - cpu_before, "submit": submit_cpu}, "loadavg_1m": load,
        **body_cpu(worker_probe.take("bench.plain_generate")),
    }


def body_cpu(samples: list[float]) -> dict[str, float | None]:
    """The task bodies' CPU (ms): the median, and the mean (what adds up to CPU per task)."""
    return {"body_cpu_ms_p50": percentile(samples, 50),
            "body_cpu_ms_mean": statistics.mean(samples) if samples else None}


def hive_round(n: int, tokens: int, worker: Any, control: Any) -> dict[str, Any]:
    from bench import worker_probe
    from coordinator.models import Task
    from coordinator.scheduler import rounds_so_far
    from coordinator.services import create_tasks

    passes_before = rounds_so_far()
    worker_probe.take("hive.execute_task")
    cpu_before = {"workers": worker.cpu(), "control": control.cpu()}
    own_before, load = time.process_time(), os.getloadavg()[0]
    ids = []
    first = time.time()
    for index in range(n):  # one submission per task, as N API calls would be
        (task,) = create_tasks([{"title": f"dispatch {index}", "prompt": f"hive task {index}", "model": MODEL,
                                 "priority": 3, "options": {"num_predict": tokens}}])
        ids.append(task.pk)
    submit_seconds = time.time() - first
    submit_cpu = time.process_time() - own_before
    finished = Task.Status.finished()
    _wait(lambda: not Task.objects.filter(pk__in=ids).exclude(status__in=finished).exists(), 600, f"{n} Hive tasks")
    cpu = {"workers": worker.cpu() - cpu_before["workers"], "control": control.cpu() - cpu_before["control"],
           "submit": submit_cpu}
    rows = list(Task.objects.filter(pk__in=ids).values_list("status", "created_at", "queued_at", "started_at",
                                                             "completed_at"))
    done = [r for r in rows if r[0] == Task.Status.COMPLETED]
    if len(done) != n:
        raise RuntimeError(f"{n - len(done)} Hive tasks did not complete: {[r[0] for r in rows if r not in done][:5]}")

    def secs(a: datetime, b: datetime) -> float:
        return (b - a).total_seconds()

    return {
        "n": n, "throughput": n / (max(r[4] for r in done) - min(r[1] for r in done)).total_seconds(),
        "submit_seconds": submit_seconds,
        "wait_p50": percentile([secs(r[1], r[3]) for r in done], 50),
        "wait_p99": percentile([secs(r[1], r[3]) for r in done], 99),
        "created_to_queued_p50": percentile([secs(r[1], r[2]) for r in done], 50),
        "queued_to_started_p50": percentile([secs(r[2], r[3]) for r in done], 50),
        "run_p50": percentile([secs(r[3], r[4]) for r in done], 50),
        "passes": rounds_so_far() - passes_before,
        # Started by the execution that freed their slot (coordinator.handoff): no message of their own.
        "handed_off": sum(1 for r in done if r[2] == r[3]),
        **body_cpu(worker_probe.take("hive.execute_task")),
        "cpu": cpu, "loadavg_1m": load,
    }


def _wait(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not done within {timeout}s")
        time.sleep(0.05)


# -- profile of one task ---------------------------------------------------------------


class Counters:
    """Counts Redis round trips/commands and httpx clients created, process-wide."""

    def __init__(self) -> None:
        import httpx
        import redis.asyncio.client as aredis
        import redis.client as sredis

        self.values = {"redis_round_trips": 0, "redis_commands": 0, "http_clients": 0}
        self._patches: list[tuple[Any, str, Any]] = []
        counters = self.values

        def wrap_command(original: Any) -> Any:
            def command(self: Any, *args: Any, **kwargs: Any) -> Any:
                counters["redis_round_trips"] += 1
                counters["redis_commands"] += 1
                return original(self, *args, **kwargs)
            return command

        def wrap_pipeline(original: Any) -> Any:
            def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
                counters["redis_round_trips"] += 1
                counters["redis_commands"] += len(self.command_stack)
                return original(self, *args, **kwargs)
            return execute

        def wrap_async_command(original: Any) -> Any:
            async def command(self: Any, *args: Any, **kwargs: Any) -> Any:
                counters["redis_round_trips"] += 1
                counters["redis_commands"] += 1
                return await original(self, *args, **kwargs)
            return command

        def wrap_async_pipeline(original: Any) -> Any:
            async def execute(self: Any, *args: Any, **kwargs: Any) -> Any:
                counters["redis_round_trips"] += 1
                counters["redis_commands"] += len(self.command_stack)
                return await original(self, *args, **kwargs)
            return execute

        def wrap_client(original: Any) -> Any:
            def init(self: Any, *args: Any, **kwargs: Any) -> None:
                counters["http_clients"] += 1
                original(self, *args, **kwargs)
            return init

        self._patch(sredis.Redis, "execute_command", wrap_command)
        self._patch(sredis.Pipeline, "execute", wrap_pipeline)
        self._patch(aredis.Redis, "execute_command", wrap_async_command)
        self._patch(aredis.Pipeline, "execute", wrap_async_pipeline)
        self._patch(httpx.Client, "__init__", wrap_client)

    def _patch(self, owner: Any, name: str, wrapper: Any) -> None:
        original = owner.__dict__[name]
        self._patches.append((owner, name, original))
        setattr(owner, name, wrapper(original))

    def undo(self) -> None:
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)

    def snapshot(self) -> dict[str, int]:
        return dict(self.values)


def profile_one_task(agent: Any, tokens: int) -> dict[str, dict[str, float]]:
    """One task through create -> pass -> execute in this process, counting what each costs."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from coordinator import events, executor, scheduler
    from coordinator.models import Task
    from coordinator.services import create_tasks

    counters = Counters()
    stages: dict[str, dict[str, float]] = {}
    task: Task | None = None

    def stage(name: str, action: Any) -> Any:
        before = counters.snapshot()
        wall, cpu = time.perf_counter(), time.process_time()
        with CaptureQueriesContext(connection) as queries:
            value = action()
            events.flush(5)  # events go out on a background thread; count their Redis calls here
        after = counters.snapshot()
        stages[name] = {"sql": len(queries.captured_queries),
                        "sql_writes": sum(1 for q in queries.captured_queries
                                          if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))),
                        "wall_ms": (time.perf_counter() - wall) * 1000, "cpu_ms": (time.process_time() - cpu) * 1000,
                        **{k: after[k] - before[k] for k in after}}
        return value

    try:
        (task,) = stage("create", lambda: create_tasks([{
            "title": "profile", "prompt": "profile", "model": MODEL, "priority": 3, "options": {"num_predict": tokens}}]))
        stage("pass", scheduler.run_pass)
        task.refresh_from_db()
        if task.status != Task.Status.QUEUED:
            raise RuntimeError(f"the pass did not place the profiled task (it is {task.status})")
        stage("execute", lambda: executor.execute(str(task.pk), str(task.dispatch_id), "profile"))
    finally:
        counters.undo()
    return stages


def profile_pass_scaling(sizes: tuple[int, ...] = (1, 50, 200, 800)) -> list[dict[str, float]]:
    """CPU of one scheduling pass (run_pass: placement walk + queue info + cluster status)
    against the number of pending tasks, on a cluster whose one slot is taken, as
    during a burst. Runs before any worker exists; everything it creates is deleted."""
    from agents.models import Agent
    from coordinator import scheduler
    from coordinator.models import Task
    from coordinator.services import create_tasks

    agent = Agent.objects.create(slug="scaling", name="scaling", endpoint="http://127.0.0.1:9", model=MODEL,
                                 status=Agent.Status.ONLINE, max_concurrency=1, tokens_per_second=50,
                                 models_available=[{"name": MODEL}], models_loaded=[{"name": MODEL}])
    Task.objects.create(title="scaling holder", prompt="x", model=MODEL, status=Task.Status.RUNNING,
                        assigned_agent=agent)
    results = []
    try:
        for size in sizes:
            have = Task.objects.filter(status=Task.Status.PENDING).count()
            create_tasks([{"title": "scaling", "prompt": "x", "model": MODEL, "priority": 1 + i % 5,
                           "options": {"num_predict": 50}} for i in range(size - have)])
            samples = []
            for _ in range(3):
                cpu = time.process_time()
                scheduler.run_pass()
                samples.append((time.process_time() - cpu) * 1000)
            results.append({"pending": size, "cpu_ms": statistics.median(samples)})
    finally:
        Task.objects.filter(assigned_agent=agent).delete()
        Task.objects.filter(title="scaling").delete()
        agent.delete()
    return results


def summarize_profile(samples: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    return {stage: {key: statistics.median(sample[stage][key] for sample in samples) for key in samples[0][stage]}
            for stage in samples[0]}


# -- the orchestrator ----------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench dispatch", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=300, help="tasks per side per round (default 300)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="worker processes on each side (default 8)")
    parser.add_argument("--tokens", type=int, default=5, help="num_predict of every task (default 5)")
    parser.add_argument("--slots", type=int, default=None,
                        help="the node's slots in Hive (its max_concurrency; default: the worker concurrency, "
                             "so every slot has a worker process to run it)")
    options = parser.parse_args(argv)
    slots = options.slots or options.concurrency
    started = time.monotonic()
    with Environment("dispatch") as env:
        out = env.run_dir / "dispatch" / "raw.json"
        child_env = env.child_env("dispatch", env.fresh_database("dispatch"))
        log(f"dispatch: {options.rounds} rounds x {options.tasks} tasks per side, concurrency {options.concurrency}")
        env.run_child("bench.dispatch", "dispatch", ["--tasks", str(options.tasks), "--rounds", str(options.rounds),
                                                      "--concurrency", str(options.concurrency),
                                                      "--tokens", str(options.tokens), "--slots", str(slots),
                                                      "--out", str(out)],
                      child_env, timeout=1200)
        raw = json.loads(out.read_text())
        environment = env.describe()
        run_dir = env.run_dir
    result = {
        "benchmark": "dispatch", "date": datetime.now().isoformat(timespec="seconds"),
        "settings": {"tasks": options.tasks, "rounds": options.rounds, "concurrency": options.concurrency,
                     "num_predict": options.tokens, "node": NODE, "slots": slots,
                     "workers": f"prefork, -c {options.concurrency}, prefetch 1, -O fair on each side; "
                                "Hive adds its control worker (-c 1)"},
        "environment": environment, "raw": raw, "summary": summarize(raw),
        "wall_seconds": time.monotonic() - started, "run_dir": str(run_dir),
    }
    for path in (OUT_DIR / "dispatch.json", OUT_DIR / f"dispatch-{stamp()}.json"):
        write_json(path, result)
    print(report(result))
    return result


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    def mean(side: str, key: str) -> float:
        return statistics.mean(r[key] for r in raw[side])

    def per_task_cpu(side: str) -> float:
        return statistics.mean(sum(r["cpu"].values()) / r["n"] for r in raw[side])

    summary = {side: {"throughput": mean(side, "throughput"), "wait_p50": mean(side, "wait_p50"),
                      "wait_p99": mean(side, "wait_p99"), "cpu_ms_per_task": per_task_cpu(side) * 1000}
               for side in ("plain", "hive")}
    for side in ("plain", "hive"):
        for key in ("body_cpu_ms_p50", "body_cpu_ms_mean"):
            bodies = [r[key] for r in raw[side] if r.get(key) is not None]
            summary[side][key] = statistics.mean(bodies) if bodies else None
        summary[side]["cpu_ms_split"] = {part: statistics.mean(r["cpu"][part] / r["n"] for r in raw[side]) * 1000
                                         for part in raw[side][0]["cpu"]}
    summary["ratio"] = summary["hive"]["throughput"] / summary["plain"]["throughput"]
    summary["target_met"] = summary["ratio"] >= TARGET
    return summary


def report(result: dict[str, Any]) -> str:
    s, summary, raw = result["settings"], result["summary"], result["raw"]
    lines = [
        "",
        f"Dispatch overhead — {s['tasks']} tasks per side x {s['rounds']} alternating rounds; node: tps "
        f"{s['node']['tps']}, load 0 s, {s['node']['parallel']} parallel; {s.get('slots', 64)} slots in Hive "
        f"(handoff {'on' if raw.get('handoff_seconds') else 'off'}), num_predict {s['num_predict']}",
        f"  workers: {s['workers']}",
        f"  {result['environment']['database']}; {result['environment']['redis']}; "
        f"{raw['cpus']} CPUs, 1-min load avg at the end {raw['loadavg_1m']:.1f}",
        "",
        f"  {'':<14} {'tasks/s':>8} {'submit->start p50':>18} {'p99':>8} {'CPU ms/task':>12}",
    ]
    for side, label in (("plain", "plain Celery"), ("hive", "Hive")):
        v = summary[side]
        lines.append(f"  {label:<14} {v['throughput']:>8.1f} {v['wait_p50']:>17.3f}s {v['wait_p99']:>7.2f}s "
                     f"{v['cpu_ms_per_task']:>12.1f}")
    lines += [
        f"  Hive / plain throughput: {summary['ratio']:.2f}  (target >= {TARGET:.2f}: "
        f"{'MET' if summary['target_met'] else 'NOT MET'})",
        "  CPU ms per task: " + " | ".join(
            f"{label} " + ", ".join(f"{part} {ms:.1f}" for part, ms in summary[side]["cpu_ms_split"].items())
            for side, label in (("plain", "plain:"), ("hive", "Hive:"))),
        *([f"  CPU ms of one task's body in its pool process (mean, p50): plain {summary['plain']['body_cpu_ms_mean']:.1f}, "
           f"{summary['plain']['body_cpu_ms_p50']:.1f} | Hive {summary['hive']['body_cpu_ms_mean']:.1f}, "
           f"{summary['hive']['body_cpu_ms_p50']:.1f} (per execution message: one runs the tasks handed off after it); "
           "the rest of the workers' CPU per task is Celery's"]
          if summary["plain"].get("body_cpu_ms_mean") is not None and summary["hive"].get("body_cpu_ms_mean") is not None
          else []),
        "",
        "  rounds (tasks/s plain | Hive; Hive stages p50: created->queued / queued->started / started->completed; passes):",
    ]
    for plain, hive in zip(raw["plain"], raw["hive"], strict=True):
        lines.append(f"    {plain['throughput']:6.1f} | {hive['throughput']:6.1f};  {hive['created_to_queued_p50']:.3f}s / "
                     f"{hive['queued_to_started_p50']:.3f}s / {hive['run_p50']:.3f}s;  {hive['passes']} scheduling rounds for "
                     f"{hive['n']} tasks, {hive.get('handed_off', 0)} handed off;  "
                     f"submit took {plain['submit_seconds']:.1f}s | {hive['submit_seconds']:.1f}s")
    lines += ["", "  one Hive task, in-process (median of 5): SQL statements (writes), Redis round trips, "
                  "HTTP clients created, CPU ms"]
    for stage, v in raw["profile"].items():
        lines.append(f"    {stage:<8} SQL {v['sql']:>3.0f} ({v['sql_writes']:.0f} writes)  Redis {v['redis_round_trips']:>3.0f} "
                     f"round trips ({v['redis_commands']:.0f} commands)  HTTP clients {v['http_clients']:.0f}  "
                     f"CPU {v['cpu_ms']:.0f} ms  wall {v['wall_ms']:.0f} ms")
    lines.append("  one scheduling pass, CPU ms by pending tasks: " + ", ".join(
        f"{row['pending']}: {row['cpu_ms']:.0f}" for row in raw["pass_scaling"]))
    lines.append(f"\n  raw data and logs: {result['run_dir']}   (wall time {result['wall_seconds']:.0f}s)")
    return "\n".join(lines)


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--tasks", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--tokens", type=int, required=True)
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    options = parser.parse_args(argv)
    run(options.tasks, options.rounds, options.concurrency, options.tokens, options.slots, options.out)


if __name__ == "__main__":
    if "--child" in sys.argv[1:]:
        child_main(sys.argv[1:])
    else:
        main(sys.argv[1:])
