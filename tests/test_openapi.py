"""The OpenAPI schema served at /api/schema/, checked against the app with schemathesis.

Every operation of the served schema is fuzzed in-process over WSGI as a developer with an
API token (positive and negative data, path ids both generated and taken from seeded rows):
no 5xx, bodies of documented responses match their schema, and every status code the app
answers is documented. Explicit cases then hit real rows (as a developer and as an admin)
and inputs the fuzzer rarely produces. Hypothesis runs derandomized with a fixed example
budget and no shrinking, so a run is repeatable and bounded (its draws still change when the
code does, as Hypothesis mixes in constants from the source; known failures are therefore
pinned by explicit examples, not left to a lucky draw).

schemathesis' own pytest integration (``from_fixture`` / lazy ``parametrize``) does not run
under pytest 9, so each operation is a plain pytest parameter and Hypothesis drives
``operation.as_strategy()`` directly.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections, connection
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.errors import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from agents.models import AgentHealthCheck
from coordinator.models import Task, TaskAttempt
from hive_project.models import ApiToken
from tests.factories import make_agent, make_task

pytestmark = pytest.mark.django_db

SERVER = [not_a_server_error]
BODIES = [response_schema_conformance, content_type_conformance, response_headers_conformance]
STATUS = [status_code_conformance]
ALL = SERVER + BODIES + STATUS

# Shrinking is off: a failure is reported with the first failing request (schemathesis
# prints it as curl), which keeps a failing run as bounded as a passing one.
FUZZ = settings(
    max_examples=20, derandomize=True, deadline=None, database=None, phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


def _operations() -> list[str]:
    """Every operation, as drf-spectacular generates the schema (collection time cannot reach
    the embedded Redis the served view needs; a test checks the served schema is the same)."""
    spec = SchemaGenerator().get_schema(request=None, public=True)
    return [f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item]


OPERATIONS = _operations()

POSTGRES = connection.vendor == "postgresql"

# --- Known bugs (see the reasons) -----------------------------------------------------

BODY_BUGS: dict[str, str] = {}

# Status codes the app answers that the schema does not list (none known).
UNDOCUMENTED: dict[str, str] = {}


def bug(reason: str, *, condition: bool = True, raises: type[BaseException] = FailureGroup) -> pytest.MarkDecorator:
    """A known application bug: the case must fail, and fail with a schemathesis check failure."""
    return pytest.mark.xfail(condition, strict=True, raises=raises, reason=reason)


def _marked(operations: list[str], bugs: dict[str, str], reason: Callable[[str], str]) -> list[Any]:
    return [pytest.param(op, marks=bug(reason(bugs[op])) if op in bugs else (), id=op) for op in operations]


def _undocumented(codes: str) -> str:
    return (f"BUG: the schema documents no error responses; this operation answers {codes}. "
            "Add the JSON error responses (components/schemas/Error) in a drf-spectacular postprocessing hook")


# --- Fixtures -------------------------------------------------------------------------


@contextmanager
def _connections_kept_open() -> Iterator[None]:
    """Django closes the database connection at the end of every request; in a test that
    would close the test transaction under the next request (Django's test client does the same)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def _wsgi_in_the_test_transaction() -> Iterator[None]:
    with _connections_kept_open():
        yield


@pytest.fixture(autouse=True)
def _no_action_throttles(settings: Any) -> None:
    """The per-endpoint limits (tasks.create: 300/min for developers) would answer 429 to a
    long fuzzing run; throttling has its own tests."""
    settings.HIVE_ACTION_THROTTLE_RATES = {}


@pytest.fixture(scope="module")
def api_schema() -> Any:
    with _connections_kept_open():
        return schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application())


@dataclass
class Seed:
    ids: dict[str, str]

    def id_for(self, path: str) -> list[str]:
        if path.startswith("/api/agents/"):
            return [self.ids["agent"], self.ids["agent_slug"]]
        if path.startswith("/api/tasks/"):
            return [self.ids[name] for name in ("pending", "running", "completed", "failed")]
        return []


