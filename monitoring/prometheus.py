"""Prometheus metrics with the seed's names.

Request and WebSocket metrics are counted in the process that serves them and
shared through prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set in settings), so the numbers are right however many web processes run.
Cluster metrics are read from the database at scrape time, so every process
reports the same truth.
"""
from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import psutil
from django.db import DatabaseError, connection
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

API_REQUEST_DURATION = Histogram(
    "hive_api_request_duration_seconds", "Time to answer an HTTP request", ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
API_ERRORS = Counter("hive_api_errors_total", "HTTP responses with status >= 400", ["method", "route", "status"])
# Incremented by whichever process finishes an execution (worker, reconciler, a cancel
# in the web process); summed across processes by the multiprocess collector.
WORKFLOW_EXECUTIONS = Counter("hive_workflow_executions_total", "Workflow executions finished, by final status",
                              ["status"])
for _status in ("completed", "failed", "cancelled"):
    WORKFLOW_EXECUTIONS.labels(status=_status)
WEBSOCKET_CONNECTIONS = Gauge("hive_websocket_connections_active", "Open WebSocket connections",
                              multiprocess_mode="livesum")


class ClusterCollector(Collector):
    """Gauges computed from the database (and host) when Prometheus scrapes."""

    def collect(self) -> Iterator[Metric]:
        from agents.models import Agent
        from monitoring.metrics import agent_metrics, cluster_metrics

        window = timedelta(hours=1)
        agents = agent_metrics(window)
        cluster = cluster_metrics(window)
        yield _gauge("hive_active_agents_total", "Agents that are reachable (not offline)",
                     value=sum(1 for a in agents if a["available"]))
        queue = GaugeMetricFamily("hive_task_queue_length", "Pending tasks per priority", labels=["priority"])
        for priority, n in cluster["queue_by_priority"].items():
            queue.add_metric([priority], n)
        yield queue
        yield _gauge("hive_tasks_active", "Tasks queued or running", value=cluster["active_tasks"])
        yield _gauge("hive_task_oldest_wait_seconds", "Wait of the oldest pending task", value=cluster["oldest_wait"])
        if cluster["success_rate"] is not None:
            yield _gauge("hive_execution_success_rate", "Completed / (completed + failed) over the last hour",
                         value=cluster["success_rate"])
        if cluster["average_completion_time"] is not None:
            yield _gauge("hive_average_task_completion_time", "Mean seconds from start to completion, last hour",
                         value=cluster["average_completion_time"])
        finished = GaugeMetricFamily("hive_tasks_finished_last_hour", "Tasks finished in the last hour", labels=["status"])
        for status in ("completed", "failed", "cancelled"):
            finished.add_metric([status], cluster[status])
        yield finished
        health = GaugeMetricFamily("hive_agent_health_status", "1 if the agent is reachable, else 0", labels=["agent_id"])
        utilization = GaugeMetricFamily("hive_agent_utilization_percent", "Busy slots / slots", labels=["agent_id"])
        tps = GaugeMetricFamily("hive_agent_tokens_per_second", "Measured generation speed", labels=["agent_id"])
        busy = GaugeMetricFamily("hive_agent_busy_slots", "Slots holding a queued or running task", labels=["agent_id"])
        for row in agents:
            health.add_metric([row["agent_id"]], 1 if row["available"] else 0)
            utilization.add_metric([row["agent_id"]], row["utilization_percent"])
            tps.add_metric([row["agent_id"]], row["tokens_per_second"])
            busy.add_metric([row["agent_id"]], row["busy_slots"])
        yield from (health, utilization, tps, busy)
        total_slots = sum(row["max_slots"] for row in agents if row["available"])
        busy_slots = sum(row["busy_slots"] for row in agents)
        yield _gauge("hive_cluster_utilization_percent", "Busy slots / slots of reachable agents",
                     value=round(100.0 * busy_slots / total_slots, 1) if total_slots else 0.0)
        yield _gauge("hive_agents_registered", "Registered agents", value=Agent.objects.count())
        yield from _infrastructure()


def _gauge(name: str, documentation: str, *, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _infrastructure() -> Iterator[Metric]:
    memory = psutil.virtual_memory()
    yield _gauge("hive_container_cpu_usage_percent", "CPU usage of the machine serving Hive",
                 value=psutil.cpu_percent(interval=None))
    yield _gauge("hive_container_memory_usage_bytes", "Memory in use on the machine serving Hive",
                 value=memory.total - memory.available)
    if connection.vendor == "postgresql":
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()")
                yield _gauge("hive_database_connections_active", "Connections to Hive's database",
                             value=cursor.fetchone()[0])
        except DatabaseError:
            pass
    try:
        from hive_project.redis_client import get_redis

        yield _gauge("hive_redis_memory_usage_bytes", "Memory used by Redis", value=get_redis().info("memory")["used_memory"])
    except Exception:  # Redis down: the other metrics are still worth scraping
        pass


def exposition() -> bytes:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    registry.register(ClusterCollector())
    return generate_latest(registry)
