"""The portal's pages (server-rendered, htmx where it helps): login, the catalog, the
request form, the preview, the runs, the projects and the approvals.

Every route has a rule in :data:`infra_automation.server.policy.PORTAL_RULES` and depends on
the same guard as the API (roles and project scopes are the API's); every post also depends
on :func:`~infra_automation.portal.csrf.require_csrf`. Read-only pages work without
JavaScript; the run page follows the run live through htmx's SSE extension.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent
from markdown_it import MarkdownIt

from infra_automation.catalog import Service
from infra_automation.changes import ChangeService
from infra_automation.events import utcnow
from infra_automation.exceptions import RequestValidationError
from infra_automation.identity import Role
from infra_automation.portal import actions, csrf, dashboard, forms, views
from infra_automation.portal.pages import may, render, templates
from infra_automation.portal.picture import nodes_of, svg
from infra_automation.request import Request as InfraRequest
from infra_automation.server import queries
from infra_automation.server.auth import SESSION_COOKIE, Principal, problem
from infra_automation.server.routes_runs import RunStatus, visible_run
from infra_automation.server.state import Caller, ServerState, StateDep
from infra_automation.validation import NAME_RE

router = APIRouter(include_in_schema=False, default_response_class=HTMLResponse)
router.add_api_route("/dashboard", dashboard.dashboard_page, methods=["GET"])  # the charts
Csrf = Annotated[None, Depends(csrf.require_csrf)]
VisibleRun = Annotated[str, Depends(visible_run)]
ProjectName = Annotated[str, Path(pattern=NAME_RE.pattern)]
_markdown = MarkdownIt("commonmark", {"html": False}).enable("table")


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


# --- login / logout -----------------------------------------------------------------------


@router.get("/login")
def login_page(request: Request, state: StateDep, next: str = "/") -> HTMLResponse:
    return render(request, "login.html.j2", {"next": _safe_next(next), "problem": ""})


def _safe_next(target: str) -> str:
    """Only a path of this site (no scheme, no host, no ``//``)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.post("/login")
def login(
    request: Request,
    state: StateDep,
    _csrf: Csrf,
    name: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=1000)],
    next: Annotated[str, Form(max_length=500)] = "/",
) -> Response:
    client = request.client.host if request.client else "unknown"
    wait = state.limiter.retry_after(name, client)
    user = state.identity.check_password(name, password) if wait <= 0 else None
    if user is None:
        if wait <= 0:
            state.limiter.failed(name, client)
        why = (
            f"too many failed logins: retry in {wait:.0f} s"
            if wait > 0
            else "wrong user name or password"
        )
        context = {"next": _safe_next(next), "problem": why}
        return render(request, "login.html.j2", context, status=429 if wait > 0 else 401)
    state.limiter.succeeded(name, client)
    session = state.identity.create_session(user.name)
    response = _see_other(_safe_next(next))
    response.set_cookie(
        SESSION_COOKIE,
        session.value,
        httponly=True,
        samesite="strict",
        secure=state.secure_cookies,
        path="/",
    )
    return response


@router.post("/logout")
def logout(request: Request, caller: Caller, state: StateDep, _csrf: Csrf) -> Response:
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        state.identity.end_session(cookie)
    response = _see_other("/login")
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- catalog, form, preview, submit --------------------------------------------------------


@router.get("/")
def catalog_page(request: Request, caller: Caller, state: StateDep) -> HTMLResponse:
    catalog = state.engine.catalog()
    services = [catalog.get(n) for n in catalog.names()]
    return render(request, "catalog.html.j2", {"services": services}, caller=caller)


def _service(state: ServerState, name: str) -> Service:
    catalog = state.engine.catalog()
    if name not in catalog.services:
        raise problem(404, "not_found", f"no service {name!r} in the catalog")
    return catalog.get(name)


def _form(
    request: Request,
    caller: Principal,
    service: Service,
    values: Mapping[str, Any],
    errors: Mapping[str, list[str]] | None = None,
    status: int = 200,
) -> HTMLResponse:
    schema = forms.params_schema(service)
    context = {
        "service": service,
        "fields": forms.form_fields(schema),
        "values": values,
        "errors": errors or {},
        "projects": caller.user.projects if caller.user.role is Role.TAM else None,
    }
    return render(request, "form.html.j2", context, caller=caller, status=status)


@router.get("/services/{name}")
def form_page(request: Request, name: str, caller: Caller, state: StateDep) -> HTMLResponse:
    service = _service(state, name)
    defaults = {f.input_name: f.default for f in forms.form_fields(forms.params_schema(service))}
    return _form(request, caller, service, defaults)


async def _posted(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v) for k, v in form.items() if isinstance(v, str)}


