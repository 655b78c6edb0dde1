"""Event latency: ``publish()`` commit -> WebSocket client receipt, N subscribers on one topic.

``python -m bench.events`` starts a private Redis (embedded, or ``REDIS_URL``), a fresh
SQLite database (migrated; a superuser with an API token) and one real uvicorn process
serving ``hive_project.asgi:application``. In this process it opens N WebSocket clients
(``websockets``, one asyncio loop) on ``/ws/events?token=...``, all subscribed to
``task.*``, then publishes events from a thread with ``coordinator.events.publish`` (no
transaction, so delivery starts at once) at a fixed rate. Every event carries its send
time in ``data``; latency = receive time - send time for every (event, subscriber).

Steps: a modest rate first (the headline p50/p95/p99/max), then rising rates; the
highest rate whose p99 stays <= the threshold (100 ms) is the "sustained" rate. Per
step: losses and duplicates per subscriber (by ``seq``), where the time goes
(publish() call = Lua append; -> group_send done in the sender thread; -> client),
CPU used by the web process, Redis and this process, and how late this process's own
event loop ran (client-side lag inflates the numbers; it is reported, not hidden).
Results go to var/bench/events.json (plus a timestamped copy).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import OUT_DIR, Environment, Processes, log, percentile, stamp, write_json

TOPIC = "task.*"
SMALL_TOPIC = "agent.*"  # the side-by-side fan-out baseline: a few subscribers on their own topic
TARGET_P99_MS = 50.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000, 2)


def redis_snapshot() -> tuple[float, dict[str, int]]:
    """Redis's own CPU seconds and per-command call counts (INFO cpu / commandstats)."""
    from hive_project.redis_client import get_redis

    client = get_redis()
    cpu = client.info("cpu")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in client.info("commandstats").items()
             if isinstance(v, dict) and "calls" in v}
    return float(cpu["used_cpu_sys"]) + float(cpu["used_cpu_user"]), calls


def stats(values: list[float]) -> dict[str, Any]:
    return {"n": len(values), "p50_ms": ms(percentile(values, 50)), "p95_ms": ms(percentile(values, 95)),
            "p99_ms": ms(percentile(values, 99)), "max_ms": ms(max(values) if values else None)}


# -- setup ------------------------------------------------------------------------------


def setup(env: Environment) -> tuple[dict[str, str], str]:
    """Django on a fresh SQLite DB + the (flushed) Redis; returns (child env, API token)."""
    database = env.fresh_database("events")
    child = env.child_env("events", database, HIVE_LOG_LEVEL="WARNING")
    os.environ.update(child)
    from bench.harness import setup_django

    setup_django()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from hive_project.models import ApiToken

    call_command("migrate", interactive=False, verbosity=0)
    user = get_user_model().objects.create_superuser("bench", "bench@example.invalid", "bench-password")
    _, key = ApiToken.issue(user, "bench-events")
    return child, key


