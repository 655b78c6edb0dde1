"""Triggers: Schedule Trigger / Cron nodes as django-celery-beat rows kept in sync, and
webhook nodes answering on /webhook/<token>/<path>."""
from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from django.test import Client
from django_celery_beat.models import PeriodicTask

from workflows import triggers
from workflows.models import Execution, Workflow

pytestmark = pytest.mark.django_db

SET = {"name": "Set", "type": "n8n-nodes-base.set", "typeVersion": 3.4, "position": [200, 0], "parameters": {
    "assignments": {"assignments": [{"id": "a1", "name": "greeting", "value": "={{ 'hi ' + $json.body.name }}",
                                     "type": "string"}]}, "options": {}}}


def scheduled(rules: list[dict[str, Any]], timezone: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "nodes": [{"name": "Schedule", "type": "n8n-nodes-base.scheduleTrigger", "typeVersion": 1.2, "position": [0, 0],
                   "parameters": {"rule": {"interval": rules}}},
                  {"name": "Noop", "type": "n8n-nodes-base.noOp", "typeVersion": 1, "position": [200, 0], "parameters": {}}],
        "connections": {"Schedule": {"main": [[{"node": "Noop", "type": "main", "index": 0}]]}},
    }
    if timezone:
        data["settings"] = {"timezone": timezone}
    return data


def webhook_flow(**params: Any) -> dict[str, Any]:
    return {
        "nodes": [{"name": "Webhook", "type": "n8n-nodes-base.webhook", "typeVersion": 2, "position": [0, 0],
                   "webhookId": "x", "parameters": {"path": "greet/:who", **params}}, copy.deepcopy(SET)],
        "connections": {"Webhook": {"main": [[{"node": "Set", "type": "main", "index": 0}]]}},
    }


def rows(workflow_id: str) -> dict[str, PeriodicTask]:
    return {t.name: t for t in PeriodicTask.objects.filter(name__startswith=f"workflow:{workflow_id}")}


def test_schedule_rules_become_beat_rows_kept_in_sync(dev_api: Any) -> None:
    rules = [{"field": "minutes", "minutesInterval": 15},
             {"field": "cronExpression", "expression": "0 30 9 * * mon-fri"},
             {"field": "seconds", "secondsInterval": 20},
             {"field": "weeks", "weeksInterval": 2, "triggerAtDay": [1, 3], "triggerAtHour": 8, "triggerAtMinute": 5},
             {"field": "months", "monthsInterval": 3, "triggerAtDayOfMonth": 15, "triggerAtHour": 6}]
    created = dev_api.post("/api/workflows", {"name": "Ticker", "n8n_data": scheduled(rules, "Europe/Paris")}, format="json")
    assert created.status_code == 201, created.content
    wf = created.json()["id"]
    beat = rows(wf)
    assert sorted(beat) == sorted([f"workflow:{wf}", f"workflow:{wf}#2", f"workflow:{wf}#3", f"workflow:{wf}#4",
                                   f"workflow:{wf}#5"])
    first = beat[f"workflow:{wf}"]
    assert first.task == "hive.fire_workflow_schedule" and first.enabled
    assert json.loads(first.kwargs) == {"workflow_id": wf, "node": "Schedule", "rule": 0}
    cron = first.crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year, cron.day_of_week) == ("*/15", "*", "*", "*", "*")
    assert str(cron.timezone) == "Europe/Paris"
    cron = beat[f"workflow:{wf}#2"].crontab
    assert (cron.minute, cron.hour, cron.day_of_week) == ("30", "9", "mon-fri")
    interval = beat[f"workflow:{wf}#3"].interval
    assert (interval.every, interval.period) == (20, "seconds")
    cron = beat[f"workflow:{wf}#4"].crontab
    assert (cron.minute, cron.hour, cron.day_of_week) == ("5", "8", "1,3")
    cron = beat[f"workflow:{wf}#5"].crontab
    assert (cron.minute, cron.hour, cron.day_of_month, cron.month_of_year) == ("0", "6", "15", "*/3")

    assert dev_api.patch(f"/api/workflows/{wf}", {"active": False}, format="json").status_code == 200
    assert rows(wf) == {}
    assert dev_api.patch(f"/api/workflows/{wf}", {"active": True}, format="json").status_code == 200
    assert len(rows(wf)) == 5
    changed = scheduled([{"field": "hours", "hoursInterval": 2, "triggerAtMinute": 10}])
    assert dev_api.patch(f"/api/workflows/{wf}", {"n8n_data": changed}, format="json").status_code == 200
    beat = rows(wf)
    assert list(beat) == [f"workflow:{wf}"]
    cron = beat[f"workflow:{wf}"].crontab
    assert (cron.minute, cron.hour) == ("10", "*/2")
    assert str(cron.timezone) == "America/New_York", "n8n's default timezone when the workflow sets none"
    assert dev_api.delete(f"/api/workflows/{wf}").status_code == 204
    assert rows(wf) == {}


def test_legacy_cron_node(dev_api: Any) -> None:
    data = {"nodes": [{"name": "Cron", "type": "n8n-nodes-base.cron", "typeVersion": 1, "position": [0, 0],
                       "parameters": {"triggerTimes": {"item": [{"mode": "everyWeek", "hour": 7, "minute": 45, "weekday": 5},
                                                                {"mode": "everyX", "value": 10, "unit": "minutes"},
                                                                {}]}}}],
            "connections": {}}
    created = dev_api.post("/api/workflows", {"name": "Old cron", "n8n_data": data}, format="json")
    assert created.status_code == 201, created.content
    beat = rows(created.json()["id"])
    crons = sorted((t.crontab.minute, t.crontab.hour, t.crontab.day_of_week) for t in beat.values())
    assert crons == sorted([("45", "7", "5"), ("*/10", "*", "*"), ("0", "14", "*")])


