"""``python -m bench.sweep``: the health sweep over 200 simulated agents, 20 of them broken.

The issue's target: ``agents.services.health_sweep()`` over 200 agents of which 20
refuse or hang finishes in under 2 s (HIVE_HEALTH_TIMEOUT, 1 s by default, so a hanging node
costs its timeout and nothing more).

Set-up, all private to the run (a temp dir, removed afterwards):

- the nodes run in child processes (``--nodes-per-process`` each, one thread per
  SimulatedNode), so the sweep is measured in a process of its own, as in production
  where the nodes are other machines: 180 healthy simulated nodes, 10 with the
  simulator's ``refuse`` fault (the connection is accepted and closed without an
  answer) and 10 "hang" servers that accept connections and never answer (the
  simulator's ``stall`` only affects generate/chat, not /api/version);
- a fresh SQLite database (migrated) and an embedded Redis (events are published);
- the agents are rows created directly, all online, in random order.

Each run first puts every agent back to that state (online, no probe backoff), so
the 20 broken ones are probed, fail and change status in every run. The number is
the median of ``--runs`` (3) timings of ``health_sweep()`` end to end; the
breakdown splits it into the network part (threads probing) and the database part
(``apply_probe`` for each agent, in the sweeping thread). The baseline probes the
same agents one after another (``apply_probe(agent, fetch_probe(...))`` in a loop).

Results go to stdout and to var/bench/sweep.json (plus a timestamped copy).
``--proposed`` also times the sweep with the changes BENCHMARKS-sweep.md proposes
(patched in here only; the application is not changed). From the ``python -m bench``
runner call ``run_isolated(argv)``: ``main()`` configures Django in its own process.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "var" / "bench"
TARGET_SECONDS = 2.0


# -- the nodes' side (a child process; no Django) ----------------------------------------


async def _hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, read whatever comes, never answer; let go when the client does."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def _serve_hanging(count: int) -> tuple[list[int], Callable[[], None]]:
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    ports: list[int] = []
    servers: list[asyncio.Server] = []

    async def start() -> None:
        for _ in range(count):
            server = await asyncio.start_server(_hang, "127.0.0.1", 0)
            servers.append(server)
            ports.append(server.sockets[0].getsockname()[1])
        ready.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    thread = threading.Thread(target=run, name="hanging-servers", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("hanging servers did not start")

    def stop() -> None:
        for server in servers:
            loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)

    return ports, stop


def serve_nodes(healthy: int, refuse: int, hang: int, label: str) -> None:
    """Start the nodes, print their ports as one JSON line, serve until stdin closes."""
    import logging

    from agents.simulator import SimulatedNode, SimulatorConfig

    logging.getLogger("hive.simulator").setLevel(logging.WARNING)
    nodes = [SimulatedNode(SimulatorConfig(port=0, name=f"{label}-ok{i}", load_delay=0, models=("llama3.2:3b",)))
             for i in range(healthy)]
    nodes += [SimulatedNode(SimulatorConfig(port=0, name=f"{label}-refuse{i}", fault="refuse", models=("llama3.2:3b",)))
              for i in range(refuse)]
    for node in nodes:
        node.start()
    hang_ports, stop_hanging = _serve_hanging(hang)
    print(json.dumps({
        "healthy": [n.port for n in nodes if n.fault == "none"],
        "refuse": [n.port for n in nodes if n.fault == "refuse"],
        "hang": hang_ports,
        "pid": os.getpid(),
    }), flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    try:
        sys.stdin.read()  # until the parent closes our stdin (or exits)
    except (OSError, ValueError):
        pass
    stop_hanging()
    for node in nodes:
        node.stop(timeout=2)


class NodeProcess:
    def __init__(self, healthy: int, refuse: int, hang: int, label: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.sweep", "--serve-nodes", json.dumps([healthy, refuse, hang, label])],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"node process {label} exited with {self.process.wait()}")
        self.ports: dict[str, list[int]] = json.loads(line)

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def rss_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0


# -- the sweeping side --------------------------------------------------------------------


def setup_environment(tmp: Path) -> Any:
    """A private HIVE_VAR_DIR, SQLite database and embedded Redis; then Django."""
    from hive_project import embedded_redis

    socket_path = tmp / "redis.sock"
    redis_process = embedded_redis.start(socket_path, tmp / "redis", persist=False)
    os.environ.update({
        "DJANGO_SETTINGS_MODULE": "hive_project.settings",
        "HIVE_MODE": "embedded",
        "HIVE_VAR_DIR": str(tmp / "var"),
        "REDIS_URL": embedded_redis.socket_url(socket_path),
        "PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"),
        "HIVE_LOG_LEVEL": os.environ.get("HIVE_LOG_LEVEL", "WARNING"),
    })
    os.environ.pop("DATABASE_URL", None)  # a fresh SQLite file under HIVE_VAR_DIR
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    return redis_process


def create_agents(ports: dict[str, list[int]], seed: int) -> dict[str, str]:
    from agents.models import Agent

    kinds = [(kind, port) for kind in ("healthy", "refuse", "hang") for port in ports[kind]]
    random.Random(seed).shuffle(kinds)
    agents = [Agent(slug=f"bench-{i:03d}", name=f"Bench {i:03d} ({kind})", endpoint=f"http://127.0.0.1:{port}",
                    model="llama3.2:3b", max_concurrency=2, status=Agent.Status.ONLINE)
              for i, (kind, port) in enumerate(kinds)]
    Agent.objects.bulk_create(agents)
    return {agent.slug: kind for agent, (kind, _) in zip(agents, kinds, strict=True)}


def reset_agents() -> None:
    from agents.models import Agent

    Agent.objects.update(status=Agent.Status.ONLINE, probe_failures=0, next_probe_at=None, last_error="")


class Phases:
    """Times the two halves of health_sweep() by wrapping the functions it calls."""

    def __init__(self) -> None:
        self.first_apply: float | None = None
        self.apply_seconds = 0.0
        self.applied = 0
        self.probe_times: list[float] = []

    def install(self) -> Callable[[], None]:
        from agents import services

        original_apply, original_fetch = services.apply_probe, services.fetch_probe

        def apply_probe(agent: Any, result: Any) -> Any:
            started = time.perf_counter()
            if self.first_apply is None:
                self.first_apply = started
            try:
                return original_apply(agent, result)
            finally:
                self.apply_seconds += time.perf_counter() - started
                self.applied += 1

        def fetch_probe(endpoint: str, timeout: float) -> Any:
            started = time.perf_counter()
            try:
                return original_fetch(endpoint, timeout)
            finally:
                self.probe_times.append(time.perf_counter() - started)

        services.apply_probe, services.fetch_probe = apply_probe, fetch_probe

        def uninstall() -> None:
            services.apply_probe, services.fetch_probe = original_apply, original_fetch

        return uninstall


def outcome(kinds: dict[str, str]) -> dict[str, Any]:
    from agents.models import Agent

    status = dict(Agent.objects.values_list("slug", "status"))
    wrong = [slug for slug, kind in kinds.items() if (status[slug] == Agent.Status.ONLINE) != (kind == "healthy")]
    return {"online": sum(1 for s in status.values() if s == Agent.Status.ONLINE), "misjudged": wrong}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def proposed_health_sweep() -> int:
    """health_sweep() as the report proposes it (an experiment; the app is unchanged).

    The database work of each agent is done as soon as its probe answers (as_completed)
    instead of after the slowest probe, so it overlaps the wait for the hanging nodes.
    Run with share_ssl_context() for the other proposed change."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    from django.conf import settings
    from django.db.models import Q
    from django.utils import timezone

    from agents import services
    from agents.models import Agent

    agents = list(Agent.objects.filter(Q(next_probe_at__isnull=True) | Q(next_probe_at__lte=timezone.now())))
    if not agents:
        return 0
    timeout = settings.HIVE_HEALTH_TIMEOUT
    available = 0
    with ThreadPoolExecutor(max_workers=min(settings.HIVE_HEALTH_CONCURRENCY, len(agents))) as pool:
        futures = {pool.submit(services.fetch_probe, agent.endpoint, timeout): agent for agent in agents}
        for future in as_completed(futures):
            available += services.apply_probe(futures[future], future.result()).available
    return available


