"""The portal's dashboard (``GET /dashboard``): the service levels of a range as charts.

Deliveries per day by outcome, lead time per project, step durations and OLA waits per
department, incidents per department, the pools' headroom, and the headline figures (DORA,
breaches) — the figures of ``infra stats`` (:mod:`infra_automation.metrics`), drawn on the
server as SVG (:mod:`infra_automation.metrics.panels`): no script, no CDN. A TAM sees her
projects only (one at a time; the first by default). The portal's router adds
:func:`dashboard_page` as its ``GET /dashboard`` route (a rule in ``PORTAL_RULES``).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Query, Request
from fastapi.responses import HTMLResponse

from infra_automation.events import utcnow
from infra_automation.exceptions import ConfigurationError, InfraError
from infra_automation.inventory import load_inventory
from infra_automation.metrics import compute_stats, load_history, load_targets
from infra_automation.metrics.capacity import CapacityContext, Headroom, Unreadable, read_headroom
from infra_automation.metrics.panels import charts, kpis
from infra_automation.metrics.sla import SLA_FILE, parse_moment
from infra_automation.portal.pages import render
from infra_automation.server.auth import Principal, problem
from infra_automation.server.state import Caller, ServerState, StateDep
from infra_automation.validation import NAME_RE

RANGES = ("7d", "30d", "90d", "365d")


def dashboard_page(
    request: Request,
    caller: Caller,
    state: StateDep,
    since: Annotated[str, Query(max_length=40)] = "30d",
    project: Annotated[str | None, Query(max_length=64, pattern=NAME_RE.pattern)] = None,
) -> HTMLResponse:
    """The charts of the range (``since``: 7d, 30d, a date) for every visible project."""
    project = _scoped(caller, project or None)
    now = utcnow()
    try:
        start = parse_moment(since, now)
    except ValueError as exc:
        raise problem(422, "invalid", f"since: {exc}") from None
    if start >= now:
        raise problem(422, "invalid", f"since: {start.isoformat()} is not in the past")
    engine = state.engine
    try:
        targets = load_targets(engine.settings.root / SLA_FILE)
        history = load_history(engine.db, start, now, project=project)
    except InfraError as exc:
        raise problem(500, "record", str(exc)) from None
    report = compute_stats(history, targets)
    headroom = _headroom(state, project)
    context: dict[str, Any] = {
        "since": since,
        "ranges": RANGES,
        "project": project or "",
        "projects": caller.projects_filter(),
        "report": report,
        "kpis": kpis(report),
        "charts": charts(report, history, headroom),
        "unreadable": headroom.unreadable,
    }
    return render(request, "dashboard.html.j2", context, caller=caller)


def _scoped(caller: Principal, project: str | None) -> str | None:
    """A caller limited to her projects sees one of them (the first when none is named)."""
    allowed = caller.projects_filter()
    if allowed is not None and project is None:
        if not allowed:
            raise problem(403, "forbidden", "no project is assigned to you")
        project = allowed[0]
    if project is not None:
        caller.require_project(project)
    return project


def _headroom(state: ServerState, project: str | None) -> Headroom:
    """The pools of the server's inventory (for a project: those it uses)."""
    engine = state.engine
    try:
        inventory = load_inventory(engine.settings.inventory)
    except ConfigurationError as exc:
        return Headroom((), (Unreadable("inventory", str(exc)),))
    inventory.db = engine.db  # the host bindings may be kept in the record
    headroom = read_headroom(CapacityContext(inventory, engine.db, engine.settings.root))
    return headroom.for_project(project) if project else headroom
