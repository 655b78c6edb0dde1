"""The Django admin as an operator uses it: pages render, columns and filters show
the cluster's state, and the actions go through the same services as the API."""
from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import constants as message_levels
from django.contrib.messages import get_messages
from django.test import Client
from django_celery_beat.models import PeriodicTask

from agents.models import Agent, AgentHealthCheck
from coordinator.models import Task, TaskAttempt
from hive_project.models import ApiToken
from hive_project.schedules import ensure_schedules
from tests.factories import make_agent, make_task
from tests.processes import free_port

pytestmark = pytest.mark.django_db

AGENTS = "/admin/agents/agent/"
HEALTH = "/admin/agents/agenthealthcheck/"
TASKS = "/admin/coordinator/task/"
TOKENS = "/admin/hive_project/apitoken/"
PERIODIC = "/admin/django_celery_beat/periodictask/"


@pytest.fixture
def root(db: None) -> User:
    return User.objects.create_superuser("root", email="", password="pw-root")


@pytest.fixture
def staff(root: User) -> Client:
    client = Client()
    client.force_login(root)
    return client


def notes(response: Any) -> list[tuple[int, str]]:
    """Messages the request left for the user: (level, text)."""
    return [(m.level, str(m)) for m in get_messages(response.wsgi_request)]


def listed(response: Any) -> list[Any]:
    assert response.status_code == 200, response.content[:500]
    return list(response.context["cl"].result_list)


def cell(field: str, value: str) -> str:
    return f'class="field-{field}">{value}<'


def act(client: Client, url: str, action: str, objects: list[Any], **extra: str) -> Any:
    return client.post(url, {"action": action, "_selected_action": [str(o.pk) for o in objects], **extra})


# --- pages render ---------------------------------------------------------------


def test_every_changelist_and_change_page_renders(staff: Client) -> None:
    ensure_schedules()
    agent = make_agent()
    AgentHealthCheck.objects.create(agent=agent, available=False, error_message="connection refused")
    upstream = make_task(status=Task.Status.COMPLETED, assigned_agent=agent, result="done")
    task = make_task(status=Task.Status.FAILED, error="boom")
    task.dependency_links.create(depends_on_task=upstream)
    TaskAttempt.objects.create(task=task, number=1, agent=agent, dispatch_id=upstream.pk,
                               outcome=TaskAttempt.Outcome.FAILED, error="boom")
    token, _ = ApiToken.issue(User.objects.get(username="root"), "ci")
    check = AgentHealthCheck.objects.get()
    periodic = PeriodicTask.objects.get(name="hive: reconciler")

    pages = {
        AGENTS: [f"{AGENTS}{agent.pk}/change/", f"{AGENTS}add/"],
        TASKS: [f"{TASKS}{task.pk}/change/", f"{TASKS}{upstream.pk}/change/", f"{TASKS}add/"],
        HEALTH: [f"{HEALTH}{check.pk}/change/"],
        TOKENS: [f"{TOKENS}{token.pk}/change/", f"{TOKENS}add/"],
        PERIODIC: [f"{PERIODIC}{periodic.pk}/change/"],
    }
    assert staff.get("/admin/").status_code == 200
    for changelist, details in pages.items():
        response = staff.get(changelist)
        assert response.status_code == 200, changelist
        assert listed(response), f"{changelist} lists nothing"
        for url in details:
            assert staff.get(url).status_code == 200, url

    attempts = staff.get(f"{TASKS}{task.pk}/change/").content.decode()
    assert "boom" in attempts and "Depends on" in attempts
    assert "connection refused" in staff.get(f"{AGENTS}{agent.pk}/change/").content.decode()
    beat = staff.get(PERIODIC).content.decode()
    assert "hive: reconciler" in beat and "hive: scheduling pass (safety net)" in beat