def timed_sweep(kinds: dict[str, str], sweep: Callable[[], int] | None = None) -> dict[str, Any]:
    from django.db import connection

    from agents import services
    from agents.models import AgentHealthCheck

    reset_agents()
    connection.close()  # every run opens its connection, like a Celery task does
    checks_before = AgentHealthCheck.objects.count()
    phases = Phases()
    uninstall = phases.install()
    cpu_before = _cpu_seconds()
    started = time.perf_counter()
    try:
        available = (sweep or services.health_sweep)()
    finally:
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
        uninstall()
    network = (phases.first_apply or started + elapsed) - started
    result = outcome(kinds)
    return {
        "seconds": round(elapsed, 3),
        "network_seconds": round(network, 3),
        "apply_seconds": round(phases.apply_seconds, 3),
        "apply_ms_per_agent": round(1000 * phases.apply_seconds / max(phases.applied, 1), 2),
        "other_seconds": round(elapsed - network - phases.apply_seconds, 3),
        # All threads of this process, user + system: what the sweep costs whatever the load.
        "cpu_seconds": round(cpu, 3),
        "available": available,
        "health_checks_written": AgentHealthCheck.objects.count() - checks_before,
        "slowest_probe": round(max(phases.probe_times, default=0.0), 3),
        "misjudged": result["misjudged"],
    }


