"""Triggers: schedules as django-celery-beat rows, webhooks as a URL route.

Schedule Trigger (``rule.interval[]``) and the legacy Cron node
(``triggerTimes.item[]``) become PeriodicTasks named ``workflow:<id>`` (further
rules ``workflow:<id>#2`` ...), kept in sync whenever the workflow is saved,
activated, deactivated or deleted. Like n8n, intervals cron cannot express
("every 3 days", "every 2 weeks") fire on the cron and are thinned out by a
recurrence check.

Webhook nodes answer on ``/webhook/<token>/<path>``; the token is the workflow's
secret ``webhook_token``. Calls are throttled per client IP and per workflow
(``HIVE_WEBHOOK_RATE_PER_IP``, ``HIVE_WEBHOOK_RATE_PER_WORKFLOW``), JSON bodies are
parsed with :mod:`hive_project.jsonsafe`, and credential headers are redacted before
the request becomes the execution's input.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from celery.schedules import crontab
from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.multipartparser import MultiPartParserError
from django.views.decorators.csrf import csrf_exempt
from rest_framework.throttling import SimpleRateThrottle

from hive_project import jsonsafe, queues
from hive_project.redis_client import get_redis
from workflows.engine.contract import ValidationIssue
from workflows.models import Execution, Workflow

SCHEDULE_TRIGGER = "n8n-nodes-base.scheduleTrigger"
CRON_NODE = "n8n-nodes-base.cron"
WEBHOOK = "n8n-nodes-base.webhook"
FIRE_TASK = "hive.fire_workflow_schedule"
WEBHOOK_WAIT_SECONDS = 30.0
_RECURRENCE_KEY = "hive:workflows:recurrence:{id}:{node}:{rule}"
_WEEKDAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
# Request headers that carry credentials: redacted before the request is stored as the
# execution's input, so neither the workflow nor the database ever holds them.
REDACTED_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization", "x-api-key"})
REDACTED = "[redacted]"


class ScheduleError(ValueError):
    def __init__(self, message: str, parameter: str) -> None:
        super().__init__(message)
        self.parameter = parameter


@dataclass(frozen=True)
class Schedule:
    """One periodic firing: every ``seconds`` or a 5-field cron, plus an optional recurrence filter."""

    node: str
    rule: int
    seconds: int | None = None
    cron: tuple[str, str, str, str, str] | None = None   # minute hour day_of_month month_of_year day_of_week
    recurrence: tuple[str, int] | None = None            # ("days" | "weeks" | "hours" | "months", interval)


# --------------------------------------------------------------------------- parsing


def _int(rule: dict[str, Any], key: str, default: int, low: int, high: int, parameter: str) -> int:
    value = rule.get(key, default)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ScheduleError(f"{key} must be a whole number (got {value!r})", parameter)
    if not low <= value <= high:
        raise ScheduleError(f"{key} must be in range {low}-{high} (got {value})", parameter)
    return value


def parse_cron(expression: Any, parameter: str) -> tuple[str, str, str, str, str]:
    """n8n's cron (5 fields, or 6 with seconds first) as celery crontab fields (minute resolution)."""
    if not isinstance(expression, str) or not expression.strip():
        raise ScheduleError("the cron expression is empty", parameter)
    if expression.strip().startswith("="):
        raise ScheduleError("the cron expression cannot be an expression ({{ }}); write it out", parameter)
    fields = expression.split()
    if len(fields) == 6:
        second = fields[0]
        if not second.isdigit() or int(second) > 59:
            raise ScheduleError(f"'{expression}': a seconds field other than a fixed second is not supported "
                                "(schedules have minute resolution; use the Seconds interval instead)", parameter)
        fields = fields[1:]
    if len(fields) != 5:
        raise ScheduleError(f"'{expression}' is not a cron expression (5 fields: minute hour day month weekday, "
                            "optionally seconds first)", parameter)
    minute, hour, dom, month, dow = (f.lower() for f in fields)
    dow = ",".join(str(_WEEKDAYS[part]) if part in _WEEKDAYS else ("0" if part == "7" else part) for part in dow.split(","))
    try:
        crontab(minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow)
    except Exception as exc:
        raise ScheduleError(f"'{expression}' is not a valid cron expression: {exc}", parameter) from None
    return (minute, hour, dom, month, dow)


