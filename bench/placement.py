"""Placement quality: one heterogeneous cluster, one workload, each placement strategy.

``python -m bench placement`` runs the same seeded workload through Hive's full system
(Celery workers for every queue, the control worker, beat, Redis, a database) once per
strategy (warm_first, round_robin, least_busy), each on a fresh database, fresh Redis
contents and freshly started simulated nodes, and compares:

- makespan: first task created -> last task completed (database timestamps);
- ideal lower bound = max(total tokens / capacity, longest task on its fastest node),
  capacity = sum over nodes of slots x tokens/s; and makespan / ideal;
- cold loads: model loads the nodes performed during the workload (simulator counters,
  minus the pre-warm loads);
- p95 wait of priority-5 tasks: created -> started.

Each run is a child process (``--child``) so it can have its own database and settings.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.harness import OUT_DIR, Environment, log, percentile, stamp, write_json

STRATEGIES = ("warm_first", "round_robin", "least_busy")
BASELINES = ("round_robin", "least_busy")
TARGET_IDEAL = 1.15
TARGET_VS_BASELINE = 0.70

LLAMA, CODER, MISTRAL, DEEPSEEK = "llama3.2:3b", "qwen2.5-coder:7b", "mistral:7b", "deepseek-r1:7b"


@dataclass(frozen=True)
class Node:
    slug: str
    tps: float  # tokens/s of each generation (the simulator runs its slots at full speed each)
    parallel: int  # slots (OLLAMA_NUM_PARALLEL); Hive's max_concurrency
    models: tuple[str, ...]  # on disk (/api/tags)
    resident: tuple[str, ...]  # loaded before the workload starts
    max_loaded: int  # models resident at once (VRAM)
    load_delay: float  # seconds to cold-load a model

    @property
    def capacity(self) -> float:
        return self.tps * self.parallel


# Speeds 1:2:4:8; faster nodes have more slots and room for two models. The operator
# made the models in demand resident where the capacity is, so a placement that keeps
# every node on its resident models can reach the ideal (see "warm-only bound").
CLUSTER: tuple[Node, ...] = (
    Node("n1-slow", 25, 1, (LLAMA, CODER), (LLAMA,), 1, 2.0),
    Node("n2-mid", 50, 2, (LLAMA, CODER, MISTRAL), (CODER, MISTRAL), 2, 1.5),
    Node("n3-fast", 100, 2, (CODER, MISTRAL, DEEPSEEK), (CODER, DEEPSEEK), 2, 1.5),
    Node("n4-fastest", 200, 4, (LLAMA, MISTRAL, DEEPSEEK), (LLAMA, MISTRAL), 2, 1.0),
)


def scaled(scale: float) -> tuple[Node, ...]:
    """The cluster with time stretched by ``scale``: tokens/s divided, load times multiplied."""
    return tuple(replace(node, tps=node.tps / scale, load_delay=node.load_delay * scale) for node in CLUSTER)


MODEL_MIX = ((LLAMA, 0.40), (MISTRAL, 0.35), (CODER, 0.10), (DEEPSEEK, 0.15))
TOKENS = (20, 200)
PRIORITIES = (1, 5)
WARMUP_TOKENS = 20


def total_slots(cluster: tuple[Node, ...] = CLUSTER) -> int:
    return sum(node.parallel for node in cluster)


def queue_ahead() -> int:
    from django.conf import settings

    from bench.harness import SETTINGS_MODULE

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", SETTINGS_MODULE)  # --report reads settings without a run
    return settings.HIVE_QUEUE_AHEAD


def execution_concurrency(cluster: tuple[Node, ...] = CLUSTER, ahead: int | None = None) -> int:
    """Processes per execution-queue worker.

    The scheduler never has more than sum(slots) + HIVE_QUEUE_AHEAD per node tasks
    queued or running, and all of them may have the same priority (one queue), so each
    queue's worker gets that many processes, plus 2 for processes still finishing
    bookkeeping after their slot was freed.
    """
    return total_slots(cluster) + (queue_ahead() if ahead is None else ahead) * len(cluster) + 2


def make_workload(count: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    models, weights = zip(*MODEL_MIX, strict=True)
    tasks = []
    for index in range(count):
        tasks.append({
            "index": index,
            "model": rng.choices(models, weights)[0],
            "num_predict": rng.randint(*TOKENS),
            "priority": rng.randint(*PRIORITIES),
        })
    return tasks


# -- metrics ---------------------------------------------------------------------------


def lower_bounds(workload: list[dict[str, Any]], cluster: tuple[Node, ...] = CLUSTER) -> dict[str, float]:
    """The ideal (the issue's bound) and a tighter one that respects which node has which model."""
    capacity = sum(node.capacity for node in cluster)
    work = sum(task["num_predict"] for task in workload)
    longest = max(task["num_predict"] / max(n.tps for n in cluster if task["model"] in n.models) for task in workload)
    ideal = max(work / capacity, longest)
    return {"capacity_tps": capacity, "total_tokens": work, "work_bound": work / capacity,
            "longest_task": longest, "ideal": ideal,
            "model_aware": _hall_bound(workload, cluster, ideal, lambda node: node.models),
            "warm_only": _hall_bound(workload, cluster, ideal, lambda node: node.resident)}


def _hall_bound(workload: list[dict[str, Any]], cluster: tuple[Node, ...], floor: float,
                offers: Callable[[Node], tuple[str, ...]]) -> float:
    """Fractional assignment where each model may only run on the nodes that offer it
    (Hall's condition): for every set S of models, the work of S cannot finish faster
    than on the nodes offering some model of S. No load times, no memory limits."""
    models = sorted({task["model"] for task in workload})
    bound = floor
    for size in range(1, len(models) + 1):
        for subset in itertools.combinations(models, size):
            demand = sum(task["num_predict"] for task in workload if task["model"] in subset)
            supply = sum(node.capacity for node in cluster if set(subset) & set(offers(node)))
            bound = max(bound, demand / supply if supply else float("inf"))
    return bound


def dispatch_gaps(rows: list[dict[str, Any]]) -> list[float]:
    """Per agent: time from a task completing to the next task starting on that agent.

    Counted only while other tasks were still pending, i.e. the slot could have been
    refilled at once: the latency of completion -> pass -> claim -> message -> worker.
    """
    gaps: list[float] = []
    last_start = max(row["started"] for row in rows)
    for agent in {row["agent"] for row in rows}:
        mine = [row for row in rows if row["agent"] == agent]
        starts = sorted(row["started"] for row in mine)
        used = [False] * len(starts)
        for done in sorted(row["completed"] for row in mine):
            if done >= last_start:
                break
            for i, start in enumerate(starts):
                if not used[i] and start >= done:
                    used[i] = True
                    gaps.append(start - done)
                    break
    return gaps


def analyse(raw: dict[str, Any], workload: list[dict[str, Any]], cluster: tuple[Node, ...]) -> dict[str, Any]:
    rows = [row for row in raw["tasks"] if row["status"] == "completed"]
    failed = len(raw["tasks"]) - len(rows)
    bounds = lower_bounds(workload, cluster)
    first = min(row["created"] for row in raw["tasks"])
    last = max(row["completed"] for row in rows)
    makespan = last - first
    cold = sum(after["loads"] - raw["sims_before"][slug]["loads"] for slug, after in raw["sims_after"].items())
    evictions = sum(after["evictions"] - raw["sims_before"][slug]["evictions"] for slug, after in raw["sims_after"].items())
    wait_p5 = [row["started"] - row["created"] for row in rows if row["priority"] == 5]
    wait_all = [row["started"] - row["created"] for row in rows]
    per_node = {}
    for node in cluster:
        mine = [row for row in rows if row["agent"] == node.slug]
        busy = sum(row["completed"] - row["started"] for row in mine)
        per_node[node.slug] = {
            "tasks": len(mine),
            "tokens": sum(row["eval_count"] for row in mine),
            "token_share": sum(row["eval_count"] for row in mine) / max(bounds["total_tokens"], 1),
            "capacity_share": node.capacity / bounds["capacity_tps"],
            "busy": busy / (node.parallel * makespan),
            "cold_loads": raw["sims_after"][node.slug]["loads"] - raw["sims_before"][node.slug]["loads"],
            "load_seconds": sum(row["load"] for row in mine),
        }
    gaps = dispatch_gaps(rows)
    # Time a task held its slot outside Ollama's own request (claim, client set-up,
    # reading the stream, storing the result): pure executor overhead.
    outside = [row["completed"] - row["started"] - row["ollama_total"] for row in rows]
    # How long a task really held its slot, against what the scheduler's estimator
    # assumes (tokens / measured tokens/s, plus the load when there was one).
    measured = raw["measured"]
    held = [(row["completed"] - row["started"])
            / (row["eval_count"] / measured[row["agent"]]["tokens_per_second"] + (row["load"] if row["load"] > 0.05 else 0))
            for row in rows if measured[row["agent"]]["tokens_per_second"] > 0 and row["eval_count"]]
    return {
        "strategy": raw["strategy"],
        "makespan": makespan,
        "ideal": bounds["ideal"],
        "x_ideal": makespan / bounds["ideal"],
        "model_aware_bound": bounds["model_aware"],
        "cold_loads": cold,
        "evictions": evictions,
        "p95_wait_p5": percentile(wait_p5, 95),
        "p50_wait_p5": percentile(wait_p5, 50),
        "p95_wait_all": percentile(wait_all, 95),
        "throughput_share": bounds["total_tokens"] / makespan / bounds["capacity_tps"],
        # Dispatches per second the ideal needs, and what Hive achieved.
        "dispatch_rate_needed": len(rows) / bounds["ideal"],
        "dispatch_rate_achieved": len(rows) / makespan,
        "drain": last - max(row["started"] for row in rows),
        "dispatch_gap_p50": percentile(gaps, 50),
        "dispatch_gap_p90": percentile(gaps, 90),
        "load_seconds": sum(row["load"] for row in rows),
        "executor_overhead_p50": percentile(outside, 50),
        "executor_overhead_p90": percentile(outside, 90),
        "slot_time_vs_estimate_p50": percentile(held, 50),
        # Execution message sent -> a worker process claimed it: the workers' share of the latency.
        "pickup_p95": percentile([row["started"] - row["queued"] for row in rows], 95),
        "failed": failed,
        "retried": sum(1 for row in raw["tasks"] if row["attempts"] > 1),
        "per_node": per_node,
        "passes": raw["passes"],
        "executions": raw["executions"],
        "cpu_seconds": raw["cpu_seconds"],
        "loadavg_1m": raw["loadavg_1m"],
    }


# -- one run (child process) -----------------------------------------------------------


def run_one(strategy: str, workload: list[dict[str, Any]], out: Path, cluster: tuple[Node, ...]) -> None:
    import os

    from bench.harness import Processes, migrate, setup_django, stop_on_sigterm

    setup_django()
    from django.conf import settings

    from hive_project import queues

    assert settings.HIVE_PLACEMENT == strategy, (settings.HIVE_PLACEMENT, strategy)
    procs = Processes(Path(settings.VAR_DIR) / "logs", dict(os.environ))
    with stop_on_sigterm():
        try:
            # Execution workers and nodes boot while the database is migrated; the
            # control worker (which reads the database at once) starts after.
            concurrency = execution_concurrency()
            workers = [procs.worker(f"exec-{queue.split('.')[1]}", [queue], concurrency)
                       for queue in queues.EXECUTION_QUEUES]
            urls = {node.slug: procs.simulator(node.slug, models=node.models, tps=node.tps, parallel=node.parallel,
                                               load_delay=node.load_delay, max_loaded=node.max_loaded)
                    for node in cluster}
            migrate()
            control = procs.worker("control", [queues.CONTROL], 1)
            beat = procs.beat()
            _measure(strategy, workload, out, procs, urls, workers, control, beat, concurrency, cluster)
        finally:
            procs.stop_all()


def _measure(strategy: str, workload: list[dict[str, Any]], out: Path, procs: Any, urls: dict[str, str],
             workers: list[Any], control: Any, beat: Any, concurrency: int, cluster: tuple[Node, ...]) -> None:
    import os

    import httpx

    from agents.models import Agent
    from agents.services import probe_agent, register_agent
    from coordinator.models import Task
    from coordinator.scheduler import rounds_so_far
    from coordinator.services import create_tasks

    agents = {}
    for node in cluster:
        agents[node.slug] = register_agent({
            "slug": node.slug, "name": node.slug, "endpoint": urls[node.slug], "model": node.resident[0],
            "max_concurrency": node.parallel, "max_loaded_models": node.max_loaded,
            "hardware": {"gpu_type": "simulated"},
        })
    procs.wait_ready([*workers, control])
    beat.wait_for("beat: Starting", 60)
    log(f"{strategy}: {len(cluster)} nodes, {len(workers)}x{concurrency} execution processes + control + beat up")

    # Pre-warm through Hive itself, pinned, the same on every run: each node loads its
    # resident models, and Hive measures every node's tokens/s and load time as it
    # would have after running for a while.
    warm = create_tasks([
        {"title": f"warm-up {node.slug} {model}", "prompt": "warm up", "model": model, "priority": 5,
         "options": {"num_predict": WARMUP_TOKENS}, "pinned_agent": agents[node.slug]}
        for node in cluster for model in node.resident])
    _wait_finished([t.pk for t in warm], 90)
    for agent in Agent.objects.all():
        probe_agent(agent)
    sims_before = {slug: httpx.get(f"{url}/_sim/stats").json() for slug, url in urls.items()}
    for node in cluster:
        loaded = sims_before[node.slug]["loaded"]
        if sorted(loaded) != sorted(node.resident):
            raise RuntimeError(f"{node.slug}: expected {node.resident} resident after the warm-up, found {loaded}")
    measured = {a.slug: {"tokens_per_second": a.tokens_per_second, "load_seconds": a.load_seconds,
                         "loaded": a.loaded_model_names} for a in Agent.objects.all()}
    log(f"{strategy}: warm-up done; Hive measured " +
        ", ".join(f"{slug} {m['tokens_per_second']:.0f} tok/s load {m['load_seconds']:.2f}s"
                  for slug, m in measured.items()))
    time.sleep(1.0)  # let the passes the warm-up triggered settle

    specs = [{"title": f"bench {t['index']}", "prompt": f"Benchmark task {t['index']}: write about {t['model']}.",
              "model": t["model"], "priority": t["priority"],
              "options": {"num_predict": t["num_predict"], "temperature": 0}} for t in workload]
    groups = {"control": [control], "execution": workers, "beat": [beat],
              "nodes": [p for p in procs.procs if p.name.startswith("sim-")]}
    cpu_before = {name: sum(p.cpu() for p in group) for name, group in groups.items()}
    load_before = os.getloadavg()[0]
    rounds_before = rounds_so_far()
    submitted = time.time()
    tasks = create_tasks(specs)
    ids = [t.pk for t in tasks]
    log(f"{strategy}: {len(ids)} tasks submitted in {time.time() - submitted:.2f}s")
    _wait_finished(ids, 600, progress=strategy)
    wall = time.time() - submitted
    cpu = {name: sum(p.cpu() for p in group) - cpu_before[name] for name, group in groups.items()}
    sims_after = {slug: httpx.get(f"{url}/_sim/stats").json() for slug, url in urls.items()}

    index_of = {pk: i for i, pk in enumerate(ids)}
    rows = []
    for task in Task.objects.filter(pk__in=ids).select_related("assigned_agent"):
        timings = task.timings or {}
        rows.append({
            "index": index_of[task.pk], "status": task.status, "priority": task.priority,
            "model": task.model, "num_predict": task.options.get("num_predict"),
            "agent": task.assigned_agent.slug if task.assigned_agent else None,
            "created": task.created_at.timestamp(),
            "queued": task.queued_at.timestamp() if task.queued_at else None,
            "started": task.started_at.timestamp() if task.started_at else None,
            "completed": task.completed_at.timestamp() if task.completed_at else None,
            "eval_count": timings.get("eval_count", 0), "load": timings.get("load_duration", 0) / 1e9,
            "ollama_total": timings.get("total_duration", 0) / 1e9,
            "attempts": task.attempts, "error": task.error[:200],
        })
    rows.sort(key=lambda row: row["index"])
    write_json(out, {
        "strategy": strategy, "tasks": rows, "sims_before": sims_before, "sims_after": sims_after,
        "measured": measured, "concurrency": concurrency, "wall": wall,
        "cpu_seconds": cpu, "loadavg_1m": [load_before, os.getloadavg()[0]], "cpus": os.cpu_count(),
        "passes": {**_celery_timings(control.output(), "hive.run_scheduling_pass"),
                   "rounds": rounds_so_far() - rounds_before},
        "executions": _celery_timings("".join(w.output() for w in workers), "hive.execute_task"),
    })


def _wait_finished(ids: list[Any], timeout: float, progress: str = "") -> None:
    from coordinator.models import Task

    deadline = time.monotonic() + timeout
    reported = time.monotonic()
    while True:
        left = Task.objects.filter(pk__in=ids).exclude(status__in=Task.Status.finished()).count()
        if left == 0:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{left} of {len(ids)} tasks unfinished after {timeout}s")
        if progress and time.monotonic() - reported >= 10:
            log(f"{progress}: {len(ids) - left}/{len(ids)} done")
            reported = time.monotonic()
        time.sleep(0.2)


_SUCCEEDED = r"Task {name}\[[^\]]+\] succeeded in ([0-9.eE-]+)s"


def _celery_timings(output: str, name: str) -> dict[str, Any]:
    """How long Celery says each run of a task took (from the workers' INFO logs)."""
    seconds = [float(m) for m in re.findall(_SUCCEEDED.format(name=re.escape(name)), output)]
    return {"count": len(seconds), "p50": percentile(seconds, 50), "p95": percentile(seconds, 95),
            "max": max(seconds) if seconds else None, "total": sum(seconds)}


# -- the orchestrator ----------------------------------------------------------------


def settings_summary(count: int, seed: int, scale: float, ahead: int | None = None) -> dict[str, Any]:
    ahead = queue_ahead() if ahead is None else ahead
    return {
        "nodes": [asdict(node) for node in scaled(scale)], "time_scale": scale,
        "tasks": count, "seed": seed, "model_mix": dict(MODEL_MIX), "num_predict": TOKENS,
        "priorities": PRIORITIES, "total_slots": total_slots(),
        "workers": f"hive.high, hive.medium, hive.low: one worker each, prefork, concurrency {execution_concurrency(ahead=ahead)} "
                   f"(= {total_slots()} slots + {ahead} queued ahead x {len(CLUSTER)} nodes + 2), prefetch 1, "
                   "-O fair; hive.control: concurrency 1; beat",
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench placement", description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=200, help="tasks in the workload (default 200)")
    parser.add_argument("--seed", type=int, default=42, help="workload seed (default 42)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES), help="comma-separated (default all three)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="stretch time: node tokens/s divided and load times multiplied by this (default 1)")
    parser.add_argument("--report", type=Path, metavar="RUN_DIR",
                        help="print the report of an earlier run from its raw data instead of running")
    options = parser.parse_args(argv)
    if options.report:
        return report_again(options.report)
    cluster = scaled(options.scale)
    strategies = [s for s in options.strategies.split(",") if s]
    workload = make_workload(options.tasks, options.seed)
    started = time.monotonic()
    runs: dict[str, dict[str, Any]] = {}
    with Environment("placement") as env:
        workload_path = env.run_dir / "workload.json"
        write_json(workload_path, workload)
        write_json(env.run_dir / "meta.json", {"tasks": options.tasks, "seed": options.seed, "scale": options.scale,
                                               "queue_ahead": queue_ahead(), "environment": env.describe()})
        for strategy in strategies:
            log(f"placement: running {strategy} ({options.tasks} tasks, seed {options.seed})")
            out = env.run_dir / strategy / "raw.json"
            child_env = env.child_env(strategy, env.fresh_database(strategy), HIVE_PLACEMENT=strategy)
            env.run_child("bench.placement", strategy, ["--strategy", strategy, "--workload", str(workload_path),
                                                        "--out", str(out), "--scale", str(options.scale)],
                          child_env, timeout=900 * options.scale)
            runs[strategy] = analyse(json.loads(out.read_text()), workload, cluster)
        environment = env.describe()
        run_dir = env.run_dir
    result = {
        "benchmark": "placement", "date": datetime.now().isoformat(timespec="seconds"),
        "settings": settings_summary(options.tasks, options.seed, options.scale), "environment": environment,
        "bounds": lower_bounds(workload, cluster), "runs": runs, "comparison": compare(runs),
        "wall_seconds": time.monotonic() - started, "run_dir": str(run_dir),
    }
    for path in (OUT_DIR / "placement.json", OUT_DIR / f"placement-{stamp()}.json"):
        write_json(path, result)
    print(report(result))
    return result


def report_again(run_dir: Path) -> dict[str, Any]:
    meta = json.loads((run_dir / "meta.json").read_text())
    workload = json.loads((run_dir / "workload.json").read_text())
    cluster = scaled(meta["scale"])
    runs = {strategy: analyse(json.loads((run_dir / strategy / "raw.json").read_text()), workload, cluster)
            for strategy in STRATEGIES if (run_dir / strategy / "raw.json").exists()}
    result = {
        "benchmark": "placement", "date": datetime.fromtimestamp(run_dir.stat().st_mtime).isoformat(timespec="seconds"),
        "settings": settings_summary(meta["tasks"], meta["seed"], meta["scale"], meta.get("queue_ahead")),
        "environment": meta["environment"],
        "bounds": lower_bounds(workload, cluster), "runs": runs, "comparison": compare(runs),
        "wall_seconds": 0.0, "run_dir": str(run_dir),
    }
    print(report(result))
    return result


def compare(runs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    baselines = [runs[name] for name in BASELINES if name in runs]
    if "warm_first" not in runs or not baselines:
        return {}
    hive = runs["warm_first"]
    better = min(baselines, key=lambda run: run["makespan"])
    ratio = hive["makespan"] / better["makespan"]
    return {
        "better_baseline": better["strategy"],
        "makespan_ratio": ratio,
        "cold_loads": [hive["cold_loads"], better["cold_loads"]],
        "p95_wait_p5_ratio": (hive["p95_wait_p5"] / better["p95_wait_p5"]) if better["p95_wait_p5"] else None,
        "target_ideal_met": hive["x_ideal"] <= TARGET_IDEAL,
        "target_baseline_met": ratio <= TARGET_VS_BASELINE,
    }


def report(result: dict[str, Any]) -> str:
    s = result["settings"]
    b = result["bounds"]
    runs = result["runs"]
    lines = [
        "",
        f"Placement quality — {s['tasks']} tasks (seed {s['seed']}) on {len(s['nodes'])} simulated nodes, "
        f"{s['total_slots']} slots, {b['capacity_tps']:.0f} tok/s in all, time scale {s['time_scale']:g}",
    ]
    for n in s["nodes"]:
        lines.append(f"  {n['slug']:<11} {n['tps']:>6.4g} tok/s x {n['parallel']} slots, max_loaded {n['max_loaded']}, "
                     f"load {n['load_delay']:g}s, models {_names(n['models'])}, resident {_names(n['resident'])}")
    lines += [
        f"  workload    {', '.join(f'{_names([m])} {w:.0%}' for m, w in s['model_mix'].items())}; num_predict "
        f"{s['num_predict'][0]}-{s['num_predict'][1]}; priorities {s['priorities'][0]}-{s['priorities'][1]}; "
        f"{b['total_tokens']} tokens",
        f"  ideal       max({b['total_tokens']} / {b['capacity_tps']:.0f} = {b['work_bound']:.1f}s, longest task on its "
        f"fastest node {b['longest_task']:.1f}s) = {b['ideal']:.1f}s  (only nodes with the model: "
        f"{b['model_aware']:.1f}s; only resident models: {b['warm_only']:.1f}s)",
        f"  workers     {s['workers']}",
        f"  stores      {result['environment']['database']}; {result['environment']['redis']}",
        "",
        f"  {'strategy':<12} {'makespan':>9} {'x ideal':>8} {'cold loads':>11} {'p95 wait P5':>12} {'p50 wait P5':>12} "
        f"{'tokens/s used':>14} {'failed':>7}",
    ]
    for name, run in runs.items():
        lines.append(
            f"  {name:<12} {run['makespan']:>8.1f}s {run['x_ideal']:>7.2f}x {run['cold_loads']:>11d} "
            f"{_s(run['p95_wait_p5']):>12} {_s(run['p50_wait_p5']):>12} {run['throughput_share']:>14.0%} {run['failed']:>7d}")
    comparison = result["comparison"]
    if comparison:
        hive, better = runs["warm_first"], runs[comparison["better_baseline"]]
        lines += [
            "",
            f"  warm_first vs the better baseline ({comparison['better_baseline']}): makespan {hive['makespan']:.1f}s vs "
            f"{better['makespan']:.1f}s = {comparison['makespan_ratio']:.2f}x; cold loads {hive['cold_loads']} vs "
            f"{better['cold_loads']}; p95 wait P5 {_s(hive['p95_wait_p5'])} vs {_s(better['p95_wait_p5'])}",
            f"  target <= {TARGET_IDEAL}x ideal: {'MET' if comparison['target_ideal_met'] else 'NOT MET'} "
            f"({hive['x_ideal']:.2f}x);  target <= {TARGET_VS_BASELINE}x the better baseline: "
            f"{'MET' if comparison['target_baseline_met'] else 'NOT MET'} ({comparison['makespan_ratio']:.2f}x)",
        ]
    lines += ["", "  per node: tasks, share of tokens (share of capacity), busy, cold loads"]
    for name, run in runs.items():
        lines.append(f"  {name:<12} " + "   ".join(
            f"{slug.split('-')[0]} {n['tasks']:>3} {n['token_share']:>3.0%} ({n['capacity_share']:.0%}) "
            f"{n['busy']:>3.0%} {n['cold_loads']:>2}" for slug, n in run["per_node"].items()))
    lines += [
        "",
        "  diagnostics  dispatch/s   refill  worker    executor overhead  slot time /  scheduling      CPU s during run"
        "     load avg",
        "               needed  got  gap p50 pickup p95  p50     p90     estimate p50 rounds tasks p95 control exec nodes",
    ]
    for name, run in runs.items():
        passes, cpu = run["passes"], run["cpu_seconds"]
        lines.append(
            f"  {name:<12} {run['dispatch_rate_needed']:>6.1f} {run['dispatch_rate_achieved']:>4.1f}  "
            f"{_s(run['dispatch_gap_p50'], 2):>6}  {_s(run['pickup_p95'], 2):>6}    {_s(run['executor_overhead_p50'], 2):>6} "
            f"{_s(run['executor_overhead_p90'], 2):>6}     {run['slot_time_vs_estimate_p50']:>6.1f}x     "
            f"{passes.get('rounds', passes['count']):>4} {passes['count']:>4} {passes['p95']:>5.2f} "
            f"{cpu['control']:>7.0f} {cpu['execution']:>4.0f} "
            f"{cpu['nodes']:>5.0f}  {run['loadavg_1m'][0]:.0f}->{run['loadavg_1m'][1]:.0f}")
    wall = f"   (wall time {result['wall_seconds']:.0f}s)" if result["wall_seconds"] else ""
    lines.append(f"\n  raw data and logs: {result['run_dir']}{wall}")
    return "\n".join(lines)


def _names(models: list[str]) -> str:
    return "/".join(m.split(":")[0] for m in models)


def _s(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}s"


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--strategy", required=True, choices=STRATEGIES)
    parser.add_argument("--workload", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--scale", type=float, default=1.0)
    options = parser.parse_args(argv)
    run_one(options.strategy, json.loads(options.workload.read_text()), options.out, scaled(options.scale))


if __name__ == "__main__":
    if "--child" in sys.argv[1:]:
        child_main(sys.argv[1:])
    else:
        main(sys.argv[1:])
