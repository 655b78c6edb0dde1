"""The dashboard page and the login that guards it (Django test client, no browser)."""
from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db

STATIC_JS = "/static/monitoring/dashboard.js"
STATIC_CSS = "/static/monitoring/dashboard.css"


def logged_in(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_anonymous_visitors_are_sent_to_the_login_page() -> None:
    response = Client().get("/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/"


def test_a_viewer_sees_the_dashboard_built_from_same_origin_files_only(actors: Any) -> None:
    response = logged_in(actors.viewer).get("/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "<title>Hive" in html
    tags = re.findall(r"<(?:script|link)\b[^>]*>", html)
    sources = [m for tag in tags for m in re.findall(r'(?:src|href)="([^"]*)"', tag)]
    assert STATIC_JS in sources and STATIC_CSS in sources
    for url in sources:
        assert url.startswith("/") and not url.startswith("//"), f"not same-origin: {url}"
    assert not re.search(r"<(?:script|link)\b[^>]*https?://", html)
    # A viewer may watch but not submit.
    assert 'id="task-form"' not in html and 'id="submit-disabled"' in html
    config = re.search(r'<script id="hive-config" type="application/json">(.*?)</script>', html, re.S)
    assert config and '"canSubmit": false' in config.group(1) and '"role": "viewer"' in config.group(1)


def test_a_developer_gets_the_task_form_and_a_csrf_token(actors: Any) -> None:
    response = logged_in(actors.developer).get("/")
    html = response.content.decode()
    assert 'id="task-form"' in html
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert token and len(token.group(1)) >= 32
    assert "csrftoken" in response.cookies


def test_logging_in_through_the_login_page_leads_to_the_dashboard(actors: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/?next=/")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="username"' in html and 'name="password"' in html
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token
    bad = client.post("/accounts/login/", {"username": "dev", "password": "wrong",
                                           "csrfmiddlewaretoken": token.group(1), "next": "/"})
    assert bad.status_code == 200 and "correct username and password" in bad.content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', bad.content.decode())
    assert token
    response = client.post("/accounts/login/", {"username": "dev", "password": "pw-dev",
                                                "csrfmiddlewaretoken": token.group(1), "next": "/"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_login_without_next_goes_to_the_dashboard_and_logout_is_a_post(actors: Any) -> None:
    client = Client()
    response = client.post("/accounts/login/", {"username": "vic", "password": "pw-vic"})
    assert response.status_code == 302 and response["Location"] == "/"
    assert client.get("/accounts/logout/").status_code == 405
    response = client.post("/accounts/logout/")
    assert response.status_code == 302 and response["Location"] == "/accounts/login/"
    assert client.get("/").status_code == 302


def test_a_user_without_a_role_can_load_the_page_but_sees_no_form(actors: Any) -> None:
    response = logged_in(actors.outsider).get("/")
    assert response.status_code == 200
    assert 'id="task-form"' not in response.content.decode()


@pytest.mark.parametrize(("url", "content_type", "needle"), [
    (STATIC_JS, "javascript", "/ws/events"),
    (STATIC_CSS, "text/css", ".task-output"),
])
def test_static_files_are_served(actors: Any, url: str, content_type: str, needle: str) -> None:
    assert finders.find(url.removeprefix("/static/"))
    response = Client().get(url)
    assert response.status_code == 200
    assert content_type in response["Content-Type"]
    body = b"".join(response.streaming_content) if response.streaming else response.content
    assert needle.encode() in body


def test_the_page_script_never_uses_inner_html() -> None:
    """Event data goes into the page as text only."""
    script = open(finders.find("monitoring/dashboard.js"), encoding="utf-8").read()
    assert "innerHTML" not in script and "outerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script and "eval(" not in script
    assert "http://" not in script and "https://" not in script