def _validated(
    state: ServerState, caller: Principal, service: Service, posted: Mapping[str, str]
) -> InfraRequest:
    """The posted form as a request, validated like the API's (RequestValidationError)."""
    schema = forms.params_schema(service)
    params = forms.form_params(forms.form_fields(schema), posted, schema)
    project = posted.get("project", "").strip()
    data = {"service": service.name, "project": project, "params": params}
    if project:
        caller.require_project(project)
    return state.engine.validate({**data, "requester": caller.name}, source="request")


async def _request_or_form(
    request: Request, caller: Principal, state: ServerState, name: str
) -> tuple[dict[str, str], InfraRequest | HTMLResponse]:
    service = _service(state, name)
    posted = await _posted(request)
    try:
        return posted, await anyio.to_thread.run_sync(_validated, state, caller, service, posted)
    except RequestValidationError as exc:
        errors = forms.field_errors([(e.field, e.message) for e in exc.errors])
        return posted, _form(request, caller, service, posted, errors, status=422)


@router.post("/services/{name}/preview")
async def preview(
    request: Request, name: str, caller: Caller, state: StateDep, _csrf: Csrf
) -> HTMLResponse:
    """The plan by department, the picture and every step's dry-run diff (a check run)."""
    posted, checked = await _request_or_form(request, caller, state, name)
    if isinstance(checked, HTMLResponse):
        return checked
    context = await anyio.to_thread.run_sync(_preview, state, checked)
    context["posted"] = {k: v for k, v in posted.items() if k != csrf.FIELD}
    return render(request, "preview.html.j2", context, caller=caller)


def _preview(state: ServerState, request: InfraRequest) -> dict[str, Any]:
    engine = state.engine
    plan = engine.plan(request)
    dry_run = engine.run(plan, check=True)
    by_department: dict[str, list[dict[str, Any]]] = {}
    for step in plan.steps:
        result = dry_run.steps.get(step.id)
        by_department.setdefault(step.department, []).append({"step": step, "result": result})
    return {
        "plan": plan,
        "dry_run": dry_run.redacted(),
        "by_department": by_department,
        "picture": svg(
            nodes_of(plan.summary()), {s: r.status.value for s, r in dry_run.steps.items()}
        ),
        "approval": actions.approval_needed(state, plan),
    }


@router.post("/services/{name}/submit")
async def submit(
    request: Request, name: str, caller: Caller, state: StateDep, _csrf: Csrf
) -> Response:
    _posted_form, checked = await _request_or_form(request, caller, state, name)
    if isinstance(checked, HTMLResponse):
        return checked
    done = await anyio.to_thread.run_sync(actions.submit, state, checked)
    if done.run_id is not None:
        return _see_other(f"/runs/{done.run_id}")
    if done.change_id is not None and not done.refused:
        return _see_other(f"/changes/{done.change_id}")
    return render(request, "error.html.j2", _refused(done.message), caller=caller, status=409)


def _refused(message: str) -> dict[str, Any]:
    return {"status": 409, "error": {"error": "refused", "message": message, "fields": []}}


# --- runs ----------------------------------------------------------------------------------


@router.get("/runs")
def runs_page(
    request: Request,
    caller: Caller,
    state: StateDep,
    project: Annotated[str | None, Query(max_length=200)] = None,
    status: RunStatus | None = None,
    requester: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Annotated[str | None, Query(max_length=400)] = None,
) -> HTMLResponse:
    where = queries.RunFilter(project or None, status, requester or None, caller.projects_filter())
    try:
        page = queries.list_runs(state.engine.db, where, cursor=cursor, limit=50)
    except queries.CursorError as exc:
        raise problem(422, "invalid", f"cursor: {exc}") from None
    filters = {"project": project or "", "status": status or "", "requester": requester or ""}
    context = {"page": page, "filters": filters, "statuses": list(RunStatus)}
    return render(request, "runs.html.j2", context, caller=caller)


@router.get("/runs/{run_id}")
def run_page(
    request: Request, run_id: str, project: VisibleRun, caller: Caller, state: StateDep
) -> HTMLResponse:
    view = views.run_view(state, run_id)
    return render(request, "run.html.j2", {"view": view}, caller=caller)


