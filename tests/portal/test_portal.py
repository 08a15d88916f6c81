"""The portal over HTTP (no browser): every page x every role as PORTAL_RULES says, CSRF,
cookies, self-approval, the static assets, and the read-only pages without JavaScript."""

from __future__ import annotations

import html
import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from infra_automation.changes import ChangeService
from infra_automation.identity import Role
from infra_automation.portal import routes as pages
from infra_automation.server.policy import API, PORTAL_RULES, RULES
from tests.portal.conftest import PASSWORD, LiveServer

TOKEN_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextmanager
def session(live: LiveServer, user: str) -> Iterator[tuple[httpx.Client, str]]:
    """A cookie session of ``user`` and its CSRF token."""
    with httpx.Client(base_url=live.url, timeout=30) as http:
        token = TOKEN_RE.search(http.get("/login").text)
        assert token is not None
        form = {"name": user, "password": PASSWORD, "csrf_token": token.group(1)}
        assert http.post("/login", data=form).status_code == 303
        yield http, token.group(1)


@pytest.fixture(scope="module")
def alpha_run(portal: LiveServer) -> str:
    with portal.client(Role.ENGINEER) as http:
        body = {"service": "quick", "project": "alpha"}
        run_id: str = http.post("/api/v1/requests/submit", json=body).json()["run_id"]
    portal.wait_idle(run_id)
    return run_id


_cases_made = itertools.count()


def waiting_change(live: LiveServer, requester: str) -> str:
    """A new change (its own title: a rejected hash never opens again) waiting for approval."""
    engine = live.state.engine
    n = next(_cases_made)
    title = "Case " + "".join(chr(ord("a") + int(d)) for d in str(n))
    data = {"service": "lite-change", "project": "alpha", "params": {"title": title}}
    request = engine.validate({**data, "requester": requester})
    outcome = ChangeService(engine).gate(request, requester=requester)
    assert outcome.change is not None and outcome.decision == "waiting", outcome.reason
    return outcome.change.id


FORMS: dict[str, dict[str, str]] = {
    "/login": {"name": "viewer-user", "password": PASSWORD},
    "/services/{name}/preview": {"project": "alpha"},
    "/services/{name}/submit": {"project": "alpha"},
}


def _cases() -> Iterator[Any]:
    for (method, path), rule in PORTAL_RULES.items():
        for role in Role:
            allowed = rule.public or rule.scope(role) is not None
            yield pytest.param(method, path, role, allowed, id=f"{method} {path} as {role.value}")


def test_every_page_has_a_rule_and_no_page_is_in_the_api_document(portal: LiveServer) -> None:
    served = {
        (m, r.path) for r in pages.router.routes if isinstance(r, APIRoute) for m in r.methods
    }
    assert served == set(PORTAL_RULES)
    assert not set(PORTAL_RULES) & set(RULES)
    document = portal.app.openapi()["paths"]
    assert not [p for p in document if not p.startswith(API)]


@pytest.mark.parametrize(("method", "path", "role", "allowed"), list(_cases()))
def test_page_for_role(
    portal: LiveServer, alpha_run: str, method: str, path: str, role: Role, allowed: bool
) -> None:
    """With a bearer token (no CSRF needed: no ambient credential)."""
    change = waiting_change(portal, "tam-user") if "{change_id}" in path else ""
    url = path.format(name="lite", run_id=alpha_run, project="alpha", change_id=change)
    with portal.client(role, follow_redirects=False) as http:
        response = http.request(method, url, data=FORMS.get(path), timeout=60)
    if allowed:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        assert response.status_code == 403, response.text
        assert f"role {role.value!r} may not" in html.unescape(response.text)
    if "{change_id}" in path:
        ChangeService(portal.state.engine).reject(change, "tam-user")  # the next may open
    if response.headers.get("location", "").startswith("/runs/"):
        portal.wait_idle(response.headers["location"].rsplit("/", 1)[1])


@pytest.mark.parametrize(
    ("method", "path"), [k for k, r in PORTAL_RULES.items() if not r.public], ids=str
)
def test_page_without_credentials_goes_to_login(
    portal: LiveServer, alpha_run: str, method: str, path: str
) -> None:
    url = path.format(name="lite", run_id=alpha_run, project="alpha", change_id="0" * 64)
    with httpx.Client(base_url=portal.url, follow_redirects=False) as http:
        response = http.request(method, url)
    assert response.status_code in (303, 403)  # a post without CSRF token is refused first
    if response.status_code == 303:
        assert response.headers["location"].startswith("/login?next=")