@pytest.fixture
def seed(actors: Any) -> Seed:
    """A few real rows so detail endpoints answer with bodies, not only 404s."""
    oak = make_agent(slug="oak", name="Oak", hardware={"gpu_type": "RX 7900 XTX", "vram_gb": 24},
                     performance_targets={"min_tps": 15}, models_loaded=[{"name": "llama3.2:3b"}])
    make_agent(slug="elm", name="Elm")
    AgentHealthCheck.objects.create(agent=oak, available=True, response_time=0.01, models_loaded=["llama3.2:3b"])
    AgentHealthCheck.objects.create(agent=oak, available=False, error_message="Ollama unavailable: refused")
    now = timezone.now()
    pending = make_task(created_by=actors.developer, options={"temperature": 0.2, "num_predict": 64})
    running = make_task(created_by=actors.developer, status=Task.Status.RUNNING, assigned_agent=oak,
                        started_at=now, attempts=1, metadata={"model": "llama3.2:3b"})
    completed = make_task(created_by=actors.developer, status=Task.Status.COMPLETED, assigned_agent=oak,
                          started_at=now - timedelta(seconds=3), completed_at=now, attempts=1, result="hello",
                          tokens_per_second=41.5, metadata={"model": "llama3.2:3b"},
                          timings={"total_duration": 3_000_000_000, "load_duration": 1_000_000, "eval_count": 12,
                                   "eval_duration": 290_000_000, "prompt_eval_count": 5,
                                   "prompt_eval_duration": 10_000_000, "tokens_per_second": 41.5})
    TaskAttempt.objects.create(task=completed, number=1, agent=oak, dispatch_id=completed.pk, worker="w1",
                               outcome=TaskAttempt.Outcome.SUCCEEDED, finished_at=now)
    failed = make_task(created_by=actors.developer, status=Task.Status.FAILED, attempts=3, error="boom",
                       completed_at=now)
    TaskAttempt.objects.create(task=failed, number=1, agent=None, dispatch_id=failed.pk, worker="w1",
                               outcome=TaskAttempt.Outcome.LOST, error="worker died", finished_at=now)
    return Seed(ids={"agent": str(oak.pk), "agent_slug": "oak", "pending": str(pending.pk),
                     "running": str(running.pk), "completed": str(completed.pk), "failed": str(failed.pk)})


def _bearer(user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {ApiToken.issue(user, 'schemathesis')[1]}"}


@pytest.fixture
def developer(actors: Any) -> dict[str, str]:
    return _bearer(actors.developer)


@pytest.fixture
def admin(actors: Any) -> dict[str, str]:
    return _bearer(actors.admin)


def _operation(api_schema: Any, label: str) -> Any:
    method, path = label.split(" ", 1)
    return api_schema[path][method]


# Requests every fuzzing run starts with, whatever Hypothesis draws afterwards: a valid
# body where random ones are nearly always refused.
EXPLICIT: dict[str, list[dict[str, Any]]] = {
    "POST /api/tasks/": [{"media_type": "application/json", "body": {"title": "t", "prompt": "p"}}],
    "POST /api/tasks/batch/": [{"media_type": "application/json",
                                "body": {"tasks": [{"key": "a", "title": "A", "prompt": "a"},
                                                   {"title": "B", "prompt": "b", "depends_on": ["a"]}]}}],
}


def fuzz(api_schema: Any, label: str, seed: Seed, headers: dict[str, str], checks: list[Any]) -> None:
    operation = _operation(api_schema, label)
    real_ids = seed.id_for(operation.path) if "{id}" in operation.path else []
    strategies = [operation.as_strategy(mode, path_parameters={"id": real} if real else None)
                  for real in [None, *real_ids]
                  for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)]

    @given(case=st.one_of(strategies))
    @FUZZ
    def run(case: Any) -> None:
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks, headers=headers)

    # Every seeded row is requested at least once, then the explicit bodies.
    for parts in [*({"path_parameters": {"id": real}} for real in real_ids), *EXPLICIT.get(label, [])]:
        run = example(case=operation.Case(**parts))(run)
    run()