def sequential_sweep(kinds: dict[str, str]) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from agents.models import Agent
    from agents.services import apply_probe, fetch_probe

    reset_agents()
    connection.close()
    started = time.perf_counter()
    timeout = settings.HIVE_HEALTH_TIMEOUT
    available = 0
    for agent in Agent.objects.all():
        available += apply_probe(agent, fetch_probe(agent.endpoint, timeout)).available
    elapsed = time.perf_counter() - started
    return {"seconds": round(elapsed, 3), "available": available, "misjudged": outcome(kinds)["misjudged"]}


def profile_sweep(kinds: dict[str, str], limit: int = 25) -> str:
    """cProfile of one sweep (all threads' time is not seen: only the sweeping thread's)."""
    import cProfile
    import io
    import pstats

    from agents import services

    reset_agents()
    profiler = cProfile.Profile()
    profiler.enable()
    services.health_sweep()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(limit)
    return out.getvalue()


def client_construction_ms(samples: int = 10) -> float:
    """CPU cost of one OllamaClient (fetch_probe makes one per agent per sweep)."""
    from agents.ollama import OllamaClient

    started = time.process_time()
    for _ in range(samples):
        OllamaClient("http://127.0.0.1:9", connect_timeout=1, read_timeout=1).close()
    return 1000 * (time.process_time() - started) / samples


