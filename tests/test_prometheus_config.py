"""Prometheus and Grafana are given only what Hive really exports.

The compose deployment ships a Prometheus config with alerting rules
(compose/prometheus/) and a provisioned Grafana dashboard (compose/grafana/). Both
refer to metrics by name, and nothing but these tests notices when a name is wrong: a
rule on a metric that does not exist never fires, a panel on one stays empty.

What Hive exports is learnt twice: by scraping a real /metrics in-process (with rows
in the database so the labelled series exist) and by reading the metric families
declared in monitoring/prometheus.py (some appear only on PostgreSQL, or once a task
has finished). Every metric an expression names must be one of them, with the
_bucket/_sum/_count suffixes for the histogram, and every label it uses must exist.

When promtool is installed (Debian: `apt-get install prometheus`) the files also go
through `promtool check config`, `promtool check rules` and a `promtool test rules`
unit test of the alerts. Without it those tests skip, or fail when
HIVE_REQUIRE_PROMTOOL=1 (CI).
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_DIR = ROOT / "compose"
PROMETHEUS_CONFIG = COMPOSE_DIR / "prometheus" / "prometheus.yml"
RULES_FILE = COMPOSE_DIR / "prometheus" / "hive.rules.yml"
GRAFANA_DIR = COMPOSE_DIR / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "hive.json"
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER = GRAFANA_DIR / "provisioning" / "dashboards" / "hive.yml"
METRICS_SOURCE = ROOT / "monitoring" / "prometheus.py"

# Series Prometheus makes itself for every target.
PROMETHEUS_SYNTHETIC = {"up": set(), "scrape_duration_seconds": set(), "scrape_samples_scraped": set()}
TARGET_LABELS = {"job", "instance"}

# The names the seed's Monitoring & Observability section lists.
SEED_METRICS = (
    "hive_active_agents_total", "hive_task_queue_length", "hive_workflow_executions_total",
    "hive_api_request_duration_seconds", "hive_websocket_connections_active", "hive_execution_success_rate",
    "hive_agent_utilization_percent", "hive_average_task_completion_time", "hive_agent_health_status",
    "hive_api_errors_total",
)


# --- what Hive exports -----------------------------------------------------------


@dataclass
class Exported:
    """Series names Hive exports, each with its label names; histograms by base name."""

    series: dict[str, set[str]] = field(default_factory=dict)
    histograms: set[str] = field(default_factory=set)

    def add(self, name: str, labels: set[str]) -> None:
        self.series.setdefault(name, set()).update(labels)

    def merge(self, other: Exported) -> Exported:
        merged = Exported({name: set(labels) for name, labels in self.series.items()}, set(self.histograms))
        for name, labels in other.series.items():
            merged.add(name, labels)
        merged.histograms |= other.histograms
        return merged


_CLIENT_TYPES = {"Counter", "Gauge", "Histogram", "Summary"}
_FAMILY_TYPES = {"GaugeMetricFamily", "CounterMetricFamily", "HistogramMetricFamily", "_gauge"}


def _strings(node: ast.AST | None) -> set[str]:
    if isinstance(node, ast.List | ast.Tuple):
        return {item.value for item in node.elts if isinstance(item, ast.Constant) and isinstance(item.value, str)}
    return set()


def declared_in_source(path: Path = METRICS_SOURCE) -> Exported:
    """The families monitoring/prometheus.py declares, as the series they expose."""
    exported = Exported()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        kind = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", "")
        first = node.args[0]
        if kind not in _CLIENT_TYPES | _FAMILY_TYPES or not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
            continue
        name = first.value
        keywords = {kw.arg: kw.value for kw in node.keywords}
        if kind in _CLIENT_TYPES:
            labels = _strings(node.args[2] if len(node.args) > 2 else keywords.get("labelnames"))
        else:
            labels = _strings(keywords.get("labels") or (node.args[2] if len(node.args) > 2 else None))
        if kind in ("Histogram", "HistogramMetricFamily"):
            exported.histograms.add(name)
            exported.add(f"{name}_bucket", labels | {"le"})
            exported.add(f"{name}_sum", labels)
            exported.add(f"{name}_count", labels)
        elif kind in ("Counter", "CounterMetricFamily"):
            exported.add(name if name.endswith("_total") else f"{name}_total", labels)
        elif kind == "Summary":
            exported.add(f"{name}_sum", labels)
            exported.add(f"{name}_count", labels)
        else:
            exported.add(name, labels)
    return exported


def parse_exposition(text: str) -> Exported:
    exported = Exported()
    for family in text_string_to_metric_families(text):
        if family.type == "histogram":
            exported.histograms.add(family.name)
        for sample in family.samples:
            exported.add(sample.name, set(sample.labels))
    return exported


TOKEN = "prometheus-config-test-token"


@pytest.fixture(scope="module")
def scraped(django_db_setup: None, django_db_blocker: Any) -> Exported:
    """A real /metrics, after an agent, a pending and a finished task and a 404 exist.

    Module-scoped (one scrape for all the tests), so it opens the database itself and
    rolls back; the tests using it carry the django_db mark so that pytest-django
    creates the test database at all."""
    from agents.models import AgentHealthCheck
    from coordinator.models import Task
    from tests.factories import make_agent, make_task

    with django_db_blocker.unblock(), override_settings(HIVE_METRICS_TOKEN=TOKEN), transaction.atomic():
        agent = make_agent(slug="prom-oak", tokens_per_second=42.0)
        AgentHealthCheck.objects.create(agent=agent, available=True, response_time=0.01)
        make_task(priority=4)
        now = timezone.now()
        make_task(status=Task.Status.COMPLETED, assigned_agent=agent, started_at=now - timedelta(seconds=3),
                  completed_at=now, tokens_per_second=40.0)
        client = Client()
        assert client.get("/api/this-route-does-not-exist").status_code == 404
        assert client.get("/metrics").status_code in (401, 403), "/metrics must not be public"
        response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
        assert response.status_code == 200, response.content[:500]
        text = response.content.decode()
        transaction.set_rollback(True)
    return parse_exposition(text)


@pytest.fixture(scope="module")
def exported(scraped: Exported) -> Exported:
    return scraped.merge(declared_in_source())


# --- PromQL, just enough to find metric and label names ------------------------------

_PROMQL_WORDS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile",
    "limitk", "limit_ratio", "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "atan2", "inf", "nan", "start", "end",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)")
_SELECTOR = re.compile(r"(?<![\w.:$])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")


@dataclass
class Query:
    metrics: set[str]
    selector_labels: dict[str, set[str]]
    grouping_labels: set[str]


def parse_promql(expr: str) -> Query:
    text = _GRAFANA_VARIABLE.sub("1m", _STRING.sub('""', expr))
    selector_labels: dict[str, set[str]] = {}
    for name, matchers in _SELECTOR.findall(text):
        selector_labels.setdefault(name, set()).update(_MATCHER_LABEL.findall(matchers))
    grouping = {label.strip() for _, labels in _GROUPING.findall(text) for label in labels.split(",") if label.strip()}
    text = _GROUPING.sub(r"\1", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    metrics = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group(1)
        if name in _PROMQL_WORDS or text[match.end():].lstrip().startswith("("):
            continue  # an operator, aggregation or function
        metrics.add(name)
    return Query(metrics, selector_labels, grouping)


def test_the_promql_reader_finds_metrics_and_labels() -> None:
    query = parse_promql('histogram_quantile(0.95, sum by (le, route) (rate(hive_x_bucket{route=~"api/.*"}[$__rate_interval])))'
                         " / on(route) group_left hive_y > 1e3 and up{job=\"hive\"} offset 5m")
    assert query.metrics == {"hive_x_bucket", "hive_y", "up"}
    assert query.selector_labels == {"hive_x_bucket": {"route"}, "up": {"job"}}
    assert query.grouping_labels == {"le", "route"}
    assert parse_promql("sum(hive_q) by (priority)").metrics == {"hive_q"}
    assert parse_promql('hive_agent_health_status{agent_id=~"$agent"} == 0').selector_labels == {
        "hive_agent_health_status": {"agent_id"}}


def unknown_references(expr: str, exported: Exported, extra_labels: set[str] = frozenset()) -> list[str]:
    """What `expr` names that Hive does not export ([] when all is well)."""
    known = {**PROMETHEUS_SYNTHETIC, **exported.series}
    query = parse_promql(expr)
    problems = []
    for name in sorted(query.metrics):
        if name in exported.histograms:
            problems.append(f"{name}: a histogram is queried through {name}_bucket/_sum/_count")
        elif name not in known:
            problems.append(f"{name}: not a metric Hive exports")
    available = set(TARGET_LABELS) | set(extra_labels)
    for name in query.metrics & set(known):
        available |= known[name]
    for name, labels in query.selector_labels.items():
        if name in known:
            problems += [f"{name} has no label {label!r}" for label in sorted(labels - known[name] - TARGET_LABELS)]
    problems += [f"no metric of the expression has a label {label!r}" for label in sorted(query.grouping_labels - available)]
    return problems


def template_labels(text: str) -> set[str]:
    """Labels a Prometheus annotation ({{ $labels.x }}) or a Grafana legend ({{x}}) uses."""
    return set(re.findall(r"\$labels\.(\w+)", text)) | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", text))


def labels_of(expr: str, exported: Exported) -> set[str]:
    """Labels the expression's result can carry (an aggregation's grouping limits them)."""
    query = parse_promql(expr)
    labels = set(TARGET_LABELS)
    for name in query.metrics:
        labels |= {**PROMETHEUS_SYNTHETIC, **exported.series}.get(name, set())
    if query.grouping_labels and re.match(r"\s*(histogram_quantile\(|sum|avg|min|max|count)\b", expr):
        labels = query.grouping_labels | (TARGET_LABELS & labels)
    return labels


# --- the files -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES_FILE.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels") or [])


def dashboard_queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str, str]]:
    """(where, expr, legend) of every query: panel targets and template variables."""
    for panel in all_panels(dashboard["panels"]):
        for target in panel.get("targets") or []:
            if target.get("expr"):
                yield f"panel {panel['title']!r}", target["expr"], target.get("legendFormat", "")
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        found = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query)
        if found:
            metric, label = found.groups()
            yield f"variable ${variable['name']}", f"sum by ({label}) ({metric})", ""
        elif variable.get("type") == "query":
            yield f"variable ${variable['name']}", query, ""


def test_the_prometheus_config_scrapes_hive_with_the_token() -> None:
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    hive = jobs["hive"]
    assert hive.get("metrics_path", "/metrics") == "/metrics"
    assert hive["authorization"]["type"] == "Bearer"
    assert hive["authorization"]["credentials_file"].startswith("/run/secrets/")
    assert "credentials" not in hive["authorization"], "the token never goes into the file itself"
    assert "${" not in PROMETHEUS_CONFIG.read_text(), "Prometheus does not expand environment variables"
    assert config["rule_files"] == [RULES_FILE.name]


def test_the_seed_rules_are_there(rules: list[dict[str, Any]]) -> None:
    document = yaml.safe_load(RULES_FILE.read_text())
    assert [group["name"] for group in document["groups"]] == ["hive.rules"]
    by_name = {rule["alert"]: rule for rule in rules}
    assert len(by_name) == len(rules), "alert names are unique"
    high = by_name["HighErrorRate"]
    assert re.sub(r"\s+", "", high["expr"]) == "rate(hive_api_errors_total[5m])>0.1"
    assert (high["for"], high["labels"]["severity"]) == ("2m", "warning")
    down = by_name["AgentDown"]
    assert re.sub(r"\s+", "", down["expr"]) == "hive_agent_health_status==0"
    assert (down["for"], down["labels"]["severity"]) == ("1m", "critical")
    assert "{{ $labels.agent_id }}" in down["annotations"]["summary"]
    assert {"HiveTaskQueueBacklog", "HiveClusterSaturated"} <= set(by_name)
    assert "hive_task_oldest_wait_seconds" in by_name["HiveTaskQueueBacklog"]["expr"]
    for rule in rules:
        assert rule["labels"]["severity"] in ("info", "warning", "critical"), rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]


@pytest.mark.django_db  # the module's scrape needs the test database set up
def test_the_rules_reference_only_exported_metrics(rules: list[dict[str, Any]], exported: Exported) -> None:
    problems = {}
    for rule in rules:
        found = unknown_references(rule["expr"], exported)
        used = set().union(*(template_labels(text) for text in rule.get("annotations", {}).values()))
        found += [f"annotation label {label!r} is not in the result" for label in sorted(used - labels_of(rule["expr"], exported))]
        if found:
            problems[rule["alert"]] = found
    assert problems == {}


@pytest.mark.django_db  # the module's scrape needs the test database set up
def test_the_dashboard_references_only_exported_metrics(dashboard: dict[str, Any], exported: Exported) -> None:
    problems = []
    for where, expr, legend in dashboard_queries(dashboard):
        found = unknown_references(expr, exported)
        found += [f"legend label {label!r} is not in the result" for label in sorted(template_labels(legend) - labels_of(expr, exported))]
        problems += [f"{where}: {problem}" for problem in found]
    assert problems == []


def test_the_dashboard_covers_what_operators_watch(dashboard: dict[str, Any]) -> None:
    exprs = " ".join(expr for _, expr, _ in dashboard_queries(dashboard))
    for metric in ("hive_active_agents_total", "hive_task_queue_length", "hive_api_request_duration_seconds_count",
                   "hive_api_request_duration_seconds_bucket", "hive_api_errors_total", "hive_websocket_connections_active",
                   "hive_agent_health_status", "hive_agent_utilization_percent", "hive_agent_tokens_per_second",
                   "hive_execution_success_rate", "hive_average_task_completion_time"):
        assert metric in exprs, metric
    assert re.search(r"histogram_quantile\(0\.95, .*?\(rate\(hive_api_request_duration_seconds_bucket\[", exprs)
    assert re.search(r"by \([^)]*priority[^)]*\) \(hive_task_queue_length\)", exprs)


def test_the_dashboard_is_well_formed_and_uses_the_provisioned_datasource(dashboard: dict[str, Any]) -> None:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    uids = {source["uid"] for source in datasources}
    assert len(datasources) == 1 and datasources[0]["type"] == "prometheus"
    assert dashboard["uid"] and dashboard["title"]
    panels = list(all_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel.get("targets"), f"panel {panel['title']!r} has no query"
        for source in [panel.get("datasource"), *(t.get("datasource") for t in panel["targets"])]:
            if isinstance(source, dict):
                assert source.get("uid") in uids, f"panel {panel['title']!r} uses datasource {source}"
    for variable in dashboard.get("templating", {}).get("list", []):
        if isinstance(variable.get("datasource"), dict):
            assert variable["datasource"]["uid"] in uids
    provider = yaml.safe_load(DASHBOARD_PROVIDER.read_text())
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"


@pytest.mark.django_db  # the module's scrape needs the test database set up
def test_every_seed_metric_is_exported(exported: Exported) -> None:
    names = set(exported.series) | exported.histograms
    missing = [name for name in SEED_METRICS if name not in names]
    assert missing == []


# --- promtool (Debian's prometheus package) -------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)
    if path is None:
        if os.environ.get("HIVE_REQUIRE_PROMTOOL") == "1":
            pytest.fail("HIVE_REQUIRE_PROMTOOL=1 but promtool is not installed (apt-get install prometheus)")
        pytest.skip("promtool not installed (apt-get install prometheus); the YAML checks above still ran")
    return path


def run_promtool(promtool: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, cwd=cwd, timeout=60)


def test_promtool_accepts_the_config(promtool: str, tmp_path: Path) -> None:
    """The whole check, file references included: the token file lives in the
    container, so a copy of the config points at a local one."""
    token = tmp_path / "token"
    token.write_text("test-token")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    for job in config["scrape_configs"]:
        if "authorization" in job:
            job["authorization"]["credentials_file"] = str(token)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    shutil.copy(RULES_FILE, tmp_path / RULES_FILE.name)
    result = run_promtool(promtool, "check", "config", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout + result.stderr


def test_promtool_accepts_the_rules(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", "--lint=all", "--lint-fatal", str(RULES_FILE), cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def _annotations(rule: dict[str, Any], replacements: dict[str, str]) -> dict[str, str]:
    rendered = {}
    for key, text in rule["annotations"].items():
        for template, value in replacements.items():
            text = re.sub(r"\{\{\s*" + re.escape(template) + r"\s*\}\}", value, text)
        assert "{{" not in text, f"extend the replacements for {text!r}"
        rendered[key] = text
    return rendered


def test_the_alerts_fire_as_intended(promtool: str, rules: list[dict[str, Any]], tmp_path: Path) -> None:
    """`promtool test rules`: AgentDown waits its minute, HighErrorRate its two."""
    by_name = {rule["alert"]: rule for rule in rules}
    target = {"job": "hive", "instance": "web:8000"}
    series = {
        "down": 'hive_agent_health_status{agent_id="oak", job="hive", instance="web:8000"}',
        "up": 'hive_agent_health_status{agent_id="elm", job="hive", instance="web:8000"}',
        "errors": 'hive_api_errors_total{method="GET", route="api/tasks", status="500", job="hive", instance="web:8000"}',
    }
    # Every 15 s: oak answers twice then is down; elm stays up; 30 errors (2/s).
    down = {"severity": "critical", "agent_id": "oak", **target}
    errors = {"severity": "warning", "method": "GET", "route": "api/tasks", "status": "500", **target}
    test = {
        "rule_files": [RULES_FILE.name],
        "evaluation_interval": "15s",
        "tests": [{
            "interval": "15s",
            "input_series": [
                {"series": series["down"], "values": "1 1 0x40"},
                {"series": series["up"], "values": "1x42"},
                {"series": series["errors"], "values": "0+30x40"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "AgentDown", "exp_alerts": []},
                {"eval_time": "2m", "alertname": "AgentDown", "exp_alerts": [{
                    "exp_labels": down,
                    "exp_annotations": _annotations(by_name["AgentDown"], {"$labels.agent_id": "oak"}),
                }]},
                {"eval_time": "2m", "alertname": "HighErrorRate", "exp_alerts": []},
                {"eval_time": "5m", "alertname": "HighErrorRate", "exp_alerts": [{
                    "exp_labels": errors,
                    "exp_annotations": _annotations(by_name["HighErrorRate"], {
                        "$labels.method": "GET", "$labels.route": "api/tasks", "$labels.status": "500",
                        "$value | humanize": "2"}),
                }]},
            ],
        }],
    }
    shutil.copy(RULES_FILE, tmp_path / RULES_FILE.name)
    (tmp_path / "hive.rules.test.yml").write_text(yaml.safe_dump(test, sort_keys=False))
    result = run_promtool(promtool, "test", "rules", "hive.rules.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