def test_the_agent_list_shows_busy_and_total_slots_and_status(staff: Client) -> None:
    full = make_agent(name="Full", max_concurrency=1)
    half = make_agent(name="Half", max_concurrency=2)
    idle = make_agent(name="Idle", max_concurrency=3)
    draining = make_agent(name="Draining", max_concurrency=2, draining=True)
    down = make_agent(name="Down", status=Agent.Status.OFFLINE, last_error="connection refused")
    make_task(status=Task.Status.RUNNING, assigned_agent=full)
    make_task(status=Task.Status.QUEUED, assigned_agent=half)
    make_task(status=Task.Status.COMPLETED, assigned_agent=idle)  # a finished task holds no slot
    make_task(status=Task.Status.RUNNING, assigned_agent=draining)

    response = staff.get(AGENTS)
    rows = {a.name: a for a in listed(response)}
    assert set(rows) == {"Full", "Half", "Idle", "Draining", "Down"}
    html = response.content.decode()
    for agent, slots, status in [(full, "1/1", "busy"), (half, "1/2", "online"), (idle, "0/3", "online"),
                                 (draining, "1/2", "draining")]:
        row = re.search(rf'<tr>.*?{re.escape(agent.slug)}.*?</tr>', html, re.S)
        assert row, agent.slug
        assert cell("slots", slots) in row.group(0), (agent.slug, row.group(0))
        assert cell("status_badge", status) in row.group(0), (agent.slug, row.group(0))
    down_row = re.search(rf'<tr>.*?{re.escape(down.slug)}.*?</tr>', html, re.S)
    assert down_row and cell("status_badge", "offline (connection refused)") in down_row.group(0)


def test_agent_search_and_filters(staff: Client) -> None:
    acacia = make_agent(name="Acacia", slug="acacia", specialization="code")
    walnut = make_agent(name="Walnut", slug="walnut", specialization="docs", status=Agent.Status.OFFLINE)
    ironwood = make_agent(name="Ironwood", slug="ironwood", specialization="reasoning", draining=True)

    assert listed(staff.get(AGENTS, {"status__exact": "online"})) == [acacia, ironwood]
    assert listed(staff.get(AGENTS, {"status__exact": "offline"})) == [walnut]
    assert listed(staff.get(AGENTS, {"draining__exact": "1"})) == [ironwood]
    assert listed(staff.get(AGENTS, {"specialization": "docs"})) == [walnut]
    assert listed(staff.get(AGENTS, {"q": "walnut"})) == [walnut]
    assert listed(staff.get(AGENTS, {"q": "acac"})) == [acacia]
    assert listed(staff.get(AGENTS, {"q": "no such node"})) == []


def test_task_search_and_filters(staff: Client) -> None:
    agent = make_agent(slug="oak")
    pending = make_task(title="Summarise the logs", priority=5)
    done = make_task(title="Write the release notes", status=Task.Status.COMPLETED, assigned_agent=agent,
                     result="All about the zebra release")
    failed = make_task(title="Refactor", task_type="code", status=Task.Status.FAILED, error="model not found")

    assert listed(staff.get(TASKS, {"status__exact": "pending"})) == [pending]
    assert listed(staff.get(TASKS, {"status__exact": "failed"})) == [failed]
    assert listed(staff.get(TASKS, {"priority__exact": "5"})) == [pending]
    assert listed(staff.get(TASKS, {"task_type": "code"})) == [failed]
    assert listed(staff.get(TASKS, {"assigned_agent__id__exact": str(agent.pk)})) == [done]
    assert listed(staff.get(TASKS, {"q": "release notes"})) == [done]
    assert listed(staff.get(TASKS, {"q": "zebra"})) == [done], "the result is searchable"
    assert listed(staff.get(TASKS, {"q": "model not found"})) == [failed], "the error is searchable"
    assert len(listed(staff.get(TASKS))) == 3