def call(api_schema: Any, label: str, headers: dict[str, str], checks: list[Any], **parts: Any) -> Any:
    """One explicit case: the request as given, validated like the fuzzed ones."""
    case = _operation(api_schema, label).Case(**parts)
    response = case.call(headers=headers)
    case.validate_response(response, checks=checks, headers=headers)
    return response


# --- Fuzzing every operation as a developer --------------------------------------------


@pytest.mark.parametrize("label", OPERATIONS)
def test_no_operation_answers_with_a_server_error(api_schema, seed, developer, label):
    fuzz(api_schema, label, seed, developer, SERVER)


@pytest.mark.parametrize("label", _marked(OPERATIONS, BODY_BUGS, lambda reason: reason))
def test_every_documented_response_matches_its_schema(api_schema, seed, developer, label):
    fuzz(api_schema, label, seed, developer, BODIES)


@pytest.mark.parametrize("label", _marked(OPERATIONS, UNDOCUMENTED, _undocumented))
def test_every_status_code_an_operation_answers_is_documented(api_schema, seed, developer, label):
    fuzz(api_schema, label, seed, developer, STATUS)


# Operations a developer only ever sees refused with 403, fuzzed again as an admin so their
# handlers run. Creating or re-pointing an agent is left out: it probes whatever endpoint
# the fuzzer made up, which means DNS lookups and connections to arbitrary hosts.
ADMIN_ONLY = [op for op in OPERATIONS if op in {
    "DELETE /api/agents/{id}/", "POST /api/agents/{id}/drain/", "POST /api/agents/{id}/probe/",
    "POST /api/agents/{id}/undrain/", "PATCH /api/tasks/{id}/", "PUT /api/tasks/{id}/assign/",
    "POST /api/tasks/{id}/retry/", "DELETE /api/tasks/{id}/",
}]


@pytest.mark.parametrize("label", ADMIN_ONLY)
def test_admin_only_operations_answer_without_server_errors_and_with_documented_bodies(api_schema, seed, admin,
                                                                                        label):
    fuzz(api_schema, label, seed, admin, SERVER + BODIES)


# --- Real rows ------------------------------------------------------------------------

READS = [
    ("GET /api/agents/", None),
    ("GET /api/agents/{id}/", "agent"),
    ("GET /api/agents/{id}/", "agent_slug"),
    ("GET /api/agents/{id}/health/", "agent"),
    ("GET /api/tasks/", None),
    ("GET /api/tasks/{id}/", "pending"),
    ("GET /api/tasks/{id}/", "running"),
    ("GET /api/tasks/{id}/", "completed"),
    ("GET /api/tasks/{id}/", "failed"),
    ("GET /api/status/cluster/", None),
    ("GET /api/status/agents/", None),
    ("GET /api/health/", None),
]


@pytest.mark.parametrize(("label", "row"), READS)
def test_reading_real_rows_answers_200_with_documented_bodies(api_schema, seed, developer, label, row):
    path_parameters = {"id": seed.ids[row]} if row else None
    response = call(api_schema, label, developer, ALL, path_parameters=path_parameters)
    assert response.status_code == 200


def test_a_developer_creates_and_cancels_tasks_with_documented_answers(api_schema, seed, developer):
    created = call(api_schema, "POST /api/tasks/", developer, ALL, media_type="application/json",
                   body={"title": "t", "prompt": "p", "priority": 5, "options": {"num_predict": 8},
                         "depends_on": [seed.ids["completed"]]})
    assert created.status_code == 201
    for row, expected in (("pending", 200), ("running", 202), ("completed", 409)):
        response = call(api_schema, "DELETE /api/tasks/{id}/", developer, ALL, path_parameters={"id": seed.ids[row]})
        assert response.status_code == expected, row


def test_a_batch_answers_with_its_documented_body(api_schema, seed, developer):
    response = call(api_schema, "POST /api/tasks/batch/", developer, ALL, media_type="application/json",
                    body={"tasks": [{"key": "a", "title": "A", "prompt": "a"},
                                    {"title": "B", "prompt": "b", "depends_on": ["a"]}]})
    assert response.status_code == 201