def _interval_schedule(node: str, index: int, rule: Any) -> Schedule:
    """One entry of Schedule Trigger's rule.interval (read n8n's ScheduleTrigger for the defaults)."""
    parameter = f"rule.interval[{index}]"
    if not isinstance(rule, dict):
        raise ScheduleError("each interval must be an object", parameter)
    field = rule.get("field", "days")
    if field == "seconds":
        return Schedule(node, index, seconds=_int(rule, "secondsInterval", 30, 1, 59, f"{parameter}.secondsInterval"))
    if field == "minutes":
        every = _int(rule, "minutesInterval", 5, 1, 59, f"{parameter}.minutesInterval")
        return Schedule(node, index, cron=(f"*/{every}", "*", "*", "*", "*"))
    minute = _int(rule, "triggerAtMinute", 0, 0, 59, f"{parameter}.triggerAtMinute")
    if field == "hours":
        every = _int(rule, "hoursInterval", 1, 1, 23, f"{parameter}.hoursInterval")
        return Schedule(node, index, cron=(str(minute), f"*/{every}", "*", "*", "*"))
    hour = _int(rule, "triggerAtHour", 0, 0, 23, f"{parameter}.triggerAtHour")
    if field == "days":
        every = _int(rule, "daysInterval", 1, 1, 31, f"{parameter}.daysInterval")
        return Schedule(node, index, cron=(str(minute), str(hour), "*", "*", "*"),
                        recurrence=("days", every) if every != 1 else None)
    if field == "weeks":
        every = _int(rule, "weeksInterval", 1, 1, 52, f"{parameter}.weeksInterval")
        days = rule.get("triggerAtDay", [0])
        if not isinstance(days, list) or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 6
                                                  for d in days):
            raise ScheduleError("triggerAtDay must be a list of weekdays 0 (Sunday) to 6", f"{parameter}.triggerAtDay")
        dow = ",".join(str(d) for d in sorted(set(days))) or "*"
        return Schedule(node, index, cron=(str(minute), str(hour), "*", "*", dow),
                        recurrence=("weeks", every) if every != 1 else None)
    if field == "months":
        every = _int(rule, "monthsInterval", 1, 1, 12, f"{parameter}.monthsInterval")
        day = _int(rule, "triggerAtDayOfMonth", 1, 1, 31, f"{parameter}.triggerAtDayOfMonth")
        return Schedule(node, index, cron=(str(minute), str(hour), str(day), f"*/{every}" if every != 1 else "*", "*"))
    if field == "cronExpression":
        return Schedule(node, index, cron=parse_cron(rule.get("expression"), f"{parameter}.expression"))
    raise ScheduleError(f"unknown interval field '{field}' (seconds, minutes, hours, days, weeks, months or "
                        "cronExpression)", f"{parameter}.field")


def _cron_node_schedule(node: str, index: int, item: Any) -> Schedule:
    """One entry of the legacy Cron node's triggerTimes.item (n8n's defaults: every day at 14:00)."""
    parameter = f"triggerTimes.item[{index}]"
    if not isinstance(item, dict):
        raise ScheduleError("each trigger time must be an object", parameter)
    mode = item.get("mode", "everyDay")
    if mode == "everyMinute":
        return Schedule(node, index, cron=("*", "*", "*", "*", "*"))
    if mode == "custom":
        return Schedule(node, index, cron=parse_cron(item.get("cronExpression", "* * * * * *"),
                                                     f"{parameter}.cronExpression"))
    if mode == "everyX":
        value = _int(item, "value", 2, 1, 59, f"{parameter}.value")
        unit = item.get("unit", "hours")
        if unit == "minutes":
            return Schedule(node, index, cron=(f"*/{value}", "*", "*", "*", "*"))
        if unit == "hours":
            if value > 23:
                raise ScheduleError("value must be in range 1-23 for hours", f"{parameter}.value")
            return Schedule(node, index, cron=("0", f"*/{value}", "*", "*", "*"))
        raise ScheduleError(f"unknown unit '{unit}' (minutes or hours)", f"{parameter}.unit")
    minute = _int(item, "minute", 0, 0, 59, f"{parameter}.minute")
    if mode == "everyHour":
        return Schedule(node, index, cron=(str(minute), "*", "*", "*", "*"))
    hour = _int(item, "hour", 14, 0, 23, f"{parameter}.hour")
    if mode == "everyDay":
        return Schedule(node, index, cron=(str(minute), str(hour), "*", "*", "*"))
    if mode == "everyWeek":
        weekday = _int(item, "weekday", 1, 0, 6, f"{parameter}.weekday")
        return Schedule(node, index, cron=(str(minute), str(hour), "*", "*", str(weekday)))
    if mode == "everyMonth":
        day = _int(item, "dayOfMonth", 1, 1, 31, f"{parameter}.dayOfMonth")
        return Schedule(node, index, cron=(str(minute), str(hour), str(day), "*", "*"))
    raise ScheduleError(f"unknown mode '{mode}'", f"{parameter}.mode")


