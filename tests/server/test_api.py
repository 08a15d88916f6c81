"""The API through a real uvicorn server: requests, runs, projects, identity and secrets."""

from __future__ import annotations

import json
import time
from typing import Any

from infra_automation.identity import Role
from infra_automation.secrets import remember
from tests.server.conftest import PASSWORD, LiveServer

API = "/api/v1"


def submit(live: LiveServer, role: Role, body: dict[str, Any], what: str = "submit") -> str:
    with live.client(role) as http:
        response = http.post(f"{API}/requests/{what}", json=body)
    assert response.status_code == 202, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def count_runs(live: LiveServer) -> int:
    with live.client(Role.ENGINEER) as http:
        return len(http.get(f"{API}/runs", params={"limit": 200}).json()["runs"])


def test_service_shows_the_json_schema_of_its_params(server: LiveServer) -> None:
    with server.client(Role.VIEWER) as http:
        names = [s["name"] for s in http.get(f"{API}/services").json()]
        shown = http.get(f"{API}/services/quick").json()
    assert names == ["quick", "slow"]
    schema = shown["params_schema"]
    assert schema["properties"]["count"]["maximum"] == 5
    assert schema["additionalProperties"] is False
    assert [s["id"] for s in shown["steps"]] == ["first", "second"]


def test_bad_request_names_the_fields_and_creates_nothing(server: LiveServer) -> None:
    before = count_runs(server)
    bad = {"service": "quick", "project": "alpha", "params": {"count": 9, "colour": "red"}}
    with server.client(Role.ENGINEER) as http:
        for what in ("validate", "plan", "check", "submit"):
            response = http.post(f"{API}/requests/{what}", json=bad)
            assert response.status_code == 422, response.text
            fields = {f["field"] for f in response.json()["fields"]}
            assert fields == {"params.count", "params.colour"}, what
        envelope = {"service": "quick", "project": "Not A Name", "requester": "mallory"}
        response = http.post(f"{API}/requests/submit", json=envelope)
    assert response.status_code == 422
    assert {f["field"] for f in response.json()["fields"]} == {"requester"}
    time.sleep(0.2)
    assert count_runs(server) == before


def test_submit_takes_the_options_of_infra_apply_validated(server: LiveServer) -> None:
    before = count_runs(server)
    base = {"service": "quick", "project": "options"}
    with server.client(Role.ENGINEER) as http:
        bad = [
            http.post(f"{API}/requests/submit", json={**base, **extra})
            for extra in (
                {"check": "maybe", "parallel": 0},
                {"parallel": "2"},
                {"parallel": 300},
                {"check": True, "change_type": "standard"},
            )
        ]
        bad.append(http.post(f"{API}/requests/check", json={**base, "parallel": -1}))
    named = [{f["field"] for f in r.json()["fields"]} for r in bad]
    assert [r.status_code for r in bad] == [422] * 5
    assert named == [{"check", "parallel"}, {"parallel"}, {"parallel"}, {"check"}, {"parallel"}]
    assert count_runs(server) == before  # nothing recorded
    run_id = submit(server, Role.ENGINEER, {**base, "check": True, "parallel": 2})
    run = server.wait_idle(run_id)
    assert run["check"] is True and run["parallel"] == 2 and run["status"] == "success"
    checked = submit(server, Role.ENGINEER, {**base, "parallel": 3}, "check")
    assert server.wait_idle(checked)["parallel"] == 3


def test_a_run_shows_its_service_outputs_and_the_list_its_request(server: LiveServer) -> None:
    body = {"service": "quick", "project": "outputs", "params": {"note": "hi"}}
    run_id = submit(server, Role.ENGINEER, body)
    run = server.wait_idle(run_id)
    with server.client(Role.VIEWER) as http:
        [listed] = http.get(f"{API}/runs", params={"project": "outputs"}).json()["runs"]
        slow = http.get(f"{API}/runs/{run_id}").json()
    assert run["outputs"] == {"greeting": "hi from outputs"} == slow["outputs"]
    assert listed["request"] == {
        "service": "quick",
        "project": "outputs",
        "requester": server.user(Role.ENGINEER),
        "params": {"note": "hi", "count": 1},
        "inventory": None,
    }


