"""The API side of the metrics: ``GET /api/v1/stats``, incidents, and ``GET /metrics``.

Two routers, for the server to mount (``app.include_router(api.router)`` and
``app.include_router(api.metrics_router)``). Their rules belong in
:data:`infra_automation.server.policy.RULES` (``stats``/``incidents`` readable by the
readers, a TAM only for her projects; ``ack`` by engineers, TAMs of the project and
approvers; ``/metrics`` by every role, e.g. a token of a ``viewer`` user for Prometheus).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy import Engine

from infra_automation.events import utcnow
from infra_automation.exceptions import InfraError
from infra_automation.metrics.history import History, load_history
from infra_automation.metrics.incidents import derive_incidents
from infra_automation.metrics.prometheus import exposition
from infra_automation.metrics.report import compute_stats
from infra_automation.metrics.sla import SLA_FILE, load_targets, parse_moment
from infra_automation.metrics.store import add_acknowledgement
from infra_automation.server.auth import Principal, problem
from infra_automation.server.policy import API
from infra_automation.server.state import Caller, StateDep

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
router = APIRouter(prefix=API, tags=["stats"])
metrics_router = APIRouter(tags=["metrics"])
Moment = Annotated[str | None, Query(max_length=40, description="90m, 12h, 30d or ISO 8601")]
Name = Annotated[str | None, Query(max_length=100)]


def record_engine(state: StateDep) -> Engine:
    """The record's database (a dependency, so tests can give their own)."""
    return state.engine.db


def sla_path(state: StateDep) -> Path:
    return state.engine.settings.root / SLA_FILE


DB = Annotated[Engine, Depends(record_engine)]
SlaPath = Annotated[Path, Depends(sla_path)]


@router.get("/stats")
def get_stats(
    caller: Caller,
    db: DB,
    sla: SlaPath,
    since: Moment = "30d",
    until: Moment = None,
    project: Name = None,
    department: Name = None,
) -> dict[str, Any]:
    """The figures of ``infra stats --output json`` for the range."""
    start, end = _range(since or "30d", until)
    project = _scoped(caller, project)
    try:
        targets = load_targets(sla)
        history = load_history(db, start, end, project=project)
    except InfraError as exc:
        raise problem(500, "record", str(exc)) from None
    return compute_stats(history, targets, department=department).to_dict()


@router.get("/incidents")
def list_incidents(
    caller: Caller,
    db: DB,
    since: Moment = "30d",
    project: Name = None,
    department: Name = None,
    open_only: Annotated[bool, Query(alias="open")] = False,
) -> list[dict[str, Any]]:
    """Incidents opened in the range, oldest first."""
    start, end = _range(since or "30d", None)
    found = derive_incidents(_history(db, start, end, _scoped(caller, project)))
    return [
        i.to_dict()
        for i in found
        if i.opened_at >= start
        and (department is None or i.department == department)
        and (i.open or not open_only)
    ]


@router.post("/incidents/{incident_id}/ack")
def acknowledge(
    caller: Caller,
    db: DB,
    incident_id: str,
    comment: Annotated[str | None, Query(max_length=500)] = None,
) -> dict[str, Any]:
    """Acknowledge an incident as the caller: it counts as responded to from now on."""
    known = {i.id: i for i in derive_incidents(_history(db, EPOCH, utcnow(), None))}
    incident = known.get(incident_id)
    if incident is None:
        raise problem(404, "not_found", f"no incident {incident_id!r}")
    caller.require_project(incident.project)
    ack = add_acknowledgement(db, incident_id, caller.name, comment=comment)
    return {"incident_id": incident_id, "actor": ack.actor, "at": ack.at.isoformat()}


@metrics_router.get(f"{API}/metrics")
def metrics(caller: Caller, db: DB) -> Response:
    """The record's metrics in Prometheus' text format."""
    body, content_type = exposition(db)
    return Response(content=body, media_type=content_type)


def _history(db: Engine, start: datetime, end: datetime, project: str | None) -> History:
    try:
        return load_history(db, start, end, project=project)
    except InfraError as exc:
        raise problem(500, "record", str(exc)) from None


def _scoped(caller: Principal, project: str | None) -> str | None:
    """The project a caller limited to her projects must name (and may see)."""
    allowed = caller.projects_filter()
    if allowed is not None and project is None:
        if len(allowed) != 1:
            raise problem(400, "invalid", "project: give one of your projects")
        project = allowed[0]
    if project is not None:
        caller.require_project(project)
    return project


def _range(since: str, until: str | None) -> tuple[datetime, datetime]:
    now = utcnow()
    end = _moment(until, "until", now) if until else now
    start = _moment(since, "since", end)
    if start >= end:
        raise problem(422, "invalid", f"since: {start.isoformat()} is not before {end.isoformat()}")
    return start, end


def _moment(value: str, name: str, now: datetime) -> datetime:
    try:
        return parse_moment(value, now)
    except ValueError as exc:
        raise problem(422, "invalid", f"{name}: {exc}") from None
