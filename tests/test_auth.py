from __future__ import annotations

import jwt
import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from coordinator.models import Task
from hive_project.models import ApiToken
from tests.factories import make_agent

pytestmark = pytest.mark.django_db

TASK = {"title": "t", "prompt": "p"}
AGENT = {"agent_id": "acacia", "name": "ACACIA", "endpoint": "http://127.0.0.1:9"}


def test_health_needs_no_authentication():
    response = APIClient().get("/api/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok", "redis": "ok"}


@pytest.mark.parametrize("path", ["/api/tasks", "/api/agents", "/api/status/cluster", "/api/status/agents"])
def test_anonymous_requests_get_401(path):
    response = APIClient().get(path)
    assert response.status_code == 401
    assert "credentials" in response.json()["error"]


def test_a_person_logs_in_with_jwt_and_the_token_carries_roles(actors):
    client = APIClient()
    response = client.post("/api/auth/token/", {"username": "dev", "password": "pw-dev"}, format="json")
    assert response.status_code == 200
    tokens = response.json()
    claims = jwt.decode(tokens["access"], options={"verify_signature": False})
    assert claims["roles"] == ["developer"]
    assert "tasks.create" in claims["permissions"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    assert client.post("/api/tasks", TASK, format="json").status_code == 201
    refreshed = APIClient().post("/api/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    assert refreshed.status_code == 200 and "access" in refreshed.json()


def test_jwts_are_signed_with_their_own_key_not_the_secret_key(actors, settings):
    """Whoever reads SECRET_KEY (sessions) still cannot forge a token: JWTs have their own key."""
    assert settings.SIMPLE_JWT["SIGNING_KEY"] == settings.HIVE_JWT_SIGNING_KEY != settings.SECRET_KEY
    issued = APIClient().post("/api/auth/token/", {"username": "dev", "password": "pw-dev"}, format="json").json()
    claims = jwt.decode(issued["access"], settings.HIVE_JWT_SIGNING_KEY, algorithms=["HS256"])
    forged_claims = {**claims, "user_id": str(actors.admin.pk), "roles": ["admin"]}
    forged = jwt.encode(forged_claims, settings.SECRET_KEY, algorithm="HS256")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {forged}")
    response = client.get("/api/tasks")
    assert response.status_code == 401
    genuine = jwt.encode(forged_claims, settings.HIVE_JWT_SIGNING_KEY, algorithm="HS256")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {genuine}")
    assert client.get("/api/tasks").status_code == 200


def test_a_wrong_password_is_a_401(actors):
    response = APIClient().post("/api/auth/token/", {"username": "dev", "password": "nope"}, format="json")
    assert response.status_code == 401


def test_machines_use_api_tokens_from_the_management_command(actors, capsys):
    call_command("create_api_token", "dev", "--name", "ci")
    key = capsys.readouterr().out.strip()
    assert key.startswith("hive_")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    assert client.post("/api/tasks", TASK, format="json").status_code == 201
    token_client = APIClient()
    token_client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert token_client.get("/api/tasks").status_code == 200
    assert ApiToken.objects.get(name="ci").last_used_at is not None


def test_a_revoked_api_token_is_refused(actors):
    token, key = ApiToken.issue(actors.developer, "old")
    token.revoked = True
    token.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    response = client.get("/api/tasks")
    assert response.status_code == 401
    assert "API token" in response.json()["error"]


def test_a_viewer_creating_a_task_gets_403(viewer_api):
    assert viewer_api.post("/api/tasks", TASK, format="json").status_code == 403
    assert Task.objects.count() == 0


def test_a_viewer_can_read(viewer_api):
    assert viewer_api.get("/api/tasks").status_code == 200
    assert viewer_api.get("/api/agents").status_code == 200


def test_a_developer_registering_an_agent_gets_403(dev_api):
    response = dev_api.post("/api/agents", AGENT, format="json")
    assert response.status_code == 403
    assert "permission" in response.json()["error"]


def test_a_developer_cannot_drain_or_pin(dev_api):
    agent = make_agent()
    assert dev_api.post(f"/api/agents/{agent.slug}/drain").status_code == 403
    task = dev_api.post("/api/tasks", TASK, format="json").json()
    assert dev_api.put(f"/api/tasks/{task['id']}/assign", {"agent": agent.slug}, format="json").status_code == 403


def test_a_user_without_a_role_sees_nothing(actors):
    client = actors.client(actors.outsider)
    assert client.get("/api/tasks").status_code == 403
    assert client.get("/api/status/cluster").status_code == 403


def test_throttles_answer_429_per_role(actors, settings):
    settings.HIVE_THROTTLE_RATES = {**settings.HIVE_THROTTLE_RATES, "viewer": "3/min"}
    client = actors.client(actors.viewer)
    codes = [client.get("/api/tasks").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert actors.client(actors.developer).get("/api/tasks").status_code == 200


def test_the_seed_limit_on_agent_registration_applies_to_admins(actors, settings):
    settings.HIVE_ACTION_THROTTLE_RATES = {"agents.register": {"admin": "1/min"}}
    client = actors.client(actors.admin)
    assert client.post("/api/agents", AGENT, format="json").status_code == 201
    second = client.post("/api/agents", {**AGENT, "agent_id": "walnut"}, format="json")
    assert second.status_code == 429
    assert client.get("/api/agents").status_code == 200
