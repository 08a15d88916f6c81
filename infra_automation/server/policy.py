"""Who may call what: the one table of the API's rules (role x endpoint).

Every route of the API has exactly one entry in :data:`RULES` (every page of the portal one
in :data:`PORTAL_RULES`), keyed by its method and path
template; :func:`infra_automation.server.app.create_app` refuses to start when a route has
none. A rule maps each role that is allowed to a :class:`Scope`; a role that is missing is
refused (403). The README table (:func:`markdown_table`) and the tests are generated from it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from infra_automation.identity import Role

API = "/api/v1"


class Scope(StrEnum):
    ALL = "all"  # every project (or every token, for admins)
    ASSIGNED = "assigned"  # only the projects the user is assigned to
    OWN = "own"  # only the user's own tokens


@dataclass(frozen=True)
class Rule:
    summary: str
    grants: Mapping[Role, Scope] = field(default_factory=dict)
    public: bool = False  # no authentication at all (login)

    def scope(self, role: Role) -> Scope | None:
        return self.grants.get(role)


V, T, E, P, A = Role.VIEWER, Role.TAM, Role.ENGINEER, Role.APPROVER, Role.ADMIN
ALL, ASSIGNED, OWN = Scope.ALL, Scope.ASSIGNED, Scope.OWN

EVERYONE = {V: ALL, T: ALL, E: ALL, P: ALL, A: ALL}
READERS = {V: ALL, T: ASSIGNED, E: ALL, P: ALL}
REQUESTERS = {T: ASSIGNED, E: ALL}
TOKEN_OWNERS = {V: OWN, T: OWN, E: OWN, P: OWN, A: ALL}

RULES: Mapping[tuple[str, str], Rule] = {
    ("POST", f"{API}/login"): Rule("password login: sets the session cookie", public=True),
    ("POST", f"{API}/logout"): Rule("end the session", EVERYONE),
    ("GET", f"{API}/me"): Rule("who am I", EVERYONE),
    ("GET", f"{API}/services"): Rule("catalog services", EVERYONE),
    ("GET", f"{API}/services/{{name}}"): Rule("a service with its params' JSON Schema", EVERYONE),
    ("POST", f"{API}/requests/validate"): Rule("validate a request", READERS),
    ("POST", f"{API}/requests/plan"): Rule("plan a request", READERS),
    ("POST", f"{API}/requests/check"): Rule("start a dry run", REQUESTERS),
    ("POST", f"{API}/requests/submit"): Rule("start a run", REQUESTERS),
    ("GET", f"{API}/runs"): Rule("list runs", READERS),
    ("GET", f"{API}/runs/{{run_id}}"): Rule("a run with its steps", READERS),
    ("GET", f"{API}/runs/{{run_id}}/events"): Rule("a run's events", READERS),
    ("GET", f"{API}/runs/{{run_id}}/stream"): Rule("live events (SSE)", READERS),
    ("POST", f"{API}/runs/{{run_id}}/resume"): Rule("resume a run", {E: ALL}),
    ("GET", f"{API}/projects"): Rule("projects", READERS),
    ("GET", f"{API}/projects/{{project}}"): Rule("a project's as-built state", READERS),
    ("GET", f"{API}/projects/{{project}}/docs"): Rule("a project's docs pages", READERS),
    ("GET", f"{API}/projects/{{project}}/docs/{{page}}"): Rule("one docs page", READERS),
    ("GET", f"{API}/users"): Rule("list users", {A: ALL}),
    ("POST", f"{API}/users"): Rule("add a user", {A: ALL}),
    ("GET", f"{API}/tokens"): Rule("list API tokens", TOKEN_OWNERS),
    ("POST", f"{API}/tokens"): Rule("create an API token (shown once)", TOKEN_OWNERS),
    ("DELETE", f"{API}/tokens/{{token_id}}"): Rule("revoke an API token", TOKEN_OWNERS),
    ("GET", f"{API}/stats"): Rule("service levels: lead times, OLA waits, DORA, SLA", READERS),
    ("GET", f"{API}/incidents"): Rule("incidents: failed runs and drift", READERS),
    ("POST", f"{API}/incidents/{{incident_id}}/ack"): Rule(
        "acknowledge an incident", {T: ASSIGNED, E: ALL, P: ALL}
    ),
    ("GET", f"{API}/metrics"): Rule("Prometheus metrics of the record", EVERYONE),
    ("GET", f"{API}/changes"): Rule("list change records", READERS),
    ("GET", f"{API}/changes/{{change_id}}"): Rule("a change with its diffs and approvals", READERS),
    ("POST", f"{API}/changes/{{change_id}}/approve"): Rule("approve a change", {P: ALL}),
    ("POST", f"{API}/changes/{{change_id}}/reject"): Rule("reject a change", {P: ALL}),
    ("GET", f"{API}/changes/{{change_id}}/export"): Rule("a change's ITSM document", READERS),
}


# The portal's pages (infra_automation.portal): the same roles and scopes as the API calls
# they stand for; posts are also CSRF-checked.
APPROVERS = {P: ALL}
PORTAL_RULES: Mapping[tuple[str, str], Rule] = {
    ("GET", "/login"): Rule("the login page", public=True),
    ("POST", "/login"): Rule("password login (portal)", public=True),
    ("POST", "/logout"): Rule("end the session (portal)", EVERYONE),
    ("GET", "/"): Rule("the catalog page", EVERYONE),
    ("GET", "/services/{name}"): Rule("a service's request form", EVERYONE),
    ("POST", "/services/{name}/preview"): Rule("preview a request (dry run)", REQUESTERS),
    ("POST", "/services/{name}/submit"): Rule("submit a request", REQUESTERS),
    ("GET", "/runs"): Rule("the run history", READERS),
    ("GET", "/runs/{run_id}"): Rule("a run's page", READERS),
    ("GET", "/runs/{run_id}/live"): Rule("a run's live panel (SSE)", READERS),
    ("POST", "/runs/{run_id}/resume"): Rule("resume a run (portal)", {E: ALL}),
    ("GET", "/projects"): Rule("the projects page", READERS),
    ("GET", "/projects/{project}"): Rule("a project's page", READERS),
    ("GET", "/dashboard"): Rule("service levels and capacity as charts", READERS),
    ("GET", "/approvals"): Rule("the changes waiting for approval", APPROVERS),
    ("GET", "/changes/{change_id}"): Rule("a change's page", READERS),
    ("POST", "/changes/{change_id}/approve"): Rule("approve a change", APPROVERS),
    ("POST", "/changes/{change_id}/reject"): Rule("reject a change", APPROVERS),
}


def rule_for(method: str, path: str) -> Rule | None:
    key = (method.upper(), path)
    return RULES.get(key) or PORTAL_RULES.get(key)


def markdown_table(rules: Mapping[tuple[str, str], Rule] = RULES) -> str:
    """The role x endpoint table of the README (generated from :data:`RULES`, or from
    :data:`PORTAL_RULES` for the portal's pages)."""
    roles = list(Role)
    head = "| endpoint | " + " | ".join(r.value for r in roles) + " |"
    rows = [head, "|" + "---|" * (len(roles) + 1)]
    for (method, path), rule in rules.items():
        cells = ["public" if rule.public else _cell(rule.scope(r)) for r in roles]
        rows.append(f"| `{method} {path}` | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def _cell(scope: Scope | None) -> str:
    if scope is None:
        return "-"
    return {ALL: "yes", ASSIGNED: "assigned projects", OWN: "own"}[scope]
