"""Triggers and simple structural nodes: the ones every workflow needs.

Triggers output the items the execution was started with (the runtime seeds the
start node with ``input_items`` or ``[{"json": {}}]``): the host passes the webhook
request, the schedule tick or the sub-workflow's items.
"""
from __future__ import annotations

import copy
import json
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from workflows.engine.contract import Node, NodeContext, NodeError, NodeSpec, Outputs, ValidationIssue, register


class _Trigger(Node):
    trigger = True

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = ctx.input_items(0)
        return [items or [{"json": {}}]]


@register
class ManualTrigger(_Trigger):
    """Started by a person (UI / API 'run now')."""

    type = "n8n-nodes-base.manualTrigger"


@register
class Start(_Trigger):
    """The pre-1.0 'Start' node; behaves like a manual trigger."""

    type = "n8n-nodes-base.start"


@register
class ExecuteWorkflowTrigger(_Trigger):
    """Entry point of a sub-workflow: outputs the items the calling Execute Workflow node sent."""

    type = "n8n-nodes-base.executeWorkflowTrigger"


@register
class Webhook(_Trigger):
    """Outputs the request the host received ({headers, params, query, body})."""

    type = "n8n-nodes-base.webhook"


@register
class Cron(_Trigger):
    """Legacy Cron trigger (the host schedules it); emits one empty item like n8n."""

    type = "n8n-nodes-base.cron"


@register
class ScheduleTrigger(_Trigger):
    """Schedule Trigger: the host's beat starts the execution; the item describes the tick like n8n's."""

    type = "n8n-nodes-base.scheduleTrigger"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = ctx.input_items(0)
        if items and any(item.get("json") for item in items):
            return [items]
        tz_name = ((ctx.workflow.get("settings") or {}).get("timezone") or ctx.settings.timezone)
        if tz_name == "DEFAULT":
            tz_name = ctx.settings.timezone
        try:
            zone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise NodeError(f"unknown timezone '{tz_name}' in the workflow settings", node=ctx.node.name) from exc
        now = datetime.now(zone)
        offset = now.strftime("%z")
        return [[{"json": {
            "timestamp": now.isoformat(timespec="milliseconds"),
            "Readable date": now.strftime("%B ") + str(now.day) + now.strftime(", %Y, ") + now.strftime("%I:%M:%S %p").lstrip("0"),
            "Readable time": now.strftime("%I:%M:%S %p").lstrip("0"),
            "Day of week": now.strftime("%A"),
            "Year": now.strftime("%Y"),
            "Month": now.strftime("%B"),
            "Day of month": now.strftime("%d"),
            "Hour": now.strftime("%H"),
            "Minute": now.strftime("%M"),
            "Second": now.strftime("%S"),
            "Timezone": f"{tz_name} (UTC{offset[:3]}:{offset[3:]})",
        }}]]


@register
class NoOp(Node):
    """No Operation: passes its items on (useful as a named checkpoint)."""

    type = "n8n-nodes-base.noOp"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        return [ctx.input_items(0)]


@register
class StickyNote(Node):
    """Canvas annotation; never executed."""

    type = "n8n-nodes-base.stickyNote"
    annotation = True

    def input_count(self, node: NodeSpec) -> int:
        return 0

    def output_count(self, node: NodeSpec) -> int:
        return 0

    def execute(self, ctx: NodeContext) -> Outputs | None:
        return None