def start_web(procs: Processes) -> tuple[Any, str]:
    import httpx

    port = free_port()
    web = procs.start("web", [sys.executable, "-m", "uvicorn", "hive_project.asgi:application", "--host", "127.0.0.1",
                              "--port", str(port), "--no-access-log", "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 45
    while time.monotonic() < deadline:
        if web.process.poll() is not None:
            break
        try:
            if httpx.get(f"{url}/api/health", timeout=1).status_code < 500:
                return web, f"ws://127.0.0.1:{port}/ws/events"
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"web did not start; last output:\n{web.output()[-3000:]}")


# -- the measurement --------------------------------------------------------------------


class Recorder:
    """Send times and sender-thread completion times, by event index."""

    def __init__(self) -> None:
        self.sent: dict[int, float] = {}        # publish() called
        self.appended: dict[int, float] = {}    # publish() returned (Lua append done, send queued)
        self.group_sent: dict[int, float] = {}  # channel-layer group_send finished (sender thread)

    def instrument_sender(self) -> None:
        """Time group_send inside the per-process sender thread, without touching events.py."""
        from coordinator import events

        sender = events._sender()
        original = sender.layer.group_send

        async def timed(group: str, message: dict[str, Any]) -> None:
            await original(group, message)
            index = json.loads(message["event"])["data"].get("i")
            if index is not None:
                self.group_sent[index] = time.time()

        sender.layer.group_send = timed


def publisher(recorder: Recorder, first: int, count: int, rate: float, topic: str = TOPIC) -> tuple[float, float]:
    """Publish ``count`` events at ``rate``/s (fixed schedule, no catching up bursts skipped)."""
    from coordinator import events

    start = time.perf_counter()
    began = time.time()
    for k in range(count):
        target = start + k / rate
        delay = target - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        index = first + k
        now = time.time()
        recorder.sent[index] = now
        events.publish(events.TASK_PROGRESS, "bench", {"t": now, "i": index}, [topic])
        recorder.appended[index] = time.time()
    return began, time.time()


class Subscriber:
    def __init__(self, number: int, topic: str) -> None:
        self.number = number
        self.topic = topic
        self.received: list[tuple[int, int, float]] = []  # (event index, seq, receive time)
        self.ws: Any = None

    async def connect(self, url: str, compression: str | None) -> None:
        import websockets

        self.ws = await websockets.connect(url, compression=compression, max_queue=None, open_timeout=30,
                                           ping_interval=None)
        await self.ws.send(json.dumps({"id": f"s{self.number}", "type": "subscribe", "topic": self.topic}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if reply.get("type") == "subscribe":
                return
            if reply.get("type") == "error":
                raise RuntimeError(f"subscriber {self.number}: {reply}")

    async def listen(self) -> None:
        import websockets

        try:
            async for raw in self.ws:
                now = time.time()
                message = json.loads(raw)
                if message.get("type") == "data":
                    self.received.append((message["data"]["data"]["i"], message["seq"], now))
        except websockets.ConnectionClosed:
            pass


async def loop_lag(samples: list[tuple[float, float]], stop: asyncio.Event, interval: float = 0.01) -> None:
    """How late this (client) event loop wakes up: (wall time, lateness)."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(interval)
        samples.append((time.time(), time.perf_counter() - before - interval))


async def run_steps(url: str, args: argparse.Namespace, web_pid: int) -> dict[str, Any]:
    recorder = Recorder()
    await asyncio.to_thread(recorder.instrument_sender)
    subscribers = [Subscriber(n, TOPIC) for n in range(args.subscribers)]
    small = [Subscriber(args.subscribers + n, SMALL_TOPIC) for n in range(args.small_subscribers)]
    gate = asyncio.Semaphore(10)  # token auth writes last_used_at; don't stampede SQLite

    async def connect(sub: Subscriber) -> None:
        async with gate:
            await sub.connect(url, args.compression)

    started = time.perf_counter()
    await asyncio.gather(*(connect(sub) for sub in subscribers + small))
    log(f"{len(subscribers)} + {len(small)} subscribers connected and subscribed in "
        f"{time.perf_counter() - started:.1f}s")
    listeners = [asyncio.create_task(sub.listen()) for sub in subscribers + small]
    lag: list[tuple[float, float]] = []
    stop_lag = asyncio.Event()
    lag_task = asyncio.create_task(loop_lag(lag, stop_lag))

    # Warm-up: first publishes pay imports, script loading, connection setup.
    await asyncio.to_thread(publisher, recorder, -50, 20, 10)
    await asyncio.to_thread(publisher, recorder, -20, 20, 10, SMALL_TOPIC)
    await asyncio.sleep(2.0)

    # Side by side at the same low rate: fan-out to a few vs to all subscribers; then the
    # rising rates (the headline rate among them, run longer).
    plan = [(f"fanout-{len(small)}", args.side_rate, args.step_seconds, small, SMALL_TOPIC),
            (f"fanout-{len(subscribers)}", args.side_rate, args.step_seconds, subscribers, TOPIC)]
    for rate in sorted(set(args.rates) | {args.baseline_rate}):
        if rate == args.baseline_rate:
            plan.append(("headline", rate, args.baseline_seconds, subscribers, TOPIC))
        else:
            plan.append((f"rate-{rate:g}", rate, args.step_seconds, subscribers, TOPIC))
    steps: list[dict[str, Any]] = []
    next_index = 0
    for label, rate, seconds, targets, topic in plan:
        count = max(1, round(rate * seconds))
        first = next_index
        next_index += count
        indexes = range(first, first + count)
        redis_cpu, calls_before = await asyncio.to_thread(redis_snapshot)
        cpu_before = (pid_cpu_group(web_pid), redis_cpu, time.process_time())
        lag_from = len(lag)
        began, ended = await asyncio.to_thread(publisher, recorder, first, count, rate, topic)
        # Drain: until every subscriber has the last event of the step (or give up).
        deadline = time.monotonic() + args.drain_seconds
        last = first + count - 1
        while time.monotonic() < deadline:
            if all(sub.received and sub.received[-1][0] >= last for sub in targets):
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        wall = time.time() - began
        redis_cpu, calls_after = await asyncio.to_thread(redis_snapshot)
        cpu_after = (pid_cpu_group(web_pid), redis_cpu, time.process_time())
        step = summarize(label, rate, seconds, indexes, began, ended, wall, recorder, targets,
                         [late for _, late in lag[lag_from:]])
        step["subscribers"], step["topic"] = len(targets), topic
        step["cpu_share_of_one_core"] = {name: round((after - before) / wall, 2) for name, before, after in
                                         zip(("web", "redis", "bench_process"), cpu_before, cpu_after, strict=True)}
        delivered = max(step["deliveries"], 1)
        diffs = {name: calls_after[name] - calls_before.get(name, 0) for name in calls_after}
        top = sorted(diffs, key=diffs.get, reverse=True)[:6]
        step["redis_calls_per_delivery"] = {name: round(diffs[name] / delivered, 2) for name in top if diffs[name]}
        steps.append(step)
        report_step(step)
        if rate >= args.baseline_rate and (step["latency"]["p99_ms"] or 1e9) > args.threshold_ms * 5:
            log(f"p99 far above {args.threshold_ms:g} ms at {rate:g} events/s; not stepping higher")
            break
        await asyncio.sleep(1.0)
    stop_lag.set()
    await lag_task
    for sub in subscribers + small:
        await sub.ws.close()
    await asyncio.gather(*listeners, return_exceptions=True)
    return {"steps": steps}


def pid_cpu_group(pgid: int) -> float:
    from bench.harness import cpu_seconds

    return cpu_seconds(pgid)


def summarize(label: str, rate: float, seconds: float, indexes: range, began: float, ended: float, wall: float,
              recorder: Recorder, subscribers: list[Subscriber], lag: list[float]) -> dict[str, Any]:
    wanted = set(indexes)
    latencies: list[float] = []
    lost = duplicates = out_of_order = 0
    for sub in subscribers:
        mine = [(i, seq, t) for i, seq, t in sub.received if i in wanted]
        seen: set[int] = set()
        previous_seq = None
        for i, seq, t in mine:
            if i in seen:
                duplicates += 1
                continue
            seen.add(i)
            if previous_seq is not None and seq != previous_seq + 1:
                out_of_order += 1
            previous_seq = seq
            latencies.append(t - recorder.sent[i])
        lost += len(wanted - seen)
    publish_call = [recorder.appended[i] - recorder.sent[i] for i in indexes]
    to_group_sent = [recorder.group_sent[i] - recorder.sent[i] for i in indexes if i in recorder.group_sent]
    if not to_group_sent:  # published by the append script itself: done when publish() returned
        to_group_sent = publish_call
    return {
        "label": label, "target_rate": rate, "seconds": seconds, "events": len(indexes),
        "achieved_publish_rate": round((len(indexes) - 1) / max(recorder.sent[indexes[-1]] - recorder.sent[indexes[0]], 1e-9)
                                       if len(indexes) > 1 else rate, 1),
        "deliveries_expected": len(indexes) * len(subscribers),
        "deliveries": len(latencies), "missing_after_drain": lost, "duplicates": duplicates, "seq_gaps_seen_by_client": out_of_order,
        "client_msgs_per_s": round(len(latencies) / wall, 0),
        "latency": stats(latencies),
        "breakdown": {"publish_call": stats(publish_call), "publish_to_group_send_done": stats(to_group_sent)},
        "client_loop_lag": stats(lag),
    }


def report_step(step: dict[str, Any]) -> None:
    lat, bd = step["latency"], step["breakdown"]
    cpu = step.get("cpu_share_of_one_core", {})
    log(f"{step['label']:>12}: {step['achieved_publish_rate']:>6} ev/s  p50 {lat['p50_ms']} p95 {lat['p95_ms']} "
        f"p99 {lat['p99_ms']} max {lat['max_ms']} ms | missing {step['missing_after_drain']} dup {step['duplicates']} | "
        f"publish() p99 {bd['publish_call']['p99_ms']} ms, ->group_send done p99 "
        f"{bd['publish_to_group_send_done']['p99_ms']} ms | client lag p99 {step['client_loop_lag']['p99_ms']} ms"
        f" | cpu {cpu}")


# -- entry point ------------------------------------------------------------------------


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.events", description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--baseline-rate", type=float, default=20)
    parser.add_argument("--baseline-seconds", type=float, default=5)
    parser.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[2, 5, 10, 50, 100, 200])
    parser.add_argument("--step-seconds", type=float, default=3)
    parser.add_argument("--side-rate", type=float, default=2, help="rate of the fan-out side-by-side steps")
    parser.add_argument("--small-subscribers", type=int, default=10, help="subscribers of the small fan-out baseline")
    parser.add_argument("--drain-seconds", type=float, default=15)
    parser.add_argument("--threshold-ms", type=float, default=100)
    parser.add_argument("--compression", choices=["deflate", "none"], default="none",
                        help="permessage-deflate offered by the clients (default none)")
    parser.add_argument("--out", type=Path, default=OUT_DIR / "events.json")
    args = parser.parse_args(argv)
    args.compression = None if args.compression == "none" else "deflate"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    load_before = os.getloadavg()
    log(f"load average {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f} on {os.cpu_count()} cores")
    wall_start = time.monotonic()
    with Environment("events") as env:
        _, key = setup(env)
        from django.conf import settings

        procs = Processes(Path(settings.VAR_DIR) / "logs", dict(os.environ))
        try:
            web, ws_url = start_web(procs)
            result = asyncio.run(run_steps(f"{ws_url}?token={key}", args, web.process.pid))
            described = env.describe()
        finally:
            procs.stop_all()
    steps = result["steps"]
    baseline = next(s for s in steps if s["label"] == "headline")
    rising = [s for s in steps if s["topic"] == TOPIC and s["latency"]["p99_ms"] is not None]
    ok = [s for s in rising if s["latency"]["p99_ms"] <= args.threshold_ms and s["missing_after_drain"] == 0
          and s["achieved_publish_rate"] >= 0.9 * s["target_rate"]]
    side_small, side_big = steps[0], steps[1]
    side = {"rate": args.side_rate, "small": side_small["label"], "big": side_big["label"],
            **{f"{q}_ratio_big_over_small": round(side_big["latency"][f"{q}_ms"] / side_small["latency"][f"{q}_ms"], 2)
               for q in ("p50", "p99") if side_small["latency"][f"{q}_ms"]}}
    sustained = max((s["achieved_publish_rate"] for s in ok), default=None)
    load_after = os.getloadavg()
    out = {
        "benchmark": "events", "when": stamp(),
        "settings": {"subscribers": args.subscribers, "topic": TOPIC,
                     "small_subscribers": args.small_subscribers, "small_topic": SMALL_TOPIC,
                     "side_rate": args.side_rate, "baseline_rate": args.baseline_rate,
                     "baseline_seconds": args.baseline_seconds, "rates": args.rates, "step_seconds": args.step_seconds,
                     "threshold_ms": args.threshold_ms, "client_compression": args.compression or "none",
                     "web": "1 uvicorn process (hive_project.asgi:application)",
                     "channel_layer": "channels_redis.pubsub.RedisPubSubChannelLayer",
                     "clients": "websockets, one asyncio loop in the bench process; publisher thread in the same process",
                     **described},
        "machine": {"cores": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before],
                    "load_average_after": [round(x, 2) for x in load_after]},
        "headline": {"rate": baseline["achieved_publish_rate"], **baseline["latency"],
                     "target_p99_ms": TARGET_P99_MS,
                     "meets_target": (baseline["latency"]["p99_ms"] or 1e9) < TARGET_P99_MS,
                     "p99_over_target": round((baseline["latency"]["p99_ms"] or 0) / TARGET_P99_MS, 2)},
        "fanout_side_by_side": side,
        "sustained_events_per_s_p99_under_threshold": sustained,
        "steps": steps,
        "wall_seconds": round(time.monotonic() - wall_start, 1),
    }
    write_json(args.out, out)
    write_json(args.out.with_name(f"events-{out['when']}.json"), out)
    h = out["headline"]
    print(f"\nsettings: {json.dumps(out['settings'])}")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} cores)")
    print(f"headline @ {h['rate']} ev/s x {args.subscribers} subscribers: p50 {h['p50_ms']} p95 {h['p95_ms']} "
          f"p99 {h['p99_ms']} max {h['max_ms']} ms -> p99 {'<' if h['meets_target'] else '>='} {TARGET_P99_MS:g} ms "
          f"target (p99/target = {h['p99_over_target']})")
    print(f"fan-out side by side @ {args.side_rate:g} ev/s: {side_big['label']} vs {side_small['label']}: "
          f"p50 x{side.get('p50_ratio_big_over_small')}, p99 x{side.get('p99_ratio_big_over_small')}")
    print(f"{'step':>12} {'subs':>4} {'ev/s':>7} {'msgs/s':>8} {'p50':>7} {'p99':>8} {'max':>8} {'miss':>5} {'dup':>4} "
          f"{'gsend p99':>9} {'lag p99':>8}  cpu(web/redis/bench)")
    for s in steps:
        lat, cpu = s["latency"], s["cpu_share_of_one_core"]
        print(f"{s['label']:>12} {s['subscribers']:>4} {s['achieved_publish_rate']:>7} {s['client_msgs_per_s']:>8} {lat['p50_ms']:>7} "
              f"{lat['p99_ms']:>8} {lat['max_ms']:>8} {s['missing_after_drain']:>5} {s['duplicates']:>4} "
              f"{s['breakdown']['publish_to_group_send_done']['p99_ms']:>9} {s['client_loop_lag']['p99_ms']:>8}  "
              f"{cpu['web']}/{cpu['redis']}/{cpu['bench_process']}")
    print("redis calls per delivered message (headline):", baseline["redis_calls_per_delivery"])
    print(f"sustained: {sustained} events/s with p99 <= {args.threshold_ms:g} ms and no losses "
          f"(highest step that held)")
    print(f"wrote {args.out} ({out['wall_seconds']}s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