def test_health_checks_and_tokens_filter(staff: Client, root: User) -> None:
    agent = make_agent()
    up = AgentHealthCheck.objects.create(agent=agent, available=True, response_time=0.01)
    down = AgentHealthCheck.objects.create(agent=agent, available=False, error_message="timed out")
    assert listed(staff.get(HEALTH, {"available__exact": "0"})) == [down]
    assert listed(staff.get(HEALTH, {"available__exact": "1"})) == [up]
    assert staff.get(f"{HEALTH}add/").status_code == 403, "health checks come from probes only"

    live, _ = ApiToken.issue(root, "laptop")
    revoked, _ = ApiToken.issue(root, "old ci")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked=True)
    assert listed(staff.get(TOKENS, {"revoked__exact": "1"})) == [revoked]
    assert listed(staff.get(TOKENS, {"q": "laptop"})) == [live]


# --- actions ------------------------------------------------------------------


def test_drain_and_undrain_actions(staff: Client) -> None:
    first, second, other = make_agent(), make_agent(), make_agent()
    response = act(staff, AGENTS, "drain", [first, second])
    assert response.status_code == 302
    assert notes(response) == [(message_levels.INFO, "Draining 2 agent(s).")]
    assert set(Agent.objects.filter(draining=True)) == {first, second}
    assert cell("status_badge", "draining") in staff.get(AGENTS).content.decode()

    response = act(staff, AGENTS, "undrain", [second])
    assert response.status_code == 302
    assert notes(response) == [(message_levels.INFO, "1 agent(s) accept work again.")]
    assert list(Agent.objects.filter(draining=True)) == [first]
    other.refresh_from_db()
    assert not other.draining