ADMIN_CALLS = [
    ("POST /api/agents/{id}/drain/", "agent", None, 200),
    ("POST /api/agents/{id}/undrain/", "agent_slug", None, 200),
    ("POST /api/agents/{id}/probe/", "agent", None, 200),
    ("PATCH /api/agents/{id}/", "agent", {"max_concurrency": 4, "capabilities": [{"name": "code", "proficiency": 1}]},
     200),
    ("PATCH /api/tasks/{id}/", "pending", {"priority": 1, "title": "renamed"}, 200),
    ("PUT /api/tasks/{id}/assign/", "pending", {"agent": "oak"}, 200),
    ("POST /api/tasks/{id}/retry/", "failed", None, 200),
    ("DELETE /api/agents/{id}/", "agent", None, 409),
    ("POST /api/tasks/{id}/retry/", "completed", None, 409),
]


@pytest.mark.parametrize(("label", "row", "body", "expected"), ADMIN_CALLS)
def test_admin_actions_on_real_rows_answer_as_documented(api_schema, seed, admin, label, row, body, expected):
    parts: dict[str, Any] = {"path_parameters": {"id": seed.ids[row]}}
    if body is not None:
        parts.update(body=body, media_type="application/json")
    response = call(api_schema, label, admin, ALL, **parts)
    assert response.status_code == expected


def test_deleting_an_idle_agent_answers_204(api_schema, seed, admin):
    response = call(api_schema, "DELETE /api/agents/{id}/", admin, ALL, path_parameters={"id": "elm"})
    assert response.status_code == 204


# --- Inputs the fuzzer rarely produces ---------------------------------------------------

@pytest.mark.parametrize(
    ("label", "parts", "who"),
    [
        pytest.param("GET /api/agents/{id}/", {"path_parameters": {"id": "oak\x00"}}, "developer",
                     id="nul-in-agent-id"),
        pytest.param("POST /api/tasks/", {"body": {"title": "t", "prompt": "p", "options": {"stop": "\x00"}},
                                          "media_type": "application/json"}, "developer",
                     id="nul-in-task-options"),
        pytest.param("PATCH /api/agents/{id}/", {"path_parameters": {"id": "oak"}, "media_type": "application/json",
                                                 "body": {"hardware": {"gpu_type": "\x00"}}}, "admin",
                     id="nul-in-agent-hardware"),
        pytest.param("GET /api/tasks/", {"query": {"created_after": "9999-12-31T23:59:59.999999-23:59"}},
                     "developer", id="created-after-beyond-year-9999"),
        pytest.param("GET /api/tasks/", {"query": {"created_before": "0001-01-01T00:00:00+14:00"}}, "developer",
                     id="created-before-year-1"),
    ],
)
def test_unusual_but_well_formed_input_is_never_a_server_error(api_schema, seed, developer, admin, label, parts,
                                                                who):
    call(api_schema, label, developer if who == "developer" else admin, SERVER, **parts)


def test_an_invalid_refresh_token_is_a_401_with_a_plain_message(api_schema, seed):
    response = call(api_schema, "POST /api/auth/token/refresh/", {}, SERVER, media_type="application/json",
                    body={"refresh": "not-a-token"})
    assert response.status_code == 401
    assert not response.json()["error"].startswith("detail:")


# --- Schema and Swagger UI --------------------------------------------------------------


def test_the_served_schema_is_openapi_3_and_lists_every_tested_operation(client):
    response = client.get("/api/schema/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi")
    spec = json.loads(client.get("/api/schema/?format=json").content)
    assert spec["openapi"].startswith("3.")
    served = [f"{method.upper()} {path}" for path, item in spec["paths"].items() for method in item]
    assert served == OPERATIONS


def test_swagger_ui_is_served_and_loads_nothing_from_another_origin(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="swagger-ui"' in html
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    references += re.findall(r"""\burl\s*:\s*["']([^"']+)["']""", html)
    assert references, "the page references no assets"
    for url in references:
        assert url.startswith("/") and not url.startswith("//"), url
    assert not re.search(r"https?://|//cdn|unpkg|jsdelivr", html), "an absolute URL in the page"
    for url in references:
        assert client.get(url).status_code == 200, url