def _nodes(n8n_data: dict[str, Any]) -> list[dict[str, Any]]:
    return [n for n in n8n_data.get("nodes") or [] if isinstance(n, dict) and not n.get("disabled")]


def schedules_of(n8n_data: dict[str, Any]) -> list[Schedule]:
    """Every periodic firing the workflow asks for (raises ScheduleError naming the parameter)."""
    out: list[Schedule] = []
    for node in _nodes(n8n_data):
        name, params = str(node.get("name", "")), node.get("parameters") or {}
        if node.get("type") == SCHEDULE_TRIGGER:
            rules = (params.get("rule") or {}).get("interval", [{}]) if isinstance(params.get("rule"), dict | None) else None
            if not isinstance(rules, list):
                raise ScheduleError("rule.interval must be a list", "rule.interval")
            out.extend(_interval_schedule(name, i, rule) for i, rule in enumerate(rules or [{}]))
        elif node.get("type") == CRON_NODE:
            times = params.get("triggerTimes") or {}
            items = times.get("item", []) if isinstance(times, dict) else None
            if not isinstance(items, list):
                raise ScheduleError("triggerTimes.item must be a list", "triggerTimes.item")
            out.extend(_cron_node_schedule(name, i, item) for i, item in enumerate(items))
    return out


def workflow_timezone(n8n_data: dict[str, Any]) -> str:
    configured = (n8n_data.get("settings") or {}).get("timezone") if isinstance(n8n_data.get("settings"), dict) else None
    return configured if isinstance(configured, str) and configured and configured != "DEFAULT" \
        else settings.HIVE_WORKFLOW_TIMEZONE


def validate_triggers(n8n_data: dict[str, Any]) -> list[ValidationIssue]:
    """What the engine's validation cannot know: schedules Hive can run, webhooks it can answer."""
    issues: list[ValidationIssue] = []
    for node in _nodes(n8n_data):
        name = str(node.get("name", ""))
        try:
            schedules_of({"nodes": [node]})
        except ScheduleError as exc:
            issues.append(ValidationIssue(str(exc), name, exc.parameter))
        if node.get("type") == WEBHOOK:
            params = node.get("parameters") or {}
            if params.get("responseMode", "onReceived") not in ("onReceived", "lastNode"):
                issues.append(ValidationIssue(f"responseMode '{params.get('responseMode')}' is not supported; use "
                                              "'onReceived' (Immediately) or 'lastNode' (When Last Node Finishes)",
                                              name, "responseMode"))
            path = params.get("path", "")
            if not isinstance(path, str) or path.startswith("="):
                issues.append(ValidationIssue("path must be plain text", name, "path"))
    timezone_name = workflow_timezone(n8n_data)
    try:
        ZoneInfo(timezone_name)
    except (ZoneInfoNotFoundError, ValueError):
        issues.append(ValidationIssue(f"unknown timezone '{timezone_name}'", None, "settings.timezone"))
    return issues


# --------------------------------------------------------------------------- beat rows


def task_name(workflow_id: Any, index: int) -> str:
    return f"workflow:{workflow_id}" if index == 0 else f"workflow:{workflow_id}#{index + 1}"


def remove_schedules(workflow_id: Any) -> int:
    from django.db.models import Q
    from django_celery_beat.models import PeriodicTask

    deleted, _ = PeriodicTask.objects.filter(Q(name=f"workflow:{workflow_id}") | Q(name__startswith=f"workflow:{workflow_id}#")
                                             ).delete()
    return deleted


def sync_schedules(workflow: Workflow) -> list[str]:
    """Make the beat rows match the workflow: none when inactive, one per schedule rule otherwise."""
    from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask

    with transaction.atomic():
        remove_schedules(workflow.pk)
        if not workflow.active:
            return []
        tz = workflow_timezone(workflow.n8n_data)
        names = []
        for index, schedule in enumerate(schedules_of(workflow.n8n_data)):
            fields: dict[str, Any] = {}
            if schedule.seconds is not None:
                fields["interval"], _ = IntervalSchedule.objects.get_or_create(every=schedule.seconds,
                                                                                period=IntervalSchedule.SECONDS)
            else:
                assert schedule.cron is not None
                minute, hour, dom, month, dow = schedule.cron
                fields["crontab"], _ = CrontabSchedule.objects.get_or_create(
                    minute=minute, hour=hour, day_of_month=dom, month_of_year=month, day_of_week=dow, timezone=tz)
            name = task_name(workflow.pk, index)
            PeriodicTask.objects.create(
                name=name, task=FIRE_TASK, queue=queues.CONTROL,
                kwargs=json.dumps({"workflow_id": str(workflow.pk), "node": schedule.node, "rule": schedule.rule}),
                description=f"Schedule of workflow '{workflow.name}' (node '{schedule.node}', rule {schedule.rule + 1})",
                **fields)
            names.append(name)
        return names