@pytest.mark.parametrize(("rule", "parameter"), [
    ({"field": "cronExpression", "expression": "every day at noon"}, "rule.interval[0].expression"),
    ({"field": "cronExpression", "expression": "*/5 * * * * *"}, "rule.interval[0].expression"),
    ({"field": "cronExpression", "expression": "0 99 * * *"}, "rule.interval[0].expression"),
    ({"field": "minutes", "minutesInterval": 0}, "rule.interval[0].minutesInterval"),
    ({"field": "hours", "hoursInterval": "two"}, "rule.interval[0].hoursInterval"),
    ({"field": "fortnights"}, "rule.interval[0].field"),
])
def test_bad_schedules_are_refused(dev_api: Any, rule: dict[str, Any], parameter: str) -> None:
    response = dev_api.post("/api/workflows", {"name": "Bad schedule", "n8n_data": scheduled([rule])}, format="json")
    assert response.status_code == 400, response.content
    issue = response.json()["errors"][0]
    assert (issue["node"], issue["parameter"]) == ("Schedule", parameter)
    assert not Workflow.objects.exists() and not PeriodicTask.objects.filter(name__startswith="workflow:").exists()


def test_an_unknown_timezone_is_refused(dev_api: Any) -> None:
    response = dev_api.post("/api/workflows", {"name": "Bad zone", "n8n_data": scheduled([{}], "Mars/Olympus")},
                            format="json")
    assert response.status_code == 400 and "Mars/Olympus" in response.json()["error"]


def test_firing_starts_a_schedule_execution_of_active_workflows_only(dev_api: Any) -> None:
    wf = dev_api.post("/api/workflows", {"name": "Ticker", "n8n_data": scheduled([{"field": "minutes"}])},
                      format="json").json()
    execution_id = triggers.fire_schedule(wf["id"], "Schedule", 0)
    execution = Execution.objects.get(pk=execution_id)
    assert execution.mode == "schedule" and execution.input_data == [{"json": {}}]
    dev_api.patch(f"/api/workflows/{wf['id']}", {"active": False}, format="json")
    assert triggers.fire_schedule(wf["id"], "Schedule", 0) is None
    assert triggers.fire_schedule("00000000-0000-0000-0000-000000000000", "Schedule", 0) is None


def test_recurrence_thins_out_intervals_cron_cannot_express(dev_api: Any) -> None:
    wf = dev_api.post("/api/workflows", {"name": "Every 3 days", "n8n_data": scheduled(
        [{"field": "days", "daysInterval": 3, "triggerAtHour": 4}])}, format="json").json()
    assert triggers.fire_schedule(wf["id"], "Schedule", 0) is not None, "the first firing runs"
    assert triggers.fire_schedule(wf["id"], "Schedule", 0) is None, "the same day again does not"


# --- webhooks --------------------------------------------------------------------------------


def make_webhook(dev_api: Any, **params: Any) -> dict[str, Any]:
    created = dev_api.post("/api/workflows", {"name": "Hook", "n8n_data": webhook_flow(**params)}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["webhook_url"].endswith(f"/webhook/{Workflow.objects.get(pk=body['id']).webhook_token}/")
    return body


def test_webhook_starts_an_execution_with_the_request_as_its_item(dev_api: Any) -> None:
    wf = make_webhook(dev_api, httpMethod="POST")
    token = Workflow.objects.get(pk=wf["id"]).webhook_token
    client = Client()
    response = client.post(f"/webhook/{token}/greet/ada?lang=en", {"name": "Ada"}, content_type="application/json",
                           HTTP_X_TRACE="t-1")
    assert response.status_code == 202, response.content
    execution = Execution.objects.get(pk=response.json()["executionId"])
    assert execution.mode == "webhook"
    (item,) = execution.input_data
    assert item["json"]["body"] == {"name": "Ada"} and item["json"]["params"] == {"who": "ada"}
    assert item["json"]["query"] == {"lang": "en"} and item["json"]["headers"]["x-trace"] == "t-1"
    assert client.get(f"/webhook/{token}/greet/ada").status_code == 405
    assert client.post(f"/webhook/{token}/other", {}, content_type="application/json").status_code == 404
    assert client.post("/webhook/wrong-token/greet/ada", {}, content_type="application/json").status_code == 404
    bad = client.post(f"/webhook/{token}/greet/ada", "{oops", content_type="application/json")
    assert bad.status_code == 400 and "JSON" in bad.json()["error"]
    dev_api.patch(f"/api/workflows/{wf['id']}", {"active": False}, format="json")
    assert client.post(f"/webhook/{token}/greet/ada", {}, content_type="application/json").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_webhook_last_node_answers_with_the_output(actors: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The execution runs in-process here (a real worker runs it in tests/test_workflows_e2e.py)."""
    from workflows import tasks

    monkeypatch.setattr(tasks, "enqueue", lambda execution_id, start_node=None: tasks.execute(
        str(execution_id), start_node, "test-worker"))
    dev = actors.client(actors.developer)
    wf = make_webhook(dev, httpMethod="POST", responseMode="lastNode")
    token = Workflow.objects.get(pk=wf["id"]).webhook_token
    response = Client().post(f"/webhook/{token}/greet/x", {"name": "Grace"}, content_type="application/json")
    assert response.status_code == 200, response.content
    assert response.json() == {"greeting": "hi Grace"}
    execution = Execution.objects.get(workflow_id=wf["id"])
    assert execution.status == "completed" and execution.worker == "test-worker"
    assert [r.node_name for r in execution.node_runs.order_by("sequence")] == ["Webhook", "Set"]
