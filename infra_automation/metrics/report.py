"""The figures of a time range, overall and per project, catalog service and department.

What is counted in the range ``[since, until)``: deliveries and deployments by the start of
their first run, incidents by when they opened, change records by when they were written,
step durations of the deployments counted. What happened later (a resume, a resolution)
still counts for them: a delivery requested in the range and done after it has its lead time.

- *lead time*: request -> done of each delivery done (:mod:`~infra_automation.metrics.history`);
- *waiting on a department*: its OLA clock per delivery (:mod:`~infra_automation.metrics.clock`);
- *step durations*: ``duration`` of the steps that ran (not reused), by department;
- *change success rate*: implemented / (implemented + failed) change records; *emergency
  share*: emergency / all change records not voided (None without the change tables);
- *incident response and resolution*: :mod:`~infra_automation.metrics.incidents`;
- DORA: :mod:`~infra_automation.metrics.dora`; SLA breaches: :mod:`~infra_automation.metrics.sla`.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from infra_automation.metrics._gc import paused_gc
from infra_automation.metrics.clock import StepClock, department_waits, step_clocks
from infra_automation.metrics.dora import DAY, Dora, dora, during_incident
from infra_automation.metrics.history import ChangeFact, Delivery, History, RunFact, StepFact
from infra_automation.metrics.incidents import Incident, derive_incidents
from infra_automation.metrics.quantiles import Spread, ratio, spread
from infra_automation.metrics.sla import Breach, Targets, breaches

FINAL = frozenset({"success", "failed", "interrupted"})


@dataclass(frozen=True)
class Scope:
    """The facts of one scope (everything, a project, a service) in the range."""

    deliveries: tuple[Delivery, ...]
    deployments: tuple[RunFact, ...]
    incidents: tuple[Incident, ...]
    changes: tuple[ChangeFact, ...]
    breaches: tuple[Breach, ...]


@dataclass(frozen=True)
class Figures:
    deliveries: int
    done: int
    lead_time: Spread
    step_duration: Spread
    change_success_rate: float | None
    emergency_share: float | None
    incident_response: Spread
    incident_resolution: Spread
    incidents: int
    incidents_open: int
    breaches: int
    dora: Dora

    def to_dict(self) -> dict[str, Any]:
        return {
            "deliveries": self.deliveries,
            "done": self.done,
            "lead_time": self.lead_time.to_dict(),
            "step_duration": self.step_duration.to_dict(),
            "change_success_rate": self.change_success_rate,
            "emergency_share": self.emergency_share,
            "incidents": self.incidents,
            "incidents_open": self.incidents_open,
            "incident_response": self.incident_response.to_dict(),
            "incident_resolution": self.incident_resolution.to_dict(),
            "breaches": self.breaches,
            "dora": self.dora.to_dict(),
        }


@dataclass(frozen=True)
class DepartmentFigures:
    steps: int
    failed_steps: int
    step_duration: Spread
    waiting: Spread  # per delivery: the department's OLA clock
    incident_response: Spread
    incident_resolution: Spread
    incidents: int
    incidents_open: int
    breaches: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "failed_steps": self.failed_steps,
            "step_failure_rate": ratio(self.failed_steps, self.steps),
            "step_duration": self.step_duration.to_dict(),
            "waiting": self.waiting.to_dict(),
            "incidents": self.incidents,
            "incidents_open": self.incidents_open,
            "incident_response": self.incident_response.to_dict(),
            "incident_resolution": self.incident_resolution.to_dict(),
            "breaches": self.breaches,
        }


@dataclass(frozen=True)
class StatsReport:
    since: datetime
    until: datetime
    project: str | None
    department: str | None
    totals: Figures
    projects: dict[str, Figures]
    services: dict[str, Figures]
    departments: dict[str, DepartmentFigures]
    incidents: tuple[Incident, ...]
    breaches: tuple[Breach, ...]
    clocks: tuple[StepClock, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "project": self.project,
            "department": self.department,
            "totals": self.totals.to_dict(),
            "projects": {k: v.to_dict() for k, v in self.projects.items()},
            "services": {k: v.to_dict() for k, v in self.services.items()},
            "departments": {k: v.to_dict() for k, v in self.departments.items()},
            "incidents": [i.to_dict() for i in self.incidents],
            "breaches": [b.to_dict() for b in self.breaches],
        }


def compute_stats(
    history: History, targets: Targets | None = None, *, department: str | None = None
) -> StatsReport:
    """The figures of ``history`` (narrowed to ``department`` when given)."""
    with paused_gc():
        return _compute(history, targets or Targets(), department)


def _compute(history: History, targets: Targets, department: str | None) -> StatsReport:
    since, until = history.since, history.until
    every_incident = derive_incidents(history)
    deliveries = tuple(d for d in history.deliveries if since <= d.first.started_at < until)
    deployments = tuple(
        r for r in history.applied if r.status in FINAL and since <= r.started_at < until
    )
    incidents = tuple(i for i in every_incident if since <= i.opened_at < until)
    if department is not None:
        deliveries = tuple(d for d in deliveries if department in d.departments)
        deployments = tuple(r for r in deployments if _touches(r, department))
        incidents = tuple(i for i in incidents if i.department == department)
    per_delivery = [step_clocks(d) for d in deliveries]
    clocks = tuple(c for delivery_clocks in per_delivery for c in delivery_clocks)
    found = breaches(targets, deliveries, clocks, incidents, until)
    changes = tuple(c for c in history.changes if since <= c.created_at < until)
    everything = Scope(deliveries, deployments, incidents, changes, tuple(found))
    days = (until - since).total_seconds() / DAY
    ran = _ran_steps(deployments)
    figures = _figures_of(history, every_incident, days, ran)
    return StatsReport(
        since=since,
        until=until,
        project=None,
        department=department,
        totals=figures(everything),
        projects=_grouped(everything, figures, lambda x: x.project),
        services=_grouped(everything, figures, _service_of),
        departments=_departments(everything, ran, per_delivery, department),
        incidents=incidents,
        breaches=tuple(found),
        clocks=clocks,
    )


class _Ran(NamedTuple):
    """The steps that ran (not reused) in the deployments: durations per run, per department."""

    durations: dict[str, list[float]]  # run id -> durations of its steps that ran, in order
    departments: dict[str, list[StepFact]]  # department -> its steps that ran, in order


def _ran_steps(deployments: Sequence[RunFact]) -> _Ran:
    """One pass over the steps of ``deployments``."""
    durations: dict[str, list[float]] = {}
    departments: dict[str, list[StepFact]] = {}
    for run in deployments:
        durations[run.id] = took = []
        for step in run.steps:
            if step.reused or step.started_at is None:
                continue
            if step.duration is not None:
                took.append(step.duration)
            same = departments.get(step.department)
            if same is None:
                departments[step.department] = [step]
            else:
                same.append(step)
    return _Ran(durations, departments)


def _touches(run: RunFact, department: str) -> bool:
    return any(s.department == department for s in run.steps)


def _figures_of(
    history: History, every_incident: Sequence[Incident], days: float, ran: _Ran
) -> Callable[[Scope], Figures]:
    by_project: dict[str, list[Incident]] = defaultdict(list)
    for incident in every_incident:
        by_project[incident.project].append(incident)

    rework = {r.id for r in history.applied if during_incident(r, by_project.get(r.project, ()))}
    durations = ran.durations

    def figures(scope: Scope) -> Figures:
        done = [d for d in scope.deliveries if d.done_at is not None]
        lead = spread([_lead(d) for d in done])
        return Figures(
            deliveries=len(scope.deliveries),
            done=len(done),
            lead_time=lead,
            step_duration=spread([t for r in scope.deployments for t in durations[r.id]]),
            change_success_rate=_change_success(scope.changes, history.has_changes),
            emergency_share=_emergency_share(scope.changes, history.has_changes),
            incident_response=_response(scope.incidents),
            incident_resolution=_resolution(scope.incidents),
            incidents=len(scope.incidents),
            incidents_open=sum(1 for i in scope.incidents if i.open),
            breaches=len(scope.breaches),
            dora=dora(scope.deployments, done, scope.incidents, rework, days, lead_time=lead),
        )

    return figures


def _grouped(
    scope: Scope, figures: Callable[[Scope], Figures], key: Callable[[Any], str | None]
) -> dict[str, Figures]:
    parts = (scope.deliveries, scope.deployments, scope.incidents, scope.changes, scope.breaches)
    groups: dict[str, list[list[Any]]] = {}
    for index, items in enumerate(parts):
        for item in items:
            name = key(item)
            if name:
                groups.setdefault(name, [[], [], [], [], []])[index].append(item)
    named = [n for n, g in groups.items() if g[0] or g[1] or g[2]]
    return {n: figures(Scope(*(tuple(p) for p in groups[n]))) for n in sorted(named)}


def _service_of(item: Any) -> str | None:
    service: str | None = item.service
    return service


def _departments(
    scope: Scope,
    ran: _Ran,
    per_delivery: Sequence[Sequence[StepClock]],
    only: str | None,
) -> dict[str, DepartmentFigures]:
    incidents: dict[str, list[Incident]] = defaultdict(list)
    for incident in scope.incidents:
        incidents[incident.department].append(incident)
    breached: Counter[str | None] = Counter(b.department for b in scope.breaches)
    waits: dict[str, list[float]] = defaultdict(list)
    for delivery_clocks in per_delivery:
        for name, seconds in department_waits(delivery_clocks).items():
            waits[name].append(seconds)
    found = {}
    for name in sorted(ran.departments.keys() | incidents.keys()):
        if only is not None and name != only:
            continue
        steps = ran.departments.get(name, [])
        theirs = incidents.get(name, [])
        found[name] = DepartmentFigures(
            steps=len(steps),
            failed_steps=sum(1 for s in steps if s.status == "failed"),
            step_duration=spread([s.duration for s in steps if s.duration is not None]),
            waiting=spread(waits.get(name, [])),
            incident_response=_response(theirs),
            incident_resolution=_resolution(theirs),
            incidents=len(theirs),
            incidents_open=sum(1 for i in theirs if i.open),
            breaches=breached[name],
        )
    return found


def _lead(delivery: Delivery) -> float:
    assert delivery.done_at is not None
    return (delivery.done_at - delivery.requested_at).total_seconds()


def _response(incidents: Sequence[Incident]) -> Spread:
    return spread([t for t in (i.response_time for i in incidents) if t is not None])


def _resolution(incidents: Sequence[Incident]) -> Spread:
    return spread([t for t in (i.resolution_time for i in incidents) if t is not None])


def _change_success(changes: Sequence[ChangeFact], known: bool) -> float | None:
    if not known:
        return None
    ended = [c for c in changes if c.state in ("implemented", "failed")]
    return ratio(sum(1 for c in ended if c.state == "implemented"), len(ended))


def _emergency_share(changes: Sequence[ChangeFact], known: bool) -> float | None:
    if not known:
        return None
    counted = [c for c in changes if c.state != "voided"]
    return ratio(sum(1 for c in counted if c.change_type == "emergency"), len(counted))