def test_form_posts_need_the_csrf_token_of_the_session(portal: LiveServer) -> None:
    with session(portal, "engineer-user") as (http, token):
        for form in ({"project": "alpha"}, {"project": "alpha", "csrf_token": "forged"}):
            response = http.post("/services/quick/preview", data=form)
            assert response.status_code == 403
            assert "reload the page" in html.unescape(response.text)
        form = {"project": "alpha", "csrf_token": token}
        foreign = http.post(
            "/services/quick/preview", data=form, headers={"Origin": "http://evil.example"}
        )
        assert foreign.status_code == 403 and "cross-site" in foreign.text
        assert http.post("/services/quick/preview", data=form).status_code == 200


def test_login_sets_httponly_samesite_cookies_and_logout_ends_the_session(
    portal: LiveServer,
) -> None:
    http = httpx.Client(base_url=portal.url, timeout=30)
    page = http.get("/login")
    assert "httponly" in page.headers["set-cookie"].lower()
    assert "samesite=strict" in page.headers["set-cookie"].lower()
    token = TOKEN_RE.search(page.text)
    assert token is not None
    wrong = http.post(
        "/login", data={"name": "tam-user", "password": "nope", "csrf_token": token.group(1)}
    )
    assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
    form = {"name": "tam-user", "password": PASSWORD, "csrf_token": token.group(1)}
    done = http.post("/login", data={**form, "next": "//evil.example/"})
    assert done.headers["location"] == "/"  # never off-site
    cookie = done.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
    assert http.get("/api/v1/me").json()["name"] == "tam-user"  # the API takes it too
    assert http.post("/logout", data={"csrf_token": token.group(1)}).status_code == 303
    assert http.get("/", follow_redirects=False).status_code == 303
    http.close()


def test_the_requester_cannot_approve_her_own_change(portal: LiveServer) -> None:
    change = waiting_change(portal, "approver-user")
    with session(portal, "approver-user") as (http, token):
        page = http.get(f"/changes/{change}")
        assert 'id="own-change"' in page.text
        response = http.post(f"/changes/{change}/approve", data={"csrf_token": token})
    assert response.status_code == 409
    assert "cannot approve it" in html.unescape(response.text)
    assert ChangeService(portal.state.engine).store.get(change).state == "waiting"
    ChangeService(portal.state.engine).reject(change, "approver-user")


def test_assets_are_served_by_the_app_and_pages_name_no_other_host(
    portal: LiveServer, alpha_run: str
) -> None:
    with session(portal, "engineer-user") as (http, _token):
        for asset in ("vendor/htmx.min.js", "vendor/htmx-ext-sse.min.js", "portal.css"):
            response = http.get(f"/static/{asset}")
            assert response.status_code == 200 and len(response.content) > 1000
        for path in ("/", "/services/lite", f"/runs/{alpha_run}", "/projects/alpha", "/runs"):
            text = http.get(path).text
            assert re.findall(r'(?:src|href)="(?:https?:)?//', text) == [], path


def test_the_run_page_works_without_javascript(portal: LiveServer, alpha_run: str) -> None:
    """Server-rendered: the picture and each department's steps are in the HTML."""
    with portal.client(Role.VIEWER) as http:
        text = http.get(f"/runs/{alpha_run}").text
        runs = http.get("/runs", params={"project": "alpha", "status": "success"}).text
    assert 'id="node-first" data-status="success"' in text
    assert 'id="node-second" data-status="success"' in text
    assert 'id="resume"' not in text  # a viewer may not resume
    assert alpha_run in runs


def test_the_api_schema_of_a_service_is_the_one_the_form_is_made_from(portal: LiveServer) -> None:
    with portal.client(Role.VIEWER) as http:
        schema = http.get("/api/v1/services/lite").json()["params_schema"]
    assert schema["properties"]["size"]["enum"] == ["small", "medium", "large"]
    assert schema["properties"]["title"]["pattern"] == "[A-Za-z ]{1,30}"