def test_cancel_action_cancels_pending_work_and_skips_finished_tasks_with_a_warning(staff: Client) -> None:
    agent = make_agent()
    pending = make_task(title="Waiting")
    queued = make_task(title="Queued", status=Task.Status.QUEUED, assigned_agent=agent)
    running = make_task(title="Running", status=Task.Status.RUNNING, assigned_agent=agent)
    completed = make_task(title="Finished", status=Task.Status.COMPLETED, assigned_agent=agent, result="ok")

    response = act(staff, TASKS, "cancel", [pending, queued, running, completed])
    assert response.status_code == 302
    messages = notes(response)
    assert (message_levels.INFO, "3 task(s) cancelled (or cancelling).") in messages
    warnings = [text for level, text in messages if level == message_levels.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("Finished:") and "already completed" in warnings[0]

    for task in (pending, queued, running, completed):
        task.refresh_from_db()
    assert pending.status == queued.status == Task.Status.CANCELLED
    assert pending.error == "cancelled by user"
    assert running.status == Task.Status.RUNNING and running.cancel_requested, "the worker stops it"
    assert completed.status == Task.Status.COMPLETED and completed.result == "ok"


def test_retry_action_puts_failed_work_back_and_skips_the_rest(staff: Client) -> None:
    agent = make_agent()
    failed = make_task(title="Broken", status=Task.Status.FAILED, error="failed after 3 attempt(s): boom",
                       attempts=3, assigned_agent=agent, excluded_agents=[str(agent.pk)])
    cancelled = make_task(title="Stopped", status=Task.Status.CANCELLED, cancel_requested=True)
    pending = make_task(title="Still waiting")

    response = act(staff, TASKS, "retry", [failed, cancelled, pending])
    assert response.status_code == 302
    messages = notes(response)
    assert (message_levels.INFO, "2 task(s) queued for another run.") in messages
    assert [text for level, text in messages if level == message_levels.WARNING] == [
        "Still waiting: Task is pending; only failed or cancelled tasks can be retried."]

    failed.refresh_from_db()
    cancelled.refresh_from_db()
    assert failed.status == cancelled.status == Task.Status.PENDING
    assert failed.attempts == 0 and failed.error == "" and failed.assigned_agent is None
    assert failed.excluded_agents == []
    assert not cancelled.cancel_requested


# --- forms --------------------------------------------------------------------


def _agent_form(**fields: str) -> dict[str, str]:
    data = {
        "slug": "garage", "name": "Garage box", "endpoint": "", "model": "llama3.2:3b", "specialization": "",
        "max_concurrency": "2", "max_loaded_models": "3", "capabilities": '[{"name": "general", "proficiency": 0.5}]',
        "hardware": "{}", "performance_targets": "{}",
        "health_checks-TOTAL_FORMS": "0", "health_checks-INITIAL_FORMS": "0",
        "health_checks-MIN_NUM_FORMS": "0", "health_checks-MAX_NUM_FORMS": "0",
        "_save": "Save",
    }
    data.update(fields)
    return data


def test_adding_an_unreachable_agent_stores_it_offline_with_a_warning(staff: Client) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    response = staff.post(f"{AGENTS}add/", _agent_form(endpoint=endpoint + "/"))
    assert response.status_code == 302, response.content.decode()[:3000]

    agent = Agent.objects.get(slug="garage")
    assert agent.endpoint == endpoint, "the trailing slash is dropped"
    assert agent.status == Agent.Status.OFFLINE
    assert agent.last_error
    assert agent.health_checks.filter(available=False).count() == 1
    warnings = [text for level, text in notes(response) if level == message_levels.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("garage is offline: "), notes(response)
    assert agent.last_error in warnings[0]


def test_the_agent_form_rejects_bad_input_and_writes_nothing(staff: Client) -> None:
    response = staff.post(f"{AGENTS}add/", _agent_form(endpoint="not a url", capabilities='"code"'))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "endpoint" in errors and "capabilities" in errors
    assert not Agent.objects.exists()


def test_a_token_created_in_the_admin_is_shown_once_and_stored_as_a_hash(staff: Client, actors: Any) -> None:
    response = staff.post(f"{TOKENS}add/", {"user": str(actors.developer.pk), "name": "ci runner",
                                            "expires_at_0": "", "expires_at_1": "", "_save": "Save"})
    assert response.status_code == 302, response.content.decode()[:3000]
    shown = [text for level, text in notes(response) if "not shown again" in text]
    assert len(shown) == 1, notes(response)
    key = re.fullmatch(r"Token created\. Copy it now, it is not shown again: (hive_[A-Za-z0-9_-]{40,})", shown[0]).group(1)

    token = ApiToken.objects.get()
    assert token.user == actors.developer and token.name == "ci runner"
    assert token.key_hash == hashlib.sha256(key.encode()).hexdigest()
    assert token.prefix == key[:12]
    stored = [str(value) for value in ApiToken.objects.values().get().values()]
    assert not any(key in value for value in stored), "the plain key is not stored"

    # Shown once: on the page the admin redirects to, then never again.
    assert key in staff.get(response["Location"]).content.decode()
    assert key not in staff.get(TOKENS).content.decode()
    assert key not in staff.get(f"{TOKENS}{token.pk}/change/").content.decode()

    api = Client()
    bearer = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert api.get("/api/tasks", **bearer).status_code == 200
    created = api.post("/api/tasks", {"title": "from ci", "prompt": "hello"}, content_type="application/json",
                       **bearer)
    assert created.status_code == 201, created.content
    assert created.json()["created_by"] == "dev", "the key acts as the token's user"
    assert api.get("/api/tasks", HTTP_AUTHORIZATION=f"Bearer {key}x").status_code == 401

    # Editing the token keeps its key; revoking it shuts the key out.
    response = staff.post(f"{TOKENS}{token.pk}/change/", {"user": str(actors.developer.pk), "name": "ci runner",
                                                          "expires_at_0": "", "expires_at_1": "", "revoked": "on",
                                                          "_save": "Save"})
    assert response.status_code == 302
    assert ApiToken.objects.get().key_hash == token.key_hash
    assert not any(key in text for _, text in notes(response))
    assert api.get("/api/tasks", **bearer).status_code == 401


# --- who may enter ------------------------------------------------------------------


def test_a_developer_cannot_reach_the_admin(actors: Any) -> None:
    client = Client()
    client.force_login(actors.developer)
    for url in ("/admin/", AGENTS, TASKS, f"{AGENTS}add/", TOKENS):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith("/admin/login/"), url
    task = make_task()
    response = client.post(TASKS, {"action": "cancel", "_selected_action": [str(task.pk)]})
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    task.refresh_from_db()
    assert task.status == Task.Status.PENDING


def test_anonymous_visitors_are_sent_to_the_login_page(db: None) -> None:
    response = Client().get(AGENTS)
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


# --- deleting an agent that holds work --------------------------------------------


def test_deleting_an_agent_with_running_work_is_refused_with_a_message(staff: Client) -> None:
    agent = make_agent()
    task = make_task(status=Task.Status.RUNNING, assigned_agent=agent)
    staff.raise_request_exception = False
    response = staff.post(f"{AGENTS}{agent.pk}/delete/", {"post": "yes"})
    assert response.status_code in (200, 302), response.status_code
    assert Agent.objects.filter(pk=agent.pk).exists()
    task.refresh_from_db()
    assert task.assigned_agent == agent


def test_bulk_delete_keeps_agents_that_hold_running_work(staff: Client) -> None:
    busy, idle = make_agent(), make_agent()
    task = make_task(status=Task.Status.RUNNING, assigned_agent=busy)
    staff.raise_request_exception = False
    response = act(staff, AGENTS, "delete_selected", [busy, idle], post="yes")
    assert response.status_code in (200, 302)
    assert Agent.objects.filter(pk=busy.pk).exists(), "an agent with a running task was deleted"
    task.refresh_from_db()
    assert task.assigned_agent == busy


def test_an_idle_agent_can_be_deleted(staff: Client) -> None:
    agent = make_agent()
    make_task(status=Task.Status.COMPLETED, assigned_agent=agent)
    response = staff.post(f"{AGENTS}{agent.pk}/delete/", {"post": "yes"})
    assert response.status_code == 302
    assert not Agent.objects.filter(pk=agent.pk).exists()
    assert Task.objects.get().assigned_agent is None, "the finished task keeps its history"


def test_an_admin_who_is_not_a_superuser_issues_tokens_only_for_themselves(actors: Any, root: User) -> None:
    """A token acts as its user: issuing one for a superuser would make its issuer one."""
    actors.admin.is_staff = True
    actors.admin.save()
    client = Client()
    client.force_login(actors.admin)
    theirs, _ = ApiToken.issue(root, "root's laptop")
    response = client.post(f"{TOKENS}add/", {"user": str(root.pk), "name": "mine now", "expires_at_0": "",
                                             "expires_at_1": "", "_save": "Save"})
    assert response.status_code == 200 and not ApiToken.objects.filter(name="mine now").exists()
    response = client.post(f"{TOKENS}add/", {"user": str(actors.admin.pk), "name": "own", "expires_at_0": "",
                                             "expires_at_1": "", "_save": "Save"})
    assert response.status_code == 302
    own = ApiToken.objects.get(name="own")
    assert own.user == actors.admin
    assert listed(client.get(TOKENS)) == [own], "another user's tokens are not listed"
    assert client.get(f"{TOKENS}{theirs.pk}/change/").status_code == 302, "nor reachable"
    # A token's user never changes, not even by a superuser.
    client.post(f"{TOKENS}{own.pk}/change/", {"user": str(root.pk), "name": "own", "expires_at_0": "",
                                              "expires_at_1": "", "_save": "Save"})
    superuser = Client()
    superuser.force_login(root)
    superuser.post(f"{TOKENS}{own.pk}/change/", {"user": str(root.pk), "name": "own", "expires_at_0": "",
                                                 "expires_at_1": "", "_save": "Save"})
    assert ApiToken.objects.get(pk=own.pk).user == actors.admin