def _recurrence_allows(workflow_id: Any, schedule: Schedule, tz: str) -> bool:
    """n8n's recurrenceCheck: fire only when ``interval`` units passed since the last firing."""
    if schedule.recurrence is None:
        return True
    unit, size = schedule.recurrence
    now = datetime.now(ZoneInfo(tz))
    value, modulo = {"hours": (now.hour, 24), "days": (now.timetuple().tm_yday, 365),
                     "weeks": (now.isocalendar()[1], 52), "months": (now.month, 12)}[unit]
    key = _RECURRENCE_KEY.format(id=workflow_id, node=schedule.node, rule=schedule.rule)
    client = get_redis()
    last = client.get(key)
    if last is None or (value - int(last) + modulo) % modulo >= size or (unit == "weeks" and int(last) == value):
        client.set(key, value)
        return True
    return False


def fire_schedule(workflow_id: str, node: str, rule: int = 0) -> str | None:
    """Beat fired a schedule: start an execution unless the workflow is inactive or gone."""
    from workflows.services import start_execution

    workflow = Workflow.objects.filter(pk=workflow_id, active=True).first()
    if workflow is None:
        return None
    try:
        schedule = next((s for s in schedules_of(workflow.n8n_data) if s.node == node and s.rule == rule), None)
    except ScheduleError:
        return None
    if schedule is None:
        return None
    tz = workflow_timezone(workflow.n8n_data)
    if not _recurrence_allows(workflow.pk, schedule, tz):
        return None
    # An empty item: the Schedule Trigger node describes the tick itself, like n8n's.
    execution = start_execution(workflow, [{"json": {}}], mode=Execution.Mode.SCHEDULE, start_node=node)
    return str(execution.pk)


# --------------------------------------------------------------------------- webhooks


def _match(pattern: str, path: str) -> dict[str, str] | None:
    """n8n paths may hold ``:name`` segments; returns the captured params or None."""
    want = [p for p in pattern.strip("/").split("/") if p]
    got = [p for p in path.strip("/").split("/") if p]
    if len(want) != len(got):
        return None
    params = {}
    for w, g in zip(want, got, strict=True):
        if w.startswith(":"):
            params[w[1:]] = g
        elif w != g:
            return None
    return params


def _methods(params: dict[str, Any]) -> list[str]:
    if params.get("multipleMethods") and isinstance(params.get("httpMethod"), list):
        return [str(m).upper() for m in params["httpMethod"]]
    method = params.get("httpMethod", "GET")
    return [str(m).upper() for m in method] if isinstance(method, list) else [str(method).upper()]


def _body(request: HttpRequest) -> Any:
    """The request body as the Webhook node gives it; raises ValueError naming what is wrong."""
    content_type = request.content_type or ""
    raw = request.body
    if not raw:
        return {}
    if content_type == "application/json" or content_type.endswith("+json"):
        return jsonsafe.loads(raw)
    if content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return {k: v if len(v) > 1 else v[0] for k, v in request.POST.lists()}
    text = raw.decode(request.encoding or "utf-8", errors="replace")
    return text


def redact_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """Lower-cased headers with the credential ones (REDACTED_HEADERS) replaced by a marker."""
    return {key.lower(): REDACTED if key.lower() in REDACTED_HEADERS else value for key, value in headers.items()}


class WebhookThrottle(SimpleRateThrottle):
    """DRF's sliding-window throttle (the REST API's, counted in the Redis cache), keyed by a
    webhook scope and identity instead of a user."""

    def __init__(self, scope: str, ident: str, setting: str) -> None:
        self.scope, self.ident, self.setting = scope, ident, setting
        self.rate = getattr(settings, setting)   # checked at start-up (hive_project.env.env_rate)
        self.num_requests, self.duration = self.parse_rate(self.rate)

    def get_cache_key(self, request: Any, view: Any) -> str:
        return f"throttle:webhook:{self.scope}:{self.ident}"

    def retry_after(self) -> int:
        wait = self.wait()
        return max(1, math.ceil(wait if wait is not None else self.duration))