def _parse_test_data(value: Any, node: str) -> list[Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise NodeError(f"parameter 'data' is not valid JSON: {exc.msg} (line {exc.lineno})", node=node) from exc
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return value
    if value is None:
        return []
    raise NodeError("parameter 'data' must be an array, an object or a JSON string of either", node=node)


@register
class TestData(Node):
    """n8n's test-only node: outputs ``parameters.data`` as items."""

    type = "n8n-nodes-testing.testData"

    def execute(self, ctx: NodeContext) -> Outputs | None:
        value = ctx.param("data", 0, [])
        items = []
        for element in _parse_test_data(value, ctx.node.name):
            items.append({"json": copy.deepcopy(element) if isinstance(element, dict) else {"value": element}})
        return [items]


_CUSTOMERS: list[dict[str, Any]] = [
    {"id": "23423532", "name": "Jay Gatsby", "email": "gatsby@west-egg.com",
     "notes": "Keeps asking about a green light??", "country": "US", "created": "1925-04-10"},
    {"id": "23423533", "name": "José Arcadio Buendía", "email": "jab@macondo.co",
     "notes": "Lots of people named after him. Very confusing", "country": "CO", "created": "1967-05-05"},
    {"id": "23423534", "name": "Max Sendak", "email": "info@in-and-out-of-weeks.org",
     "notes": "Keeps rolling his terrible eyes", "country": "US", "created": "1963-04-09"},
    {"id": "23423535", "name": "Zaphod Beeblebrox", "email": "captain@heartofgold.com",
     "notes": "Felt like I was talking to more than one person", "country": None, "created": "1979-10-12"},
    {"id": "23423536", "name": "Edmund Pevensie", "email": "edmund@narnia.gov",
     "notes": "Passionate sailor", "country": "UK", "created": "1950-10-16"},
]


@register
class TrainingCustomerDatastore(Node):
    """n8n's 'Customer Datastore (n8n training)': fixed demo people."""

    type = "n8n-nodes-base.n8nTrainingCustomerDatastore"
    versions = (1,)

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = ctx.input_items(0)
        operation = ctx.param("operation", 0, "getOnePerson")
        if operation not in ("getOnePerson", "getAllPeople"):
            raise NodeError(f"unknown operation '{operation}'", node=ctx.node.name)
        out = []
        for i in range(len(items)):
            if operation == "getOnePerson":
                out.append({"json": copy.deepcopy(_CUSTOMERS[0]), "pairedItem": {"item": i}})
                continue
            if ctx.param("returnAll", i, False):
                people = _CUSTOMERS
            else:
                limit = ctx.param("limit", i, 5)
                try:
                    limit = int(limit)
                except (TypeError, ValueError) as exc:
                    raise NodeError(f"parameter 'limit' must be a number, got {limit!r}", node=ctx.node.name) from exc
                people = _CUSTOMERS[:max(limit, 0)]
            out.extend({"json": copy.deepcopy(p), "pairedItem": {"item": i}} for p in people)
        return [out]


@register
class StopAndError(Node):
    """Stop and Error: fails the execution with a chosen message or error object."""

    type = "n8n-nodes-base.stopAndError"

    def output_count(self, node: NodeSpec) -> int:
        return 0

    def execute(self, ctx: NodeContext) -> Outputs | None:
        error_type = ctx.param("errorType", 0, "errorMessage")
        if error_type == "errorObject":
            obj = ctx.param("errorObject", 0, {})
            if isinstance(obj, str):
                try:
                    obj = json.loads(obj)
                except json.JSONDecodeError as exc:
                    raise NodeError(f"parameter 'errorObject' is not valid JSON: {exc.msg}", node=ctx.node.name) from exc
            if not isinstance(obj, dict):
                raise NodeError("parameter 'errorObject' must be a JSON object", node=ctx.node.name)
            message = obj.get("message") or obj.get("description") or obj.get("error") or json.dumps(obj)
            raise NodeError(str(message), description=obj.get("description"), node=ctx.node.name)
        message = ctx.param("errorMessage", 0, "")
        raise NodeError(str(message) if message not in (None, "") else "Stopped by the Stop and Error node",
                        node=ctx.node.name)


_UNITS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400}


@register
class Wait(Node):
    """Wait a time interval or until a moment, then pass the items on.

    Waits happen in-process through ``services.sleep`` (cancellable), up to
    ``settings.max_wait_s``; resuming by webhook or form needs an n8n server and is refused.
    """

    type = "n8n-nodes-base.wait"
    resume_modes: ClassVar[tuple[str, ...]] = ("timeInterval", "specificTime")

    def validate(self, node: NodeSpec) -> list[ValidationIssue]:
        issues = super().validate(node)
        resume = node.parameters.get("resume", "timeInterval")
        if isinstance(resume, str) and not resume.startswith("=") and resume not in self.resume_modes:
            issues.append(ValidationIssue(f"resume mode '{resume}' is not supported here (only after a time interval "
                                          f"or at a specified time)", node.name, "resume"))
        return issues

    def execute(self, ctx: NodeContext) -> Outputs | None:
        items = ctx.input_items(0)
        resume = ctx.param("resume", 0, "timeInterval")
        if resume == "timeInterval":
            amount = ctx.param("amount", 0, 1)
            unit = ctx.param("unit", 0, "hours")
            if unit not in _UNITS:
                raise NodeError(f"unknown unit '{unit}' (use seconds, minutes, hours or days)", node=ctx.node.name)
            try:
                seconds = float(amount) * _UNITS[unit]
            except (TypeError, ValueError) as exc:
                raise NodeError(f"parameter 'amount' must be a number, got {amount!r}", node=ctx.node.name) from exc
        elif resume == "specificTime":
            seconds = self._until(ctx, ctx.param("dateTime", 0))
        else:
            raise NodeError(f"resume mode '{resume}' is not supported here (only after a time interval or at a "
                            f"specified time)", node=ctx.node.name)
        if seconds > ctx.settings.max_wait_s:
            raise NodeError(f"the wait of {seconds:g} s is longer than the allowed {ctx.settings.max_wait_s:g} s "
                            f"(HIVE_WORKFLOW_MAX_WAIT_S)", node=ctx.node.name)
        if seconds > 0:
            ctx.services.sleep(seconds)
        ctx.check_cancelled()
        return [items]

    def _until(self, ctx: NodeContext, value: Any) -> float:
        tz_name = (ctx.workflow.get("settings") or {}).get("timezone") or ctx.settings.timezone
        if tz_name == "DEFAULT":
            tz_name = ctx.settings.timezone
        try:
            zone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise NodeError(f"unknown timezone '{tz_name}'", node=ctx.node.name) from exc
        if isinstance(value, (int, float)):
            moment = datetime.fromtimestamp(value / 1000 if value > 1e11 else value, zone)
        elif isinstance(value, str) and value.strip():
            text = value.strip().replace("Z", "+00:00")
            try:
                moment = datetime.fromisoformat(text)
            except ValueError as exc:
                raise NodeError(f"parameter 'dateTime' is not a date: {value!r}", node=ctx.node.name) from exc
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=zone)
        else:
            raise NodeError("parameter 'dateTime' is required for resume at a specified time", node=ctx.node.name)
        return max(0.0, (moment - datetime.now(zone)).total_seconds())