@router.get("/runs/{run_id}/live", response_class=EventSourceResponse)
async def run_live(
    request: Request, run_id: str, project: VisibleRun, caller: Caller, state: StateDep
) -> AsyncIterator[ServerSentEvent]:
    """The run's panel (picture, departments, failures) as HTML, sent again after each
    batch of new events, and ``done`` once the run has ended. Each message is the whole
    current state, so a reconnect (whatever its ``Last-Event-ID``) loses nothing."""
    panel = templates.get_template("_run_panel.html.j2")
    token = csrf.token_for(request)
    tracker = views.Tracker()

    def allowed(method: str, path: str) -> bool:
        return may(caller.user.role, method, path)

    first = True
    while True:
        fresh = await anyio.to_thread.run_sync(tracker.read, state, run_id)
        live = await anyio.to_thread.run_sync(queries.run_is_live, state.engine.db, run_id)
        if fresh or first or not live:
            view = await anyio.to_thread.run_sync(views.run_view, state, run_id, tracker)
            html = panel.render(view=view, csrf_token=token, may=allowed)
            yield ServerSentEvent(raw_data=html, event="panel", id=str(view.last_seq))
            first = False
            if view.finished:
                yield ServerSentEvent(raw_data=view.status, event="done", id=str(view.last_seq))
                return
        await asyncio.sleep(max(state.poll_interval, 0.2))


@router.post("/runs/{run_id}/resume")
def resume(
    run_id: str, project: VisibleRun, caller: Caller, state: StateDep, _csrf: Csrf
) -> Response:
    new_id = actions.resume(state, run_id, state.engine.resume_plan(run_id))
    return _see_other(f"/runs/{new_id}")


# --- projects ------------------------------------------------------------------------------


@router.get("/projects")
def projects_page(request: Request, caller: Caller, state: StateDep) -> HTMLResponse:
    only = caller.projects_filter()
    names = set(state.ledgers.projects()) | set(queries.projects_with_runs(state.engine.db, only))
    if only is not None:
        names &= set(only)
    return render(request, "projects.html.j2", {"projects": sorted(names)}, caller=caller)


@router.get("/projects/{project}")
def project_page(
    request: Request, project: ProjectName, caller: Caller, state: StateDep
) -> HTMLResponse:
    """The as-built documentation (the docs writer's pages) and the run history."""
    caller.require_project(project)
    ledger = state.ledgers.load(project)
    where = queries.RunFilter(project=project)
    history = queries.list_runs(state.engine.db, where, limit=50).runs
    if not ledger.runs and not history:
        raise problem(404, "not_found", f"no project {project!r}: it has no runs")
    writer = state.docs
    pages = [(p.name, _markdown.render(writer.render(p))) for p in writer.pages(ledger)]
    context = {"project": project, "pages": pages, "history": history}
    return render(request, "project.html.j2", context, caller=caller)


# --- changes and approvals -----------------------------------------------------------------


@router.get("/approvals")
def approvals_page(request: Request, caller: Caller, state: StateDep) -> HTMLResponse:
    changes = ChangeService(state.engine).store.open_changes()
    waiting = [c for c in changes if c.state.value == "waiting"]
    return render(request, "approvals.html.j2", {"changes": waiting}, caller=caller)


def _change_context(state: ServerState, change_id: str, caller: Principal) -> dict[str, Any]:
    service = ChangeService(state.engine)
    view = service.store.get(change_id)
    caller.require_project(view.record.project)
    policy = service.policy(view.record.service, view.record.content["request"].get("inventory"))
    return {
        "change": view,
        "diffs": views.diffs_by_department(view.record.content),
        "picture": views.change_picture(view),
        "missing": service.missing(view, policy, utcnow()),
        "own": view.record.requester.casefold() == caller.name.casefold(),
        "message": "",
    }


@router.get("/changes/{change_id}")
def change_page(request: Request, change_id: str, caller: Caller, state: StateDep) -> HTMLResponse:
    context = _change_context(state, change_id, caller)
    return render(request, "change.html.j2", context, caller=caller)


@router.post("/changes/{change_id}/approve")
async def approve(
    request: Request, change_id: str, caller: Caller, state: StateDep, _csrf: Csrf
) -> Response:
    result, done = await anyio.to_thread.run_sync(actions.approve, state, change_id, caller.name)
    if done.run_id is not None:
        return _see_other(f"/runs/{done.run_id}")
    context = await anyio.to_thread.run_sync(_change_context, state, change_id, caller)
    context["message"] = done.message if result.accepted else result.reason
    return render(
        request, "change.html.j2", context, caller=caller, status=200 if result.accepted else 409
    )


@router.post("/changes/{change_id}/reject")
async def reject(
    request: Request, change_id: str, caller: Caller, state: StateDep, _csrf: Csrf
) -> Response:
    result = await anyio.to_thread.run_sync(actions.reject, state, change_id, caller.name)
    context = await anyio.to_thread.run_sync(_change_context, state, change_id, caller)
    context["message"] = result.reason
    return render(
        request, "change.html.j2", context, caller=caller, status=200 if result.accepted else 409
    )