def _throttled(request: HttpRequest, scope: str, ident: str, setting: str) -> JsonResponse | None:
    """A 429 answer when the ``scope`` counter of ``ident`` is over its rate, else None (the call is counted)."""
    throttle = WebhookThrottle(scope, ident, setting)
    if throttle.allow_request(request, None):
        return None
    wait = throttle.retry_after()
    what = "this client address" if scope == "ip" else "this workflow"
    response = _error(429, f"Too many webhook calls for {what}: the limit is {throttle.rate} ({setting}); "
                           f"retry in {wait} s.", retry_after=wait)
    response["Retry-After"] = str(wait)
    return response


def _error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, "status": status, **extra}, status=status)


@csrf_exempt
def webhook_view(request: HttpRequest, token: str, path: str = "") -> HttpResponse:
    """n8n's production webhook URL: start the workflow with the request as its item."""
    # REMOTE_ADDR: uvicorn sets it from X-Forwarded-For only for the proxies named in
    # FORWARDED_ALLOW_IPS. Counted before the lookup, so guessing tokens is throttled too.
    limited = _throttled(request, "ip", request.META.get("REMOTE_ADDR") or "unknown", "HIVE_WEBHOOK_RATE_PER_IP")
    if limited is not None:
        return limited
    workflow = Workflow.objects.filter(webhook_token=token, active=True).first() if token else None
    if workflow is None:
        return _error(404, "No active workflow has this webhook URL.")
    limited = _throttled(request, "workflow", str(workflow.pk), "HIVE_WEBHOOK_RATE_PER_WORKFLOW")
    if limited is not None:
        return limited
    allowed: list[str] = []
    for node in _nodes(workflow.n8n_data):
        if node.get("type") != WEBHOOK:
            continue
        node_params = node.get("parameters") or {}
        params = _match(str(node_params.get("path", "")), path)
        if params is None:
            continue
        methods = _methods(node_params)
        if request.method not in methods:
            allowed.extend(methods)
            continue
        return _run_webhook(request, workflow, node, params)
    if allowed:
        response = _error(405, f"This webhook answers {', '.join(sorted(set(allowed)))}, not {request.method}.")
        response["Allow"] = ", ".join(sorted(set(allowed)))
        return response
    return _error(404, f"The workflow has no webhook for path '{path}'.")


def _run_webhook(request: HttpRequest, workflow: Workflow, node: dict[str, Any], params: dict[str, str]) -> HttpResponse:
    from workflows.services import normalize_input, start_execution

    try:
        body = _body(request)
    except RequestDataTooBig:
        return _error(413, f"Request body too large; the limit is {settings.HIVE_MAX_BODY_BYTES} bytes.")
    except (MultiPartParserError, SuspiciousOperation) as exc:
        return _error(400, f"The request body is not valid {request.content_type}: {exc}")
    except ValueError as exc:  # UnsafeJSON and JSONDecodeError are ValueErrors
        return _error(400, f"The request body is not valid JSON: {exc}")
    headers = redact_headers(dict(request.headers.items()))
    query = {k: v if len(v) > 1 else v[0] for k, v in request.GET.lists()}
    item = {"json": {"headers": headers, "params": params, "query": query, "body": body}}
    try:
        items = normalize_input([item])
    except ValueError as exc:
        return _error(400, str(exc))
    execution = start_execution(workflow, items, mode=Execution.Mode.WEBHOOK, start_node=str(node.get("name")))
    node_params = node.get("parameters") or {}
    if node_params.get("responseMode", "onReceived") != "lastNode":
        return JsonResponse({"message": "Workflow was started", "executionId": str(execution.pk)}, status=202)
    deadline = time.monotonic() + WEBHOOK_WAIT_SECONDS
    while time.monotonic() < deadline:
        execution.refresh_from_db()
        if execution.is_finished:
            break
        time.sleep(0.1)
    else:
        return JsonResponse({"message": f"Workflow is still running after {WEBHOOK_WAIT_SECONDS:.0f}s",
                             "executionId": str(execution.pk)}, status=202)
    if execution.status != Execution.Status.COMPLETED:
        return JsonResponse({"message": "Error in workflow", "error": execution.error_message,
                             "node": execution.error_node or None, "executionId": str(execution.pk)}, status=500)
    output = execution.output_data or []
    mode = (node_params.get("responseData") or "firstEntryJson")
    options = node_params.get("options") if isinstance(node_params.get("options"), dict) else {}
    code = node_params.get("responseCode", options.get("responseCode", 200))
    code = code if isinstance(code, int) and 100 <= code <= 599 else 200
    if mode == "noData":
        return HttpResponse(status=code)
    if mode == "allEntries":
        return JsonResponse([i.get("json", {}) for i in output], status=code, safe=False)
    return JsonResponse(output[0].get("json", {}) if output else {}, status=code, safe=False)

