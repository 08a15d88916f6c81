"""Every endpoint x every role, allowed or refused as :data:`RULES` (the README table) says.

An allowed call must succeed with its endpoint's status; a refused one gets 403 naming the
role; without credentials every non-public endpoint answers 401."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from infra_automation.identity import Role
from infra_automation.server.policy import API, RULES
from tests.server.conftest import PASSWORD, LiveServer


@dataclass(frozen=True)
class Call:
    ok: int  # the status of an allowed call
    body: Callable[[LiveServer, Role], Any] | None = None


_names = itertools.count()


def _request(_live: LiveServer, _role: Role) -> dict[str, Any]:
    return {"service": "quick", "project": "alpha"}


def _login(live: LiveServer, role: Role) -> dict[str, Any]:
    return {"name": live.user(role), "password": PASSWORD}


def _new_user(_live: LiveServer, _role: Role) -> dict[str, Any]:
    return {"name": f"made-{next(_names)}", "role": "viewer", "password": PASSWORD}


CALLS: dict[tuple[str, str], Call] = {
    ("POST", f"{API}/login"): Call(200, _login),
    ("POST", f"{API}/logout"): Call(204),
    ("GET", f"{API}/me"): Call(200),
    ("GET", f"{API}/services"): Call(200),
    ("GET", f"{API}/services/{{name}}"): Call(200),
    ("POST", f"{API}/requests/validate"): Call(200, _request),
    ("POST", f"{API}/requests/plan"): Call(200, _request),
    ("POST", f"{API}/requests/check"): Call(202, _request),
    ("POST", f"{API}/requests/submit"): Call(202, _request),
    ("GET", f"{API}/runs"): Call(200),
    ("GET", f"{API}/runs/{{run_id}}"): Call(200),
    ("GET", f"{API}/runs/{{run_id}}/events"): Call(200),
    ("GET", f"{API}/runs/{{run_id}}/stream"): Call(200),
    ("POST", f"{API}/runs/{{run_id}}/resume"): Call(202),
    ("GET", f"{API}/projects"): Call(200),
    ("GET", f"{API}/projects/{{project}}"): Call(200),
    ("GET", f"{API}/projects/{{project}}/docs"): Call(200),
    ("GET", f"{API}/projects/{{project}}/docs/{{page}}"): Call(200),
    ("GET", f"{API}/users"): Call(200),
    ("POST", f"{API}/users"): Call(201, _new_user),
    ("GET", f"{API}/tokens"): Call(200),
    ("POST", f"{API}/tokens"): Call(201, lambda _l, _r: {"label": "table"}),
    ("DELETE", f"{API}/tokens/{{token_id}}"): Call(204),
    ("GET", f"{API}/stats"): Call(200),
    ("GET", f"{API}/incidents"): Call(200),
    # alpha's run succeeded, so it opened no incident: those allowed get 404, the others 403
    ("POST", f"{API}/incidents/{{incident_id}}/ack"): Call(404),
    ("GET", f"{API}/metrics"): Call(200),
    # the catalog of these tests declares no change policy: there is no change to find, so
    # those allowed get 404 (the change tests call them on real changes), the others 403
    ("GET", f"{API}/changes"): Call(200),
    ("GET", f"{API}/changes/{{change_id}}"): Call(404),
    ("POST", f"{API}/changes/{{change_id}}/approve"): Call(404),
    ("POST", f"{API}/changes/{{change_id}}/reject"): Call(404),
    ("GET", f"{API}/changes/{{change_id}}/export"): Call(404),
}


def test_every_rule_has_a_call_and_every_route_a_rule(server: LiveServer) -> None:
    assert set(CALLS) == set(RULES)
    document = server.app.openapi()["paths"]
    served = {(m.upper(), path) for path, ops in document.items() for m in ops}
    assert served == set(RULES)


@pytest.fixture(scope="module")
def alpha_run(server: LiveServer) -> str:
    """A finished run of project alpha (the tam's project)."""
    with server.client(Role.ENGINEER) as http:
        run_id: str = http.post(f"{API}/requests/submit", json=_request(server, Role.TAM)).json()[
            "run_id"
        ]
    server.wait_idle(run_id)
    return run_id


def _path(live: LiveServer, path: str, role: Role, run_id: str) -> str:
    token_id = ""
    if "{token_id}" in path:
        token_id = live.state.identity.create_token(live.user(role), "to revoke").info.id
    values = {
        "name": "quick",
        "run_id": run_id,
        "project": "alpha",
        "page": "index.md",
        "token_id": token_id,
        "incident_id": f"run:{run_id}",
        "change_id": "0" * 64,
    }
    return path.format(**values)


def _cases() -> Iterator[Any]:
    for (method, path), rule in RULES.items():
        for role in Role:
            allowed = rule.public or rule.scope(role) is not None
            yield pytest.param(method, path, role, allowed, id=f"{method} {path} as {role.value}")


@pytest.mark.parametrize(("method", "path", "role", "allowed"), list(_cases()))
def test_endpoint_for_role(
    server: LiveServer, alpha_run: str, method: str, path: str, role: Role, allowed: bool
) -> None:
    call = CALLS[(method, path)]
    url = _path(server, path, role, alpha_run)
    body = call.body(server, role) if call.body else None
    with server.client(role) as http:
        response = http.request(method, url, json=body)
    if allowed:
        assert response.status_code == call.ok, response.text
    else:
        assert response.status_code == 403, response.text
        assert f"role {role.value!r} may not" in response.json()["message"]
    if response.status_code == 202:  # let the run end: the next one of alpha must not wait
        server.wait_idle(response.json()["run_id"])


@pytest.mark.parametrize(
    ("method", "path"), [k for k, r in RULES.items() if not r.public], ids=lambda v: str(v)
)
def test_endpoint_without_credentials(
    server: LiveServer, alpha_run: str, method: str, path: str
) -> None:
    with server.client() as http:
        response = http.request(method, _path(server, path, Role.ADMIN, alpha_run), json={})
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_a_route_without_rule_or_guard_is_refused_at_start() -> None:
    from fastapi import APIRouter, FastAPI

    from infra_automation.exceptions import ConfigurationError
    from infra_automation.server.app import check_rules

    unruled = APIRouter(prefix=API)
    unruled.add_api_route("/secret", lambda: {}, methods=["GET"])
    unguarded = APIRouter(prefix=API)
    unguarded.add_api_route("/runs", lambda: {}, methods=["GET"])
    for router, message in ((unruled, "no access rule"), (unguarded, "does not check")):
        app = FastAPI(openapi_url=f"{API}/openapi.json")
        app.include_router(router)
        with pytest.raises(ConfigurationError, match=message):
            check_rules(app, [router])