def test_requester_is_the_authenticated_user(server: LiveServer) -> None:
    run_id = submit(server, Role.TAM, {"service": "quick", "project": "alpha"})
    run = server.wait_idle(run_id)
    assert run["requester"] == server.user(Role.TAM)
    assert run["request"]["requester"] == server.user(Role.TAM)
    assert run["status"] == "success"
    assert [s["status"] for s in run["steps"]] == ["success", "success"]


def test_tam_sees_and_submits_only_her_projects(server: LiveServer) -> None:
    other = submit(server, Role.ENGINEER, {"service": "quick", "project": "other"})
    server.wait_idle(other)
    with server.client(Role.TAM) as http:
        refused = http.post(f"{API}/requests/submit", json={"service": "quick", "project": "other"})
        listed = {r["project"] for r in http.get(f"{API}/runs").json()["runs"]}
        shown = http.get(f"{API}/runs/{other}")
        projects = [p["name"] for p in http.get(f"{API}/projects").json()]
    assert refused.status_code == 403
    assert "not assigned to project 'other'" in refused.json()["message"]
    assert listed <= {"alpha"}
    assert shown.status_code == 403
    assert "other" not in projects


def test_run_list_filters_and_pages(server: LiveServer) -> None:
    ids = []
    for project in ("pager", "pager", "pager", "pager", "pager-two"):
        ids.append(submit(server, Role.ENGINEER, {"service": "quick", "project": project}))
        server.wait_idle(ids[-1])
    seen: list[str] = []
    cursor = None
    with server.client(Role.VIEWER) as http:
        while True:
            params = {"project": "pager", "limit": 3, **({"cursor": cursor} if cursor else {})}
            page = http.get(f"{API}/runs", params=params).json()
            seen += [r["id"] for r in page["runs"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        mine = http.get(f"{API}/runs", params={"requester": server.user(Role.ENGINEER)}).json()
        failed = http.get(f"{API}/runs", params={"status": "failed"}).json()
        bad = http.get(f"{API}/runs", params={"cursor": "garbage!"})
    assert seen == list(reversed(ids[:4]))
    assert {r["requester"] for r in mine["runs"]} == {server.user(Role.ENGINEER)}
    assert failed["runs"] == []
    assert bad.status_code == 422 and bad.json()["fields"][0]["field"] == "cursor"


def test_check_run_and_resume(server: LiveServer) -> None:
    run_id = submit(server, Role.ENGINEER, {"service": "quick", "project": "checked"}, "check")
    run = server.wait_idle(run_id)
    assert run["check"] is True and run["status"] == "success"
    with server.client(Role.ENGINEER) as http:
        response = http.post(f"{API}/runs/{run_id}/resume")
    assert response.status_code == 202
    resumed = server.wait_idle(response.json()["run_id"])
    assert resumed["resumed_from"] == run_id
    assert all(s["reused"] for s in resumed["steps"])


def test_events_page_in_order(server: LiveServer) -> None:
    run_id = submit(server, Role.ENGINEER, {"service": "quick", "project": "events"})
    server.wait_idle(run_id)
    with server.client(Role.VIEWER) as http:
        events = http.get(f"{API}/runs/{run_id}/events").json()["events"]
        later = http.get(f"{API}/runs/{run_id}/events", params={"after": events[1]["seq"]}).json()
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["run.queued", "run.started"] and kinds[-1] == "run.finished"
    assert [e["seq"] for e in later["events"]] == [e["seq"] for e in events[2:]]


def test_project_state_and_docs_pages(server: LiveServer) -> None:
    run_id = submit(server, Role.ENGINEER, {"service": "quick", "project": "documented"})
    server.wait_idle(run_id)
    with server.client(Role.VIEWER) as http:
        state = http.get(f"{API}/projects/documented").json()
        pages = http.get(f"{API}/projects/documented/docs").json()["pages"]
        index = http.get(f"{API}/projects/documented/docs/index.md")
        missing = http.get(f"{API}/projects/documented/docs/nope.md")
        unknown = http.get(f"{API}/projects/never-ran")
    assert set(state["state"]) == {"first", "second"}
    assert state["state"]["first"]["outputs"] == {"note": "hello"}
    assert "index.md" in pages and "history.md" in pages
    assert index.status_code == 200 and index.headers["content-type"].startswith("text/markdown")
    assert "documented" in index.text
    assert missing.status_code == 404
    assert unknown.status_code == 404


def test_no_secret_value_in_any_response(server: LiveServer) -> None:
    secret = "Sup3rSecretValue"
    run_id = submit(
        server, Role.ENGINEER, {"service": "quick", "project": "leaky", "params": {"note": secret}}
    )
    server.wait_idle(run_id)
    remember(secret)  # known as a secret only now: the record still holds it in clear
    with server.client(Role.ENGINEER) as http:
        texts = [
            http.get(f"{API}/runs/{run_id}").text,
            http.get(f"{API}/runs/{run_id}/events").text,
            http.get(f"{API}/runs/{run_id}/stream").text,
            http.get(f"{API}/runs", params={"project": "leaky"}).text,
        ]
    assert all(secret not in t for t in texts)
    assert "********" in texts[0]
    assert "********" in json.loads(texts[0])["outputs"]["greeting"]  # the service's outputs
    assert "********" in json.loads(texts[3])["runs"][0]["request"]["params"]["note"]


def test_tokens_are_revocable_and_shown_once(server: LiveServer) -> None:
    with server.client(Role.VIEWER) as http:
        created = http.post(f"{API}/tokens", json={"label": "ci"}).json()
        listed = http.get(f"{API}/tokens").text
    value, token_id = created["value"], created["info"]["id"]
    assert value not in listed and token_id in listed
    with server.client() as http:
        headers = {"Authorization": f"Bearer {value}"}
        assert http.get(f"{API}/me", headers=headers).json()["name"] == server.user(Role.VIEWER)
        assert http.delete(f"{API}/tokens/{token_id}", headers=headers).status_code == 204
        refused = http.get(f"{API}/me", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"
    assert refused.headers["www-authenticate"] == "Bearer"


def test_unauthenticated_and_bad_tokens_get_clear_401(server: LiveServer) -> None:
    with server.client() as http:
        none = http.get(f"{API}/runs")
        bad = http.get(f"{API}/runs", headers={"Authorization": "Bearer infra_nope"})
        basic = http.get(f"{API}/runs", headers={"Authorization": "Basic eDp5"})
    assert none.status_code == bad.status_code == basic.status_code == 401
    assert "authentication required" in none.json()["message"]
    assert "invalid" in bad.json()["message"]
    assert "Bearer TOKEN" in basic.json()["message"]


def test_password_login_sets_a_strict_httponly_session(server: LiveServer) -> None:
    with server.client() as http:
        response = http.post(f"{API}/login", json={"name": "engineer-user", "password": PASSWORD})
        assert response.status_code == 200
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert http.get(f"{API}/me").json()["role"] == "engineer"
        assert http.post(f"{API}/logout").status_code == 204
        http.cookies.clear()
        assert http.get(f"{API}/me").status_code == 401


def test_login_attempts_are_rate_limited(fresh_server: LiveServer) -> None:
    body = {"name": "viewer-user", "password": "wrong password"}
    with fresh_server.client() as http:
        codes = [http.post(f"{API}/login", json=body).status_code for _ in range(6)]
        right = http.post(f"{API}/login", json={"name": "viewer-user", "password": PASSWORD})
        other = http.post(f"{API}/login", json={"name": "tam-user", "password": PASSWORD})
    assert codes == [401] * 5 + [429]
    assert right.status_code == 429  # even the right password waits out the window
    assert other.status_code == 200