def share_ssl_context() -> Callable[[], None]:
    """--shared-ssl-context: what the fix proposed for agents/ollama.py would buy.

    httpx.Client() builds a new SSL context (loading the CA bundle) unless it is given
    one, and OllamaClient makes two clients per instance. This gives every client made
    here one context built once; undone by the returned function."""
    import ssl

    import certifi
    import httpx

    context = ssl.create_default_context(cafile=certifi.where())
    original = httpx.Client

    class Client(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("verify", context)
            super().__init__(*args, **kwargs)

    httpx.Client = Client  # agents.ollama looks it up as httpx.Client at call time

    def undo() -> None:
        httpx.Client = original

    return undo


def write_json(data: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, indent=2, default=str) + "\n"
    (OUT_DIR / f"sweep-{datetime.now().strftime('%Y%m%d-%H%M%S')}.json").write_text(text)
    path = OUT_DIR / "sweep.json"
    path.write_text(text)
    return path


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def run(options: argparse.Namespace) -> int:
    healthy = options.agents - options.refuse - options.hang
    if healthy < 0:
        raise SystemExit("--refuse + --hang exceed --agents")
    processes = max(1, -(-options.agents // options.nodes_per_process))
    tmp = Path(tempfile.mkdtemp(prefix="hive-sweep-"))
    nodes: list[NodeProcess] = []
    redis_process = None
    try:
        started = time.perf_counter()
        for i, (h, r, g) in enumerate(zip(split(healthy, processes), split(options.refuse, processes),
                                          split(options.hang, processes), strict=True)):
            nodes.append(NodeProcess(h, r, g, f"p{i}"))
        ports = {kind: [p for node in nodes for p in node.ports[kind]] for kind in ("healthy", "refuse", "hang")}
        node_start = time.perf_counter() - started
        redis_process = setup_environment(tmp)
        from django.conf import settings
        from django.db import connection

        kinds = create_agents(ports, options.seed)
        if options.shared_ssl_context:
            share_ssl_context()
        construction_ms = client_construction_ms()
        config = {
            "agents": options.agents, "healthy": healthy, "refuse": options.refuse, "hang": options.hang,
            "HIVE_HEALTH_TIMEOUT": settings.HIVE_HEALTH_TIMEOUT, "HIVE_HEALTH_CONCURRENCY": settings.HIVE_HEALTH_CONCURRENCY,
            "database": f"{connection.vendor} (fresh file, WAL)", "redis": "embedded redis-server (unix socket)",
            "node_processes": len(nodes), "runs": options.runs, "python": platform.python_version(),
            "cpus": os.cpu_count(), "load_average_1m": round(os.getloadavg()[0], 2),
            "shared_ssl_context": options.shared_ssl_context, "ollama_client_construction_cpu_ms": round(construction_ms, 2),
        }
        print(f"health sweep benchmark: {options.agents} agents ({healthy} healthy, {options.refuse} refuse, "
              f"{options.hang} hang) in {len(nodes)} node processes, started in {node_start:.1f}s")
        print(f"  HIVE_HEALTH_TIMEOUT={settings.HIVE_HEALTH_TIMEOUT}s  HIVE_HEALTH_CONCURRENCY="
              f"{settings.HIVE_HEALTH_CONCURRENCY}  database={config['database']}  cpus={os.cpu_count()}  "
              f"load average {config['load_average_1m']}")
        print(f"  one OllamaClient costs {construction_ms:.1f} ms of CPU to construct"
              f"{' (shared SSL context: the proposed fix, patched in)' if options.shared_ssl_context else ''}")
        if options.warmup:
            timed_sweep(kinds)  # imports, first connections: not what a beat-driven sweep pays
        runs = [timed_sweep(kinds) for _ in range(options.runs)]
        for i, r in enumerate(runs, 1):
            print(f"  run {i}: {r['seconds']:.3f}s  (network {r['network_seconds']:.3f}s, database "
                  f"{r['apply_seconds']:.3f}s = {r['apply_ms_per_agent']:.2f} ms/agent, other {r['other_seconds']:.3f}s; "
                  f"{r['cpu_seconds']:.2f} CPU s; {r['available']} available, slowest probe {r['slowest_probe']:.3f}s)")
            if r["misjudged"] or r["health_checks_written"] != options.agents:
                print(f"    WRONG: misjudged {r['misjudged']}, {r['health_checks_written']} health checks written")
        median = statistics.median(r["seconds"] for r in runs)
        sequential = [sequential_sweep(kinds) for _ in range(options.sequential_runs)]
        proposed: list[dict[str, Any]] = []
        if options.proposed:
            undo = share_ssl_context() if not options.shared_ssl_context else (lambda: None)
            try:
                proposed_construction_ms = client_construction_ms()
                proposed = [timed_sweep(kinds, proposed_health_sweep) for _ in range(options.runs)]
            finally:
                undo()
            for i, r in enumerate(proposed, 1):
                print(f"  proposed run {i}: {r['seconds']:.3f}s  (database {r['apply_seconds']:.3f}s overlapping the "
                      f"probes; {r['cpu_seconds']:.2f} CPU s; {r['available']} available, slowest probe "
                      f"{r['slowest_probe']:.3f}s)")
                if r["misjudged"]:
                    print(f"    WRONG: misjudged {r['misjudged']}")
        proposed_median = statistics.median(r["seconds"] for r in proposed) if proposed else None
        sequential_median = statistics.median(r["seconds"] for r in sequential) if sequential else None
        met = median < TARGET_SECONDS and all(not r["misjudged"] for r in runs)
        print()
        print(f"  {'sweep':<34}{'median s':>10}{'runs':>6}")
        print(f"  {'health_sweep() (concurrent)':<34}{median:>10.3f}{len(runs):>6}")
        if sequential_median is not None:
            print(f"  {'sequential baseline':<34}{sequential_median:>10.3f}{len(sequential):>6}")
        if proposed_median is not None:
            print(f"  {'proposed fix (experiment)':<34}{proposed_median:>10.3f}{len(proposed):>6}"
                  f"   (OllamaClient {proposed_construction_ms:.1f} ms CPU)")
        if sequential_median is not None:
            print(f"  speed-up of health_sweep() over the sequential baseline: {sequential_median / median:.1f}x")
        print(f"  target < {TARGET_SECONDS:.1f}s: {'met' if met else 'NOT met'}")
        ru = resource.getrusage(resource.RUSAGE_SELF)
        memory = {"sweeper_max_rss_mb": round(ru.ru_maxrss / 1024, 1),
                  "node_processes_rss_mb": [round(node.rss_mb(), 1) for node in nodes]}
        print(f"  memory: sweeper max RSS {memory['sweeper_max_rss_mb']} MB, node processes "
              f"{', '.join(f'{m:.0f}' for m in memory['node_processes_rss_mb'])} MB")
        profile = None
        if options.profile:
            profile = profile_sweep(kinds)
            print(profile)
        path = write_json({"benchmark": "sweep", "config": config, "runs": runs, "median_seconds": median,
                           "sequential_runs": sequential, "sequential_median_seconds": sequential_median,
                           "speedup": round(sequential_median / median, 2) if sequential_median else None,
                           "proposed_runs": proposed, "proposed_median_seconds": proposed_median,
                           "target_seconds": TARGET_SECONDS, "target_met": met, "memory": memory, "profile": profile})
        print(f"  written to {path.relative_to(ROOT)}")
        return 0 if met or not options.check else 1
    finally:
        for node in nodes:
            node.stop()
        if redis_process is not None:
            redis_process.terminate()
            redis_process.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=200)
    p.add_argument("--refuse", type=int, default=10, help="nodes with the simulator's refuse fault")
    p.add_argument("--hang", type=int, default=10, help="servers that accept and never answer")
    p.add_argument("--runs", type=int, default=3, help="timed sweeps; the median is reported")
    p.add_argument("--sequential-runs", type=int, default=1, help="sequential baseline sweeps (0: none)")
    p.add_argument("--nodes-per-process", type=int, default=50)
    p.add_argument("--seed", type=int, default=5)
    p.add_argument("--no-warmup", dest="warmup", action="store_false", help="time the very first sweep too")
    p.add_argument("--profile", action="store_true", help="also print a cProfile of one sweep")
    p.add_argument("--check", action="store_true", help="exit 1 when the target is not met")
    p.add_argument("--shared-ssl-context", action="store_true",
                   help="experiment: give every httpx.Client one SSL context (the fix proposed for agents/ollama.py)")
    p.add_argument("--proposed", action="store_true",
                   help="also time the sweep as the report proposes it (probe results applied as they come, shared SSL context)")
    p.add_argument("--serve-nodes", help=argparse.SUPPRESS)
    return p


def run_isolated(argv: list[str]) -> int:
    """For the ``python -m bench`` runner: the sweep in a process of its own.

    ``main()`` sets up Django on a private environment (it changes os.environ and
    calls django.setup()); the runner's own process must stay free of that."""
    return subprocess.run([sys.executable, "-m", "bench.sweep", *argv], cwd=ROOT).returncode


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    if options.serve_nodes:
        healthy, refuse, hang, label = json.loads(options.serve_nodes)
        serve_nodes(healthy, refuse, hang, label)
        return 0
    return run(options)


if __name__ == "__main__":
    raise SystemExit(main())
